"""The device backends the backend tests run on, and how they compare results with the NumPy backend.

* ``strict`` (always): NumPy underneath, CuPy's rules on top (:mod:`minilora.backend_strict`), so a result must
  equal the NumPy backend's bit for bit, and any host array leaked into device code raises;
* ``cupy`` where CuPy is installed with a GPU: other kernels, so results agree within round-off.

``MINILORA_BACKEND=cupy pytest ...`` (what ``tools/gpu_check.sh`` runs) selects CuPy alone and fails, rather than
skips, when CuPy or its GPU is missing: a GPU check cannot pass by running nothing on the GPU. Use in a test
module: take the fixture ``device`` (``tests/conftest.py`` makes it available everywhere) and the helpers
``from device_backends import host, on, same``.
"""

from __future__ import annotations

import importlib.util
import json
import os

import numpy as np
import pytest

from minilora import backend


def cupy_with_gpu() -> bool:
    """Whether CuPy is importable and sees at least one GPU."""
    if importlib.util.find_spec("cupy") is None:
        return False
    try:  # pragma: no cover - depends on the machine
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001 - any CUDA error means: no usable GPU
        return False


REQUESTED = os.environ.get("MINILORA_BACKEND", "").strip().lower()
DEVICE_BACKENDS = ["cupy"] if REQUESTED == "cupy" else ["strict"] + (["cupy"] if cupy_with_gpu() else [])


@pytest.fixture(params=DEVICE_BACKENDS)
def device(request):
    """The name of a device backend; the test's reference runs go through :func:`on` ("numpy", ...)."""
    if request.param == "cupy" and not cupy_with_gpu():  # pragma: no cover - MINILORA_BACKEND=cupy, no GPU
        pytest.fail("MINILORA_BACKEND=cupy but CuPy with a GPU is not available: "
                    "pip install -e '.[gpu]' on a machine with an NVIDIA GPU")
    backend.use("numpy")
    yield request.param
    backend.use("numpy")


def on(name: str, fn):
    """``fn()`` with the backend ``name`` selected (NumPy afterwards); its arrays are returned as they are."""
    backend.use(name)
    try:
        return fn()
    finally:
        backend.use("numpy")


def host(tree):
    """Every array in a nested structure (dicts, lists, tuples) copied to NumPy."""
    if isinstance(tree, dict):
        return {k: host(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(host(v) for v in tree)
    return backend.to_numpy(tree) if backend.is_array(tree) or hasattr(tree, "get") else tree


def same(name: str, got, ref, rtol: float = 1e-5) -> None:
    """Equal bit for bit on the strict backend (it is NumPy), within round-off on CuPy; nested structures."""
    got, ref = host(got), host(ref)
    if isinstance(ref, dict):
        assert set(got) == set(ref)
        for k in ref:
            same(name, got[k], ref[k], rtol)
        return
    if isinstance(ref, (list, tuple)):
        assert len(got) == len(ref)
        for g, r in zip(got, ref):
            same(name, g, r, rtol)
        return
    if name == "strict":
        if isinstance(ref, np.ndarray):
            assert isinstance(got, np.ndarray) and got.dtype == ref.dtype, (type(got), ref.dtype)
        np.testing.assert_array_equal(got, ref)
    else:  # pragma: no cover - runs on GPU machines
        np.testing.assert_allclose(got, ref, rtol=rtol, atol=rtol * 1e-2)


def adamw_steps(model, n: int = 2, lr: float = 1e-2) -> dict:
    """``n`` AdamW steps of ``model`` on fixed task batches; the arrays a backend test compares afterwards."""
    from minilora import data
    from minilora.optim import AdamW

    opt = AdamW(model, lr=lr, weight_decay=0.1)
    losses = []
    for i in range(n):
        idx, targets = data.task_batch(data.PRETRAIN_TASKS, 4, seed=i)
        model.zero_grad()
        logits, loss = model.forward(idx, targets)
        model.backward()
        grads = {k: g.copy() for k, g in model.grads.items()}
        opt.step()
        losses.append(loss)
    return {"logits": logits, "losses": losses, "grads": grads, "params": model.params,
            "state": {k: {n: a for n, a in s.items() if n != "step"} for k, s in opt.state.items()}}


def file_contents(files: dict[str, bytes]) -> dict:
    """An adapter directory's content: the config text, the tensors and the safetensors metadata (the bytes of a
    safetensors file with two metadata keys are not reproducible: safetensors orders them as a hash map does)."""
    from safetensors.numpy import load

    raw = files["adapter_model.safetensors"]
    header = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])
    return {"config": files["adapter_config.json"], "tensors": load(raw), "metadata": header["__metadata__"]}
