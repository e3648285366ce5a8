"""Every golden file says what made it: the generator, its commit, and the reference libraries' versions."""

import sys

import pytest
from conftest import GOLDEN, ROOT, load_golden

sys.path.insert(0, str(ROOT / "tools"))
from golden._meta import read_meta  # noqa: E402

FILES = sorted(GOLDEN.glob("*.npz"))


def test_there_are_golden_files():
    assert len(FILES) >= 7, [p.name for p in FILES]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_golden_file_records_its_provenance(path):
    meta = read_meta(load_golden(path.stem))
    assert (ROOT / meta["generator"]).is_file(), f"{path.name}: generator {meta['generator']} does not exist"
    assert meta["generator"] == f"tools/golden/{path.stem}.py"
    assert len(meta["commit"]) == 40 and meta["commit"] != "unknown"
    assert meta["libraries"].get("numpy"), "the NumPy version is recorded"
    assert {"torch", "transformers", "bitsandbytes", "ml_dtypes", "peft"} & set(meta["libraries"]), (
        f"{path.name} names no reference library: {meta['libraries']}")
