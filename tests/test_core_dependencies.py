"""`pip install -e .` (the README's command 1) must be enough for `python -m minilora figures`.

The test suite installs the `test` extra, so a package the figures need but the core dependencies lack would pass
every other test and fail only on a user's fresh machine. Here a subprocess refuses every import of a package
that only an extra (or a reference library) provides, then runs what the figures touch that needs a third-party
package: every module's import, and saving each method's adapter (``compare.saved_bytes``, which the
``peft_methods`` figure calls).
"""

import json
import re
import subprocess
import sys
import textwrap

import pytest
from conftest import ROOT

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

#: import names of distributions whose import name differs from the distribution's
IMPORT_NAME = {"cupy-cuda12x": "cupy", "cupy-cuda13x": "cupy"}
#: never dependencies of minilora: the reference libraries of tools/ and the interop tests
REFERENCE_LIBRARIES = ("torch", "bitsandbytes", "peft", "transformers", "tokenizers", "ml_dtypes")


def _names(requirements) -> set[str]:
    names = set()
    for req in requirements:
        name = re.match(r"[A-Za-z0-9_.-]+", req).group(0).lower()
        if name != "minilora":
            names.add(IMPORT_NAME.get(name, name.replace("-", "_")))
    return names


def extra_only_packages() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = _names(project["dependencies"])
    extras = set().union(*(_names(reqs) for reqs in project["optional-dependencies"].values()))
    return sorted((extras | set(REFERENCE_LIBRARIES)) - core)


SCRIPT = """
import importlib, importlib.abc, pkgutil, sys
BLOCKED = set({blocked})

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (only in an extra)", name=name)
        return None

sys.meta_path.insert(0, Refuse())
import minilora
skipped = []
for info in pkgutil.walk_packages(minilora.__path__, "minilora."):
    if info.name.startswith("minilora.testing"):  # the property-testing kit is the `test` extra's, by design
        continue
    importlib.import_module(info.name)

from minilora.experiments import compare
from minilora.experiments.recipe import METHODS, method_config, prepare
for method in METHODS:
    config, quantization = method_config(method)
    model = prepare(minilora.load_base_model(), config, quantization)
    print(method, compare.saved_bytes(model))
"""


def test_the_figures_need_only_the_core_dependencies(tmp_path):
    blocked = extra_only_packages()
    assert "hypothesis" in blocked and "numpy" not in blocked  # the parse found the extras and the core
    script = SCRIPT.format(blocked=json.dumps(blocked))
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, (f"with only the core dependencies (blocked: {blocked}) this fails:\n"
                                  f"{proc.stderr[-3000:]}")
    assert len(proc.stdout.splitlines()) == 7, proc.stdout
