"""tools/gpu_check.sh and benchmarks/bench_gpu.py stay runnable on a machine without a GPU.

The GPU check itself needs CuPy and a GPU (``tools/gpu_check.sh``); here its shell parses, and its benchmark runs
end to end with the strict device emulation standing in for CuPy (``--quick``: a check, not a speed figure).
"""

import importlib.util
import shutil
import subprocess

import pytest
from conftest import ROOT


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_check_script_parses():
    subprocess.run(["bash", "-n", str(ROOT / "tools" / "gpu_check.sh")], check=True)


def test_bench_gpu_runs_on_numpy_vs_strict(capsys):
    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "benchmarks" / "bench_gpu.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--quick", "--backends", "numpy,strict", "--steps", "1", "--warmup", "0"]) == 0
    out = capsys.readouterr().out
    for method in ("full", "lora"):
        assert f"{method}: numpy / strict step time = " in out
    assert out.count("first loss") == 4
    with pytest.raises(SystemExit):
        bench.main(["--backends", "numpy"])
