"""minilora.perf.tune_allocator: glibc keeps freed memory for the next step instead of faulting it in again."""

import subprocess
import sys
import textwrap

import pytest

from minilora import perf

# a step's pattern: several MB-sized temporaries alive at once, then all freed, again and again
FAULTS = textwrap.dedent("""
    import resource, sys
    import numpy as np
    from minilora import perf
    tuned = perf.tune_allocator() if sys.argv[1] == "tuned" else None
    def step():
        arrays = [np.ones((1024, 1024), np.float32) for _ in range(4)]  # 4 x 4 MB
        return sum(float(a[0, 0]) for a in arrays)
    step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        step()
    print(tuned is not None, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def _faults(mode):
    out = subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, check=True).stdout
    available, faults = out.split()
    return available == "True", int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")
def test_tuned_allocator_stops_the_page_faults_of_freed_temporaries():
    available, tuned = _faults("tuned")
    if not available:
        pytest.skip("no glibc mallopt here (musl?): tune_allocator is a no-op")
    _, default = _faults("default")
    assert default > 10 * 1024  # 10 steps x 16 MB faulted in again, 4 kB pages (fewer with huge pages)
    assert tuned < default / 10, (tuned, default)


@pytest.mark.parametrize("kw, match", [
    (dict(mmap_threshold=-1), "mmap_threshold must be an int in"),
    (dict(mmap_threshold=perf.MAX_MMAP_THRESHOLD + 1), r"\[0, 33554432\]"),
    (dict(mmap_threshold=1.5), "got 1.5"),
    (dict(trim_threshold=True), "trim_threshold must be an int"),
    (dict(trim_threshold=2**31), "trim_threshold"),
])
def test_bad_thresholds_are_refused_before_anything_changes(kw, match, monkeypatch):
    monkeypatch.setattr(perf, "_mallopt", lambda: pytest.fail("mallopt called despite a bad argument"))
    with pytest.raises(ValueError, match=match):
        perf.tune_allocator(**kw)


def test_no_mallopt_is_a_no_op(monkeypatch):
    monkeypatch.setattr(perf, "_mallopt", lambda: None)
    assert perf.tune_allocator() is None


def test_a_refused_threshold_changes_nothing_else(monkeypatch):
    calls = []
    monkeypatch.setattr(perf, "_mallopt", lambda: lambda param, value: calls.append(param) or 0)
    assert perf.tune_allocator() is None
    assert calls == [perf.M_MMAP_THRESHOLD]


def test_openblas_function_finds_numpys_bundled_blas_or_says_none():
    from minilora.perf import openblas_function

    assert openblas_function("no_such_function_anywhere") is None
    get = openblas_function("get_num_threads")
    if get is None:  # a NumPy built against another BLAS
        return
    assert int(get()) >= 1
