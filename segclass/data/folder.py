"""The `folder` layout: a user's own data (and the synthetic dataset's layout).

    root/classes.txt              one class name per line; line index = class id
    root/seg/images/<stem>.*      slides (read at 1.25x) or plain images (native)
    root/seg/masks/<stem>.png     uint8 class ids, same size as the image's level 0
    root/cls/<class name>/*       classification patches of any size (resized)
    root/val/{images,masks}/      optional; else split from seg/ by image
    root/test/{images,masks}/     optional; else split from seg/ by image

Segmentation patches are cut from seg/ images by centred extraction around
each labelled component (class 0 is the unlabelled background).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image

from segclass.data.arrays import DatasetArrays, EvalImage
from segclass.errors import DatasetError
from segclass.preprocess.centered import component_centers, crop_centered
from segclass.slide import read_image, read_mask

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".tif", ".tiff", ".svs", ".ndpi", ".mrxs", ".png", ".jpg", ".jpeg", ".bmp", ".scn", ".vms"}


def read_class_names(root: Path) -> tuple[str, ...]:
    path = root / "classes.txt"
    if not path.is_file():
        raise DatasetError(f"{path} is missing; write one class name per line (line index = class id)")
    names = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
    if len(names) < 2:
        raise DatasetError(f"{path} names {len(names)} classes; at least 2 are needed")
    return names


def image_mask_pairs(folder: Path) -> list[tuple[Path, Path]]:
    """(image, mask) pairs of folder/images and folder/masks matched by file stem."""
    images_dir, masks_dir = folder / "images", folder / "masks"
    if not images_dir.is_dir():
        raise DatasetError(f"{images_dir} is missing; put the images with masks there")
    masks = {p.stem: p for p in masks_dir.glob("*")} if masks_dir.is_dir() else {}
    pairs = []
    for image in sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        if image.stem not in masks:
            raise DatasetError(f"image {image} has no mask {masks_dir / (image.stem + '.png')}; add it or remove the image")
        pairs.append((image, masks[image.stem]))
    if not pairs:
        raise DatasetError(f"{images_dir} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return pairs


def load_eval_image(image_path: Path, mask_path: Path, num_classes: int, magnification: float) -> EvalImage:
    image = read_image(image_path, magnification)
    mask = read_mask(mask_path, (image.rgb.shape[1], image.rgb.shape[0]))
    if mask.size and int(mask.max()) >= num_classes:
        raise DatasetError(
            f"mask {mask_path} holds class id {int(mask.max())} but classes.txt names {num_classes} classes; "
            "masks must hold class ids 0..C-1"
        )
    return EvalImage(image_path.stem, image.rgb, mask)


def load_folder(root: str | Path, name: str = "folder", patch_size: int = 128, magnification: float = 1.25) -> DatasetArrays:
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist")
    class_names = read_class_names(root)
    c = len(class_names)

    def load_split(split: str) -> list[EvalImage]:
        return [load_eval_image(i, m, c, magnification) for i, m in image_mask_pairs(root / split)]

    train = load_split("seg")
    val = load_split("val") if (root / "val" / "images").is_dir() else []
    test = load_split("test") if (root / "test" / "images").is_dir() else []
    if not val or not test:
        if len(train) < 3:
            raise DatasetError(f"{root}: without val/ and test/ folders, seg/ needs at least 3 images to split")
        # split by image, never by patch, so no image leaks across splits
        quarter = max(1, len(train) // 4)
        val = val or train[-2 * quarter : -quarter]
        test = test or train[-quarter:]
        train = train[: -2 * quarter]

    seg_images, seg_masks, seg_labels = [], [], []
    for item in train:
        for center in component_centers(item.mask, patch_size):
            seg_images.append(crop_centered(item.rgb, center.row, center.col, patch_size, fill=255))
            seg_masks.append(crop_centered(item.mask, center.row, center.col, patch_size, fill=0))
            seg_labels.append(center.label)
    if not seg_images:
        raise DatasetError(f"{root / 'seg' / 'masks'}: no labelled regions (class ids > 0) in any mask")

    cls_images, cls_labels = [], []
    for label, class_name in enumerate(class_names):
        folder = root / "cls" / class_name
        if not folder.is_dir():
            log.warning("%s is missing: no classification patches of class %s", folder, class_name)
            continue
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            cls_images.append(_read_patch(path, patch_size))
            cls_labels.append(label)

    arrays = DatasetArrays(
        name=name,
        class_names=class_names,
        seg_images=np.stack(seg_images),
        seg_masks=np.stack(seg_masks),
        seg_labels=np.asarray(seg_labels, dtype=np.int64),
        cls_images=np.stack(cls_images) if cls_images else np.zeros((0, patch_size, patch_size, 3), np.uint8),
        cls_labels=np.asarray(cls_labels, dtype=np.int64),
        val=tuple(val),
        test=tuple(test),
    )
    arrays.validate()
    return arrays


def _read_patch(path: Path, patch_size: int) -> np.ndarray:
    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
            if rgb.size != (patch_size, patch_size):
                rgb = rgb.resize((patch_size, patch_size), Image.LANCZOS)
            return np.asarray(rgb)
    except OSError as exc:
        raise DatasetError(f"cannot read classification patch {path}: {exc}; remove or replace the file") from exc
