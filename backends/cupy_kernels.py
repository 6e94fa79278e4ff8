"""CUDA kernels of the CuPy backend, and the launch-free training epoch built from them.

Two families, both templated on the element type (``float`` or ``double``), compiled by NVRTC on
first use and memoized per dtype (CuPy also keeps the binaries in its on-disk kernel cache):

* *step kernels* that the contract methods use around cuBLAS products: fused elementwise kernels,
  a row gather, column sums and a warp-per-row softmax family;
* *epoch kernels*: tiled matrix products with fused epilogues (bias and activation; the previous
  activation's slope; the SGD step on weights and bias) and warp-per-row kernels for layers with
  few outputs, the last of them fused with the cost. :class:`EpochProgram` builds a whole training
  step from them without cuBLAS, because CuPy refuses cuBLAS calls while a stream is captured, and
  replays the epoch from CUDA graphs.

Matrices are row-major and C-contiguous. A batch's rows are read straight from the training set
through the epoch's shuffled ``order`` at a device-side ``cursor``, so one captured step serves
every batch and no gathered copy of the batch is made.
"""

from __future__ import annotations

import functools
import warnings

import cupy
import numpy

SOURCE = r"""
enum { BK = 16, THREADS = 256, COLUMNS = 8, SLICES = 32 };

__device__ __forceinline__ float fp_exp(float x) { return expf(x); }
__device__ __forceinline__ double fp_exp(double x) { return exp(x); }
__device__ __forceinline__ float fp_log(float x) { return logf(x); }
__device__ __forceinline__ double fp_log(double x) { return log(x); }

// Activation codes shared with the host: 0 none, 1 sigmoid, 2 ReLU.
template <typename T> __device__ __forceinline__ T activate(T z, int act) {
    if (act == 1) return T(1) / (T(1) + fp_exp(-z));
    if (act == 2) return z < T(0) ? T(0) : z;
    return z;
}

// dL/dz from dL/dy and the activation's output y, in the reference backend's order of operations.
template <typename T> __device__ __forceinline__ T apply_slope(T g, T y, int act) {
    if (act == 1) return g * y * (T(1) - y);
    if (act == 2) return g * (y > T(0) ? T(1) : T(0));
    return g;
}

template <typename T> __device__ __forceinline__ T warp_sum(T v) {
    #pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

template <typename T> __device__ __forceinline__ T warp_max(T v) {
    #pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) {
        const T other = __shfl_xor_sync(0xffffffffu, v, offset);
        v = other > v ? other : v;
    }
    return v;
}

// Adds the block's costs to *total with one atomic; every thread of the 1-D block must call it.
__device__ __forceinline__ void add_to_total(double v, double* total) {
    __shared__ double warp_totals[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_sum(v);
    if (lane == 0) warp_totals[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < (int)(blockDim.x >> 5) ? warp_totals[lane] : 0.0;
        v = warp_sum(v);
        if (lane == 0) atomicAdd(total, v);
    }
}

// The batch's rows of the training set: order[*cursor + first], order[*cursor + first + 1], ...
__device__ __forceinline__ const long long* batch_rows(const long long* order, const long long* cursor,
                                                       long long first) {
    return order + (cursor[0] + first);
}

// Element (r, c) of a row-major matrix; row r is stored at index[r] when an index is given.
template <typename T> struct Operand {
    const T* data;
    long long ld;
    const long long* index;
    __device__ __forceinline__ T get(long long r, long long c) const {
        return data[(index ? index[r] : r) * ld + c];
    }
};

// Stages one BK-deep slice of an R-wide operand tile through registers, so that the next slice's
// loads are in flight while the current one is multiplied. KCONTIG: the operand is stored with k
// contiguous (tile element (r, k) is get(r, k)); otherwise it is k-major (get(k, r)).
template <typename T, int R, bool KCONTIG> struct TileLoader {
    T reg[4];

    __device__ __forceinline__ void load(const Operand<T>& op, long long extent, long long K,
                                         long long r0, long long k0) {
        const int tid = threadIdx.x;
        if (KCONTIG) {  // each of the first R * BK / 4 threads loads 4 consecutive k of one row
            const int r = tid / (BK / 4), k = (tid % (BK / 4)) * 4;
            const bool live = tid < R * BK / 4 && r0 + r < extent;
            #pragma unroll
            for (int c = 0; c < 4; ++c)
                reg[c] = (live && k0 + k + c < K) ? op.get(r0 + r, k0 + k + c) : T(0);
        } else {  // consecutive threads load consecutive r: coalesced
            #pragma unroll
            for (int s = 0; s < R * BK / THREADS; ++s) {
                const int e = tid + THREADS * s, k = e / R, r = e % R;
                reg[s] = (r0 + r < extent && k0 + k < K) ? op.get(k0 + k, r0 + r) : T(0);
            }
        }
    }

    __device__ __forceinline__ void store(T (*tile)[R + 4]) const {
        const int tid = threadIdx.x;
        if (KCONTIG) {
            if (tid < R * BK / 4) {
                const int r = tid / (BK / 4), k = (tid % (BK / 4)) * 4;
                #pragma unroll
                for (int c = 0; c < 4; ++c) tile[k + c][r] = reg[c];
            }
        } else {
            #pragma unroll
            for (int s = 0; s < R * BK / THREADS; ++s) {
                const int e = tid + THREADS * s;
                tile[e / R][e % R] = reg[s];
            }
        }
    }
};

// acc[i][j] += sum over k < K of a(m, k) b(k, n) for m = m0 + ty * BM/16 + i, n = n0 + tx * BN/16 + j,
// with 16 x 16 threads. A is M x K and B is K x N in the layouts given by the KCONTIG flags. With
// sum_a, threads below BM also add up a(m0 + threadIdx.x, k) over k into a_sum (a bias gradient).
template <typename T, int BM, int BN, bool A_KCONTIG, bool B_KCONTIG>
__device__ __forceinline__ void tile_product(const Operand<T>& A, const Operand<T>& B, long long M,
                                             long long N, long long K, long long m0, long long n0,
                                             T (&acc)[BM / 16][BN / 16], bool sum_a, T& a_sum) {
    __shared__ __align__(16) T As[BK][BM + 4];
    __shared__ __align__(16) T Bs[BK][BN + 4];
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    TileLoader<T, BM, A_KCONTIG> a_loader;
    TileLoader<T, BN, B_KCONTIG> b_loader;
    a_loader.load(A, M, K, m0, 0);
    b_loader.load(B, N, K, n0, 0);
    for (long long k0 = 0; k0 < K; k0 += BK) {
        a_loader.store(As);
        b_loader.store(Bs);
        __syncthreads();
        if (k0 + BK < K) {
            a_loader.load(A, M, K, m0, k0 + BK);
            b_loader.load(B, N, K, n0, k0 + BK);
        }
        if (sum_a && threadIdx.x < BM) {
            #pragma unroll
            for (int k = 0; k < BK; ++k) a_sum += As[k][threadIdx.x];
        }
        #pragma unroll
        for (int k = 0; k < BK; ++k) {
            T a[BM / 16], b[BN / 16];
            #pragma unroll
            for (int i = 0; i < BM / 16; ++i) a[i] = As[k][ty * (BM / 16) + i];
            #pragma unroll
            for (int j = 0; j < BN / 16; ++j) b[j] = Bs[k][tx * (BN / 16) + j];
            #pragma unroll
            for (int i = 0; i < BM / 16; ++i) {
                #pragma unroll
                for (int j = 0; j < BN / 16; ++j) acc[i][j] += a[i] * b[j];
            }
        }
        __syncthreads();
    }
}

template <typename T, int BM, int BN> __device__ __forceinline__ void clear(T (&acc)[BM / 16][BN / 16]) {
    #pragma unroll
    for (int i = 0; i < BM / 16; ++i) {
        #pragma unroll
        for (int j = 0; j < BN / 16; ++j) acc[i][j] = T(0);
    }
}

// Hand each of this thread's tile results to store(m, n, value), for the outputs inside M x N.
template <typename T, int BM, int BN, typename Store>
__device__ __forceinline__ void store_tile(const T (&acc)[BM / 16][BN / 16], long long m0, long long n0,
                                           long long M, long long N, Store store) {
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    #pragma unroll
    for (int i = 0; i < BM / 16; ++i) {
        const long long m = m0 + ty * (BM / 16) + i;
        #pragma unroll
        for (int j = 0; j < BN / 16; ++j) {
            const long long n = n0 + tx * (BN / 16) + j;
            if (m < M && n < N) store(m, n, acc[i][j]);
        }
    }
}

// Forward of a dense layer: Y = act(X W^T + b). X is M x K (its rows taken through the batch order
// when gather is set), W is N x K, b has N entries, Y is M x N.
template <typename T, int BM, int BN>
__global__ void __launch_bounds__(THREADS) dense_forward(
        const T* __restrict__ X, const long long* order, const long long* cursor, long long first,
        int gather, const T* __restrict__ W, const T* __restrict__ b, T* __restrict__ Y,
        long long M, long long N, long long K, int act) {
    const Operand<T> A = {X, K, gather ? batch_rows(order, cursor, first) : nullptr};
    const Operand<T> B = {W, K, nullptr};
    const long long m0 = (long long)blockIdx.y * BM, n0 = (long long)blockIdx.x * BN;
    T acc[BM / 16][BN / 16];
    clear<T, BM, BN>(acc);
    T unused = T(0);
    tile_product<T, BM, BN, true, true>(A, B, M, N, K, m0, n0, acc, false, unused);
    store_tile<T, BM, BN>(acc, m0, n0, M, N, [&](long long m, long long n, T v) {
        Y[m * N + n] = activate(v + b[n], act);
    });
}

// Input gradient of a dense layer through the previous layer's activation: D = (G W) * act'(Y).
// G is M x K (dL/dz of this layer), W is K x N, Y and D are M x N (the previous layer's output and
// dL/dz).
template <typename T, int BM, int BN>
__global__ void __launch_bounds__(THREADS) dense_backward_input(
        const T* __restrict__ G, const T* __restrict__ W, const T* __restrict__ Y, T* __restrict__ D,
        long long M, long long N, long long K, int act) {
    const Operand<T> A = {G, K, nullptr};
    const Operand<T> B = {W, N, nullptr};
    const long long m0 = (long long)blockIdx.y * BM, n0 = (long long)blockIdx.x * BN;
    T acc[BM / 16][BN / 16];
    clear<T, BM, BN>(acc);
    T unused = T(0);
    tile_product<T, BM, BN, true, false>(A, B, M, N, K, m0, n0, acc, false, unused);
    store_tile<T, BM, BN>(acc, m0, n0, M, N, [&](long long m, long long n, T v) {
        D[m * N + n] = apply_slope(v, Y[m * N + n], act);
    });
}

// Weight step of a dense layer: dW = G^T X and db = column sums of G are written (the step loop's
// gradients right after zero_gradients), then W -= lr dW and b -= lr db. G is R x M, X is R x N (its
// rows taken through the batch order when gather is set), W and dW are M x N, b and db have M.
template <typename T, int BM, int BN>
__global__ void __launch_bounds__(THREADS) dense_update(
        const T* __restrict__ G, const T* __restrict__ X, const long long* order, const long long* cursor,
        long long first, int gather, T* __restrict__ W, T* __restrict__ b, T* __restrict__ dW,
        T* __restrict__ db, const T* __restrict__ lr, long long M, long long N, long long R) {
    const Operand<T> A = {G, M, nullptr};
    const Operand<T> B = {X, N, gather ? batch_rows(order, cursor, first) : nullptr};
    const long long m0 = (long long)blockIdx.y * BM, n0 = (long long)blockIdx.x * BN;
    const bool bias_block = blockIdx.x == 0;
    T acc[BM / 16][BN / 16];
    clear<T, BM, BN>(acc);
    T bias_sum = T(0);
    tile_product<T, BM, BN, false, false>(A, B, M, N, R, m0, n0, acc, bias_block, bias_sum);
    const T rate = lr[0];
    store_tile<T, BM, BN>(acc, m0, n0, M, N, [&](long long m, long long n, T g) {
        dW[m * N + n] = g;
        W[m * N + n] -= rate * g;
    });
    if (bias_block && threadIdx.x < BM && m0 + threadIdx.x < M) {
        const long long m = m0 + threadIdx.x;
        db[m] = bias_sum;
        b[m] -= rate * bias_sum;
    }
}

// Forward of a layer with N <= NMAX outputs, one warp per batch row: Y = act(X W^T + b) as in
// dense_forward. With a loss (1 squared error, 2 softmax cross-entropy) it also writes D = dL/dz for
// the batch's targets (rows of the training targets through the batch order) and adds the batch's
// cost to *total.
template <typename T, int NMAX>
__global__ void __launch_bounds__(THREADS) narrow_forward(
        const T* __restrict__ X, const long long* order, const long long* cursor, long long first,
        int gather, const T* __restrict__ W, const T* __restrict__ b, T* __restrict__ Y, long long M,
        int N, long long K, int act, int loss, const T* __restrict__ targets, T* __restrict__ D,
        double* total) {
    const int lane = threadIdx.x & 31;
    const long long m = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    double cost = 0.0;
    if (m < M) {  // uniform across the warp
        const long long* rows = batch_rows(order, cursor, first);
        const T* x = X + (gather ? rows[m] : m) * K;
        T acc[NMAX];
        #pragma unroll
        for (int j = 0; j < NMAX; ++j) acc[j] = T(0);
        #pragma unroll 4
        for (long long k = lane; k < K; k += 32) {
            const T v = x[k];
            #pragma unroll
            for (int j = 0; j < NMAX; ++j)
                if (j < N) acc[j] += v * W[j * K + k];
        }
        T z = T(0);
        #pragma unroll
        for (int j = 0; j < NMAX; ++j) {
            if (j < N) {  // uniform: every lane joins the shuffles
                const T s = warp_sum(acc[j]);
                if (j == lane) z = s;
            }
        }
        const bool live = lane < N;
        const T y = live ? activate(z + b[lane], act) : T(0);
        if (live) Y[m * N + lane] = y;
        if (loss) {
            const T t = live ? targets[rows[m] * N + lane] : T(0);
            T g;
            if (loss == 1) {
                const T d = t - y;
                if (live) cost = (double)(d * d * T(0.5));
                g = y - t;
            } else {
                const T y0 = __shfl_sync(0xffffffffu, y, 0);
                const T top = warp_max(live ? y : y0);
                const T e = live ? fp_exp(y - top) : T(0);
                const T sum_e = warp_sum(e), sum_t = warp_sum(t);
                if (live) cost = (double)(-t * ((y - top) - fp_log(sum_e)));
                g = e / sum_e * sum_t - t;
            }
            if (live) D[m * N + lane] = apply_slope(g, y, act);
        }
    }
    if (loss) add_to_total(cost, total);
}

// Cost and dL/dz of a last layer with any number of outputs, one warp per batch row of Y (M x N);
// the same loss codes and targets as narrow_forward.
template <typename T>
__global__ void __launch_bounds__(THREADS) batch_loss(
        const T* __restrict__ Y, const T* __restrict__ targets, const long long* order,
        const long long* cursor, long long first, T* __restrict__ D, long long M, long long N, int act,
        int loss, double* total) {
    const int lane = threadIdx.x & 31;
    const long long m = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    double cost = 0.0;
    if (m < M) {
        const T* y = Y + m * N;
        const T* t = targets + batch_rows(order, cursor, first)[m] * N;
        T* d = D + m * N;
        if (loss == 1) {
            for (long long c = lane; c < N; c += 32) {
                const T diff = t[c] - y[c];
                cost += (double)(diff * diff * T(0.5));
                d[c] = apply_slope(y[c] - t[c], y[c], act);
            }
        } else {
            T top = y[0];
            for (long long c = lane; c < N; c += 32) top = y[c] > top ? y[c] : top;
            top = warp_max(top);
            T sum_e = T(0), sum_t = T(0);
            for (long long c = lane; c < N; c += 32) {
                sum_e += fp_exp(y[c] - top);
                sum_t += t[c];
            }
            sum_e = warp_sum(sum_e);
            sum_t = warp_sum(sum_t);
            const T log_sum = fp_log(sum_e);
            for (long long c = lane; c < N; c += 32) {
                const T shifted = y[c] - top;
                cost += (double)(-t[c] * (shifted - log_sum));
                d[c] = apply_slope(fp_exp(shifted) / sum_e * sum_t - t[c], y[c], act);
            }
        }
    }
    add_to_total(cost, total);
}

// Weight step of a layer with M <= NMAX outputs, as dense_update. Block (COLUMNS, SLICES): a few
// input columns per block, the batch split over interleaved slices whose sums meet in shared memory.
template <typename T, int NMAX>
__global__ void __launch_bounds__(COLUMNS * SLICES) narrow_update(
        const T* __restrict__ G, const T* __restrict__ X, const long long* order, const long long* cursor,
        long long first, int gather, T* __restrict__ W, T* __restrict__ b, T* __restrict__ dW,
        T* __restrict__ db, const T* __restrict__ lr, int M, long long N, long long R) {
    __shared__ T slices[SLICES][COLUMNS][NMAX + 1];
    __shared__ T bias_slices[SLICES][NMAX];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const long long n = (long long)blockIdx.x * COLUMNS + tx;
    const long long* rows = batch_rows(order, cursor, first);
    T acc[NMAX], bias_acc[NMAX];
    #pragma unroll
    for (int j = 0; j < NMAX; ++j) acc[j] = bias_acc[j] = T(0);
    #pragma unroll 4
    for (long long r = ty; r < R; r += SLICES) {
        const T v = n < N ? X[(gather ? rows[r] : r) * N + n] : T(0);
        const T* g = G + r * M;
        #pragma unroll
        for (int j = 0; j < NMAX; ++j) {
            if (j < M) {
                const T gj = g[j];
                acc[j] += gj * v;
                bias_acc[j] += gj;
            }
        }
    }
    #pragma unroll
    for (int j = 0; j < NMAX; ++j) slices[ty][tx][j] = acc[j];
    if (tx == 0) {
        #pragma unroll
        for (int j = 0; j < NMAX; ++j) bias_slices[ty][j] = bias_acc[j];
    }
    __syncthreads();
    const T rate = lr[0];
    if (n < N) {
        for (int j = ty; j < M; j += SLICES) {
            T s = T(0);
            #pragma unroll 8
            for (int q = 0; q < SLICES; ++q) s += slices[q][tx][j];
            dW[j * N + n] = s;
            W[j * N + n] -= rate * s;
        }
    }
    if (blockIdx.x == 0 && ty == 0) {
        for (int j = tx; j < M; j += COLUMNS) {
            T s = T(0);
            #pragma unroll 8
            for (int q = 0; q < SLICES; ++q) s += bias_slices[q][j];
            db[j] = s;
            b[j] -= rate * s;
        }
    }
}

// Moves the batch cursor on by `rows` (the last node of a graph that replays several batches).
extern "C" __global__ void advance_cursor(long long* cursor, long long rows) { cursor[0] += rows; }

// out = table[index] along rows; out is rows x cols, table n x cols. Indices wrap around modulo n.
template <typename T>
__global__ void gather_rows(const T* __restrict__ table, const long long* __restrict__ index,
                            T* __restrict__ out, long long rows, long long cols, long long n) {
    const long long size = rows * cols, stride = (long long)gridDim.x * blockDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < size; e += stride) {
        const long long r = e / cols;
        long long source = index[r] % n;
        if (source < 0) source += n;
        out[e] = table[source * cols + (e - r * cols)];
    }
}

// Column sums of G (rows x cols) written to out, or added to it when accumulate. Block (32, 8).
template <typename T>
__global__ void column_sums(const T* __restrict__ G, T* __restrict__ out, long long rows,
                            long long cols, int accumulate) {
    __shared__ T partial[8][33];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const long long c = (long long)blockIdx.x * 32 + tx;
    T s = T(0);
    if (c < cols)
        for (long long r = ty; r < rows; r += 8) s += G[r * cols + c];
    partial[ty][tx] = s;
    __syncthreads();
    if (ty == 0 && c < cols) {
        T total = T(0);
        #pragma unroll
        for (int q = 0; q < 8; ++q) total += partial[q][tx];
        out[c] = accumulate ? out[c] + total : total;
    }
}

// Row-wise softmax family, one warp per row of z (rows x cols, cols >= 1): mode 0 writes
// -t * log_softmax(z), mode 1 softmax(z) * sum(t) - t, mode 2 softmax(z) (t unused).
template <typename T>
__global__ void __launch_bounds__(THREADS) softmax_rows(const T* __restrict__ z, const T* __restrict__ t,
                                                        T* __restrict__ out, long long rows,
                                                        long long cols, int mode) {
    const int lane = threadIdx.x & 31;
    const long long r = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (r >= rows) return;  // whole warps leave; nothing below synchronizes the block
    const T* zr = z + r * cols;
    const T* tr = t + r * cols;
    T* o = out + r * cols;
    T top = zr[0];
    for (long long c = lane; c < cols; c += 32) top = zr[c] > top ? zr[c] : top;
    top = warp_max(top);
    T sum_e = T(0), sum_t = T(0);
    for (long long c = lane; c < cols; c += 32) {
        sum_e += fp_exp(zr[c] - top);
        if (mode == 1) sum_t += tr[c];
    }
    sum_e = warp_sum(sum_e);
    sum_t = warp_sum(sum_t);
    const T log_sum = fp_log(sum_e);
    for (long long c = lane; c < cols; c += 32) {
        const T shifted = zr[c] - top;
        if (mode == 0) o[c] = -tr[c] * (shifted - log_sum);
        else if (mode == 1) o[c] = fp_exp(shifted) / sum_e * sum_t - tr[c];
        else o[c] = fp_exp(shifted) / sum_e;
    }
}
"""

#: Tile shapes of the dense kernels, largest first; the first that fills the device is used.
TILES = ((64, 64), (32, 64), (32, 32))
#: Widest layer for the warp-per-row forward and the shared-memory weight step.
NARROW_FORWARD, NARROW_UPDATE = (8, 16, 32), (8, 16)
#: Launch shapes matching the CUDA source: batch rows (warps) per block of the warp-per-row kernels,
#: and the (COLUMNS, SLICES) block of narrow_update.
ROWS_PER_BLOCK, COLUMNS, SLICES = 4, 8, 32
_I32, _I64 = numpy.int32, numpy.int64


def _ctype(dtype) -> str:
    return {"float32": "float", "float64": "double"}[numpy.dtype(dtype).name]


def _blocks(n: int, size: int) -> int:
    return max(1, -(-n // size))


@functools.cache
def _compiled(names: tuple, plain: tuple = ()) -> dict:
    """The kernels ``names`` (template name expressions) and ``plain`` (extern "C"), compiled once."""
    module = cupy.RawModule(code=SOURCE, name_expressions=names)
    return {name: module.get_function(name) for name in names + plain}


def step_kernels(dtype) -> dict:
    t = _ctype(dtype)
    return _compiled(tuple(f"{name}<{t}>" for name in ("gather_rows", "column_sums", "softmax_rows")))


def epoch_kernels(dtype) -> dict:
    t = _ctype(dtype)
    names = [f"{k}<{t}, {bm}, {bn}>" for bm, bn in TILES
             for k in ("dense_forward", "dense_backward_input", "dense_update")]
    names += [f"narrow_forward<{t}, {n}>" for n in NARROW_FORWARD]
    names += [f"narrow_update<{t}, {n}>" for n in NARROW_UPDATE]
    return _compiled(tuple(names) + (f"batch_loss<{t}>",), ("advance_cursor",))


# ---------------------------------------------------------------------------------- step kernels

_ELEMENTWISE = {
    "sigmoid": ("T z", "T p", "p = T(1) / (T(1) + exp(-z))"),
    "sigmoid_delta": ("T p, T dp", "T dz", "dz = dp * (p * (T(1) - p))"),
    "relu": ("T z", "T y", "y = z < T(0) ? T(0) : z"),
    "relu_backward": ("T y, T dy", "T dx", "dx = dy * (y > T(0) ? T(1) : T(0))"),
    "sgd": ("T g, T lr", "T w", "w -= lr * g"),
    # splitmix64 of (seed + (i + 1) * golden ratio): distinct keys, so argsort gives a permutation
    "shuffle_keys": ("uint64 seed", "uint64 key", """
        unsigned long long s = seed + (unsigned long long)(i + 1) * 0x9E3779B97F4A7C15ull;
        s = (s ^ (s >> 30)) * 0xBF58476D1CE4E5B9ull;
        s = (s ^ (s >> 27)) * 0x94D049BB133111EBull;
        key = s ^ (s >> 31);"""),
}


@functools.cache
def elementwise(name: str) -> cupy.ElementwiseKernel:
    """The fused elementwise kernel ``name`` (type-generic; CuPy compiles it per dtype)."""
    in_params, out_params, operation = _ELEMENTWISE[name]
    return cupy.ElementwiseKernel(in_params, out_params, operation, f"fastprop_{name}")


def gather_rows(table, index, out) -> None:
    """``out[r] = table[index[r]]`` for a 2-D table and 1-D int64 index (indices wrap modulo rows)."""
    kernel = step_kernels(table.dtype)[f"gather_rows<{_ctype(table.dtype)}>"]
    blocks = min(_blocks(out.size, 256), 65535)
    kernel((blocks,), (256,), (table, index, out, _I64(out.shape[0]), _I64(out.shape[1]), _I64(table.shape[0])))


def column_sums(g, out, accumulate: bool) -> None:
    """``out = g.sum(0)`` (or ``+=`` when ``accumulate``) for a 2-D ``g`` and contiguous ``out``."""
    kernel = step_kernels(g.dtype)[f"column_sums<{_ctype(g.dtype)}>"]
    rows, cols = g.shape
    kernel((_blocks(cols, 32),), (32, 8), (g, out, _I64(rows), _I64(cols), _I32(accumulate)))


def softmax_rows(z, t, mode: int):
    """A new array: ``-t * log_softmax(z)`` (mode 0), ``softmax(z) * t.sum(1) - t`` (1), ``softmax(z)`` (2)."""
    out = cupy.empty_like(z)
    kernel = step_kernels(z.dtype)[f"softmax_rows<{_ctype(z.dtype)}>"]
    rows, cols = z.shape
    kernel((_blocks(rows, ROWS_PER_BLOCK),), (32 * ROWS_PER_BLOCK,), (z, t, out, _I64(rows), _I64(cols), _I32(mode)))
    return out


try:  # cuBLAS GEMM with beta, so that accumulating weight gradients needs no temporary
    from cupy.cublas import gemm as _gemm
except ImportError:  # CuPy before v9
    _gemm = None


def weight_gradient(dz, x, dW, accumulate: bool) -> None:
    """``dW = dz.T @ x``, or ``dW += dz.T @ x`` when ``accumulate``, as one cuBLAS GEMM."""
    if _gemm is not None:
        _gemm("T", "N", dz, x, out=dW, alpha=1.0, beta=1.0 if accumulate else 0.0)
    elif accumulate:
        dW += dz.T @ x
    else:
        cupy.matmul(dz.T, x, out=dW)


# --------------------------------------------------------------------------------- epoch program


class EpochProgram:
    """One epoch of plain SGD for a stack of dense layers, as fastprop's own kernels.

    ``plan`` is an :class:`~fastprop.backends.plan.EpochPlan`: dense steps, each with its
    activation code (none, sigmoid or ReLU), and the loss code (squared error or softmax
    cross-entropy), as the kernels take them. A step runs the forward pass (the
    first layer reads its rows straight from ``images`` through the order), the cost and its gradient
    (fused into a narrow last layer), then for each layer from the last: the input gradient through
    the previous activation, and the weight and bias gradients with their SGD update. The whole epoch
    is captured once into CUDA graphs (the batch offsets are constants, or a device-side cursor when
    an epoch is longer than ``max_steps_per_graph`` steps) and replayed; the learning rate lives in
    device memory. Without stream capture the same launches run from Python.

    Calling the program with ``(order, learning_rate)`` runs one epoch and returns its summed cost as
    a new float64 device array ``[over the full batches, over a smaller last batch]``.
    """

    #: Steps baked into one graph; a longer epoch replays a graph of this many steps.
    max_steps_per_graph = 128

    def __init__(self, plan, images, targets, batch_size):
        self.layers, self.loss = [(step, int(step.activation)) for step in plan.steps], int(plan.loss)
        self.images, self.targets = images, targets
        self.dtype = images.dtype
        self.n, self.batch = images.shape[0], min(batch_size, images.shape[0])
        self.kernels = epoch_kernels(self.dtype)
        self._t = _ctype(self.dtype)
        self.outputs = [cupy.empty((self.batch, step.n_out), self.dtype) for step, _ in self.layers]
        self.deltas = [cupy.empty((self.batch, step.n_out), self.dtype) for step, _ in self.layers]
        self.order = cupy.zeros(self.n, numpy.int64)
        self.cursor = cupy.zeros(1, numpy.int64)
        self.total = cupy.zeros(2, numpy.float64)  # [full batches, a smaller last batch]
        self._totals = (self.total[0:1], self.total[1:2])
        self.rate = cupy.zeros((), self.dtype)
        self._rate_value = None
        device = cupy.cuda.Device().id
        self._multiprocessors = int(cupy.cuda.runtime.getDeviceProperties(device)["multiProcessorCount"])
        self._stream, self._parameters = None, None
        self._chunk, self._tail, self._eager, self._repeats = None, None, None, 0
        self.mode = None  # "graph" or "eager" once built

    def __call__(self, order, learning_rate):
        parameters = self._parameter_pointers()
        if parameters != self._parameters:  # first call, or parameter arrays were replaced
            self._build()
            self._parameters = parameters
        if order.shape != (self.n,):
            raise ValueError(f"the epoch needs an order of {self.n} rows, got shape {tuple(order.shape)}.")
        self.order[...] = order
        self.cursor.fill(0)
        self.total.fill(0)
        if learning_rate != self._rate_value:
            self.rate.fill(learning_rate)
            self._rate_value = learning_rate
        if self.mode == "graph":
            for _ in range(self._repeats):
                self._chunk.launch()
            if self._tail is not None:
                self._tail.launch()
        else:
            self._launch(self._eager)
        return self.total.copy()

    # -- building -------------------------------------------------------------------------------

    def _parameter_pointers(self):
        return tuple(
            array.data.ptr if isinstance(array, cupy.ndarray) else id(array)
            for step, _ in self.layers
            for array in (step.weight.value, step.bias.value, step.weight.gradient, step.bias.gradient)
        )

    def _build(self):
        for step, _ in self.layers:
            for array in (step.weight.value, step.bias.value, step.weight.gradient, step.bias.gradient):
                if not (isinstance(array, cupy.ndarray) and array.dtype == self.dtype and array.flags.c_contiguous):
                    raise RuntimeError(
                        f"a dense step ({step.n_in} -> {step.n_out}) no longer holds C-contiguous "
                        f"{self.dtype} CuPy parameters; call train again so that the epoch is compiled "
                        "for the model as it is now."
                    )
        full, part = divmod(self.n, self.batch)
        steps = [(k * self.batch, self.batch) for k in range(full)] + ([(full * self.batch, part)] if part else [])
        if hasattr(cupy.cuda.Stream, "begin_capture") and not cupy.cuda.runtime.is_hip:
            try:
                self._capture_epoch(steps, full)
                self.mode = "graph"
                return
            except Exception as error:  # capture unsupported here: launch the same kernels from Python
                warnings.warn(f"fastprop: CUDA graph capture failed ({error}); the epoch runs launch by launch")
        self._chunk, self._tail, self._repeats = None, None, 0
        self._eager = self._launches(steps)
        self.mode = "eager"

    def _capture_epoch(self, steps, full):
        """Graphs for ``steps``: a chunk of full batches replayed ``_repeats`` times, then the rest."""
        self._chunk, self._tail, self._repeats = None, None, 0
        per = self.max_steps_per_graph
        if len(steps) > per:  # then full >= per
            self._repeats = full // per
            self._chunk = self._capture(self._launches(steps[:per]) + [self._advance(per * self.batch)])
            done = self._repeats * per  # steps run by the chunk; the cursor then stands at their rows
            steps = [(first - done * self.batch, rows) for first, rows in steps[done:]]
        self._tail = self._capture(self._launches(steps)) if steps else None

    def _capture(self, launches):
        if self._stream is None:
            self._stream = cupy.cuda.Stream(non_blocking=True)
        stream = self._stream
        with stream:
            stream.begin_capture()
            try:
                self._launch(launches)
            finally:
                graph = stream.end_capture()
        return graph

    @staticmethod
    def _launch(launches):
        for kernel, grid, block, args in launches:
            kernel(grid, block, args)

    def _advance(self, rows):
        return self.kernels["advance_cursor"], (1,), (1,), (self.cursor, _I64(rows))

    def _tile(self, rows, cols):
        for bm, bn in TILES:
            if _blocks(rows, bm) * _blocks(cols, bn) >= self._multiprocessors:
                return bm, bn
        return TILES[-1]

    def _launches(self, steps):
        launches = []
        for first, rows in steps:
            launches += self._step(_I64(first), rows)
        return launches

    def _step(self, first, rows):
        """The launches of one step on the batch ``order[cursor + first : cursor + first + rows]``."""
        k, t, last = self.kernels, self._t, len(self.layers) - 1
        batch = (self.order, self.cursor, first)
        row_blocks, row_threads = (_blocks(rows, ROWS_PER_BLOCK),), (32 * ROWS_PER_BLOCK,)
        launches, x, gather = [], self.images, 1
        total = self._totals[0 if rows == self.batch else 1]
        for index, (step, act) in enumerate(self.layers):
            n_out, n_in, y, loss = step.n_out, step.n_in, self.outputs[index], self.loss if index == last else 0
            head = (x, *batch, _I32(gather), step.weight.value, step.bias.value, y)
            if n_out <= NARROW_FORWARD[-1]:  # one warp per row, the cost fused in
                kernel = k[f"narrow_forward<{t}, {next(w for w in NARROW_FORWARD if n_out <= w)}>"]
                launches.append((kernel, row_blocks, row_threads, head + (
                    _I64(rows), _I32(n_out), _I64(n_in), _I32(act), _I32(loss), self.targets, self.deltas[index],
                    total)))
            else:
                bm, bn = self._tile(rows, n_out)
                launches.append((k[f"dense_forward<{t}, {bm}, {bn}>"], (_blocks(n_out, bn), _blocks(rows, bm)),
                                 (256,), head + (_I64(rows), _I64(n_out), _I64(n_in), _I32(act))))
                if loss:
                    launches.append((k[f"batch_loss<{t}>"], row_blocks, row_threads, (
                        y, self.targets, *batch, self.deltas[index], _I64(rows), _I64(n_out), _I32(act), _I32(loss),
                        total)))
            x, gather = y, 0
        for index in range(last, -1, -1):
            step, _ = self.layers[index]
            weight, bias = step.weight, step.bias
            n_out, n_in, g = step.n_out, step.n_in, self.deltas[index]
            if index > 0:  # the input gradient first: it needs the weights before their update
                bm, bn = self._tile(rows, n_in)
                launches.append((k[f"dense_backward_input<{t}, {bm}, {bn}>"], (_blocks(n_in, bn), _blocks(rows, bm)),
                                 (256,), (g, weight.value, self.outputs[index - 1], self.deltas[index - 1],
                                          _I64(rows), _I64(n_in), _I64(n_out), _I32(self.layers[index - 1][1]))))
            x, gather = (self.images, 1) if index == 0 else (self.outputs[index - 1], 0)
            head = (g, x, *batch, _I32(gather), weight.value, bias.value, weight.gradient,
                    bias.gradient, self.rate)
            if n_out <= NARROW_UPDATE[-1]:
                kernel = k[f"narrow_update<{t}, {next(w for w in NARROW_UPDATE if n_out <= w)}>"]
                launches.append((kernel, (_blocks(n_in, COLUMNS),), (COLUMNS, SLICES),
                                 head + (_I32(n_out), _I64(n_in), _I64(rows))))
            else:
                bm, bn = self._tile(n_out, n_in)
                launches.append((k[f"dense_update<{t}, {bm}, {bn}>"], (_blocks(n_in, bn), _blocks(n_out, bm)),
                                 (256,), head + (_I64(n_out), _I64(n_in), _I64(rows))))
        return launches
