import os

os.environ.setdefault("MPLBACKEND", "Agg")
from pathlib import Path

import numpy as np
import pytest
from device_backends import device  # noqa: F401 - the device-backend fixture (tests/device_backends.py)
from hypothesis import settings

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden"

# Property tests: at least 200 examples each in CI (the brief asks for it), fewer locally if wanted.
settings.register_profile("ci", max_examples=200, deadline=None, derandomize=True)
settings.register_profile("dev", max_examples=200, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def load_golden(name: str) -> dict[str, np.ndarray]:
    """Load ``tests/golden/<name>.npz`` (made by tools/make_golden.py) without pickle."""
    path = GOLDEN / f"{name}.npz"
    if not path.exists():
        pytest.fail(f"golden file {path} is missing; run tools/make_golden.py")
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


@pytest.fixture
def golden():
    return load_golden
