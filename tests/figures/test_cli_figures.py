"""`python -m minilora figures`: one BLAS thread, blog-named copies by default, and a second run writes nothing."""

import os
import subprocess
import sys

from conftest import ROOT


def _run(*args, env=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "minilora", *args], capture_output=True, text=True, env=env,
                          check=True, cwd=ROOT).stdout


def test_figures_pins_blas_to_one_thread():
    code = ("import os; from minilora.__main__ import main; main(['figures', '--list']); "
            "from minilora import figures; print(os.environ['OPENBLAS_NUM_THREADS'], "
            "figures.blas_info()['blas_threads'])")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPENBLAS_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    listing, pinned = out.strip().rsplit("\n", 1)
    assert pinned.split() == ["1", "1"]  # the variable, and OpenBLAS itself (where it can be asked)
    assert "lora_init" in listing and "(trained: compared within tolerance)" in listing


def test_second_run_changes_nothing_and_blog_copies_are_default(tmp_path):
    first = _run("figures", "cosine_annealing", "--out", str(tmp_path))
    assert first.split() == ["new", str(tmp_path / "cosine_annealing.png"), "new", str(tmp_path / "余弦退火.png")]
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir()}
    second = _run("figures", "cosine_annealing", "--out", str(tmp_path))
    assert [line.split()[0] for line in second.splitlines()] == ["unchanged", "unchanged"]
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir()} == before
    only_png = _run("figures", "cosine_annealing", "--no-blog-names", "--out", str(tmp_path / "png"))
    assert only_png.split() == ["new", str(tmp_path / "png" / "cosine_annealing.png")]
