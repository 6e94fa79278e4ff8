// Epoch kernels: the kernels of kernels.EpochProgram, a whole training step without cuBLAS.
// Tiled matrix products with fused epilogues, warp-per-row kernels for layers with few outputs, the
// last of them fused with the cost. Compiled after common.cuh and backends/plan.py's ACTIVATION_*
// and LOSS_* codes (kernels.py); a loss argument of 0 means that no loss is fused.

enum { BK = 16 };  // tile depth (the (COLUMNS, SLICES) block of narrow_update is #defined by the loader)

// y from z for an ACTIVATION_* code.
template <typename T> __device__ __forceinline__ T activate(T z, int act) {
    if (act == ACTIVATION_SIGMOID) return T(1) / (T(1) + fp_exp(-z));
    if (act == ACTIVATION_RELU) return z < T(0) ? T(0) : z;
    return z;
}

// dL/dz from dL/dy and the activation's output y, in the reference backend's order of operations.
template <typename T> __device__ __forceinline__ T apply_slope(T g, T y, int act) {
    if (act == ACTIVATION_SIGMOID) return g * y * (T(1) - y);
    if (act == ACTIVATION_RELU) return g * (y > T(0) ? T(1) : T(0));
    return g;
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
// dense_forward. With a loss (LOSS_SQUARED_ERROR or LOSS_SOFTMAX_CROSS_ENTROPY) it also writes
// D = dL/dz for the batch's targets (rows of the training targets through the batch order) and adds
// the batch's cost to *total.
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
            if (loss == LOSS_SQUARED_ERROR) {
                const T d = t - y;
                if (live) cost = (double)(d * d * T(0.5));
                g = y - t;
            } else {  // lane j holds column j; the lanes past the row hold -infinity (and t = 0)
                const T column = live ? y : -fp_infinity<T>();
                RowSoftmax<T> row(column);
                row.find_top();
                row.add(column);
                row.add_target(t);
                row.find_sums();
                if (live) cost = (double)row.cross_entropy(column, t);
                g = row.gradient(column, t);
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
        if (loss == LOSS_SQUARED_ERROR) {
            for (long long c = lane; c < N; c += 32) {
                const T diff = t[c] - y[c];
                cost += (double)(diff * diff * T(0.5));
                d[c] = apply_slope(y[c] - t[c], y[c], act);
            }
        } else {
            RowSoftmax<T> row(y[0]);
            for (long long c = lane; c < N; c += 32) row.see(y[c]);
            row.find_top();
            for (long long c = lane; c < N; c += 32) {
                row.add(y[c]);
                row.add_target(t[c]);
            }
            row.find_sums();
            for (long long c = lane; c < N; c += 32) {
                const T z = y[c], target = t[c];
                cost += (double)row.cross_entropy(z, target);
                d[c] = apply_slope(row.gradient(z, target), z, act);
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
