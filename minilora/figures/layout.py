"""Find what a reader would call a layout bug in a drawn figure: text that leaves the canvas, text on text,
and lines drawn through text.

:func:`layout_problems` draws the figure with its own renderer and measures every visible text's box in
pixels. It is how ``tests/test_figures.py`` checks every figure, so that a label that overlaps a box or a
number that runs off the edge is a failing test, not something a reviewer has to notice.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.legend import Legend
from matplotlib.lines import Line2D
from matplotlib.text import Text
from matplotlib.transforms import Bbox

#: pixels of overlap ignored (anti-aliasing, the ink-free margins of a text's box)
SLACK = 1.0


def _undrawn_tick_labels(fig: Figure) -> set[int]:
    """Tick labels matplotlib keeps but does not draw: those of a hidden axis and those of ticks outside
    the view limits."""
    out = set()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            scale = axis.get_transform()  # compare positions as drawn: log axes in decades
            with np.errstate(invalid="ignore", divide="ignore"):
                lo, hi = sorted(scale.transform(np.asarray(axis.get_view_interval(), float).reshape(-1, 1)).ravel())
                ticks = axis.get_major_ticks() + axis.get_minor_ticks()
                locs = scale.transform(np.array([[t.get_loc()] for t in ticks], float).reshape(-1, 1)).ravel()
            slack = 1e-9 * ((hi - lo) or 1.0)
            for tick, loc in zip(ticks, locs):
                if not ax.axison or not axis.get_visible() or not (lo - slack <= loc <= hi + slack):
                    out.update({id(tick.label1), id(tick.label2)})
    return out


def _owners(fig: Figure) -> dict[int, object]:
    """The axes each text belongs to (tick and axis labels have ``.axes`` None, so ask each axes); texts of
    the figure itself (suptitle, ``fig.text``) are absent."""
    return {id(t): ax for ax in fig.axes for t in ax.findobj(Text)}


def _texts(fig: Figure) -> list[Text]:
    undrawn = _undrawn_tick_labels(fig)
    owners = _owners(fig)
    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip() and id(t) not in undrawn
            and (id(t) not in owners or owners[id(t)].get_visible())]


def _label(t: Text) -> str:
    return repr(t.get_text().replace("\n", " ")[:40])


def _lines(fig: Figure) -> list[Line2D]:
    """Lines that are drawing, not decoration: skip legend handles and axis spines/ticks."""
    legend_lines = {id(h) for leg in fig.findobj(Legend) for h in leg.get_lines()}
    out = []
    for ax in fig.axes:
        for line in ax.get_lines():
            if line.get_visible() and id(line) not in legend_lines and line.get_linestyle() not in ("None", ""):
                out.append(line)
    return out


def _shrink(b: Bbox, by: float) -> Bbox:
    return Bbox.from_extents(b.x0 + by, b.y0 + by, b.x1 - by, b.y1 - by)


def layout_problems(fig: Figure, lines_through_text: bool = True) -> list[str]:
    """Every text outside the canvas, every pair of overlapping texts and every line through a text.

    Parameters
    ----------
    fig : a drawn or undrawn figure (it is drawn here, with the Agg renderer).
    lines_through_text : also report plotted lines (``Line2D``) that pass through a text's box.

    Returns
    -------
    list of str, one sentence per problem (empty when the layout is clean).
    """
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    canvas = fig.bbox
    texts = _texts(fig)
    boxes = [Text.get_window_extent(t, renderer) for t in texts]  # an annotation: its text, not its arrow
    problems = []
    for t, b in zip(texts, boxes):
        if b.x0 < canvas.x0 - SLACK or b.y0 < canvas.y0 - SLACK or b.x1 > canvas.x1 + SLACK or b.y1 > canvas.y1 + SLACK:
            problems.append(f"text {_label(t)} runs off the canvas ({b.x0:.0f}..{b.x1:.0f} x {b.y0:.0f}..{b.y1:.0f} "
                            f"px on {canvas.width:.0f} x {canvas.height:.0f})")
    for i in range(len(texts)):
        for j in range(i + 1, len(texts)):
            a, b = _shrink(boxes[i], SLACK), _shrink(boxes[j], SLACK)
            if a.overlaps(b):
                problems.append(f"texts {_label(texts[i])} and {_label(texts[j])} overlap")
    owners = _owners(fig)
    for t, b in zip(texts, boxes):  # a text hidden under another axes (a tick label under a colour bar)
        for ax in fig.axes:
            if ax is owners.get(id(t)) or not ax.get_visible() or not ax.axison:
                continue
            if _shrink(b, SLACK).overlaps(ax.bbox):
                problems.append(f"text {_label(t)} lies under another axes ({ax.get_label() or 'unnamed'})")
    if lines_through_text:
        for line in _lines(fig):
            with np.errstate(invalid="ignore", divide="ignore"):
                xy = line.get_transform().transform(np.column_stack(line.get_data()).astype(float))
            ok = np.isfinite(xy).all(axis=1)  # log axes map 0 and NaN (a gap in the line) to non-finite pixels
            drawn = ok[:-1] & ok[1:]          # the segments matplotlib draws
            if not drawn.any():
                continue
            start, seg = xy[:-1][drawn], np.diff(xy, axis=0)[drawn]
            n = np.maximum(2, (np.hypot(*seg.T) * 2).astype(int))  # a point every half pixel
            pts = np.concatenate([p + np.linspace(0, 1, k)[:, None] * s for p, s, k in zip(start, seg, n)])
            if line.get_clip_on():  # what lies outside the axes is not drawn
                box = line.axes.bbox
                pts = pts[(pts[:, 0] >= box.x0) & (pts[:, 0] <= box.x1) & (pts[:, 1] >= box.y0) & (pts[:, 1] <= box.y1)]
            for t, b in zip(texts, boxes):
                if owners.get(id(t)) is not line.axes:
                    continue
                inner = _shrink(b, 2 * SLACK)
                inside = ((pts[:, 0] > inner.x0) & (pts[:, 0] < inner.x1)
                          & (pts[:, 1] > inner.y0) & (pts[:, 1] < inner.y1))
                if inside.any():
                    problems.append(f"a line ({line.get_label()!r}) runs through text {_label(t)}")
    return problems
