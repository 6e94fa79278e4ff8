// Device helpers shared by the kernel families: step_kernels.cu, epoch_kernels.cu, conv_kernels.cu,
// norm_kernels.cu.
//
// kernels.cuda_source() compiles each of those files as one source: first the named codes as
// #defines (ACTIVATION_* and LOSS_* from backends/plan.py, SOFTMAX_ROWS_* from kernels.py),
// and the launch shapes, then this file, then the kernels, so that CuPy's kernel cache keys on everything compiled.

// THREADS (threads per block of the one-dimensional kernels), ROWS_PER_BLOCK, COLUMNS and SLICES come
// from kernels.launch_defines(): Python launches with the same numbers.

__device__ __forceinline__ float fp_exp(float x) { return expf(x); }
__device__ __forceinline__ double fp_exp(double x) { return exp(x); }
__device__ __forceinline__ float fp_log(float x) { return logf(x); }
__device__ __forceinline__ double fp_log(double x) { return log(x); }
template <typename T> __device__ __forceinline__ T fp_infinity();
template <> __device__ __forceinline__ float fp_infinity<float>() { return __int_as_float(0x7f800000); }
template <> __device__ __forceinline__ double fp_infinity<double>() {
    return __longlong_as_double(0x7ff0000000000000ll);
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

// The softmax of a row that a warp holds, each lane some of its columns or none, and the row's
// cross-entropy against targets t: the one place this math is written. Three passes over each
// lane's columns; every lane of the warp calls the find_ steps (they shuffle):
//
//     RowSoftmax<T> row(z[0]);                    // any element of the row
//     for each of the lane's columns c: row.see(z[c]);
//     row.find_top();                             // top = max(z)
//     for each of the lane's columns c: row.add(z[c]); row.add_target(t[c]);
//     row.find_sums();                            // sum_e = sum(exp(z - top)), sum_t = sum(t)
//     for each of the lane's columns c: row.cross_entropy(z[c], t[c]), row.gradient(...), ...
//
// A lane without a column may instead hold z = -infinity with t = 0, which adds nothing.
template <typename T> struct RowSoftmax {
    T top, sum_t = T(0), sum_e = T(0), log_sum = T(0);

    __device__ __forceinline__ explicit RowSoftmax(T start) : top(start) {}
    __device__ __forceinline__ void see(const T& z) { top = z > top ? z : top; }
    __device__ __forceinline__ void find_top() { top = warp_max(top); }
    __device__ __forceinline__ void add(T z) { sum_e += fp_exp(z - top); }
    __device__ __forceinline__ void add_target(T t) { sum_t += t; }
    __device__ __forceinline__ void find_sums() {
        sum_e = warp_sum(sum_e);
        sum_t = warp_sum(sum_t);
        log_sum = fp_log(sum_e);
    }

    // -t log softmax(z): one column's cross-entropy.
    __device__ __forceinline__ T cross_entropy(T z, T t) const { return -t * ((z - top) - log_sum); }
    __device__ __forceinline__ T probability(T z) const { return fp_exp(z - top) / sum_e; }
    // softmax(z) sum(t) - t: one column of the summed cross-entropy's gradient.
    __device__ __forceinline__ T gradient(T z, T t) const { return probability(z) * sum_t - t; }
};
