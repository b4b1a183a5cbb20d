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

from tqdm import tqdm

from segclass.data.arrays import DatasetArrays, EvalImage
from segclass.data.assemble import assemble, resize_patch
from segclass.data.extract import PatchTable, extract_centred, split_by_image
from segclass.errors import DatasetError
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
    from segclass.data.reading import image_size

    image = read_image(image_path, magnification)
    mask_size = image_size(mask_path, "mask")
    width0, height0 = image.level0_size
    if mask_size != (width0, height0) and mask_size != (image.rgb.shape[1], image.rgb.shape[0]):
        raise DatasetError(
            f"mask {mask_path} is {mask_size[0]}x{mask_size[1]} but its image {image_path} is {width0}x{height0}; "
            "masks must have the image's (level-0) size"
        )
    mask = read_mask(mask_path, (image.rgb.shape[1], image.rgb.shape[0]))
    if mask.size and int(mask.max()) >= num_classes:
        raise DatasetError(
            f"mask {mask_path} holds class id {int(mask.max())} but classes.txt names {num_classes} classes; "
            "masks must hold class ids 0..C-1"
        )
    return EvalImage(image_path.stem, image.rgb, mask, source=str(image_path))


def load_folder_dataset(root: Path, params, report, name: str = "folder") -> DatasetArrays:
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist")
    class_names = read_class_names(root)
    c = len(class_names)

    def load_split(split: str) -> list[EvalImage]:
        pairs = image_mask_pairs(root / split)
        return [load_eval_image(i, m, c, params.magnification)
                for i, m in tqdm(pairs, desc=f"reading {split}/", unit="image", leave=False, disable=None)]

    if not (root / "seg").is_dir():
        raise DatasetError(f"{root / 'seg'} is missing; put the images with masks in seg/images and seg/masks")
    train = load_split("seg")
    val = load_split("val") if (root / "val" / "images").is_dir() else []
    test = load_split("test") if (root / "test" / "images").is_dir() else []
    if not val or not test:
        if len(train) < 3:
            raise DatasetError(f"{root}: without val/ and test/ folders, seg/ needs at least 3 images to split")
        by_name = {item.name: item for item in train}
        train_names, val_names, test_names = split_by_image(sorted(by_name), params.split_seed)
        val = val or [by_name[n] for n in val_names]
        test = test or [by_name[n] for n in test_names]
        train = [by_name[n] for n in train_names]

    seg = extract_centred(train, params, report)
    cls = PatchTable.empty()
    cls_root = root / "cls"
    for label, class_name in enumerate(class_names):
        folder = cls_root / class_name
        if not folder.is_dir():
            continue
        for path in tqdm(sorted(folder.iterdir()), desc=f"cls/{class_name}", unit="patch", leave=False, disable=None):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                cls.add(_read_patch(path, params.patch_size), None, label, str(path.relative_to(root)), 0, 0)
    return assemble(name, class_names, seg, cls, val, test, params.patch_size)


def load_synthetic(root: Path, params, report) -> DatasetArrays:
    return load_folder_dataset(root, params, report, name="synthetic")


def _read_patch(path: Path, patch_size: int):
    from segclass.data.reading import read_rgb

    return resize_patch(read_rgb(path, "classification patch"), patch_size)
