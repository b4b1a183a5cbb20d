"""Class colours shared by every figure and overlay.

The first four are BACH's (white normal, red benign, green in situ, blue
invasive, as in the paper's Figs. C.10-C.12); the rest extend them with fixed,
distinguishable colours, so class k has the same colour in every plot of every
dataset whatever the number of classes.
"""

from __future__ import annotations

import numpy as np

PALETTE = np.array([
    [255, 255, 255], [220, 30, 30], [30, 170, 30], [30, 60, 220],  # BACH: normal, benign, in situ, invasive
    [255, 150, 20], [150, 60, 200], [140, 86, 75], [230, 110, 190],
    [20, 190, 200], [170, 170, 30], [110, 110, 110], [0, 0, 0],
], np.uint8)


def class_colours(num_classes: int) -> np.ndarray:
    """num_classes x 3 uint8 colours (the palette repeats beyond its length)."""
    return PALETTE[np.arange(num_classes) % len(PALETTE)]


def colourize(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """H x W class ids -> H x W x 3 uint8 colours."""
    return class_colours(num_classes)[np.clip(mask, 0, num_classes - 1)]
