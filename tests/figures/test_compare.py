"""The tolerance for trained figures: BLAS round-off passes it, a change a reader could see does not; and
``render_many`` leaves a file untouched when the fresh render shows the same figure."""

import json
from types import SimpleNamespace

import matplotlib.pyplot as plt
import numpy as np
import pytest

from minilora import figures
from minilora import lora_experiments as E
from minilora.figures import REGISTRY, FigureSpec
from minilora.figures.compare import TOLERANCE, PixelDifference, pixel_difference

STEPS = np.arange(0, 301, 10)


def _curves(scale=None, seed=None):
    """Loss curves shaped like the rank sweep's: two plateaus, two fits that reach 1e-9, full fine-tuning."""
    shapes = {1: (0.07, 8.0), 2: (0.04, 12.0), 4: (1e-10, 9.0), 8: (1e-10, 11.0), "full": (1e-6, 25.0)}
    rng = np.random.default_rng(seed)
    out = {}
    for key, (plateau, rate) in shapes.items():
        loss = plateau + (0.2 - plateau) * np.exp(-STEPS / rate)
        if seed is not None:  # round-off of other BLAS kernels: ~1e-4 relative, measured (compare.py)
            loss = loss * (1 + 1e-4 * rng.standard_normal(loss.shape))
        if scale is not None and key == scale[0]:
            loss = loss * np.where(STEPS >= 150, scale[1], 1.0)
        out[key] = SimpleNamespace(eval_step=list(STEPS), eval_loss=list(loss))
    return out


def _render_rank_figure(monkeypatch, path, **kw):
    """The real lora_rank figure, drawn from given curves instead of training (fast, and fully controlled)."""
    monkeypatch.setattr(E, "rank_sweep", lambda *a, **k: _curves(**kw))
    fig = figures.draw("lora_rank")
    with plt.rc_context(figures.RC):
        figures.save(fig, path)
    plt.close(fig)
    return path


def test_roundoff_passes_and_a_visible_change_fails_on_the_real_figure(monkeypatch, tmp_path):
    base = _render_rank_figure(monkeypatch, tmp_path / "base.png")
    noisy = _render_rank_figure(monkeypatch, tmp_path / "noisy.png", seed=0)
    changed = _render_rank_figure(monkeypatch, tmp_path / "changed.png", scale=(8, 1.5))
    assert base.read_bytes() != noisy.read_bytes(), "the round-off must change some pixels, or this tests nothing"
    assert pixel_difference(base, noisy).within(TOLERANCE), pixel_difference(base, noisy)
    diff = pixel_difference(base, changed)  # r = 8's curve 1.5x higher from step 150 on: 0.18 decades
    assert not diff.within(TOLERANCE), diff


def _synthetic(path, title="rank-4 teacher: LoRA needs r >= 4", factor=1.0, color="C0", tint=None):
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.semilogy(STEPS, 0.2 * np.exp(-STEPS / 12.0) * factor + 1e-9, color=color, lw=1.5, label="r = 4")
    ax.semilogy(STEPS, 0.05 + 0.15 * np.exp(-STEPS / 8.0), color="C1", lw=1.5, label="r = 1")
    ax.set(title=title, xlabel="step", ylabel="eval MSE", ylim=(1e-10, 1))
    ax.legend()
    if tint is not None:
        fig.patch.set_facecolor(tint)
    with plt.rc_context(figures.RC):
        figures.save(fig, path)
    plt.close(fig)
    return path


def _one_pixel_factor():
    """The factor that moves a curve by one saved pixel on the synthetic figure's 10-decade axis."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.set(yscale="log", ylim=(1e-10, 1))
    fig.canvas.draw()
    height_px = ax.bbox.height * figures.RC["savefig.dpi"] / fig.dpi
    plt.close(fig)
    return 10 ** (10 / height_px)


@pytest.mark.parametrize("change", ["one character of the title", "a curve one pixel higher", "a line recoloured",
                                    "a faint tint everywhere"])
def test_a_change_a_reader_could_see_exceeds_the_tolerance(change, tmp_path):
    base = _synthetic(tmp_path / "base.png")
    kw = {"one character of the title": dict(title="rank-4 teacher: LoRA needs r >= 5"),
          "a curve one pixel higher": dict(factor=_one_pixel_factor()),
          "a line recoloured": dict(color="C2"),
          "a faint tint everywhere": dict(tint="#fafafa")}[change]
    diff = pixel_difference(base, _synthetic(tmp_path / "changed.png", **kw))
    assert not diff.within(TOLERANCE), f"{change}: {diff}"


def test_roundoff_sized_change_is_within_the_tolerance(tmp_path):
    base = _synthetic(tmp_path / "base.png")
    diff = pixel_difference(base, _synthetic(tmp_path / "noisy.png", factor=1 + 1e-4))
    assert diff.within(TOLERANCE), diff


def test_pixel_difference_of_images_of_different_size():
    a, b = np.zeros((4, 5, 3), np.uint8), np.zeros((5, 4, 3), np.uint8)
    diff = pixel_difference(a, b)
    assert diff == PixelDifference(False, 255, float("inf"), 20) and not diff.within(TOLERANCE)
    assert str(diff) == "different sizes"


# ------------------------------------------------------------------ render_many: write only what changed
@pytest.fixture
def fake_figures(monkeypatch):
    """Two registered figures whose drawing the test controls: one exact, one trained."""
    state = {"exact": 1.0, "trained": 1.0}

    def draw(key):
        def func():
            fig, ax = plt.subplots(figsize=(4, 3))
            ax.semilogy(STEPS, 0.2 * np.exp(-STEPS / 12.0) * state[key] + 1e-9)
            ax.set_title(key)
            return fig
        return func

    monkeypatch.setitem(REGISTRY, "fake_exact", FigureSpec("fake_exact", draw("exact"), "假.jpeg"))
    monkeypatch.setitem(REGISTRY, "fake_trained", FigureSpec("fake_trained", draw("trained"), trained=True))
    return state


def _snapshot(out):
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()}


def test_render_many_writes_only_what_shows_a_different_figure(fake_figures, tmp_path):
    names = ["fake_exact", "fake_trained"]
    first = figures.render_many(names, tmp_path)
    assert [(o.path.name, o.status) for o in first] == [
        ("fake_exact.png", "new"), ("假.jpeg", "new"), ("fake_trained.png", "new")]
    manifest = json.loads((tmp_path / figures.MANIFEST).read_text(encoding="utf-8"))
    assert manifest["determined_by"] == figures.determined_by()
    assert manifest["figures"]["fake_trained.png"]["rendered_with"] == figures.blas_info()
    assert "rendered_with" not in manifest["figures"]["fake_exact.png"]
    before = _snapshot(tmp_path)

    again = figures.render_many(names, tmp_path)  # nothing changed: nothing written, not even the manifest
    assert [o.status for o in again] == ["unchanged"] * 3
    assert _snapshot(tmp_path) == before

    fake_figures["trained"] = 1 + 1e-4  # round-off: the committed file stays
    kept = figures.render_many(["fake_trained"], tmp_path)
    assert [o.status for o in kept] == ["kept"] and kept[0].difference.within(TOLERANCE)
    assert kept[0].difference.changed_pixels > 0
    assert _snapshot(tmp_path) == before

    fake_figures["trained"] = 3.0  # a real change: written, and recorded in the manifest
    fake_figures["exact"] = 1 + 1e-4  # an exact figure has no tolerance: any different byte is written
    changed = figures.render_many(names, tmp_path)
    assert {o.path.name: o.status for o in changed} == {
        "fake_exact.png": "rewritten", "假.jpeg": "rewritten", "fake_trained.png": "rewritten"}
    manifest = json.loads((tmp_path / figures.MANIFEST).read_text(encoding="utf-8"))
    for name, (data, _) in _snapshot(tmp_path).items():
        if name != figures.MANIFEST:
            assert data != before[name][0]
            assert manifest["figures"][name]["sha256"] == figures._sha256(tmp_path / name)
    assert not any(p.name.startswith(".render-") for p in tmp_path.iterdir())  # no temporary directory left
