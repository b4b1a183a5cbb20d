import json

import numpy as np
import openslide
import pytest
from PIL import Image

from segclass.errors import DatasetError
from segclass.synthetic import CLASS_NAMES, LEVEL0_MPP, SyntheticConfig, generate
from tests.conftest import TINY


def test_layout_and_formats(tiny_root):
    assert (tiny_root / "classes.txt").read_text().split() == list(CLASS_NAMES)
    manifest = json.loads((tiny_root / "synthetic.json").read_text())
    assert len(manifest["files"]["seg"]) == TINY.train_slides
    for split in ("seg", "val", "test"):
        for slide_path in (tiny_root / split / "images").glob("*.tiff"):
            with openslide.OpenSlide(str(slide_path)) as slide:
                assert slide.level_count >= 2
                assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(LEVEL0_MPP, rel=1e-3)
                assert slide.level_downsamples[1] == pytest.approx(2.0)
                width, height = slide.dimensions
            mask = Image.open(tiny_root / split / "masks" / f"{slide_path.stem}.png")
            assert mask.mode == "L" and mask.size == (width, height)
            assert set(np.unique(np.asarray(mask))) <= {0, 1, 2, 3}
    for cls_name in CLASS_NAMES:
        patches = sorted((tiny_root / "cls" / cls_name).glob("*.png"))
        assert len(patches) == TINY.cls_per_class
        with Image.open(patches[0]) as patch:
            assert patch.size == (128, 128) and patch.mode == "RGB"


def test_validation_slide_holds_every_class(tiny_data):
    for image in tiny_data.val:
        assert set(np.unique(image.mask)) == {0, 1, 2, 3}


def test_classification_patches_come_from_more_patients_than_slides(tiny_root):
    patients = {p.name.split("_")[0] for p in (tiny_root / "cls").rglob("*.png")}
    assert len(patients) > TINY.train_slides


def test_deterministic_by_seed_and_idempotent(tmp_path):
    config = SyntheticConfig(seed=5, slide_size=160, train_slides=1, val_slides=1, test_slides=1,
                             cls_patients=2, cls_per_class=2)
    a, b = generate(tmp_path / "a", config), generate(tmp_path / "b", config)
    for path in sorted(p.relative_to(a) for p in a.rglob("*.png")):
        assert np.array_equal(np.asarray(Image.open(a / path)), np.asarray(Image.open(b / path)))
    stamp = (a / "synthetic.json").stat().st_mtime_ns
    generate(a, config)  # same config: a no-op
    assert (a / "synthetic.json").stat().st_mtime_ns == stamp
    with pytest.raises(DatasetError, match="different synthetic dataset"):
        generate(a, SyntheticConfig(seed=6, slide_size=160))


def test_classes_are_not_one_colour_cue(tiny_data):
    """Mean colour alone must not separate the classes: texture has to do the work."""
    means = tiny_data.cls_images.reshape(len(tiny_data.cls_images), -1, 3).mean(1)
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    accuracy = cross_val_score(classifier, means, tiny_data.cls_labels, cv=4).mean()
    assert accuracy < 0.9
