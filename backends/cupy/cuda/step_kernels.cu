// Step kernels: what the CuPy backend's contract methods launch around cuBLAS products, one call
// at a time. Compiled after common.cuh and the SOFTMAX_ROWS_* modes (kernels.py).

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

// Row-wise softmax family, one warp per row of z (rows x cols, cols >= 1). By mode:
// SOFTMAX_ROWS_CROSS_ENTROPY writes -t * log_softmax(z), SOFTMAX_ROWS_GRADIENT softmax(z) * sum(t) - t,
// SOFTMAX_ROWS_PROBABILITIES softmax(z) (t unused).
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
    RowSoftmax<T> row(zr[0]);
    for (long long c = lane; c < cols; c += 32) row.see(zr[c]);
    row.find_top();
    for (long long c = lane; c < cols; c += 32) {
        row.add(zr[c]);
        if (mode == SOFTMAX_ROWS_GRADIENT) row.add_target(tr[c]);
    }
    row.find_sums();
    for (long long c = lane; c < cols; c += 32) {
        const T zc = zr[c];
        if (mode == SOFTMAX_ROWS_CROSS_ENTROPY) o[c] = row.cross_entropy(zc, tr[c]);
        else if (mode == SOFTMAX_ROWS_GRADIENT) o[c] = row.gradient(zc, tr[c]);
        else o[c] = row.probability(zc);
    }
}
