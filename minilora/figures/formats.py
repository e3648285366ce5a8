"""Figures of the number-formats chapter (blog section "Quantize", figure 量化.jpeg)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from minilora.figures import register
from minilora.formats import BF16, FP8_E4M3, FP8_E5M2, FP16, FP32, encode, round_to

COLORS = {"sign": "#e4572e", "exponent": "#4e79a7", "mantissa": "#59a14f"}


@register("float_formats", blog_name="量化.jpeg")
def float_formats() -> Figure:
    """Bit layouts of FP32, FP16, BF16, FP8 E4M3 and FP8 E5M2, each holding π, with range and precision."""
    formats = [FP32, FP16, BF16, FP8_E4M3, FP8_E5M2]
    value = np.float32(np.pi)
    fig, ax = plt.subplots(figsize=(12.5, 5.6))
    cell, x0, row_h = 1.0, 5.2, 1.75         # bit cell width; the bits start after the name column
    x_text = x0 + 32 * cell + 0.7            # every format's facts in one column, right of FP32's 32 bits
    for row, fmt in enumerate(formats):
        y = (len(formats) - 1 - row) * row_h
        bits = int(encode(value, fmt))
        pattern = format(bits, f"0{fmt.bits}b")
        kinds = ["sign"] + ["exponent"] * fmt.exp_bits + ["mantissa"] * fmt.man_bits
        for i, (kind, bit) in enumerate(zip(kinds, pattern)):
            ax.add_patch(Rectangle((x0 + i * cell, y), cell, 1, facecolor=COLORS[kind], edgecolor="white", lw=1))
            ax.text(x0 + (i + 0.5) * cell, y + 0.5, bit, ha="center", va="center", color="white",
                    fontsize=8, family="monospace")
        ax.text(0, y + 0.5, fmt.name.upper().replace("_", " "), va="center", fontsize=11, weight="bold")
        facts = (f"1 + {fmt.exp_bits} + {fmt.man_bits} bits, bias {fmt.bias}",
                 f"max {_num(fmt.max)}, min normal {fmt.min_normal:.3g}",
                 f"eps {fmt.eps:.3g};  π → {float(round_to(value, fmt)):.7g}")
        for k, line in enumerate(facts):
            ax.text(x_text, y + 0.85 - 0.35 * k, line, va="center", fontsize=8.5,
                    color="black" if k == 0 else "#333333")
    for i, (kind, color) in enumerate(COLORS.items()):
        ax.add_patch(Rectangle((x0 + i * 7, -1.3), 0.8, 0.6, facecolor=color))
        ax.text(x0 + i * 7 + 1.1, -1.0, kind, va="center", fontsize=10)
    ax.set_xlim(0, x_text + 12.5)
    ax.set_ylim(-1.6, (len(formats) - 1) * row_h + 1.3)
    ax.set_axis_off()
    ax.set_title("Floating-point formats bit by bit, each storing π (sign · exponent · mantissa)", fontsize=12)
    fig.tight_layout()
    return fig


def _num(v: float) -> str:
    """A format's largest value as people write it: 65504, 448, 57344 exactly; 3.40282e+38 for FP32/BF16."""
    return f"{v:.0f}" if v < 1e6 else f"{v:.6g}"
