"""A third benchmark dataset, `textured`: the synthetic set's scenes, painted with real tissue texture.

`synthetic` and `focal` draw every class from stylised nuclei and glands; a
method tuned, even unknowingly, to those shapes would look better there than
on real tissue. `textured` keeps the scene geometry (tissue islands, lesions
of every class on the slides) but differs in the two things a head reads:

- **How tissue looks.** Each class is a texture cut from a real stained
  image: the H&E tile packaged with `wsidicom-data` and scikit-image's IHC
  image (`skimage.data.immunohistochemistry`). Colour deconvolution
  (`skimage.color.rgb2hed`) turns each into stain-density fields, which are
  tiled seamlessly (random flips and quarter turns, four half-tile-shifted
  tilings blended away from their seams) and rendered again through the synthetic set's
  Beer-Lambert model, so patients still differ in stain vectors, strength,
  blur and noise. normal: the H&E tile's haematoxylin and eosin; benign: the
  same tile at twice the scale (coarser structure); in situ: the IHC
  image's haematoxylin, its DAB as eosin-like background; invasive: the IHC
  image at 1.5x with its DAB recast as haematoxylin (dense dark texture).
- **How class patches look.** A class-k patch holds 2-5 small irregular foci
  of k covering 15-50% of it, normal tissue between them; `synthetic` has one
  dominant lesion (>= 40%), `focal` one small ringed lesion (10-45%).

Written in the `folder` layout of `segclass.synthetic` (see its module
docstring), with `textured.json` as the marker. The dataset was designed
before any training result on it was seen and is not tuned to any method.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from segclass.errors import DatasetError
from segclass.synthetic import Appearance, _beer_lambert, _blob_mask, build_atomically, write_scenes

FORMAT_VERSION = 1
MARKER = "textured.json"


@dataclass(frozen=True)
class TexturedConfig:
    """Size of the generated dataset and the shape of its class patches' foci."""

    seed: int = 23  # everything below is a pure function of this seed (other patients than synthetic's 0, focal's 11)
    slide_size: int = 1024  # side of a slide at 1.25x, in pixels
    train_slides: int = 3
    val_slides: int = 1
    test_slides: int = 2
    cls_patients: int = 40
    cls_per_class: int = 100
    patch_size: int = 128
    foci_low: int = 2  # foci per class patch, drawn from [foci_low, foci_high]
    foci_high: int = 5
    focus_radius_low: float = 0.08  # radii as fractions of the patch side
    focus_radius_high: float = 0.2
    share_low: float = 0.15  # the foci's share of the patch, redrawn until within [share_low, share_high]
    share_high: float = 0.5


@dataclass(frozen=True)
class ClassTexture:
    """Where a class's texture comes from: a source image, a zoom, and how its stains become H and E densities."""

    source: str  # "he" (wsidicom-data's H&E tile) or "ihc" (scikit-image's IHC image)
    zoom: float
    hema: tuple[float, float, float]  # weights of the source's (H, E, DAB) densities in haematoxylin
    eosin: tuple[float, float, float]  # ... and in eosin
    eosin_floor: float  # eosin everywhere in the class's tissue (stroma)


CLASS_TEXTURES = (
    ClassTexture("he", 1.0, (0.8, 0.0, 0.0), (0.0, 0.5, 0.0), 0.30),  # normal
    ClassTexture("he", 2.0, (1.0, 0.0, 0.0), (0.0, 0.4, 0.0), 0.22),  # benign
    ClassTexture("ihc", 1.0, (1.0, 0.0, 0.0), (0.0, 0.0, 0.35), 0.25),  # in situ
    ClassTexture("ihc", 1.5, (0.7, 0.0, 0.8), (0.0, 0.0, 0.0), 0.40),  # invasive
)


def stain_sources() -> dict[str, np.ndarray]:
    """The real images as stain densities (H, E, DAB; each scaled so its 95th percentile is 1), square-cropped."""
    from skimage import data
    from skimage.color import rgb2hed

    try:
        import wsidicom_data
    except ImportError as exc:
        raise DatasetError("the textured dataset takes its H&E texture from the wsidicom-data package: "
                           "pip install wsidicom-data (it is in segclass's test extra)") from exc
    tile = Path(wsidicom_data.__file__).parent / "data" / "test_tile.png"
    with Image.open(tile) as file:
        he = np.asarray(file.convert("RGB"))
    sources = {}
    for name, rgb in (("he", he), ("ihc", data.immunohistochemistry())):
        side = min(rgb.shape[:2])
        hed = rgb2hed(rgb[:side, :side]).astype(np.float32)
        scale = np.maximum(np.percentile(hed, 95, axis=(0, 1)), 1e-3)
        sources[name] = np.clip(hed / scale, 0.0, 2.0)
    return sources


def _tiling(source: np.ndarray, shape: tuple[int, int], origin: tuple[int, int],
            rng: np.random.Generator) -> np.ndarray:
    """`source` tiled over `shape` in random flips and quarter turns, the tile grid starting at -`origin`."""
    side = source.shape[0]
    rows, cols = (shape[0] + origin[0]) // side + 2, (shape[1] + origin[1]) // side + 2
    canvas = np.empty((rows * side, cols * side, source.shape[2]), np.float32)
    for r in range(rows):
        for c in range(cols):
            tile = np.rot90(source, int(rng.integers(4)))
            canvas[r * side:(r + 1) * side, c * side:(c + 1) * side] = tile[:, ::-1] if rng.random() < 0.5 else tile
    return canvas[origin[0]:origin[0] + shape[0], origin[1]:origin[1] + shape[1]]


def seamless_texture(source: np.ndarray, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """`source` over `shape` without visible seams: four tilings, shifted by half a tile down, across or both,
    each weighted by sin^2 / cos^2 windows that vanish on its own seams and sum to 1 everywhere."""
    side = source.shape[0]
    origin = (int(rng.integers(side)), int(rng.integers(side)))
    ys = np.sin(math.pi * ((np.arange(shape[0]) + origin[0]) % side) / side) ** 2
    xs = np.sin(math.pi * ((np.arange(shape[1]) + origin[1]) % side) / side) ** 2
    out = np.zeros((*shape, source.shape[2]), np.float32)
    for down, wy in ((0, ys), (side // 2, 1 - ys)):
        for across, wx in ((0, xs), (side // 2, 1 - xs)):
            shifted = ((origin[0] + down) % side, (origin[1] + across) % side)
            out += (wy[:, None] * wx[None, :])[..., None].astype(np.float32) * _tiling(source, shape, shifted, rng)
    return out


def render_textured(labels: np.ndarray, tissue: np.ndarray, appearance: Appearance, sources: dict[str, np.ndarray],
                    rng: np.random.Generator) -> np.ndarray:
    """RGB uint8 for a label map and tissue mask: each class's real-image texture, in this patient's stains."""
    shape = labels.shape
    hema = np.zeros(shape, np.float32)
    eosin = np.zeros(shape, np.float32)
    for cls, texture in enumerate(CLASS_TEXTURES):
        where = tissue & (labels == cls)
        if not where.any():
            continue
        zoom = texture.zoom * appearance.scale  # the patient's scale, as in the synthetic set
        source = ndimage.zoom(sources[texture.source], (zoom, zoom, 1), order=1)
        field = seamless_texture(source, shape, rng)
        hema[where] = (field[where] @ np.asarray(texture.hema, np.float32))
        eosin[where] = texture.eosin_floor + field[where] @ np.asarray(texture.eosin, np.float32)
    hema = np.clip(hema, 0.0, 1.5) + 0.04 * tissue
    return _beer_lambert(hema, np.clip(eosin, 0.0, 1.2), appearance, rng)


def patch_foci(target: int, size: int, rng: np.random.Generator, config: TexturedConfig) -> tuple[np.ndarray, np.ndarray]:
    """Label map and tissue of one class patch: 2-5 foci of `target` covering share_low-share_high of it (class 0:
    normal only). The foci are redrawn until their share is in range; the last draw stands if none is."""
    shape = (size, size)
    tissue = np.ones(shape, bool)
    if rng.random() < 0.3:  # some patches touch the tissue edge, as in the synthetic set
        tissue = _blob_mask(shape, tuple(rng.uniform(0.3, 0.7, 2) * size), (size * 0.8, size * 0.8), 0.0, 0.3, rng)
    labels = np.zeros(shape, np.uint8)
    if target == 0:
        return labels, tissue
    for _ in range(30):
        labels[:] = 0
        for _ in range(int(rng.integers(config.foci_low, config.foci_high + 1))):
            radii = tuple(rng.uniform(config.focus_radius_low, config.focus_radius_high, 2) * size)
            center = tuple(rng.uniform(0.15, 0.85, 2) * size)
            labels[_blob_mask(shape, center, radii, rng.uniform(0, math.pi), 0.35, rng) & tissue] = target
        share = (labels == target).mean()
        if config.share_low <= share <= config.share_high:
            break
    return labels, tissue


def generate_textured(root: str | Path, config: TexturedConfig = TexturedConfig()) -> Path:
    """Write the textured dataset under `root` (atomically) and return `root`; at once when it is there already."""
    root = Path(root)
    marker = root / MARKER
    if marker.is_file():
        try:
            existing = json.loads(marker.read_text())
            if existing.get("config") == asdict(config) and existing.get("format_version") == FORMAT_VERSION:
                return root
        except json.JSONDecodeError:
            pass
        raise DatasetError(f"{root} holds a different textured dataset ({marker}); delete the folder or pick another "
                           "location")
    sources = stain_sources()
    return build_atomically(root, lambda staging: write_scenes(
        staging, config, lambda labels, tissue, appearance, rng: render_textured(labels, tissue, appearance, sources,
                                                                                 rng),
        lambda cls, rng: patch_foci(cls, config.patch_size, rng, config)), MARKER,
        {"format_version": FORMAT_VERSION, "config": asdict(config)})
