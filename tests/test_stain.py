from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segclass.preprocess.stain import StainNormalizationError, StainNormalizer, pick_reference
from segclass.synthetic import patch_labels, random_appearance, render_tissue, slide_labels


def _real_he_tile() -> np.ndarray:
    """The real H&E tile shipped by wsidicom-data (a test extra)."""
    import wsidicom_data

    path = Path(wsidicom_data.__file__).parent / "data" / "test_tile.png"
    return np.asarray(Image.open(path).convert("RGB"))


def _synthetic(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels, tissue = slide_labels(256, rng)
    return render_tissue(labels, tissue, random_appearance(rng), rng)


def _tissue_patch(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels, _ = patch_labels(2, 64, rng)
    return render_tissue(labels, np.ones_like(labels, bool), random_appearance(rng), rng)


def _stain_od(rgb):
    return -np.log((rgb.reshape(-1, 3).astype(float) + 1) / 240).mean(0)


def test_normalization_moves_colours_towards_reference():
    reference, other = _real_he_tile(), _synthetic(4)
    normalizer = StainNormalizer().fit(reference, "wsidicom test_tile.png")
    normalized = normalizer.normalize(other, "synthetic")
    assert normalized.shape == other.shape and normalized.dtype == np.uint8
    before = np.abs(_stain_od(other) - _stain_od(reference)).sum()
    after = np.abs(_stain_od(normalized) - _stain_od(reference)).sum()
    assert after < before


def test_matches_torchstain_directly():
    from torchstain.numpy.normalizers import NumpyMacenkoNormalizer

    reference, image = _synthetic(1), _synthetic(2)
    direct = NumpyMacenkoNormalizer()
    direct.fit(reference, Io=240, beta=0.15)
    expected, _, _ = direct.normalize(image, Io=240, beta=0.15, stains=False)
    assert np.array_equal(StainNormalizer().fit(reference).normalize(image), expected)


def test_blank_image_fails_clearly_and_is_counted():
    normalizer = StainNormalizer().fit(_synthetic(1))
    blank = np.full((64, 64, 3), 245, np.uint8)
    with pytest.raises(StainNormalizationError, match="glass.png.*too little tissue"):
        normalizer.normalize(blank, "glass.png")
    stack = np.stack([blank, _tissue_patch(3)])
    out = normalizer.normalize_many(stack, ["glass.png", "tissue.png"])
    assert np.array_equal(out[0], blank)
    assert normalizer.report()["failures"] == 1 and normalizer.failures == ["glass.png"]


def test_reference_is_the_most_stained_image():
    blank = np.full((64, 64, 3), 245, np.uint8)
    assert pick_reference([blank, _tissue_patch(1), blank]) == 1


def test_stain_shifted_copy_of_real_tile_moves_back_towards_reference():
    reference = _real_he_tile()
    od = -np.log((reference.astype(float) + 1) / 240)
    shift = np.array([[1.25, 0.15, 0.0], [0.0, 0.8, 0.1], [0.1, 0.0, 1.2]])  # another lab's stain mix
    shifted = np.clip(240 * np.exp(-(od.reshape(-1, 3) @ shift).reshape(od.shape)) - 1, 0, 255).astype(np.uint8)
    normalized = StainNormalizer().fit(reference, "test_tile.png").normalize(shifted, "shifted copy")
    error_before = np.abs(shifted.astype(float) - reference).mean()
    error_after = np.abs(normalized.astype(float) - reference).mean()
    assert error_after < 0.6 * error_before


def test_fitted_reference_round_trips_and_slide_wide_stains_match_per_image_normalization():
    """A model's stored reference normalizes like the fitted one; estimating stains once
    (on a slide's thumbnail) and mapping with them is torchstain's per-image normalize."""
    from segclass.preprocess.stain import estimate_stains

    normalizer = StainNormalizer().fit(_real_he_tile(), "wsidicom test_tile.png")
    restored = StainNormalizer.from_state(normalizer.state())
    image = _synthetic(5)
    expected = normalizer.normalize(image, "synthetic")
    assert np.array_equal(restored.normalize(image, "synthetic"), expected)
    mapped = restored.normalize_with(image, estimate_stains(image, "synthetic"))
    assert np.abs(mapped.astype(int) - expected).max() <= 1
    with pytest.raises(StainNormalizationError, match="too little tissue"):
        estimate_stains(np.full((64, 64, 3), 250, np.uint8), "blank.png")


def test_mapping_with_slide_wide_stains_is_pixel_by_pixel():
    """Bands of any height map to exactly the whole image's pixels: predict (bands) equals the build (whole)."""
    from segclass.preprocess.stain import estimate_stains

    normalizer = StainNormalizer().fit(_synthetic(1), "reference")
    image = _synthetic(6)
    stains = estimate_stains(image, "synthetic")
    whole = normalizer.normalize_with(image, stains)
    cuts = [0, 1, 37, 38, 200, len(image)]
    bands = [normalizer.normalize_with(image[top:bottom], stains) for top, bottom in zip(cuts, cuts[1:])]
    assert np.array_equal(np.concatenate(bands), whole)
