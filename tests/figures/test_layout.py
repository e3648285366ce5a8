"""layout_problems finds what a reader would call a layout bug, and nothing in a clean figure."""

import matplotlib.pyplot as plt
import pytest

from minilora.figures.layout import layout_problems


@pytest.fixture
def ax():
    fig, ax = plt.subplots(figsize=(4, 3))
    yield ax
    plt.close(fig)


def test_clean_figure_has_no_problems(ax):
    ax.plot([0, 1], [0, 1], label="a line")
    ax.set(title="a title", xlabel="x", ylabel="y")
    ax.legend(loc="lower right")
    ax.text(0.1, 0.8, "a note", transform=ax.transAxes)
    ax.figure.tight_layout()
    assert layout_problems(ax.figure) == []


def test_axis_label_cut_off_without_tight_layout(ax):
    ax.set(xlabel="step")  # a 4 x 3 inch figure's default margins leave no room for it
    assert any("'step' runs off the canvas" in p for p in layout_problems(ax.figure))


def test_overlapping_texts(ax):
    ax.text(0.5, 0.5, "FP8 E4M3", fontsize=12)
    ax.text(0.52, 0.5, "0", fontsize=12)
    assert any("overlap" in p and "FP8 E4M3" in p for p in layout_problems(ax.figure))


def test_text_off_the_canvas(ax):
    ax.text(0.9, 0.5, "max 3.40282e+38, min normal 1.18e-38, eps 1.19e-07", transform=ax.transAxes)
    assert any("runs off the canvas" in p for p in layout_problems(ax.figure))


def test_line_through_text(ax):
    ax.set(xlim=(0, 1), ylim=(0, 1))
    ax.text(0.5, 0.5, "16-bit transformer", ha="center", va="center")
    ax.plot([0.1, 0.9], [0.5, 0.5], color="0.6")
    assert any("runs through text '16-bit transformer'" in p for p in layout_problems(ax.figure))
    assert layout_problems(ax.figure, lines_through_text=False) == []


def test_tick_label_under_another_axes(ax):
    fig = ax.figure
    ax.imshow([[0, 1], [1, 0]])
    ax.set_xticks([0, 1], ["0.43", "0.50"])
    cax = fig.add_axes((ax.get_position().x0, ax.get_position().y0 - 0.06, ax.get_position().width, 0.05))
    cax.plot([0, 1])
    assert any("lies under another axes" in p and "0.43" in p for p in layout_problems(fig))


def test_ticks_outside_the_view_are_not_reported(ax):
    ax.semilogy([1, 2, 3], [1e-3, 1e-2, 1e-1])
    ax.set_ylim(1e-3, 1e-1)  # the locator also makes labels for 1e-4 and 1, which are not drawn
    ax.figure.tight_layout()
    assert layout_problems(ax.figure) == []
