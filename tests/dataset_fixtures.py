"""Small datasets in the real on-disk layouts of BACH, Gleason2019 and DigestPath2019.

Tissue is rendered by the synthetic generator so that foreground masks and
stain normalization see stained pixels; labels come from hand-placed regions
whose patch counts the tests know.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from segclass.synthetic import random_appearance, render_tissue


def real_he_tile() -> np.ndarray:
    """The real H&E tile (240 x 240) that the PyPI package wsidicom-data ships (a test extra)."""
    import wsidicom_data

    return np.asarray(Image.open(Path(wsidicom_data.__file__).parent / "data" / "test_tile.png").convert("RGB"))


def tissue(labels: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return render_tissue(labels, np.ones(labels.shape, bool), random_appearance(rng), rng)


def write_aperio_svs(path: Path, rgb: np.ndarray, app_mag: float = 5, mpp: float = 2.0) -> None:
    """A tiled pyramidal TIFF whose ImageDescription is Aperio's, so OpenSlide says vendor aperio."""
    height, width = rgb.shape[:2]
    levels = [rgb]
    while max(levels[-1].shape[:2]) > 256:
        h, w = levels[-1].shape[:2]
        levels.append(np.asarray(Image.fromarray(levels[-1]).resize((w // 2, h // 2), Image.BILINEAR)))
    with tifffile.TiffWriter(path) as tif:
        for index, level in enumerate(levels):
            h, w = level.shape[:2]
            head = f"Aperio Image Library v12.0.15 \r\n{width}x{height} [0,0 {width}x{height}] (256x256)"
            description = (f"{head} JPEG/RGB Q=70|AppMag = {app_mag}|StripeWidth = 2040|ScanScope ID = SS1234|"
                           f"Filename = {path.stem}|MPP = {mpp}") if index == 0 else f"{head} -> {w}x{h} JPEG/RGB Q=70"
            tif.write(level, photometric="rgb", tile=(256, 256), compression="zlib", description=description,
                      metadata=None)


def _region_xml(region_id: int, label: str, box: tuple[int, int, int, int], style: str) -> str:
    x0, y0, x1, y1 = box
    vertices = "".join(f'<Vertex X="{x}" Y="{y}" Z="0"/>' for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1)))
    if style == "attribute":
        return (f'<Region Id="{region_id}" Type="0" Text=""><Attributes><Attribute Name="{label}" Id="0" '
                f'Value="{label}"/></Attributes><Vertices>{vertices}</Vertices></Region>')
    return f'<Region Id="{region_id}" Type="0" Text="{label}"><Attributes/><Vertices>{vertices}</Vertices></Region>'


def write_imagescope_xml(path: Path, annotations: list[list[tuple[str, tuple[int, int, int, int], str]]]) -> None:
    body = []
    for index, regions in enumerate(annotations, start=1):
        inner = "".join(_region_xml(i, label, box, style) for i, (label, box, style) in enumerate(regions, start=1))
        body.append(f'<Annotation Id="{index}" Name="" ReadOnly="0"><Attributes><Attribute Name="Description" '
                    f'Id="0" Value=""/></Attributes><Regions><RegionAttributeHeaders/>{inner}</Regions></Annotation>')
    path.write_text(f'<?xml version="1.0"?>\n<Annotations MicronsPerPixel="2.000000">{"".join(body)}</Annotations>')


# Level-0 boxes (x0, y0, x1, y1) on a 1024 x 1024 slide at 5x; /4 at 1.25x -> each box fits one patch.
BACH_REGIONS = {
    "A01": [[("Benign", (100, 100, 300, 300), "attribute"), ("Invasive carcinoma", (600, 600, 900, 900), "text")],
            [("In situ carcinoma", (600, 100, 800, 300), "text")]],
    "A02": [[("benign", (120, 500, 320, 760), "text"), ("Invasive", (520, 120, 860, 380), "attribute")]],
    "A03": [[("In Situ", (300, 300, 500, 500), "attribute")]],
    "A04": [[("Benign", (50, 50, 250, 250), "text"), ("In situ", (600, 50, 800, 250), "text"),
             ("Invasive", (300, 600, 600, 900), "text")]],
    "A05": [[("Invasive", (200, 200, 500, 500), "text")]],
}
BACH_PHOTOS = {"Normal": 3, "Benign": 2, "InSitu": 2, "Invasive": 1}
#: Slides of WSI/ without an annotation XML, as BACH ships 01.svs ... 20.svs beside A01-A10.
BACH_UNANNOTATED = ("01", "02")


def make_bach(root: Path) -> Path:
    """BACH's training archive as it unpacks: annotated A0x slides, un-annotated 0x slides (real H&E
    texture), gt_thumbnails/, photos per class and a header-less ground-truth CSV."""
    from segclass.data.bach import rasterize, parse_annotations

    (root / "WSI" / "gt_thumbnails").mkdir(parents=True)
    for name in BACH_UNANNOTATED:
        write_aperio_svs(root / "WSI" / f"{name}.svs", np.tile(real_he_tile(), (2, 2, 1)))
    for index, (name, annotations) in enumerate(BACH_REGIONS.items()):
        xml = root / "WSI" / f"{name}.xml"
        write_imagescope_xml(xml, annotations)
        labels = rasterize(parse_annotations(xml), (256, 256), 4.0)
        rgb = tissue(labels, index)
        write_aperio_svs(root / "WSI" / f"{name}.svs", np.asarray(Image.fromarray(rgb).resize((1024, 1024))))
        Image.fromarray(labels * 60).save(root / "WSI" / "gt_thumbnails" / f"{name}.png")
    rows = []
    for folder, count in BACH_PHOTOS.items():
        (root / "Photos" / folder).mkdir(parents=True)
        for n in range(count):
            name = f"{ {'Normal': 'n', 'Benign': 'b', 'InSitu': 'is', 'Invasive': 'iv'}[folder]}{n:03d}.tif"
            label_id = {"Normal": 0, "Benign": 1, "InSitu": 2, "Invasive": 3}[folder]
            Image.fromarray(tissue(np.full((96, 128), label_id, np.uint8), 10 + n)).save(root / "Photos" / folder / name)
            rows.append(f"{name},{folder}")
    (root / "Photos" / "microscopy_ground_truth.csv").write_text("\n".join(rows) + "\n")
    return root


def gleason_map() -> np.ndarray:
    """256 x 256 map: tile (0,0) benign; (0,1) grades 3 and 4; (1,0) three values; (1,1) grade 5."""
    values = np.zeros((256, 256), np.uint8)
    values[:128, :128] = 1
    values[:128, 128:192], values[:128, 192:] = 3, 4
    values[128:, :64], values[128:, 64:96], values[128:, 96:128] = 6, 3, 5
    values[128:, 128:] = 5
    return values


GLEASON_CORES = ("slide001_core001", "slide001_core002", "slide002_core001", "slide003_core004")


def make_gleason(root: Path, nested: bool = True) -> Path:
    images = root / "Train Imgs"
    maps = root / "Maps1_T" / "Maps1_T" if nested else root / "Maps1_T"
    images.mkdir(parents=True)
    maps.mkdir(parents=True)
    for index, core in enumerate(GLEASON_CORES + ("slide009_core009",)):
        Image.fromarray(tissue(np.full((256, 256), 2, np.uint8), index)).save(images / f"{core}.jpg", quality=95)
        if core in GLEASON_CORES:  # the last core has no map for annotator 1
            Image.fromarray(gleason_map()).save(maps / f"{core}_classimg_nonconvex.png")
    return root


DIGEST_POSITIVE = ("case 01", "case 02")
DIGEST_NEGATIVE = ("neg 01", "neg 02")


def make_digestpath(root: Path) -> Path:
    positive, negative = root / "tissue-train-pos-v1", root / "tissue-train-neg"
    positive.mkdir(parents=True)
    negative.mkdir(parents=True)
    mask = np.zeros((256, 256), np.uint8)
    mask[:128, :128] = 255  # tile (0,0) malignant
    mask[:128, 128:160] = 255  # tile (0,1) two classes
    for index, name in enumerate(DIGEST_POSITIVE):
        Image.fromarray(tissue((mask > 0).astype(np.uint8) + 1, index)).save(positive / f"{name}.jpg", quality=95)
        Image.fromarray(mask).save(positive / f"{name}_mask.jpg", quality=95)
    for index, name in enumerate(DIGEST_NEGATIVE):
        Image.fromarray(tissue(np.ones((256, 256), np.uint8), 5 + index)).save(negative / f"{name}.jpg", quality=95)
    return root
