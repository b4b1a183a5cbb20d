"""Class colours and overlays shared by every figure, overlay and palette PNG.

The first four follow BACH's order as the paper's Figs. C.10-C.12 colour it
(red benign, green in situ, blue invasive), except class 0: the paper draws
normal tissue white, the colour of glass, so a lesion-free prediction looks
like an empty slide. Here class 0 is a pale khaki and glass is never coloured:
figures draw the classes over the H&E image on tissue only (`overlay`), and
their legends say so (`legend_handles`). The rest extend the list with fixed,
distinguishable colours, so class k has the same colour in every plot of
every dataset whatever the number of classes.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

PALETTE = np.array([
    [230, 210, 110], [220, 30, 30], [30, 170, 30], [30, 60, 220],  # BACH: normal, benign, in situ, invasive
    [255, 150, 20], [150, 60, 200], [140, 86, 75], [230, 110, 190],
    [20, 190, 200], [170, 170, 30], [110, 110, 110], [0, 0, 0],
], np.uint8)
#: Weight of the class colour over the image in overlays: the tissue stays readable under it.
OVERLAY_ALPHA = 0.45
GLASS_LABEL = "glass (no tissue): image as is"


def class_colours(num_classes: int) -> np.ndarray:
    """num_classes x 3 uint8 colours (the palette repeats beyond its length)."""
    return PALETTE[np.arange(num_classes) % len(PALETTE)]


def colourize(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """H x W class ids -> H x W x 3 uint8 colours."""
    return class_colours(num_classes)[np.clip(mask, 0, num_classes - 1)]


def overlay(image: np.ndarray, mask: np.ndarray, tissue: np.ndarray, num_classes: int,
            alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """Class colours blended onto the RGB `image` where `tissue` is set; glass is left as the image shows it."""
    colours = colourize(mask, num_classes).astype(np.float32)
    blended = image[..., :3].astype(np.float32)
    blended[tissue] = (1 - alpha) * blended[tissue] + alpha * colours[tissue]
    return blended.round().astype(np.uint8)


def legend_handles(class_names: Sequence[str], labels: Sequence[str] | None = None, glass: bool = True) -> list:
    """Matplotlib legend entries: one swatch per class (in overlay strength), and glass when `glass`."""
    from matplotlib.patches import Patch

    colours = class_colours(len(class_names)) / 255.0
    handles = [Patch(facecolor=colour, edgecolor="black", linewidth=0.5, label=label)
               for colour, label in zip(colours, labels or class_names)]
    if glass:
        handles.append(Patch(facecolor="white", edgecolor="black", linewidth=0.5, label=GLASS_LABEL))
    return handles
