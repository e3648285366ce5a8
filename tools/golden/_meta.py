"""Provenance stored in every golden file: which library versions made it, and from which commit.

Every generator adds ``**meta(...)`` to the arrays it writes, so each ``tests/golden/*.npz`` holds one
extra key, ``meta_json``: a 0-d string array with a JSON object ::

    {"generator": "tools/golden/quant.py", "commit": "<git HEAD of the generator>", "dirty": false,
     "python": "3.11.7", "libraries": {"torch": "2.13.0+cpu", "bitsandbytes": "0.50.2", ...}}

``tests/test_golden_meta.py`` checks that every golden file carries it. No timestamp is stored, so
regenerating with the same libraries at the same commit writes the same bytes.
"""

from __future__ import annotations

import importlib
import json
import platform
import subprocess
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
#: the libraries whose versions are recorded when they are importable
LIBRARIES = ("torch", "bitsandbytes", "peft", "transformers", "tokenizers", "safetensors", "ml_dtypes",
             "numpy", "scipy")


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def meta(generator: str, libraries: tuple[str, ...] = LIBRARIES) -> dict[str, np.ndarray]:
    """``{"meta_json": 0-d str array}`` describing this generator run (add it to the arrays you save).

    ``generator`` is the generator's path relative to the repository (``"tools/golden/quant.py"``).
    """
    versions = {}
    for name in libraries:
        try:
            versions[name] = importlib.import_module(name).__version__
        except ImportError:
            continue
    info = {
        "generator": generator,
        "commit": _git("rev-parse", "HEAD"),
        "dirty": bool(_git("status", "--porcelain", "--", "tools", "minilora")),
        "python": platform.python_version(),
        "libraries": versions,
    }
    return {"meta_json": np.array(json.dumps(info, sort_keys=True))}


def read_meta(arrays: dict[str, np.ndarray]) -> dict:
    """The provenance dict of a loaded golden file (KeyError when it has none)."""
    return json.loads(str(arrays["meta_json"][()]))
