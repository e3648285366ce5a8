import importlib.util
import subprocess
import sys

import numpy as np
import pytest

from minilora import backend

HAS_CUPY = importlib.util.find_spec("cupy") is not None


@pytest.fixture(autouse=True)
def restore_backend():
    yield
    backend.use("numpy")


def test_default_is_numpy():
    assert backend.use("numpy") is np and backend.xp() is np and backend.name() == "numpy"


def test_unknown_backend():
    with pytest.raises(ValueError, match="'numpy', 'cupy'"):
        backend.use("jax")


@pytest.mark.skipif(HAS_CUPY, reason="CuPy is installed here")
def test_missing_cupy_names_the_extra():
    with pytest.raises(ImportError, match=r"minilora\[gpu\]"):
        backend.use("cupy")


@pytest.mark.skipif(HAS_CUPY, reason="CuPy is installed here")
def test_env_variable_selects_backend():
    code = "from minilora import backend; backend.xp()"
    r = subprocess.run([sys.executable, "-c", code], env={"MINILORA_BACKEND": "cupy", "PATH": ""},
                       capture_output=True, text=True)
    assert r.returncode != 0 and "minilora[gpu]" in r.stderr
    r = subprocess.run([sys.executable, "-c", code + "; print(backend.name())"],
                       env={"MINILORA_BACKEND": "numpy"}, capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "numpy"


def test_to_numpy():
    a = np.arange(3)
    assert backend.to_numpy(a) is a or np.array_equal(backend.to_numpy(a), a)
    assert np.array_equal(backend.to_numpy([1, 2]), np.array([1, 2]))


@pytest.mark.skipif(not HAS_CUPY, reason="CuPy is not installed")
def test_cupy_formats_match_numpy():  # pragma: no cover - runs on GPU machines
    from minilora.formats import BF16, FP8_E4M3, FP16, encode

    x = np.random.default_rng(0).standard_normal(10000).astype(np.float32) * 1000
    ref = {f.name: encode(x, f) for f in (FP16, BF16, FP8_E4M3)}
    cp = backend.use("cupy")
    for f in (FP16, BF16, FP8_E4M3):
        assert np.array_equal(backend.to_numpy(encode(cp.asarray(x), f)), ref[f.name])


# ----------------------------------------------------------------------------- the strict backend
def test_strict_backend_is_selected_by_name_and_env():
    from minilora.backend_strict import StrictArray

    xp = backend.use("strict")
    assert backend.name() == "strict" and xp.ndarray is StrictArray
    assert backend.array_types() == (np.ndarray, StrictArray)
    r = subprocess.run([sys.executable, "-c", "from minilora import backend; print(backend.name())"],
                       env={"MINILORA_BACKEND": "strict"}, capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "strict"


MIXING = {
    "operator with a NumPy array": lambda xp, a: a + np.ones(3),
    "reflected operator": lambda xp, a: np.ones(3) * a,
    "comparison": lambda xp, a: a == np.ones(3),
    "matmul": lambda xp, a: a @ np.ones(3),
    "in-place": lambda xp, a: a.__iadd__(np.ones(3)),
    "namespace function": lambda xp, a: xp.concatenate([a, np.ones((1, 3))]),
    "ufunc": lambda xp, a: xp.maximum(a, np.ones(3)),
    "NumPy index": lambda xp, a: a[np.array([0])],
    "NumPy value assigned": lambda xp, a: a.__setitem__(0, np.ones(3)),
}
HOST = {
    "np.asarray": lambda xp, a: np.asarray(a),
    "np.array": lambda xp, a: np.array(a),
    "a NumPy ufunc": lambda xp, a: np.exp(a),
    "a NumPy function": lambda xp, a: np.concatenate([a, a]),
    "a NumPy reduction": lambda xp, a: np.sum(a),
    "np.testing": lambda xp, a: np.testing.assert_array_equal(a, a),
    "float() of a non-scalar": lambda xp, a: float(a),
}


@pytest.mark.parametrize("what", list(MIXING))
def test_strict_arrays_refuse_numpy_arrays(what):
    xp = backend.use("strict")
    a = xp.asarray(np.arange(6.0).reshape(2, 3))
    with pytest.raises(TypeError, match="cannot be mixed|Unsupported"):
        MIXING[what](xp, a)


@pytest.mark.parametrize("what", list(HOST))
def test_strict_arrays_refuse_implicit_conversion_to_host(what):
    xp = backend.use("strict")
    a = xp.asarray(np.arange(6.0).reshape(2, 3))
    with pytest.raises(TypeError):
        HOST[what](xp, a)


def test_strict_refuses_host_memory_and_device_random():
    xp = backend.use("strict")
    a = xp.zeros(3)
    for attr in ("data", "ctypes", "__array_interface__", "tobytes"):
        with pytest.raises(AttributeError):
            getattr(a, attr)
    with pytest.raises(AttributeError, match="numpy.random.Generator on the host"):
        getattr(xp, "random")  # noqa: B009 - the attribute access itself must raise


def test_strict_explicit_transfers_and_numpy_results():
    xp = backend.use("strict")
    host = np.arange(6.0).reshape(2, 3)
    a = xp.asarray(host)
    host[0, 0] = 99.0  # a device copy: the host change does not show
    assert isinstance(a, xp.ndarray) and float(a[0, 0]) == 0.0
    ref = np.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(backend.to_numpy(xp.exp(a) @ a.T + 1.0), np.exp(ref) @ ref.T + 1.0)  # NumPy's bits
    total = a.sum()  # a 0-d device array (CuPy's convention), convertible because it has one element
    assert isinstance(total, xp.ndarray) and total.ndim == 0 and float(total) == 15.0 and int(a.max()) == 5
    view = a.reshape(-1)[2:]
    assert view.base is a.base  # views chain to the one host buffer that owns the memory
    assert backend.to_numpy(view).base is None  # to_numpy copies


@pytest.mark.parametrize("name", ["numpy", "strict"])
def test_scatter_add_accumulates_repeated_indices(name):
    xp = backend.use(name)
    dst = xp.zeros((3, 2))
    backend.scatter_add(dst, xp.asarray([0, 2, 0]), xp.asarray([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]))
    np.testing.assert_array_equal(backend.to_numpy(dst), [[6.0, 8.0], [0.0, 0.0], [3.0, 4.0]])


def test_is_array_and_to_numpy_on_strict():
    xp = backend.use("strict")
    a = xp.ones(2)
    assert backend.is_array(a) and backend.is_array(np.ones(2)) and not backend.is_array([1.0])
    assert isinstance(backend.to_numpy(a), np.ndarray) and xp.asnumpy(a).tolist() == [1.0, 1.0]
