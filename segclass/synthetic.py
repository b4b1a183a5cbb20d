"""A synthetic H&E dataset shaped like BACH, the default dataset everywhere.

Why it looks the way it does:
- Classes differ by *texture and nuclear morphology*, not by one colour:
  normal (stroma with sparse elongated nuclei, fat, glass background),
  benign (small glands: a white lumen ringed by one layer of small regular
  nuclei), in situ (ducts packed with medium round nuclei, cribriform holes,
  a dark rim) and invasive (irregular cords of large pleomorphic hyperchromatic
  nuclei in dense stroma).
- Images are rendered by Beer-Lambert from haematoxylin and eosin densities,
  so stain vectors, stain strength, scale, contrast and blur can vary per
  patient the way they do between labs and slides.
- As in BACH, the segmentation masks come from a few slides (few patients)
  while the classification patches come from many patients: class labels carry
  appearance variation that a few masks lack. Validation and test slides come
  from yet other patients.

Files are written in real formats, in the layout of the `folder` dataset:

    root/classes.txt                 one class name per line (line index = id)
    root/seg/images/<slide>.tiff     pyramidal tiled TIFF with resolution tags
    root/seg/masks/<slide>.png       uint8 class ids at the slide's level-0 size
    root/val/images, root/val/masks  the same for validation slides
    root/test/images, root/test/masks
    root/cls/<class name>/<patient>_<n>.png   128 x 128 classification patches
    root/synthetic.json              generation parameters and a file list

The pyramid's level 0 is at 2.5x (4 um/px); the 1.25x level (8 um/px) holds the
rendered pixels, and level 0 is their 2x upsampling. Structures are sized for
128 px patches at 1.25x, which is stylised (real nuclei are sub-pixel there).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image
from scipy import ndimage

from segclass.errors import DatasetError
from segclass.files import make_shareable
from segclass.slide import write_pyramidal_tiff

log = logging.getLogger(__name__)

CLASS_NAMES = ("normal", "benign", "in_situ", "invasive")
#: Microns per pixel at pyramid level 0 (2.5x); the rendered pixels sit at 1.25x (8 um/px).
LEVEL0_MPP = 4.0
FORMAT_VERSION = 1


@dataclass(frozen=True)
class SyntheticConfig:
    """Size of the generated dataset; the defaults build in well under a minute."""

    seed: int = 0  # everything below is a pure function of this seed
    slide_size: int = 1024  # side of a slide at 1.25x, in pixels
    train_slides: int = 3  # slides with masks for segmentation patches (BACH: 3)
    val_slides: int = 1  # validation slides, each holding all classes (BACH: 1)
    test_slides: int = 2  # test slides (BACH: 6)
    cls_patients: int = 40  # patients the classification patches come from
    cls_per_class: int = 100  # classification patches per class (BACH: 100)
    patch_size: int = 128  # classification patch side
    # Lesion of a classification patch: radii as fractions of the patch side, and
    # the least share of the patch it covers. The defaults make the labelled class
    # dominate; `FOCAL` leaves normal tissue around a smaller lesion.
    lesion_radius_low: float = 0.45
    lesion_radius_high: float = 0.85
    min_lesion_share: float = 0.4
    lesion_redraws: int = 0  # draws of a too-small lesion before it fills the patch


#: A second synthetic dataset for held-out comparisons: other patients and slides
#: (seed), and classification patches whose lesion is small, ringed by normal
#: tissue (about 10-45% of the patch), as in real patch-labelled data.
FOCAL = SyntheticConfig(seed=11, lesion_radius_low=0.2, lesion_radius_high=0.4, min_lesion_share=0.1,
                      lesion_redraws=20)


@dataclass(frozen=True)
class Appearance:
    """How one patient's slides look: stain, scale and optics."""

    h_vector: tuple[float, float, float]
    e_vector: tuple[float, float, float]
    h_strength: float
    e_strength: float
    scale: float  # multiplies every structure size
    contrast: float
    brightness: float
    blur: float  # gaussian sigma of the optics, pixels
    noise: float  # sensor noise std, 0..255 scale


def random_appearance(rng: np.random.Generator) -> Appearance:
    """Draw one patient's appearance; ranges mimic lab-to-lab H&E variation."""

    def unit(vector: np.ndarray) -> tuple[float, float, float]:
        vector = np.clip(vector, 0.02, None)
        return tuple(float(v) for v in vector / np.linalg.norm(vector))

    h_vector = unit(np.array([0.65, 0.70, 0.29]) + rng.normal(0, 0.11, 3))
    e_vector = unit(np.array([0.07, 0.99, 0.11]) + rng.normal(0, 0.11, 3))
    return Appearance(
        h_vector=h_vector,
        e_vector=e_vector,
        h_strength=float(rng.uniform(0.65, 1.35)),
        e_strength=float(rng.uniform(0.5, 1.35)),
        scale=float(rng.uniform(0.75, 1.35)),
        contrast=float(rng.uniform(0.8, 1.15)),
        brightness=float(rng.uniform(-12, 12)),
        blur=float(rng.uniform(0.0, 1.0)),
        noise=float(rng.uniform(1.0, 5.0)),
    )


# ---------------------------------------------------------------------------
# texture primitives
# ---------------------------------------------------------------------------
def _smooth_noise(shape: tuple[int, int], sigma: float | tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-std low-pass noise."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return (field - field.mean()) / (field.std() + 1e-6)


def _nuclei(
    shape: tuple[int, int],
    where: np.ndarray,
    density: float,
    sigma: float | tuple[float, float],
    rng: np.random.Generator,
) -> np.ndarray:
    """Blob-shaped nuclei at random points inside `where`, values in [0, 1]."""
    seeds = (rng.random(shape) < density) & where
    impulses = seeds * rng.uniform(0.8, 1.2, shape).astype(np.float32)
    sig = np.broadcast_to(np.asarray(sigma, dtype=np.float32), (2,))
    blobs = ndimage.gaussian_filter(impulses, tuple(sig)) * (2 * math.pi * float(sig[0] * sig[1]))
    # a soft threshold turns gaussian bumps into nuclei with fairly sharp edges
    return np.clip((blobs - 0.25) * 2.2, 0.0, 1.0)


def _distance_to_points(shape: tuple[int, int], where: np.ndarray, density: float, rng: np.random.Generator) -> np.ndarray:
    """Distance of every pixel to the nearest of random seed points inside `where`."""
    seeds = (rng.random(shape) < density) & where
    if not seeds.any():
        return np.full(shape, np.inf, dtype=np.float32)
    return ndimage.distance_transform_edt(~seeds).astype(np.float32)


def _cell_borders(shape: tuple[int, int], density: float, rng: np.random.Generator) -> np.ndarray:
    """Borders of the Voronoi cells of random seeds: the membranes of fat cells."""
    seeds = rng.random(shape) < density
    _, (iy, ix) = ndimage.distance_transform_edt(~seeds, return_indices=True)
    cell = iy * shape[1] + ix
    return (cell != np.roll(cell, 1, 0)) | (cell != np.roll(cell, 1, 1))


def _blob_mask(shape: tuple[int, int], center: tuple[float, float], radii: tuple[float, float], angle: float,
               roughness: float, rng: np.random.Generator) -> np.ndarray:
    """An ellipse with a noisy boundary (computed only inside its bounding box)."""
    reach = int(max(radii) * (1.0 + 2.5 * roughness)) + 2
    top, left = max(0, int(center[0]) - reach), max(0, int(center[1]) - reach)
    bottom, right = min(shape[0], int(center[0]) + reach + 1), min(shape[1], int(center[1]) + reach + 1)
    mask = np.zeros(shape, bool)
    if bottom <= top or right <= left:
        return mask
    yy, xx = np.mgrid[top:bottom, left:right].astype(np.float32)
    dy, dx = yy - center[0], xx - center[1]
    cos, sin = math.cos(angle), math.sin(angle)
    u, v = (dx * cos + dy * sin) / radii[1], (-dx * sin + dy * cos) / radii[0]
    wobble = _smooth_noise(yy.shape, max(2.0, min(radii) / 3), rng) * roughness
    mask[top:bottom, left:right] = (u * u + v * v) < 1.0 + wobble
    return mask


# ---------------------------------------------------------------------------
# scene: label map -> haematoxylin / eosin densities -> RGB
# ---------------------------------------------------------------------------
def _per_lesion(region: np.ndarray, rng: np.random.Generator, choices: tuple[float, ...] | None = None,
                low: float = 0.0, high: float = 1.0) -> np.ndarray:
    """A map holding one random value per connected lesion of `region` (0 outside).

    Lesions of one class differ from each other (grade, growth pattern), so a
    few annotated lesions cannot show the whole range that many labels do.
    """
    components, count = ndimage.label(region)
    values = rng.choice(choices, count) if choices is not None else rng.uniform(low, high, count)
    return np.concatenate([[0.0], values]).astype(np.float32)[components]


def _nuclei_by_size(shape: tuple[int, int], where: np.ndarray, density: np.ndarray, size_map: np.ndarray,
                    sizes: tuple[float, ...], rng: np.random.Generator) -> np.ndarray:
    """Nuclei whose gaussian size is chosen per lesion from `sizes`."""
    out = np.zeros(shape, np.float32)
    for size in sizes:
        chosen = where & (size_map == np.float32(size))
        if chosen.any():
            out += _nuclei(shape, chosen, density, size, rng)
    return np.clip(out, 0.0, 1.0)


def render_tissue(labels: np.ndarray, tissue: np.ndarray, appearance: Appearance, rng: np.random.Generator) -> np.ndarray:
    """Render an RGB uint8 image for a label map (class ids) and a tissue mask.

    Per-lesion parameters (nuclear size, density, gland and lumen size, growth
    pattern) are drawn from class-specific ranges that overlap between classes.
    """
    shape = labels.shape
    s = appearance.scale
    hema = np.zeros(shape, np.float32)
    eosin = np.zeros(shape, np.float32)

    # normal tissue: fibrous stroma with sparse elongated fibroblast nuclei, some fat
    fibres = _smooth_noise(shape, (0.7 * s, 4.0 * s), rng)
    stroma = tissue & (labels == 0)
    eosin[tissue] = 0.42 + 0.12 * fibres[tissue]
    fat_zone = stroma & (_smooth_noise(shape, 14 * s, rng) > 0.9)
    eosin[fat_zone] = np.where(_cell_borders(shape, 0.006 / s**2, rng)[fat_zone], 0.35, 0.03)
    hema += _nuclei(shape, stroma & ~fat_zone, 0.004 / s**2, (0.6 * s, 1.7 * s), rng) * 0.9

    # benign: small glands, white lumen ringed by one layer of small regular nuclei
    benign = labels == 1
    gland_density = _per_lesion(benign, rng, low=0.002, high=0.005) / s**2
    d = _distance_to_points(shape, benign, gland_density, rng)
    lumen_r = _per_lesion(benign, rng, low=1.8, high=4.5) * s
    ring_width = _per_lesion(benign, rng, low=2.0, high=3.5) * s
    lumen = benign & (d < lumen_r)
    ring = benign & (d >= lumen_r) & (d < lumen_r + ring_width)
    eosin[benign] = np.where(lumen[benign], 0.04, np.where(ring[benign], 0.33, eosin[benign]))
    sizes = tuple(v * s for v in (0.65, 0.85, 1.05))
    hema += _nuclei_by_size(shape, ring, _per_lesion(benign, rng, low=0.2, high=0.45),
                            _per_lesion(benign, rng, sizes), sizes, rng) * 0.85

    # in situ: ducts packed with medium round nuclei, solid or cribriform, dark rim
    in_situ = labels == 2
    hole_r = _per_lesion(in_situ, rng, low=1.2, high=2.5) * s
    hole_density = _per_lesion(in_situ, rng, choices=(0.0, 0.0015, 0.003)) / s**2
    holes = in_situ & (_distance_to_points(shape, in_situ & (hole_density > 0), hole_density, rng) < hole_r)
    rim = in_situ & ~ndimage.binary_erosion(in_situ, iterations=max(1, round(2 * s)))
    eosin[in_situ] = np.where(holes[in_situ], 0.05, 0.30)
    sizes = tuple(v * s for v in (0.85, 1.05, 1.3))
    hema += _nuclei_by_size(shape, in_situ & ~holes, _per_lesion(in_situ, rng, low=0.03, high=0.07),
                            _per_lesion(in_situ, rng, sizes), sizes, rng) * 0.9
    hema += rim * _per_lesion(in_situ, rng, low=0.1, high=0.5)

    # invasive: irregular cords of large pleomorphic hyperchromatic nuclei in dense stroma
    invasive = labels == 3
    cords = invasive & (_smooth_noise(shape, 2.5 * s, rng) > _per_lesion(invasive, rng, low=-0.4, high=0.6))
    eosin[invasive] = np.where(cords[invasive], 0.30, _per_lesion(invasive, rng, low=0.5, high=0.7)[invasive]
                               + 0.1 * fibres[invasive])
    grade = _per_lesion(invasive, rng, choices=(1.0, 1.3, 1.6))
    density = _per_lesion(invasive, rng, low=0.006, high=0.015)
    pleo = np.zeros(shape, np.float32)
    for g in (1.0, 1.3, 1.6):
        chosen = cords & (grade == np.float32(g))
        if chosen.any():
            pleo += sum(_nuclei(shape, chosen, density, sig * g * s, rng) for sig in (1.0, 1.4, 1.85))
    hema += np.clip(pleo, 0, 1) * 1.15

    hema = np.clip(hema, 0.0, 1.3) + 0.04 * tissue
    return _beer_lambert(hema, eosin, appearance, rng)


def _beer_lambert(hema: np.ndarray, eosin: np.ndarray, appearance: Appearance, rng: np.random.Generator) -> np.ndarray:
    od = (
        hema[..., None] * np.asarray(appearance.h_vector, np.float32) * (1.1 * appearance.h_strength)
        + eosin[..., None] * np.asarray(appearance.e_vector, np.float32) * (0.9 * appearance.e_strength)
    )
    rgb = 245.0 * np.power(10.0, -od)
    if appearance.blur > 0.05:
        rgb = ndimage.gaussian_filter(rgb, (appearance.blur, appearance.blur, 0))
    rgb = (rgb - 180.0) * appearance.contrast + 180.0 + appearance.brightness
    rgb += rng.normal(0.0, appearance.noise, rgb.shape)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def slide_labels(size: int, rng: np.random.Generator, all_classes: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Label map and tissue mask of one slide: tissue islands with lesions of every class."""
    shape = (size, size)
    tissue = np.zeros(shape, bool)
    for _ in range(rng.integers(2, 4)):
        center = rng.uniform(0.3, 0.7, 2) * size
        radii = tuple(rng.uniform(0.25, 0.42, 2) * size)
        tissue |= _blob_mask(shape, tuple(center), radii, rng.uniform(0, math.pi), 0.25, rng)
    labels = np.zeros(shape, np.uint8)
    # lesion counts and sizes per class, as fractions of the slide side
    plan = {1: (7, 12, 0.03, 0.065), 2: (8, 14, 0.02, 0.045), 3: (5, 8, 0.035, 0.07)}
    tissue_points = np.argwhere(ndimage.binary_erosion(tissue, iterations=size // 20))
    for cls, (low, high, r_low, r_high) in plan.items():
        count = int(rng.integers(low, high + 1)) if all_classes else int(rng.integers(0, high + 1))
        for _ in range(count):
            center = tissue_points[rng.integers(len(tissue_points))]
            radii = tuple(rng.uniform(r_low, r_high, 2) * size)
            blob = _blob_mask(shape, tuple(center.astype(float)), radii, rng.uniform(0, math.pi), 0.3, rng)
            labels[blob & tissue] = cls
    return labels, tissue


def patch_labels(target: int, size: int, rng: np.random.Generator, radius: tuple[float, float] = (0.45, 0.85),
                 min_share: float = 0.4, redraws: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Label map of one classification patch: a lesion of class `target` (or only normal tissue).

    The lesion's radii are `radius` fractions of the side; when it covers less
    than `min_share` of the patch it is drawn again (up to `redraws` times) and
    then fills the tissue, so the label is never carried by a sliver (paper 4:
    the labelled class dominates a patch).
    """
    shape = (size, size)
    tissue = np.ones(shape, bool)
    if rng.random() < 0.3:  # some patches touch the tissue edge
        tissue = _blob_mask(shape, tuple(rng.uniform(0.3, 0.7, 2) * size), (size * 0.8, size * 0.8), 0.0, 0.3, rng)
    labels = np.zeros(shape, np.uint8)
    if target > 0:
        for _ in range(1 + redraws):
            radii = tuple(rng.uniform(*radius, 2) * size)
            center = tuple(rng.uniform(0.35, 0.65, 2) * size)
            blob = _blob_mask(shape, center, radii, rng.uniform(0, math.pi), 0.3, rng)
            labels[:] = 0
            labels[blob & tissue] = target
            if (labels == target).mean() >= min_share:
                break
        if (labels == target).mean() < min_share:  # keep the labelled class dominant (paper 4)
            labels[tissue] = target
    return labels, tissue


# ---------------------------------------------------------------------------
# file writers
# ---------------------------------------------------------------------------
def _upsample(array: np.ndarray, factor: int, resample: int) -> np.ndarray:
    h, w = array.shape[:2]
    return np.asarray(Image.fromarray(array).resize((w * factor, h * factor), resample))


def generate(root: str | Path, config: SyntheticConfig = SyntheticConfig()) -> Path:
    """Write the synthetic dataset under `root` (atomically) and return `root`.

    Returns at once when `root` already holds a dataset built from the same config.
    """
    root = Path(root)
    marker = root / "synthetic.json"
    if marker.is_file():
        try:
            existing = json.loads(marker.read_text())
            # fields added later read as their defaults, so older datasets stay valid
            if {**asdict(SyntheticConfig()), **existing.get("config", {})} == asdict(config) and existing.get("format_version") == FORMAT_VERSION:
                return root
        except json.JSONDecodeError:
            pass
        raise DatasetError(
            f"{root} holds a different synthetic dataset ({marker}); delete the folder or pick another --data-root"
        )
    return build_atomically(root, lambda staging: _generate_into(staging, config), "synthetic.json",
                            {"format_version": FORMAT_VERSION, "config": asdict(config)})


def build_atomically(root: Path, write: Callable[[Path], dict[str, list[str]]], marker: str,
                     meta: dict[str, Any]) -> Path:
    """Run `write` into a staging folder beside `root`, add the marker file (`meta` and the files `write` listed),
    then move it to `root` in one rename: a killed build never leaves a dataset that looks whole."""
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    make_shareable(staging)
    try:
        files = write(staging)
        (staging / marker).write_text(json.dumps({**meta, "files": files}, indent=1))
        if root.exists():  # an empty or partial folder left by hand
            shutil.rmtree(root)
        os.replace(staging, root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return root


def write_scenes(root: Path, config: Any, render: Callable[[np.ndarray, np.ndarray, Appearance, np.random.Generator],
                                                            np.ndarray],
                 class_patch: Callable[[int, np.random.Generator], tuple[np.ndarray, np.ndarray]]) -> dict[str, list[str]]:
    """The folder layout of the generated sets (module docstring), one patient per slide and `cls_patients`
    patients for the class patches; `render` paints a label map, `class_patch` draws a class patch's labels.
    `config` has the fields of `SyntheticConfig` that say how many of each (seed, slides, patches)."""
    master = np.random.default_rng(config.seed)
    (root / "classes.txt").write_text("\n".join(CLASS_NAMES) + "\n")
    files: dict[str, list[str]] = {"seg": [], "val": [], "test": [], "cls": []}
    splits = [("seg", config.train_slides), ("val", config.val_slides), ("test", config.test_slides)]
    slide_index = 0
    for split, count in splits:
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
        for _ in range(count):
            rng = np.random.default_rng(master.integers(2**63))
            appearance = random_appearance(rng)  # one patient per slide
            labels, tissue = slide_labels(config.slide_size, rng)
            rgb = render(labels, tissue, appearance, rng)
            name = f"slide_{slide_index:02d}"
            write_pyramidal_tiff(root / split / "images" / f"{name}.tiff", _upsample(rgb, 2, Image.BICUBIC), LEVEL0_MPP)
            Image.fromarray(_upsample(labels, 2, Image.NEAREST)).save(root / split / "masks" / f"{name}.png")
            files[split].append(name)
            slide_index += 1
    patients = [random_appearance(np.random.default_rng(master.integers(2**63))) for _ in range(config.cls_patients)]
    for cls, name in enumerate(CLASS_NAMES):
        (root / "cls" / name).mkdir(parents=True)
        for n in range(config.cls_per_class):
            rng = np.random.default_rng(master.integers(2**63))
            patient = int(rng.integers(config.cls_patients))
            labels, tissue = class_patch(cls, rng)
            rgb = render(labels, tissue, patients[patient], rng)
            file = f"cls/{name}/patient{patient:03d}_{n:04d}.png"
            Image.fromarray(rgb).save(root / file)
            files["cls"].append(file)
    return files


def _generate_into(root: Path, config: SyntheticConfig) -> dict[str, list[str]]:
    return write_scenes(root, config, render_tissue, lambda cls, rng: patch_labels(
        cls, config.patch_size, rng, (config.lesion_radius_low, config.lesion_radius_high), config.min_lesion_share,
        config.lesion_redraws))
