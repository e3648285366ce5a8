"""Every prompt method and adapter on CuPy (with a GPU): training steps, logits and a file round trip agree with
the NumPy run within round-off. The strict device emulation runs the same code in ``test_backends.py`` (bit for
bit); this file adds the real device, for ``tools/gpu_check.sh``."""

import numpy as np
import pytest
from device_backends import DEVICE_BACKENDS, on

from .cases import METHODS
from .test_backends import _run


@pytest.mark.skipif("cupy" not in DEVICE_BACKENDS, reason="needs CuPy and a GPU (strict: test_backends.py)")
@pytest.mark.parametrize("name", [m for m in METHODS if m != "houlsby_tanh_leave_out"])
def test_method_on_cupy_agrees_with_numpy(name, tmp_path):  # pragma: no cover - GPU machines
    ref = on("numpy", lambda: _run(name, tmp_path / "numpy"))
    got = on("cupy", lambda: _run(name, tmp_path / "cupy"))
    assert set(ref[0]) == set(got[0])
    for k in ref[0]:
        np.testing.assert_allclose(got[0][k], ref[0][k], rtol=1e-4, atol=1e-6, err_msg=k)
    for a, b in zip(got[1:], ref[1:]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got[2], got[3], rtol=1e-5, atol=1e-6)  # the saved adapter reloads
