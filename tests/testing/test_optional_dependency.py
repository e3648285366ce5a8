"""hypothesis is optional: without it the assertions and oracles work and a strategy's import names the extra
to install; with it, a user's own test file imports the kit and runs."""

import os
import subprocess
import sys
import textwrap

from conftest import ROOT

BLOCK = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "hypothesis":
            raise ImportError("hypothesis is blocked")
sys.meta_path.insert(0, Block())
"""


def _run(code, cwd=ROOT):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", BLOCK + code], capture_output=True, text=True, env=env, cwd=cwd)


def test_without_hypothesis_a_strategy_import_names_the_test_extra():
    r = _run("from minilora.testing import tensors")
    assert r.returncode != 0
    assert "ImportError: the strategies of minilora.testing need hypothesis" in r.stderr
    assert "'test' extra" in r.stderr and 'pip install -e ".[test]"' in r.stderr
    r = _run("import minilora.testing.strategies as s\ns.blocksizes()")       # the module imports; use raises
    assert r.returncode != 0 and "'test' extra" in r.stderr


def test_without_hypothesis_the_assertions_and_oracles_work():
    r = _run(textwrap.dedent("""
        import numpy as np
        from minilora.quant import quantize_4bit, dequantize_4bit
        from minilora.testing import assert_within_bound, assert_codes_equal
        x = np.linspace(-1, 1, 100, dtype=np.float32)
        packed, st = quantize_4bit(x, quant_type="nf4")
        print(assert_within_bound(x, dequantize_4bit(packed, st), "nf4") <= 1)
        assert_codes_equal(x, method="nf4", packed=packed)
    """))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "True"


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
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPENBLAS_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                       capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 passed" in r.stdout
