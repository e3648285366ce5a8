"""Every figure renders deterministically, with a clean layout; the committed figures/ (PNGs and the blog-named
copies) are current; the manifest says what determines their bytes."""

import hashlib
import json

import matplotlib.pyplot as plt
import pytest
from conftest import ROOT

from minilora import figures
from minilora.figures.compare import TOLERANCE, pixel_difference
from minilora.figures.layout import layout_problems

NAMES = figures.names()
SPECS = figures.load_all()
FILES = [(spec, f) for spec in SPECS.values() for f in spec.files]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
#: the pictures of the blog post, by their file names there: each one has a redrawn copy
BLOG_PICTURES = {"lora.png", "余弦退火.png", "qlora.png", "量化.jpeg", "block-wise.jpeg"}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """Draw every figure once: its layout problems and its files (PNG + blog copy) in a temporary directory."""
    out = tmp_path_factory.mktemp("rendered")
    result = {}
    for name in NAMES:
        fig = figures.draw(name)
        with plt.rc_context(figures.RC):
            try:
                problems = layout_problems(fig)
                paths = [figures.save(fig, out / f) for f in SPECS[name].files]
            finally:
                plt.close(fig)
        result[name] = (problems, paths)
    return result


@pytest.mark.parametrize("name", NAMES)
def test_figure_layout_is_clean(name, rendered):
    problems, _ = rendered[name]
    assert problems == [], f"{name}: " + "; ".join(problems)


@pytest.mark.parametrize("name", NAMES)
def test_figure_renders_twice_identically(name, rendered, tmp_path):
    _, first = rendered[name]
    second = figures.render(name, tmp_path, blog_names=True)
    assert [p.name for p in second] == [p.name for p in first] == SPECS[name].files
    for a, b in zip(first, second):
        data = a.read_bytes()
        assert data.startswith(PNG_MAGIC if a.suffix == ".png" else JPEG_MAGIC) and len(data) > 5000
        assert data == b.read_bytes(), f"{a.name} is not byte-reproducible"
        assert b"Software" not in data[:4096] and b"Creation Time" not in data[:4096]


def test_every_blog_picture_has_a_redrawn_copy():
    blog = {spec.blog_name: spec.name for spec in SPECS.values() if spec.blog_name}
    assert set(blog) == BLOG_PICTURES
    assert blog["余弦退火.png"] == "cosine_annealing" and blog["量化.jpeg"] == "float_formats"
    assert blog["block-wise.jpeg"] == "llm_int8_decomposition" and blog["qlora.png"] == "qlora"


def test_unknown_figure_lists_valid_names(tmp_path):
    with pytest.raises(ValueError, match="valid names: .*float_formats"):
        figures.render_many(["nope"], tmp_path)


def _manifest():
    return json.loads((ROOT / "figures" / figures.MANIFEST).read_text(encoding="utf-8"))


def test_manifest_says_what_determines_the_bytes():
    manifest = _manifest()
    assert set(manifest["determined_by"]) == set(figures.determined_by())
    assert manifest["tolerance"]["max_level"] == TOLERANCE.max_level
    assert manifest["tolerance"]["rms"] == TOLERANCE.rms
    assert set(manifest["figures"]) == {f for _, f in FILES}, "figures/MANIFEST.json lists other files"
    for spec, f in FILES:
        entry = manifest["figures"][f]
        assert entry["trained"] == spec.trained, f
        assert ("rendered_with" in entry) == spec.trained, f  # the BLAS kernel and threads that made it
        assert entry["sha256"] == hashlib.sha256((ROOT / "figures" / f).read_bytes()).hexdigest(), (
            f"figures/{f} does not match its manifest entry: run python -m minilora figures")
    assert {name for name, s in SPECS.items() if s.trained} == {"lora_init", "lora_rank", "peft_methods"}


@pytest.mark.parametrize("spec,file", FILES, ids=[f for _, f in FILES])
def test_committed_figure_is_current(spec, file, rendered):
    committed = ROOT / "figures" / file
    assert committed.exists(), f"figures/{file} is missing: run python -m minilora figures"
    manifest = _manifest()
    if manifest["determined_by"] != figures.determined_by():
        pytest.skip(f"figures/ were made with {manifest['determined_by']}, this machine has "
                    f"{figures.determined_by()}: bytes may legitimately differ (python -m minilora figures "
                    "regenerates them)")
    _, paths = rendered[spec.name]
    (fresh,) = [p for p in paths if p.name == file]
    if spec.trained:  # BLAS round-off: the pixels, within the tolerance a real change exceeds
        diff = pixel_difference(fresh, committed)
        assert diff.within(TOLERANCE), f"figures/{file} is stale ({diff}): run python -m minilora figures"
    else:
        assert fresh.read_bytes() == committed.read_bytes(), (
            f"figures/{file} is stale: run python -m minilora figures {spec.name}")
