"""The `textured` benchmark dataset: real-texture classes, several foci per class patch, read as a folder dataset."""

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from segclass.errors import DatasetError
from segclass.textured import TexturedConfig, generate_textured, patch_foci, seamless_texture, stain_sources

SMALL = TexturedConfig(slide_size=256, train_slides=2, val_slides=1, test_slides=1, cls_patients=4, cls_per_class=6)


@pytest.fixture(scope="module")
def textured_root(tmp_path_factory):
    return generate_textured(tmp_path_factory.mktemp("textured") / "source", SMALL)


def test_textured_folder_loads_through_the_folder_adapter_with_every_class(textured_root):
    from segclass.data import load_dataset

    data = load_dataset("folder", textured_root)
    assert list(data.class_names) == ["normal", "benign", "in_situ", "invasive"]
    assert set(np.unique(data.cls_labels)) == {0, 1, 2, 3}
    for slide in sorted((textured_root / "seg" / "masks").glob("*.png")):
        assert set(np.unique(np.asarray(Image.open(slide)))) == {0, 1, 2, 3}


def test_class_patches_hold_two_to_five_foci_in_a_moderate_share():
    rng = np.random.default_rng(0)
    counts, shares = [], []
    for _ in range(40):
        labels, tissue = patch_foci(2, 128, rng, TexturedConfig())
        counts.append(ndimage.label(labels == 2)[1])
        shares.append((labels == 2).mean())
    assert 1 <= min(counts) and max(counts) <= 5 and np.mean(counts) >= 2  # foci may touch and merge
    assert np.mean([SMALL.share_low <= s <= SMALL.share_high for s in shares]) >= 0.9
    normal, _ = patch_foci(0, 128, rng, TexturedConfig())
    assert not normal.any()


def test_texture_hides_the_tile_seams_and_keeps_the_source_statistics():
    from segclass.textured import _tiling

    source = stain_sources()["he"]
    field = seamless_texture(source, (600, 600), np.random.default_rng(1))
    assert field.shape == (600, 600, 3) and np.isfinite(field).all()

    def seam_spike(image):  # the largest column-to-column change against the typical one: a seam is a spike
        steps = np.abs(np.diff(image[..., 0], axis=1)).mean(axis=0)
        return steps.max() / np.median(steps)

    plain = _tiling(source, (600, 600), (17, 33), np.random.default_rng(1))  # tiles side by side, seams showing
    assert seam_spike(field) < 0.85 * seam_spike(plain)
    assert abs(field[..., 0].mean() - source[..., 0].mean()) < 0.25 * source[..., 0].mean()


def test_rebuild_is_instant_and_identical_and_another_config_is_refused(textured_root, tmp_path):
    assert generate_textured(textured_root, SMALL) == textured_root  # the marker matches: nothing rebuilt
    with pytest.raises(DatasetError, match="different textured dataset"):
        generate_textured(textured_root, TexturedConfig(slide_size=256, seed=5))
    again = generate_textured(tmp_path / "again", SMALL)
    name = "cls/invasive/" + sorted(p.name for p in (textured_root / "cls" / "invasive").iterdir())[0]
    assert (again / name).read_bytes() == (textured_root / name).read_bytes()
    assert (again / "seg/masks/slide_00.png").read_bytes() == (textured_root / "seg/masks/slide_00.png").read_bytes()
