// Convolution and pooling kernels: what the CuPy backend's conv2d_* and maxpool2d_* methods launch
// around cuBLAS products. Compiled after common.cuh (kernels.py).
//
// Images are channels-last, (n, height, width, channels), C-contiguous; a window is kh x kw pixels
// moved by (sh, sw) over the image padded with (ph, pw) zeros, giving out_h x out_w positions. Each
// kernel is a grid-stride loop over the elements it writes, one thread each: no atomics, and every
// sum is taken in the NumPy reference's order, so results do not vary between runs. Indices are int:
// the caller checks that every array holds fewer than 2**31 elements.

// The convolution's column matrix, (n * out_h * out_w) x (kh * kw * channels): row (i, r, s) holds
// x[i, r * sh + p - ph, s * sw + q - pw, j] at column (p * kw + q) * channels + j, or 0 in the padding.
template <typename T>
__global__ void im2col(const T* __restrict__ x, T* __restrict__ columns, int height, int width,
                       int channels, int out_h, int out_w, int kh, int kw, int sh, int sw, int ph, int pw,
                       long long size) {
    const int row_length = kh * kw * channels;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long index = (long long)blockIdx.x * blockDim.x + threadIdx.x; index < size; index += stride) {
        const int e = (int)index, k = e % row_length, row = e / row_length;
        const int j = k % channels, pq = k / channels, q = pq % kw, p = pq / kw;
        const int s = row % out_w, t = row / out_w, r = t % out_h, i = t / out_h;
        const int h = r * sh + p - ph, w = s * sw + q - pw;
        const bool inside = h >= 0 && h < height && w >= 0 && w < width;
        columns[e] = inside ? x[((i * height + h) * width + w) * channels + j] : T(0);
    }
}

// The adjoint of im2col: dx[i, h, w, j] is the sum of the column entries that read x[i, h, w, j],
// over the kernel places (p, q) in row-major order. dx is (n, height, width, channels).
template <typename T>
__global__ void col2im(const T* __restrict__ columns, T* __restrict__ dx, int height, int width,
                       int channels, int out_h, int out_w, int kh, int kw, int sh, int sw, int ph, int pw,
                       long long size) {
    const int row_length = kh * kw * channels;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long index = (long long)blockIdx.x * blockDim.x + threadIdx.x; index < size; index += stride) {
        const int e = (int)index, j = e % channels, pixel = e / channels;
        const int w = pixel % width + pw, t = pixel / width, h = t % height + ph, i = t / height;
        T sum = T(0);  // (h, w) is now in the padded image: window (r, s) reads it at p = h - r * sh
        for (int p = h % sh; p < kh && p <= h; p += sh) {
            const int r = (h - p) / sh;
            if (r >= out_h) continue;
            for (int q = w % sw; q < kw && q <= w; q += sw) {
                const int s = (w - q) / sw;
                if (s >= out_w) continue;
                sum += columns[((i * out_h + r) * out_w + s) * row_length + (p * kw + q) * channels + j];
            }
        }
        dx[e] = sum;
    }
}

// The convolution's epilogue on its product y (size / cols rows x cols): y += bias, then max(y, 0)
// when relu (NaN stays NaN, as with the reference's maximum).
template <typename T>
__global__ void add_bias(T* __restrict__ y, const T* __restrict__ bias, int cols, int relu, long long size) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long index = (long long)blockIdx.x * blockDim.x + threadIdx.x; index < size; index += stride) {
        const int e = (int)index;
        const T v = y[e] + bias[e % cols];
        y[e] = relu && v < T(0) ? T(0) : v;
    }
}

// Max pooling: y[i, r, s, j] is the maximum of the window at (r * sh, s * sw), argmax its place
// p * kw + q: the first of equal values, and the first NaN, which wins over any number.
template <typename T>
__global__ void maxpool_forward(const T* __restrict__ x, T* __restrict__ y, int* __restrict__ argmax,
                                int height, int width, int channels, int out_h, int out_w, int kh, int kw,
                                int sh, int sw, long long size) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long index = (long long)blockIdx.x * blockDim.x + threadIdx.x; index < size; index += stride) {
        const int e = (int)index, j = e % channels, pixel = e / channels;
        const int s = pixel % out_w, t = pixel / out_w, r = t % out_h, i = t / out_h;
        const T* corner = x + ((i * height + r * sh) * width + s * sw) * channels + j;
        T best = corner[0];
        int place = 0;
        for (int p = 0; p < kh; ++p) {
            for (int q = 0; q < kw; ++q) {
                const T v = corner[(p * width + q) * channels];
                if (v > best || (isnan(v) && !isnan(best))) {
                    best = v;
                    place = p * kw + q;
                }
            }
        }
        y[e] = best;
        argmax[e] = place;
    }
}

// Max pooling's backward: dx[i, h, w, j] is the sum of dy over the windows whose argmax is (h, w),
// taken over the places (p, q) in row-major order (windows may overlap). dx is (n, height, width,
// channels); dy and argmax are (n, out_h, out_w, channels).
template <typename T>
__global__ void maxpool_backward(const int* __restrict__ argmax, const T* __restrict__ dy, T* __restrict__ dx,
                                 int height, int width, int channels, int out_h, int out_w, int kh, int kw,
                                 int sh, int sw, long long size) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long index = (long long)blockIdx.x * blockDim.x + threadIdx.x; index < size; index += stride) {
        const int e = (int)index, j = e % channels, pixel = e / channels;
        const int w = pixel % width, t = pixel / width, h = t % height, i = t / height;
        T sum = T(0);
        for (int p = h % sh; p < kh && p <= h; p += sh) {
            const int r = (h - p) / sh;
            if (r >= out_h) continue;
            for (int q = w % sw; q < kw && q <= w; q += sw) {
                const int s = (w - q) / sw;
                if (s >= out_w) continue;
                const int o = ((i * out_h + r) * out_w + s) * channels + j;
                if (argmax[o] == p * kw + q) sum += dy[o];
            }
        }
        dx[e] = sum;
    }
}
