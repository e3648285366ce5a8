"""hypothesis is optional: without it minilora.testing says which extra to install; with it, a user's own
test file imports the kit and runs."""

import os
import subprocess
import sys
import textwrap

from conftest import ROOT


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "OPENBLAS_NUM_THREADS": "1"}


def test_without_hypothesis_the_error_names_the_test_extra():
    code = "import sys; sys.modules['hypothesis'] = None\nimport minilora.testing"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), cwd=ROOT)
    assert r.returncode != 0
    assert "ImportError: minilora.testing needs hypothesis" in r.stderr
    assert "'test' extra" in r.stderr and 'pip install -e ".[test]"' in r.stderr


def test_the_library_imports_without_hypothesis():
    code = "import sys; sys.modules['hypothesis'] = None\nimport minilora, minilora.quant.bounds"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), cwd=ROOT)
    assert r.returncode == 0, r.stderr


def test_a_users_own_test_file(tmp_path):
    (tmp_path / "test_my_kernel.py").write_text(textwrap.dedent('''
        import numpy as np
        from hypothesis import given, settings
        from minilora.testing import tensors, assert_within_bound

        def my_absmax_roundtrip(x):                  # a user's kernel: per-tensor absmax int8
            a = np.abs(x).max()
            q = np.rint(x / (a if a > 0 else 1) * 127)
            return q * (a / 127)

        @settings(max_examples=25, deadline=None)
        @given(x=tensors(max_size=64))
        def test_roundtrip(x):
            assert_within_bound(x, my_absmax_roundtrip(x).astype(np.float32), "absmax")
    '''))
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                       capture_output=True, text=True, env=_env(), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 passed" in r.stdout
