"""The DAVIS annotation palette, computed inline (never downloaded).

DAVIS annotations use the PASCAL VOC colour map: colour ``i`` is built from the bits of ``i``,
three bits at a time, into the high bits of red, green and blue.
"""

from __future__ import annotations

import numpy as np


def _voc_colour_map(n: int = 256) -> np.ndarray:
    cmap = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap


DAVIS_COLOURS: np.ndarray = _voc_colour_map()  # (256, 3) uint8
DAVIS_PALETTE: bytes = DAVIS_COLOURS.tobytes()  # 768 bytes, PIL's putpalette format
