"""Gleason2019 in its distributed layout (docs/data.md cites the sources).

    root/Train Imgs/slideNNN_coreNNN.jpg                       from "Train Imgs.zip" (also Train_imgs/)
    root/Maps1_T/slideNNN_coreNNN_classimg_nonconvex.png       one folder per annotator, Maps1_T ... Maps6_T
    root/Test/Test_imgs/slideNNN_coreNNN.jpg                   test cores: no public maps, not used

Archives unzipped into a folder of their own name (`Maps1_T/Maps1_T/`,
`Train Imgs/Train Imgs/`) are found; a core's map is matched by its slide and
core numbers, so zero-padding may differ. Maps are single-channel (a copy
saved as RGB with equal channels is read as its one channel).

Map values -> class ids (DEFAULT_CLASS_MAP, replaced by `--class-map FILE.json`):

    value 0  background (no tissue / not annotated)  -> 0 background
    value 1  benign tissue                            -> 1 benign
    value 6  normal tissue                            -> 1 benign (merged: both are non-cancer)
    value 3  Gleason grade 3                          -> 2 gleason3
    value 4  Gleason grade 4                          -> 3 gleason4
    value 5  Gleason grade 5                          -> 4 gleason5

Five classes, as in the paper's Table 1. Not every annotator mapped every
core: cores without a map of the chosen annotator are reported and skipped.
Images are resized to BuildParams.resize_long_side (maps by nearest), then
split 50/25/25 by core.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
from tqdm import tqdm

from segclass.data.arrays import DatasetArrays, EvalImage
from segclass.data.layout import files_with_suffix, find_folder, locate_dataset, unnest, visible
from segclass.data.reading import read_label_values, read_rgb
from segclass.data.tiled import resize_pair, tiled_dataset
from segclass.errors import DatasetError

log = logging.getLogger(__name__)

CLASS_NAMES = ("background", "benign", "gleason3", "gleason4", "gleason5")
DEFAULT_CLASS_MAP = ((0, 0), (1, 1), (6, 1), (3, 2), (4, 3), (5, 4))
#: The training images' folder as "Train Imgs.zip" unpacks, and as users rename it.
IMAGE_FOLDERS = ("Train Imgs", "Train_imgs", "Train imgs", "Train_Imgs")
MAP_SUFFIX = "_classimg_nonconvex"
_CORE = re.compile(r"slide0*(\d+)_core0*(\d+)", re.IGNORECASE)


def core_key(stem: str) -> str:
    """'slide001_core005' and 'slide1_core5' name one core: the key ignores zero-padding."""
    match = _CORE.search(stem)
    return f"{int(match.group(1))}_{int(match.group(2))}" if match else stem


def looks_like_gleason(folder: Path) -> bool:
    return any((folder / name).is_dir() for name in IMAGE_FOLDERS) or any(folder.glob("Maps[1-6]_T"))


def locate(root: Path) -> Path:
    return locate_dataset(root, looks_like_gleason, "Gleason2019",
                          "the folder holding 'Train Imgs/' and Maps1_T/ ... Maps6_T/")


def maps_folder(root: Path, annotator: int) -> Path:
    folder = root / f"Maps{annotator}_T"
    if not folder.is_dir():
        present = ", ".join(p.name for p in visible(root.glob("Maps[0-9]*_T"))) or "none"
        raise DatasetError(f"{folder} is missing (annotators' maps present: {present}); unzip Maps{annotator}_T.zip "
                           f"into {root} or pass another --annotator")
    return unnest(folder, (".png",))


def map_files(folder: Path) -> dict[str, Path]:
    """Core key -> map file, searched below `folder` (however deep the archive nested it)."""
    maps = {}
    for path in visible(folder.rglob(f"*{MAP_SUFFIX}.png")):
        maps.setdefault(core_key(path.stem[: -len(MAP_SUFFIX)]), path)
    if not maps:
        raise DatasetError(f"{folder} holds no *{MAP_SUFFIX}.png maps; unzip its archive again")
    return maps


def map_to_classes(values: np.ndarray, table: dict[int, int], path: Path) -> np.ndarray:
    lookup = np.full(256, 255, np.uint8)
    for value, class_id in table.items():
        lookup[value] = class_id
    mapped = lookup[values]
    if (mapped == 255).any():
        unknown = sorted(set(np.unique(values[mapped == 255]).tolist()))
        raise DatasetError(f"map {path} holds values {unknown} that the class table does not list "
                           f"({sorted(table)}); pass --class-map FILE.json mapping every map value to a class id "
                           "(python -m segclass.data build gleason2019 --help)")
    return mapped


def load_gleason(root: Path, params, report) -> DatasetArrays:
    root = locate(root)
    images_dir = find_folder(root, IMAGE_FOLDERS, (".jpg",))
    if images_dir is None:
        raise DatasetError(f"{root} has no 'Train Imgs/' folder; unzip 'Train Imgs.zip' into {root}")
    image_paths = files_with_suffix(images_dir, (".jpg",))
    if not image_paths:
        raise DatasetError(f"{images_dir} holds no .jpg cores; unzip 'Train Imgs.zip' again")
    maps = map_files(maps_folder(root, params.annotator))
    test = find_folder(root / "Test", ("Test_imgs", "Test imgs"), (".jpg",)) if (root / "Test").is_dir() else None
    if test is not None:
        log.info("Gleason2019: %s holds the challenge's test cores, which have no public maps; not used", test)
    table = dict(params.class_map or DEFAULT_CLASS_MAP)
    wrong = sorted({class_id for class_id in table.values() if not 0 <= class_id < len(CLASS_NAMES)})
    if wrong:
        raise DatasetError(f"--class-map maps values to class ids {wrong}; the ids are 0-{len(CLASS_NAMES) - 1} "
                           f"({', '.join(CLASS_NAMES)})")
    items, skipped = [], []
    for image_path in tqdm(image_paths, desc="Gleason cores", unit="core", leave=False, disable=None):
        map_path = maps.get(core_key(image_path.stem))
        if map_path is None:
            skipped.append(image_path.name)
            continue
        rgb = read_rgb(image_path, "Gleason2019 core")
        values = read_label_values(map_path, "Gleason2019 map")
        if values.shape != rgb.shape[:2]:
            raise DatasetError(f"map {map_path} is {values.shape[1]}x{values.shape[0]} but its core {image_path} is "
                               f"{rgb.shape[1]}x{rgb.shape[0]}; download both again")
        rgb, mask = resize_pair(rgb, map_to_classes(values, table, map_path), params.resize_long_side)
        items.append(EvalImage(image_path.stem, rgb, mask))
    if skipped:
        report.notes.append(f"{len(skipped)} of {len(image_paths)} cores have no Maps{params.annotator}_T map (that "
                            f"annotator did not map them) and were skipped: "
                            f"{', '.join(skipped[:10])}{'...' if len(skipped) > 10 else ''}")
    if len(items) < 3:
        raise DatasetError(f"{len(items)} of the {len(image_paths)} cores in {images_dir} have a map in "
                           f"Maps{params.annotator}_T; at least 3 are needed to split train/val/test")
    return tiled_dataset("gleason2019", CLASS_NAMES, items, params, report)
