"""Every module under minilora/ imports without the optional packages.

``pytest`` collects the doctests of every module (``--doctest-modules``, ``testpaths`` in pyproject.toml), which
imports each one; on a plain ``pip install -e .`` that must not need CuPy, the test tools, safetensors or the
reference libraries. A subprocess blocks them and imports every module.
"""

import os
import subprocess
import sys

from conftest import ROOT

OPTIONAL = ("cupy", "hypothesis", "safetensors", "torch", "bitsandbytes", "peft", "transformers", "nbclient",
            "nbformat", "pytest")

SCRIPT = f"""
import importlib, pkgutil, sys

class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {OPTIONAL!r}:
            raise ImportError(f"{{name}} is blocked (optional)")
        return None

sys.meta_path.insert(0, Block())
import minilora
names = [m.name for m in pkgutil.walk_packages(minilora.__path__, "minilora.")]
for name in names:
    importlib.import_module(name)
print(len(names))
"""


def test_every_module_imports_without_optional_packages():
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"})
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.split()[-1]) > 30  # every module was walked, not just the package
