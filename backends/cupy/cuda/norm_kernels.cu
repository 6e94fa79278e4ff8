// Batch-normalisation kernels: what the CuPy backend's batch_norm_forward and batch_norm_backward
// launch, on x and dy (rows x cols, row-major, C-contiguous), one set of statistics per column.
// Compiled after common.cuh (kernels.py).
//
// The column sums take the same order on every run and every device, with no atomics: the rows are
// cut into chunks of CHUNK_ROWS; the block (32, NORM_SLICES) at (column group, chunk) has each thread
// sum one column over every NORM_SLICES-th row of the chunk, then adds the slices in a fixed tree in
// shared memory and writes the chunk's sums (chunk_sums); one thread per column then adds the chunks
// in chunk order (norm_statistics, norm_gradient_sums). Sums are taken in double for float too, so a
// float32 batch of many rows loses nothing to the order. The variance comes from one pass, as
// sum(d^2) / rows - (sum(d) / rows)^2 with d = x - x[0] (the column's first row): the shift keeps the
// two terms from cancelling for data far from zero, and double keeps what remains below float32's
// rounding and near float64's, without a second read of x.

#define NORM_SLICES (THREADS / 32)
static_assert(NORM_SLICES > 0 && (NORM_SLICES & (NORM_SLICES - 1)) == 0, "the tree halves NORM_SLICES");

// The block's values a and b (thread (column tx, slice ty)) summed over the slices, halving in a fixed
// tree, and written to partial[chunk = blockIdx.y] as (sum of a, sum of b) for column c. sums is the
// kernel's shared array. Every thread of the block calls this (it synchronizes).
__device__ __forceinline__ void store_chunk_sums(double (*sums)[NORM_SLICES][33], double a, double b,
                                                 double* __restrict__ partial, long long c, long long cols) {
    const int tx = threadIdx.x, ty = threadIdx.y;
    sums[0][ty][tx] = a;
    sums[1][ty][tx] = b;
    __syncthreads();
    for (int half = NORM_SLICES / 2; half > 0; half >>= 1) {
        if (ty < half) {
            sums[0][ty][tx] += sums[0][ty + half][tx];
            sums[1][ty][tx] += sums[1][ty + half][tx];
        }
        __syncthreads();
    }
    if (ty == 0 && c < cols) {
        double* out = partial + (long long)blockIdx.y * 2 * cols;
        out[c] = sums[0][0][tx];
        out[cols + c] = sums[1][0][tx];
    }
}

// Column c's two sums over the chunks of partial (chunks x 2 x cols), added in chunk order.
__device__ __forceinline__ void add_chunks(const double* __restrict__ partial, long long c, long long cols,
                                           long long chunks, double& a, double& b) {
    a = 0.0;
    b = 0.0;
    for (long long k = 0; k < chunks; ++k) {
        a += partial[2 * k * cols + c];
        b += partial[(2 * k + 1) * cols + c];
    }
}

// The chunk's sums of d = x - x[0] and of d^2 per column: partial is chunks x 2 x cols.
template <typename T>
__global__ void __launch_bounds__(THREADS) norm_chunk_sums(const T* __restrict__ x, double* __restrict__ partial,
                                                           long long rows, long long cols) {
    __shared__ double sums[2][NORM_SLICES][33];
    const long long c = (long long)blockIdx.x * 32 + threadIdx.x, first = (long long)blockIdx.y * CHUNK_ROWS;
    const long long last = min(rows, first + CHUNK_ROWS);
    double a = 0.0, b = 0.0;
    if (c < cols) {
        const double shift = (double)x[c];
        for (long long r = first + threadIdx.y; r < last; r += NORM_SLICES) {
            const double d = (double)x[r * cols + c] - shift;
            a += d;
            b += d * d;
        }
    }
    store_chunk_sums(sums, a, b, partial, c, cols);
}

// Per column: mu and inverse_std = 1 / sqrt(v + eps). In training mu and v are the batch's mean and
// biased variance from the chunks' sums (added in chunk order), and the running mean and var move
// towards them in place (var towards the unbiased v * rows / (rows - 1)); otherwise they are the
// running mean and var, and partial is not read.
template <typename T>
__global__ void norm_statistics(const T* __restrict__ x, const double* __restrict__ partial, T* __restrict__ mean,
                                T* __restrict__ var, T* __restrict__ mu, T* __restrict__ inverse_std,
                                long long rows, long long cols, long long chunks, int training,
                                double momentum, double eps) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long c = (long long)blockIdx.x * blockDim.x + threadIdx.x; c < cols; c += stride) {
        double m, v;
        if (training) {
            double a, b;
            add_chunks(partial, c, cols, chunks, a, b);
            const double centered = a / (double)rows;
            v = b / (double)rows - centered * centered;
            v = v < 0.0 ? 0.0 : v;  // rounding may leave a constant column a little below zero; NaN stays
            m = (double)x[c] + centered;
            mean[c] = T((1.0 - momentum) * (double)mean[c] + momentum * m);
            var[c] = T((1.0 - momentum) * (double)var[c] + momentum * (double)rows / (double)(rows - 1) * v);
        } else {
            m = (double)mean[c];
            v = (double)var[c];
        }
        mu[c] = T(m);
        inverse_std[c] = T(1.0 / sqrt(v + eps));
    }
}

// y = (x - mu) * (inverse_std * gamma) + beta per column, then max(y, 0) when relu (NaN stays NaN).
template <typename T>
__global__ void norm_affine(const T* __restrict__ x, const T* __restrict__ mu, const T* __restrict__ inverse_std,
                            const T* __restrict__ gamma, const T* __restrict__ beta, T* __restrict__ y,
                            long long cols, long long size, int relu) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < size; e += stride) {
        const long long c = e % cols;
        const T v = (x[e] - mu[c]) * (inverse_std[c] * gamma[c]) + beta[c];
        y[e] = relu && v < T(0) ? T(0) : v;
    }
}

// The output gradient that reaches the batch norm: dy, or 0 where a fused ReLU's output is not positive.
template <typename T>
__device__ __forceinline__ T passed_gradient(const T* __restrict__ dy, const T* __restrict__ relu_output,
                                             int relu, long long e) {
    return relu && !(relu_output[e] > T(0)) ? T(0) : dy[e];
}

// The chunk's sums of g and of g * x_hat per column, x_hat = (x - mu) * inverse_std and g the gradient
// passed_gradient gives (relu_output is read only when relu): partial is chunks x 2 x cols.
template <typename T>
__global__ void __launch_bounds__(THREADS) norm_gradient_chunk_sums(
        const T* __restrict__ x, const T* __restrict__ mu, const T* __restrict__ inverse_std,
        const T* __restrict__ dy, const T* __restrict__ relu_output, int relu, double* __restrict__ partial,
        long long rows, long long cols) {
    __shared__ double sums[2][NORM_SLICES][33];
    const long long c = (long long)blockIdx.x * 32 + threadIdx.x, first = (long long)blockIdx.y * CHUNK_ROWS;
    const long long last = min(rows, first + CHUNK_ROWS);
    double a = 0.0, b = 0.0;
    if (c < cols) {
        const double center = (double)mu[c], scale = (double)inverse_std[c];
        for (long long r = first + threadIdx.y; r < last; r += NORM_SLICES) {
            const long long e = r * cols + c;
            const double g = (double)passed_gradient(dy, relu_output, relu, e);
            a += g;
            b += g * (((double)x[e] - center) * scale);
        }
    }
    store_chunk_sums(sums, a, b, partial, c, cols);
}

// Per column, the chunks' sums added in chunk order: dbeta = sum(g) and dgamma = sum(g * x_hat),
// written or (accumulate) added; means[0][c] and means[1][c] their means over the rows, for
// norm_input_gradient. means is 2 x cols.
template <typename T>
__global__ void norm_gradient_sums(const double* __restrict__ partial, T* __restrict__ dgamma,
                                   T* __restrict__ dbeta, T* __restrict__ means, long long rows, long long cols,
                                   long long chunks, int accumulate) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long c = (long long)blockIdx.x * blockDim.x + threadIdx.x; c < cols; c += stride) {
        double a, b;
        add_chunks(partial, c, cols, chunks, a, b);
        dbeta[c] = accumulate ? dbeta[c] + T(a) : T(a);
        dgamma[c] = accumulate ? dgamma[c] + T(b) : T(b);
        means[c] = T(a / (double)rows);
        means[cols + c] = T(b / (double)rows);
    }
}

// dx = gamma * inverse_std * (g - mean(g) - x_hat * mean(g * x_hat)) per column in training, where the
// batch statistics depend on x; dx = gamma * inverse_std * g otherwise (means is not read).
template <typename T>
__global__ void norm_input_gradient(const T* __restrict__ x, const T* __restrict__ mu,
                                    const T* __restrict__ inverse_std, const T* __restrict__ gamma,
                                    const T* __restrict__ dy, const T* __restrict__ relu_output, int relu,
                                    const T* __restrict__ means, T* __restrict__ dx, long long cols,
                                    long long size, int training) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < size; e += stride) {
        const long long c = e % cols;
        const T g = passed_gradient(dy, relu_output, relu, e), scale = gamma[c] * inverse_std[c];
        if (training) {
            const T x_hat = (x[e] - mu[c]) * inverse_std[c];
            dx[e] = scale * (g - means[c] - x_hat * means[cols + c]);
        } else {
            dx[e] = g * scale;
        }
    }
}
