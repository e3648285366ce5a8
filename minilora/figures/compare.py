"""Compare two rendered figures pixel by pixel, as pytest-mpl does, with a tolerance round-off cannot pass.

A figure that trains a float32 model (``lora_init``, ``lora_rank``) carries the BLAS library's round-off:
OpenBLAS picks a different matrix kernel for each processor family (and may split sums differently per
thread count), so the trained numbers differ from machine to machine, by ~1e-4 relative on the plotted
curves (and by up to 100 % below the float32 round-off floor, which those figures therefore do not draw).
Drawn, a 1e-4 change moves a line by a small fraction of a pixel and changes the anti-aliased grey along its
edge by a few of 255 levels; a change a reader could see moves text or a line by a pixel or more, or
recolours something, and changes some pixel by far more. So two renders count as the same figure when

* they decode to the same size, and
* no colour channel of any pixel differs by more than ``max_level`` (of 255), and
* the root-mean-square difference over all channels (pytest-mpl's measure) is at most ``rms``.

The second bound catches small, local changes that an average over a million pixels dilutes (one changed
character); the third a faint change everywhere. Measured for ``lora_init`` and ``lora_rank`` on one x86-64
machine with the OpenBLAS kernels of six processor families forced by ``OPENBLAS_CORETYPE`` (SkylakeX,
Cooperlake, Haswell, Zen, Sandybridge, Nehalem), one or two threads, and NumPy's AVX-512 and AVX2 loops
switched off with ``NPY_DISABLE_CPU_FEATURES``: at most 3 levels, RMS at most 0.031; the tolerance is
five times that. ``tests/figures/test_compare.py`` checks that a one-character text change, a curve moved by
one pixel, a recoloured line and a faint tint all exceed it, and that a 1e-4 change of the plotted numbers
does not (on the real ``lora_rank`` figure too).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tolerance:
    """How different two renders of a trained figure may be and still count as the same figure.

    Attributes
    ----------
    max_level : the largest allowed difference of one colour channel of one pixel, in levels of 0–255.
    rms : the largest allowed root-mean-square difference over every channel of every pixel (0–255 scale).
    """

    max_level: int = 16
    rms: float = 0.15

    def as_dict(self) -> dict[str, float]:
        return {"max_level": self.max_level, "rms": self.rms}


#: the tolerance for figures drawn from float32 training (exact figures must match byte for byte)
TOLERANCE = Tolerance()


@dataclass(frozen=True)
class PixelDifference:
    """How two decoded images differ.

    Attributes
    ----------
    same_size : both images have the same height and width.
    max_level : largest difference of one channel of one pixel, 0–255 (255 when the sizes differ).
    rms : root-mean-square difference over all channels, 0–255 scale (inf when the sizes differ).
    changed_pixels : pixels with any channel different (all pixels of the larger image when sizes differ).
    """

    same_size: bool
    max_level: int
    rms: float
    changed_pixels: int

    def within(self, tolerance: Tolerance = TOLERANCE) -> bool:
        """True when the images count as the same figure under ``tolerance``."""
        return self.same_size and self.max_level <= tolerance.max_level and self.rms <= tolerance.rms

    def __str__(self) -> str:
        if not self.same_size:
            return "different sizes"
        return f"{self.changed_pixels} pixels differ, max {self.max_level}/255, rms {self.rms:.3f}"


def decode(path: str | os.PathLike) -> np.ndarray:
    """The RGB pixels of a PNG or JPEG file as a (height, width, 3) uint8 array (alpha dropped)."""
    from PIL import Image  # matplotlib's own dependency: it writes PNG and JPEG through Pillow

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def pixel_difference(a: np.ndarray | str | os.PathLike, b: np.ndarray | str | os.PathLike) -> PixelDifference:
    """Compare two images (uint8 arrays (H, W, 3), or paths of PNG/JPEG files) channel by channel.

    >>> x = np.zeros((2, 3, 3), np.uint8); y = x.copy(); y[0, 0, 1] = 6
    >>> print(pixel_difference(x, y))
    1 pixels differ, max 6/255, rms 1.414
    """
    a = decode(a) if not isinstance(a, np.ndarray) else a
    b = decode(b) if not isinstance(b, np.ndarray) else b
    if a.shape != b.shape:
        return PixelDifference(False, 255, float("inf"), max(a.shape[0] * a.shape[1], b.shape[0] * b.shape[1]))
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return PixelDifference(
        True,
        int(diff.max(initial=0)),
        float(np.sqrt(np.mean(diff.astype(np.float64) ** 2))),
        int(np.count_nonzero(diff.max(axis=-1))),
    )
