"""The Numba backend beyond the contract (``test_contract.py`` checks every override against the
reference): determinism, fallbacks, gradients, training and the whole-epoch kernel."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy
import pytest

from fastprop.lowering import lower

numba = pytest.importorskip("numba", reason="numba is not installed (pip install 'fastprop[numba]')")

import fastprop  # noqa: E402
from fastprop import Linear, MeanSquareError, Network, ReLU, Sigmoid, SoftmaxCrossEntropy  # noqa: E402
from fastprop.backends import Backend, BackendUnavailableError, blas, blas_spin, load_backend  # noqa: E402
from fastprop.backends.numba import backend as numba_backend  # noqa: E402
from tests.conftest import relative_error  # noqa: E402
from tests.helpers import on_one_and_two_threads  # noqa: E402

REFERENCE = Backend()
TOLERANCE = {numpy.float32: 1e-5, numpy.float64: 1e-10}
DTYPES = pytest.mark.parametrize("dtype", [numpy.float32, numpy.float64])


@pytest.fixture(scope="module")
def backend():
    return load_backend("numba")


def _layer(rng, n, n_in, n_out, dtype):
    """``x, W, b``, a sigmoid output ``p``, an upstream gradient and filled gradient buffers."""
    arrays = (rng.random((n, n_in)), rng.normal(0, 0.1, (n_out, n_in)), rng.normal(0, 0.1, (1, n_out)),
              rng.random((n, n_out)), rng.normal(size=(n, n_out)), rng.normal(size=(n_out, n_in)),
              rng.normal(size=(1, n_out)))
    return [a.astype(dtype) for a in arrays]


def _assert_close(result, expected, dtype):
    assert result.dtype == dtype
    assert relative_error(result, expected) <= TOLERANCE[dtype]


def _all_outputs(backend, dtype, n=1000):
    """Every kernel's output for one fixed set of inputs, as host arrays."""
    x, W, b, p, g, dW, db = _layer(numpy.random.default_rng(9), n, 784, 10, dtype)
    outputs = [*backend.linear_sigmoid_forward(x, W, b), backend.linear_forward(x, W, b)]
    for accumulate in (True, False):
        grads = dW.copy(), db.copy()
        outputs += [backend.linear_sigmoid_backward(x, W, p, g, *grads, accumulate=accumulate), *grads]
    outputs.append(backend.take_rows(x, numpy.random.default_rng(1).permutation(n)))
    # a wide layer: the BLAS products (on oneMKL, one block of rows per thread) and the passes around them
    x, W, b, _, _, dW, _ = _layer(numpy.random.default_rng(10), n, 300, numba_backend.SMALL_LAYER + 40, dtype)
    y = backend.linear_relu_forward(x, W, b)
    dy = numpy.random.default_rng(11).normal(size=y.shape).astype(dtype)
    outputs += [y, backend.linear_forward(x, W, b)]
    for accumulate in (True, False):
        grads = dW.copy(), b.copy()
        outputs += [backend.linear_relu_backward(x, W, y, dy, *grads, accumulate=accumulate), *grads]
        outputs += [backend.linear_backward(x, W, dy, *grads, accumulate=accumulate), *grads]
    # a convolution with a column matrix: chunks of images, each made and multiplied on one thread
    rng = numpy.random.default_rng(12)
    images = rng.random((37, 9, 11, 8)).astype(dtype)
    K = 12
    W, b = rng.normal(size=(K, 8, 3, 3)).astype(dtype), rng.normal(size=(1, K)).astype(dtype)
    y = backend.conv2d_forward(images, W, b, (1, 1), (1, 1), relu=True)
    dy = rng.normal(size=y.shape).astype(dtype)
    for accumulate in (True, False):
        grads = numpy.ones_like(W), numpy.ones_like(b)
        outputs += [backend.conv2d_backward(images, W, y, dy, *grads, (1, 1), (1, 1), relu=True,
                                            accumulate=accumulate), *grads]
    # the same convolution with its ReLU and a max pooling fused into each chunk
    window = (1, 1), (1, 1), (2, 2), (2, 2)
    pooled, argmax = backend.conv2d_relu_maxpool_forward(images, W, b, *window)
    d_pooled = rng.normal(size=pooled.shape).astype(dtype)
    grads = numpy.ones_like(W), numpy.ones_like(b)
    outputs += [pooled, argmax, backend.conv2d_relu_maxpool_backward(images, W, pooled, argmax, d_pooled,
                                                                     *grads, *window), *grads]
    # a direct convolution (few inputs per output) with its pooling, chunks of 8 images on each thread
    W, b = rng.normal(size=(40, 2, 3, 3)).astype(dtype), rng.normal(size=(1, 40)).astype(dtype)
    pooled, argmax = backend.conv2d_relu_maxpool_forward(images[..., :2].copy(), W, b, *window)
    d_pooled = rng.normal(size=pooled.shape).astype(dtype)
    outputs += [pooled, argmax]
    for need_dx in (True, False):
        grads = numpy.ones_like(W), numpy.ones_like(b)
        dx = backend.conv2d_relu_maxpool_backward(images[..., :2].copy(), W, pooled, argmax, d_pooled, *grads,
                                                  *window, need_dx=need_dx)
        outputs += [*grads] + ([dx] if need_dx else [])
    return [y, *outputs]


@DTYPES
def test_results_are_the_same_bits_every_run(backend, dtype):
    for first, second in zip(_all_outputs(backend, dtype), _all_outputs(backend, dtype)):
        assert numpy.array_equal(first, second)


@DTYPES
def test_results_do_not_depend_on_the_thread_count(backend, dtype):
    one, two = on_one_and_two_threads(lambda: _all_outputs(backend, dtype))
    for first, second in zip(one, two):
        assert numpy.array_equal(first, second)


def test_non_float_inputs_fall_back_to_the_reference_and_keep_their_dtype(backend):
    integers = numpy.arange(-6, 6).reshape(3, 4)
    assert numpy.array_equal(backend.relu(integers), REFERENCE.relu(integers))
    assert backend.relu(integers).dtype == integers.dtype


MODELS = {
    "linear+sigmoid": (lambda: [Linear(6, 5), Sigmoid(), Linear(5, 3), Sigmoid()], MeanSquareError),
    "relu": (lambda: [Linear(6, 5), ReLU(), Linear(5, 4), ReLU(), Linear(4, 3)], SoftmaxCrossEntropy),
    "wide sigmoid (BLAS path)": (lambda: [Linear(6, 40), Sigmoid(), Linear(40, 3)], SoftmaxCrossEntropy),
}


@pytest.mark.parametrize("model", MODELS)
def test_networks_pass_gradcheck(model):
    layers, cost = MODELS[model]
    rng = numpy.random.default_rng(6)
    fastprop.seed(2)  # weights that keep every ReLU input away from its kink at 0
    with fastprop.use_backend("numba", dtype="float64"):
        net = Network(layers())
    x, target = rng.normal(size=(9, 6)), numpy.eye(3)[rng.integers(0, 3, 9)]
    result = fastprop.gradcheck(net, cost(), x, target, max_entries=40)
    assert result.passed(1e-6), f"{model}:\n{result}"


def _train(name, data):
    fastprop.seed(0)
    with fastprop.use_backend(name, dtype="float32"):
        net = Network([Linear(784, 10), Sigmoid()])
    initial = [parameter.value.copy() for parameter in net.parameters()]
    history = fastprop.train(net, MeanSquareError(), 2, 600, 1e-3, data=data, quiet=True, verbose=False)
    return initial, history


def test_training_matches_the_numpy_backend():
    rng = numpy.random.default_rng(7)
    labels = rng.integers(0, 10, 1800)
    images = rng.random((1800, 784)) * 0.3
    for k in range(10):
        images[labels == k, 70 * k : 70 * k + 40] += 0.7
    targets = numpy.eye(10)[labels]
    data = images[:1500], targets[:1500], images[1500:], targets[1500:]  # 1,500 rows: a partial batch
    reference_initial, reference = _train("numpy", data)
    initial, history = _train("numba", data)
    for ours, theirs in zip(initial, reference_initial):
        assert numpy.array_equal(ours, theirs)
    assert relative_error(history.cost, reference.cost) <= 1e-5
    assert numpy.abs(numpy.subtract(history.accuracy, reference.accuracy)).max() <= 1 / 300
    assert history.accuracy[-1] > 0.5  # it learned, so the comparison is not between two failures


def test_is_available_and_warms_up(backend):
    status = fastprop.available_backends()["numba"]
    assert status.available and status.device == "cpu" and status.version.startswith("numba")
    for dtype in (numpy.float32, numpy.float64):
        seconds = backend.warmup(dtype)
        assert isinstance(seconds, float) and seconds >= 0
    assert backend.info()["threads"] == numba.get_num_threads()


def test_missing_numba_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "numba", None)
    with pytest.raises(BackendUnavailableError, match=r"pip install 'fastprop\[numba\]'"):
        numba_backend.create()


@pytest.mark.parametrize("short_spin", [False, True])
def test_kernels_run_on_one_thread_while_blas_threads_spin(backend, monkeypatch, short_spin):
    monkeypatch.setattr(blas_spin, "SHORT", short_spin)
    monkeypatch.setattr(backend, "_products", blas.NumpyProducts())  # OpenBLAS's spin is the case here
    x, W, b, *_ = _layer(numpy.random.default_rng(8), 50, 20, numba_backend.SMALL_LAYER + 1, numpy.float64)
    narrow = W[:3].copy(), b[:, :3].copy()
    backend.linear_forward(x, W, b)  # compiled (or loaded) first: a compile takes longer than the spin
    backend.linear_sigmoid_forward(x, *narrow)
    monkeypatch.setattr(backend, "_blas_until", 0.0)
    backend.linear_forward(x, W, b)  # a wide layer: a BLAS product
    calls, saved = [], numba.get_num_threads()
    monkeypatch.setattr(numba, "set_num_threads", lambda n: calls.append(n))
    expected = REFERENCE.linear_sigmoid_forward(x, *narrow)
    for result, reference in zip(backend.linear_sigmoid_forward(x, *narrow), expected, strict=True):
        _assert_close(result, reference, numpy.float64)
    assert calls == ([] if short_spin else [1, saved])  # with a short spin, every thread at once


@pytest.mark.slow
@pytest.mark.parametrize("script, expected", [
    ("import fastprop", "4 True"),  # fastprop first: it sets the short spin
    ("import numpy, fastprop", "None False"),  # NumPy first: OpenBLAS has read its default already
])
def test_fastprop_imported_before_numpy_shortens_the_blas_spin(script, expected, monkeypatch):
    monkeypatch.delenv("OPENBLAS_THREAD_TIMEOUT", raising=False)
    code = (f"{script}; import os; from fastprop.backends import blas_spin; "
            "print(os.environ.get('OPENBLAS_THREAD_TIMEOUT'), blas_spin.SHORT)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.split() == expected.split()


@pytest.mark.slow
def test_a_spin_the_user_chose_is_kept(monkeypatch):
    monkeypatch.setenv("OPENBLAS_THREAD_TIMEOUT", "28")
    code = ("import fastprop, os; from fastprop.backends import blas_spin; "
            "print(os.environ['OPENBLAS_THREAD_TIMEOUT'], blas_spin.SHORT)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.split() == ["28", "False"]


FORKED_CHILD = """
import multiprocessing, numpy, fastprop
fastprop.set_backend("numba")
layer = fastprop.Linear(300, 200)
x = numpy.random.default_rng(0).random((400, 300))
def step(queue):
    out = layer.forward(x)
    layer.backward(numpy.ones_like(out))
    queue.put(float(out.sum()))
parent = multiprocessing.Queue()
step(parent)
context = multiprocessing.get_context("fork")
queue = context.Queue()
child = context.Process(target=step, args=(queue,))
child.start()
child.join(60)
if child.exitcode is None:
    child.kill()
print(child.exitcode, parent.get() == queue.get(timeout=5) if child.exitcode == 0 else "hung")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork() as Linux does it")
def test_a_forked_process_trains_after_its_parent_did():
    # A wide layer's products in the parent, then in a forked child: GNU OpenMP's threads do not survive
    # fork(), so products on oneMKL's own OpenMP threads hung here.
    run = subprocess.run([sys.executable, "-c", FORKED_CHILD], capture_output=True, text=True, timeout=120)
    assert run.stdout.split() == ["0", "True"], run.stderr


def _w1(dtype, rng=0):
    with fastprop.use_backend("numba", dtype=dtype):
        return Network([Linear(784, 10, rng=rng), Sigmoid()])


def _w1_data(n, dtype, seed=3, pixels=False):
    """Random W1 data: floats in [0, 1), or (``pixels``) 8-bit pixels / 255 as the loaders give."""
    rng = numpy.random.default_rng(seed)
    if pixels:
        images = rng.integers(0, 256, (n, 784), dtype=numpy.uint8).astype(dtype) / dtype(255)
    else:
        images = rng.random((n, 784)).astype(dtype)
    return images, numpy.eye(10, dtype=dtype)[rng.integers(0, 10, n)]


def test_whole_epoch_kernel_is_offered_only_for_the_notebooks_network():
    backend = load_backend("numba")
    images, targets = _w1_data(50, numpy.float32)
    assert backend.compile_epoch(lower(_w1("float32"), MeanSquareError()), images, targets, 20) is not None
    mean = MeanSquareError(reduction="mean")
    assert backend.compile_epoch(lower(_w1("float32"), mean), images, targets, 20) is None
    assert backend.compile_epoch(lower(_w1("float32"), SoftmaxCrossEntropy()), images, targets, 20) is None
    with fastprop.use_backend("numba"):
        relu = Network([Linear(784, 10), ReLU()])
    assert backend.compile_epoch(lower(relu, MeanSquareError()), images, targets, 20) is None


@pytest.mark.parametrize("pixels", [False, True], ids=["floats", "pixels"])
@pytest.mark.parametrize("dtype, tolerance", [(numpy.float64, 1e-12), (numpy.float32, 2e-5)])
@pytest.mark.parametrize("n, n_in, n_out, batch", [(1001, 784, 10, 300), (203, 13, 7, 67), (9, 5, 1, 4)])
def test_whole_epoch_kernel_matches_the_step_loop(dtype, tolerance, pixels, n, n_in, n_out, batch):
    """Full and partial batches, odd layer shapes (clamped output blocks), uint8 codes or floats."""
    backend = load_backend("numba")
    rng = numpy.random.default_rng(1)
    if pixels:
        images = rng.integers(0, 256, (n, n_in), dtype=numpy.uint8).astype(dtype) / dtype(255)
    else:
        images = rng.random((n, n_in)).astype(dtype)
    targets = numpy.eye(n_out, dtype=dtype)[rng.integers(0, n_out, n)]
    order = rng.permutation(n)
    with fastprop.use_backend("numba", dtype=dtype):
        fast, steps = (Network([Linear(n_in, n_out, rng=0), Sigmoid()]) for _ in range(2))
    costs = backend.compile_epoch(lower(fast, MeanSquareError()), images, targets, batch)(order, 1e-3)
    assert isinstance(costs, numpy.ndarray) and costs.dtype == numpy.float64 and costs.shape == (2,)
    expected = numpy.zeros(2)  # [summed over the batches of the first one's size, over a shorter last batch]
    cost_function = MeanSquareError()
    for start in range(0, n, batch):
        index = order[start : start + batch]
        steps.zero_gradients()
        p = steps.forward(images[index])
        cost = cost_function.estimate(targets[index], p)
        expected[0 if len(index) == batch else 1] += float(cost.sum(dtype=numpy.float64))
        steps.backward(cost_function.gradient(cost))
        steps.update_parameters(1e-3)
    assert (n % batch == 0) == (expected[1] == 0)  # the shapes above have a shorter last batch
    assert costs[0] == pytest.approx(expected[0], rel=tolerance)
    assert costs[1] == pytest.approx(expected[1], rel=tolerance)
    for a, b in zip(fast.parameters(), steps.parameters()):
        assert relative_error(a.value, b.value) <= tolerance
        assert relative_error(a.gradient, b.gradient) <= 10 * tolerance  # the last batch's gradients


@pytest.mark.parametrize("pixels", [False, True], ids=["floats", "pixels"])
def test_whole_epoch_kernel_is_deterministic_across_thread_counts(pixels):
    backend = load_backend("numba")
    images, targets = _w1_data(700, numpy.float32, pixels=pixels)
    order = numpy.random.default_rng(2).permutation(len(images))
    saved, results = numba.get_num_threads(), []
    try:
        for threads in (1, saved, 1):
            numba.set_num_threads(threads)
            net = _w1("float32")
            costs = backend.compile_epoch(lower(net, MeanSquareError()), images, targets, 128)(order, 1e-2)
            results.append((costs.copy(), net.layers[0].w.copy(), net.layers[0].b.copy()))
    finally:
        numba.set_num_threads(saved)
    assert results[0][0][0] > 0 and results[0][0][1] > 0  # 700 rows in batches of 128: a shorter last batch
    for costs, weights, bias in results[1:]:
        assert numpy.array_equal(costs, results[0][0])
        assert numpy.array_equal(weights, results[0][1]) and numpy.array_equal(bias, results[0][2])


@DTYPES
def test_pixel_images_are_encoded_exactly_and_anything_else_is_refused(backend, dtype):
    rng = numpy.random.default_rng(4)
    pixels = rng.integers(0, 256, (37, 29), dtype=numpy.uint8)
    pixels[0, :2] = 0, 255  # both ends of the range
    images, codes = pixels.astype(dtype) / dtype(255), numpy.empty(pixels.shape, numpy.uint8)
    assert backend.kernels.encode_pixels(images, numba_backend.PIXEL_LEVELS, codes)
    assert numpy.array_equal(codes, pixels)
    one_ulp_up = numpy.nextafter(images[5, 7], dtype(2), dtype=dtype)
    outside = dtype(-1) / dtype(255), dtype(256) / dtype(255)
    for bad in (one_ulp_up, numpy.nan, numpy.inf, *outside, dtype(0.5)):
        spoiled = images.copy()
        spoiled[5, 7] = bad
        assert not backend.kernels.encode_pixels(spoiled, numba_backend.PIXEL_LEVELS, codes), bad


def test_whole_epoch_kernel_reads_pixel_images_as_uint8_codes(backend, monkeypatch):
    seen = []
    kernel = backend.kernels.sigmoid_mse_epoch
    monkeypatch.setattr(backend.kernels, "sigmoid_mse_epoch",
                        lambda images, *rest: seen.append(images.dtype) or kernel(images, *rest))
    order = numpy.arange(40)
    for pixels in (True, False):
        images, targets = _w1_data(40, numpy.float32, pixels=pixels)
        backend.compile_epoch(lower(_w1("float32"), MeanSquareError()), images, targets, 16)(order, 1e-3)
    assert seen == [numpy.uint8, numpy.float32]


@DTYPES
def test_vectorizable_sigmoid_is_accurate_everywhere_and_keeps_nan(backend, dtype):
    kernels = backend.kernels

    @numba.njit
    def apply(z, out):
        for i in range(z.shape[0]):
            out[i] = kernels._sigmoid(z[i])

    z = numpy.concatenate([numpy.linspace(-800, 800, 40001), numpy.linspace(-30, 30, 60001),
                           [0.0, -0.0, numpy.inf, -numpy.inf, numpy.nan]]).astype(dtype)
    out = numpy.empty_like(z)
    apply(z, out)
    with numpy.errstate(over="ignore"):
        exact = 1 / (1 + numpy.exp(-z.astype(numpy.float64)))
    finite, tiny = ~numpy.isnan(z), numpy.finfo(dtype).tiny
    error = numpy.abs(out[finite] - exact[finite])
    normal = exact[finite] >= tiny  # below it the result is subnormal or 0: judged in absolute terms
    assert (error[normal] / exact[finite][normal]).max() <= (3e-7 if dtype == numpy.float32 else 2e-15)
    # float32: 2.5 ulp above; NumPy's own float32 sigmoid is off by 2.3e-7
    assert error[~normal].max() <= tiny
    assert out[-5] == 0.5 and out[-3] == 1 and out[-2] == 0 and numpy.isnan(out[-1])
    assert out.dtype == dtype and ((out >= 0) & (out <= 1))[finite].all()


def test_work_arrays_are_kept_per_thread_name_and_shape_and_bounded():
    """A method's work arrays come back for the same name, shape and dtype on the same Python thread (no
    fresh memory each step), never under another name (two buffers of one call must not share memory
    when their shapes agree), never to another thread, and only the last ``WORK_ARRAYS`` are kept."""
    import threading

    backend = numba_backend.create()
    first = backend._work_array("columns", (3, 4), numpy.float32)
    assert backend._work_array("columns", (3, 4), numpy.float32) is first
    assert backend._work_array("d_columns", (3, 4), numpy.float32) is not first
    assert backend._work_array("columns", (3, 4), numpy.float64) is not first
    other = []

    def work():
        other.append(backend._work_array("columns", (3, 4), numpy.float32))

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert other[0] is not first and other[0].shape == (3, 4)
    for rows in range(numba_backend.WORK_ARRAYS):
        backend._work_array("columns", (rows + 10, 4), numpy.float32)
    assert backend._work_array("columns", (3, 4), numpy.float32) is not first  # the oldest was let go
    assert len(backend._local.kept) == numba_backend.WORK_ARRAYS


@pytest.mark.parametrize("image, K", [((28, 28, 1), 32), ((14, 14, 32), 64)], ids=["direct", "products"])
@pytest.mark.parametrize("need_dx", [True, False], ids=["dx", "no dx"])
@pytest.mark.parametrize("pooled", [True, False], ids=["with pooling", "alone"])
def test_reused_work_arrays_carry_nothing_from_one_call_to_the_next(backend, image, K, need_dx, pooled):
    """The convolutions' buffers are reused between calls: a batch gives the same bits before and after
    another batch of other values ran through them, and the same as a backend that is new."""
    rng = numpy.random.default_rng(4)
    window = ((1, 1), (1, 1), (2, 2), (2, 2)) if pooled else ((1, 1), (1, 1))

    def step(on, x, W, b, dy):
        dW, db = numpy.zeros_like(W), numpy.zeros_like(b)
        if pooled:
            y, argmax = on.conv2d_relu_maxpool_forward(x, W, b, *window)
            dx = on.conv2d_relu_maxpool_backward(x, W, y, argmax, dy, dW, db, *window, need_dx=need_dx)
            return [a for a in (y, argmax, dW, db, dx) if a is not None]
        y = on.conv2d_forward(x, W, b, *window, relu=True)
        dx = on.conv2d_backward(x, W, y, dy, dW, db, *window, relu=True, need_dx=need_dx)
        return [a for a in (y, dW, db, dx) if a is not None]

    def batch():
        x = rng.normal(size=(19, *image)).astype(numpy.float32)
        W = rng.normal(0, 0.3, (K, image[2], 3, 3)).astype(numpy.float32)
        b = rng.normal(0, 0.1, (1, K)).astype(numpy.float32)
        side = 2 if pooled else 1
        return x, W, b, rng.normal(size=(19, image[0] // side, image[1] // side, K)).astype(numpy.float32)

    a, other = batch(), batch()
    before = step(backend, *a)
    step(backend, *other)
    again, fresh = step(backend, *a), step(numba_backend.create(), *a)
    for x, y, z in zip(before, again, fresh):
        assert numpy.array_equal(x, y) and numpy.array_equal(x, z)


DENSE_FORWARD = """
import numpy
from fastprop.backends.numba.kernels import dense
assert dense.ROWS_PER_BLOCK == {rows}, dense.ROWS_PER_BLOCK
rng = numpy.random.default_rng(3)
for dtype, tolerance in ((numpy.float32, 1e-5), (numpy.float64, 1e-12)):
    for n, k, m in ((1, 3, 1), (7, 33, 10), (600, 784, 10), (5, 17, 13), (2, 8, 32)):
        x, W, b = rng.normal(size=(n, k)), rng.normal(size=(m, k)), rng.normal(size=(1, m))
        expected = x @ W.T + b
        x, W, b = (a.astype(dtype) for a in (x, W, b))
        for activation in (dense.IDENTITY, dense.SIGMOID, dense.RELU):
            z, p = numpy.full((n, m), numpy.nan, dtype), numpy.full((n, m), numpy.nan, dtype)
            dense.dense_forward(x, W, b, z, p, activation)
            error = numpy.abs(z - expected).max() / numpy.abs(expected).max()
            assert error < tolerance, (dtype, n, k, m, error)
            if activation != dense.IDENTITY:  # p is left alone then
                slope = 1 / (1 + numpy.exp(-z.astype(float)))
                want = slope if activation == dense.SIGMOID else numpy.maximum(z, 0)
                assert numpy.allclose(p, want, rtol=tolerance, atol=tolerance), (dtype, n, m, activation)
print("ok")
"""


@pytest.mark.slow
@pytest.mark.parametrize("features, rows", [(None, 4), ("haswell", 2)], ids=["AVX-512 blocks", "AVX2 blocks"])
def test_dense_forward_blocks_follow_the_vector_registers(tmp_path, features, rows):
    """The small-layer forward kernel takes 4 rows per register block with 32 vector registers and 2 with
    AVX2's 16, each built in a fresh cache, and both compute ``x @ W.T + b`` and its activation."""
    from tests.backends.test_numba_direct_conv import HASWELL

    host = numba.core.codegen.get_host_cpu_features().split(",")
    if "+avx2" not in host or (features is None and "+avx512f" not in host):
        pytest.skip("this CPU cannot run the code of this instruction set")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_CPU_")}
    environment["NUMBA_CACHE_DIR"] = str(tmp_path)
    if features:
        environment.update(NUMBA_CPU_NAME=features, NUMBA_CPU_FEATURES=HASWELL)
    result = subprocess.run([sys.executable, "-c", DENSE_FORWARD.format(rows=rows)], env=environment,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]
