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
