"""Every figure renders to a valid PNG, deterministically; the committed figures/ are up to date."""

import hashlib
import json

import pytest
from conftest import ROOT

from minilora import figures

NAMES = figures.names()
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("name", NAMES)
def test_figure_renders_twice_identically(name, tmp_path):
    (a,) = figures.render(name, tmp_path / "a")
    (b,) = figures.render(name, tmp_path / "b")
    data = a.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 5000
    assert data == b.read_bytes(), f"{name} is not byte-reproducible"
    assert b"Software" not in data[:4096] and b"Creation Time" not in data[:4096]


def test_blog_names(tmp_path):
    paths = figures.render("float_formats", tmp_path, blog_names=True)
    assert [p.name for p in paths] == ["float_formats.png", "量化.jpeg"]
    assert paths[1].read_bytes()[:3] == b"\xff\xd8\xff"  # a JPEG, as the blog uses


def test_unknown_figure_lists_valid_names(tmp_path):
    with pytest.raises(ValueError, match="valid names: .*float_formats"):
        figures.render_many(["nope"], tmp_path)


def test_committed_figures_are_current(tmp_path):
    manifest_path = ROOT / "figures" / figures.MANIFEST
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    if manifest["versions"] != figures.versions():
        pytest.skip(f"figures/ were made with {manifest['versions']}, this machine has {figures.versions()}: "
                    "bytes may legitimately differ (python -m minilora figures regenerates them)")
    for name in NAMES:
        committed = ROOT / "figures" / f"{name}.png"
        assert committed.exists(), f"figures/{name}.png is missing: run python -m minilora figures"
        (fresh,) = figures.render(name, tmp_path)
        assert fresh.read_bytes() == committed.read_bytes(), (
            f"figures/{name}.png is stale: run python -m minilora figures {name}")
        assert manifest["sha256"][f"{name}.png"] == hashlib.sha256(committed.read_bytes()).hexdigest()
