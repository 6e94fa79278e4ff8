"""The matrix products of the CPU backends (backends/blas.py): oneMKL through cblas when installed,
NumPy otherwise; compared with float64 products computed by NumPy."""

from __future__ import annotations

import importlib.metadata
import pathlib

import numpy
import pytest

from fastprop.backends import blas

MKL_PATH = blas.find_mkl()
needs_mkl = pytest.mark.skipif(MKL_PATH is None,
                               reason='oneMKL is not installed (pip install "fastprop[mkl]")')


def _products():
    found = [blas.NumpyProducts()]
    if MKL_PATH is not None:
        found.append(blas.products("mkl"))
    return found


def _operand(rng, shape, order, dtype):
    """A matrix of ``shape`` laid out as asked: C, Fortran, a transposed C array, or a strided slice."""
    rows, columns = shape
    if order == "C":
        return rng.standard_normal(shape).astype(dtype)
    if order == "F":
        return numpy.asfortranarray(rng.standard_normal(shape).astype(dtype))
    if order == "sliced":  # rows further apart than the row length
        return rng.standard_normal((rows, columns + 3)).astype(dtype)[:, 1:columns + 1]
    if order == "every-other":  # columns not adjacent: no cblas layout
        return rng.standard_normal((rows, 2 * columns)).astype(dtype)[:, ::2]
    raise ValueError(order)


@pytest.mark.parametrize("products", _products(), ids=lambda p: p.name)
@pytest.mark.parametrize("dtype, tolerance", [(numpy.float32, 1e-5), (numpy.float64, 1e-12)])
@pytest.mark.parametrize("order_a", ["C", "F", "sliced", "every-other"])
@pytest.mark.parametrize("order_b", ["C", "F", "sliced"])
@pytest.mark.parametrize("shape", [(7, 5, 3), (1, 9, 4), (6, 1, 2), (5, 4, 1), (33, 70, 17)])
def test_products_match_a_float64_product(products, dtype, tolerance, order_a, order_b, shape):
    m, k, n = shape
    rng = numpy.random.default_rng(m * 100 + k * 10 + n)
    a, b = _operand(rng, (m, k), order_a, dtype), _operand(rng, (k, n), order_b, dtype)
    expected = a.astype(numpy.float64) @ b.astype(numpy.float64)
    scale = numpy.abs(a).astype(numpy.float64) @ numpy.abs(b).astype(numpy.float64) + 1
    result = products.matmul(a, b)
    assert result.dtype == dtype and result.shape == (m, n)
    assert numpy.all(numpy.abs(result - expected) <= tolerance * scale)
    out = numpy.full((m, n), 2.0, dtype)
    assert products.matmul(a, b, out, accumulate=True) is out
    assert numpy.all(numpy.abs(out - (expected + 2)) <= tolerance * (scale + 2))
    products.matmul(a, b, out)
    assert numpy.all(numpy.abs(out - expected) <= tolerance * scale)


@pytest.mark.parametrize("products", _products(), ids=lambda p: p.name)
def test_products_into_an_overlapping_or_strided_output_are_still_right(products):
    rng = numpy.random.default_rng(3)
    a = rng.standard_normal((6, 6))
    b = rng.standard_normal((6, 6))
    expected = a @ b
    products.matmul(a, b, a)  # the output is an operand: computed before it is written
    numpy.testing.assert_allclose(a, expected, rtol=1e-12)
    wide = numpy.zeros((6, 12))
    products.matmul(expected, b, wide[:, ::2])  # every other column: no cblas layout for the output
    numpy.testing.assert_allclose(wide[:, ::2], expected @ b, rtol=1e-12)
    assert not wide[:, 1::2].any()


@pytest.mark.parametrize("products", _products(), ids=lambda p: p.name)
def test_empty_products_write_zeros_or_leave_the_sum(products):
    a, b = numpy.ones((4, 0), numpy.float32), numpy.ones((0, 3), numpy.float32)
    out = numpy.full((4, 3), 5.0, numpy.float32)
    products.matmul(a, b, out, accumulate=True)
    assert (out == 5).all()
    products.matmul(a, b, out)
    assert (out == 0).all()
    assert products.matmul(numpy.ones((0, 2)), numpy.ones((2, 3))).shape == (0, 3)


@pytest.mark.parametrize("products", _products(), ids=lambda p: p.name)
def test_other_dtypes_take_numpy(products):
    a = numpy.arange(6, dtype=numpy.int64).reshape(2, 3)
    numpy.testing.assert_array_equal(products.matmul(a, a.T), a @ a.T)
    half = a.astype(numpy.float16)
    numpy.testing.assert_array_equal(products.matmul(half, half.T), half @ half.T)


def test_layouts_describe_c_and_fortran_matrices_and_nothing_else():
    a = numpy.zeros((4, 6), numpy.float32)
    assert blas._layout(a) == (blas._NO_TRANS, 6)
    assert blas._layout(a.T) == (blas._TRANS, 6)
    assert blas._layout(a[:, 1:4]) == (blas._NO_TRANS, 6)
    assert blas._layout(a[:, ::2]) is None
    assert blas._layout(a[::2, ::2]) is None


def test_an_unknown_choice_names_the_variable_and_the_choices(monkeypatch):
    monkeypatch.setenv(blas.VARIABLE, "atlas")
    blas.products.cache_clear()
    try:
        with pytest.raises(blas.BlasUnavailableError, match=r"FASTPROP_BLAS='atlas'.*auto, mkl, numpy"):
            blas.products()
    finally:
        blas.products.cache_clear()


def test_asking_for_mkl_without_it_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(blas, "find_mkl", lambda: None)
    blas.products.cache_clear()
    try:
        with pytest.raises(blas.BlasUnavailableError, match=r'pip install "fastprop\[mkl\]"'):
            blas.products("mkl")
        assert blas.products("auto").name == "numpy"
        assert blas.products("numpy").name == "numpy"
    finally:
        blas.products.cache_clear()


def test_a_library_that_does_not_load_is_named_or_passed_over(monkeypatch, tmp_path):
    broken = tmp_path / "libmkl_rt.so.3"
    broken.write_bytes(b"not a library")
    monkeypatch.setattr(blas, "find_mkl", lambda: str(broken))
    blas.products.cache_clear()
    try:
        with pytest.raises(blas.BlasUnavailableError, match=r"did not load.*--force-reinstall mkl"):
            blas.products("mkl")
        assert blas.products("auto").name == "numpy"
    finally:
        blas.products.cache_clear()


def test_the_library_is_found_through_the_distribution_file_list(monkeypatch, tmp_path):
    """pip puts libmkl_rt in <prefix>/lib, outside the loader's path: the file list says where."""
    lib = tmp_path / "lib"
    lib.mkdir()
    (tmp_path / "site-packages").mkdir()
    (lib / "libmkl_rt.so.3").write_bytes(b"")

    class File(pathlib.PurePosixPath):
        def locate(self):
            return tmp_path / "site-packages" / self

    def files(name):
        if name != "mkl":
            raise importlib.metadata.PackageNotFoundError(name)
        return [File("../lib/libmkl_rt.so.3"), File("mkl-1.dist-info/RECORD")]

    monkeypatch.setattr(importlib.metadata, "files", files)
    assert pathlib.Path(blas.find_mkl()).resolve() == (lib / "libmkl_rt.so.3").resolve()


@needs_mkl
def test_pips_mkl_is_found_in_the_environments_own_lib_folder():
    """In a virtual environment the wheel's library lies in <venv>/lib; it must be the one found."""
    found = pathlib.Path(MKL_PATH).resolve()
    installed = blas.installed_file("mkl", lambda file: file.startswith("libmkl_rt."))
    if installed is not None:  # installed by pip: the wheel's own file, wherever the environment put it
        assert found == installed
    assert found.exists()
    products = blas.products("mkl")
    assert products.name == "mkl" and "Math Kernel Library" in products.info()


@needs_mkl
def test_the_numba_backend_computes_its_products_with_the_library_chosen():
    numba_backend = pytest.importorskip("fastprop.backends.numba.backend")
    pytest.importorskip("numba")
    from fastprop.backends import load_backend

    backend = load_backend("numba")
    assert backend.info()["blas"] == blas.products().info()
    assert isinstance(backend, numba_backend.NumbaBackend)


def test_a_bad_choice_makes_the_numba_backend_unavailable_with_the_reason(monkeypatch):
    pytest.importorskip("numba")
    from fastprop.backends import BackendUnavailableError
    from fastprop.backends.numba import backend as numba_backend

    monkeypatch.setenv(blas.VARIABLE, "atlas")
    blas.products.cache_clear()
    try:
        with pytest.raises(BackendUnavailableError, match=r"FASTPROP_BLAS='atlas' names no BLAS"):
            numba_backend.create()
    finally:
        blas.products.cache_clear()


@pytest.mark.parametrize("products", _products(), ids=lambda p: p.name)
@pytest.mark.parametrize("dtype, tolerance", [(numpy.float32, 1e-5), (numpy.float64, 1e-12)])
@pytest.mark.parametrize("layout", ["C", "rows apart", "transposed b", "overlapping out", "strided"])
def test_batched_products_match_float64_products(products, dtype, tolerance, layout):
    rng = numpy.random.default_rng(5)
    count, m, k, n = 16, 9, 7, 5
    a = rng.standard_normal((count, m, k)).astype(dtype)
    b = rng.standard_normal((count, k, n)).astype(dtype)
    out = numpy.empty((count, m, n), dtype)
    if layout == "rows apart":  # each matrix a slice of a longer row, as the Winograd buffers are
        a = rng.standard_normal((count, m * k + 11)).astype(dtype)[:, :m * k].reshape(count, m, k)
        out = numpy.empty((count, m * n + 5), dtype)[:, :m * n].reshape(count, m, n)
    elif layout == "transposed b":
        b = numpy.ascontiguousarray(b.transpose(0, 2, 1)).transpose(0, 2, 1)
    elif layout == "overlapping out":  # computed from the inputs before they are overwritten
        a = rng.standard_normal((count, m, n)).astype(dtype)
        b = rng.standard_normal((count, n, n)).astype(dtype)
        out = a
    elif layout == "strided":  # every other matrix: no cblas layout for the stack, one product each
        a = rng.standard_normal((2 * count, m, k)).astype(dtype)[::2]
    expected = a.astype(numpy.float64) @ b.astype(numpy.float64)
    scale = numpy.abs(a).astype(numpy.float64) @ numpy.abs(b).astype(numpy.float64) + 1
    result = products.matmul_batched(a, b, out)
    assert result is out
    assert numpy.all(numpy.abs(out - expected) <= tolerance * scale)
