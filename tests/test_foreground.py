import numpy as np
import pytest

from segclass.preprocess.foreground import foreground_fraction, foreground_mask, window_fractions


def _scene():
    rgb = np.full((100, 100, 3), 240, np.uint8)  # glass: bright, unsaturated
    rgb[20:80, 20:80] = (200, 90, 160)  # stained tissue
    rgb[45:55, 45:55] = (250, 250, 250)  # a lumen inside the tissue
    rgb[5, 5] = (200, 90, 160)  # a stained speck on the glass
    return rgb


def test_saturation_threshold_fills_holes_and_opens():
    mask = foreground_mask(_scene())
    assert mask[30, 30] and not mask[90, 90]
    assert mask[50, 50], "holes inside tissue are filled"
    assert not mask[5, 5], "specks are removed by the opening"


def test_dark_grey_is_background_too():
    rgb = np.full((40, 40, 3), 60, np.uint8)  # dark but unsaturated (pen shadow, dust)
    assert not foreground_mask(rgb, opening_radius=0).any()


def test_real_tissue_image_is_mostly_foreground():
    from skimage.data import immunohistochemistry

    mask = foreground_mask(immunohistochemistry())
    assert mask.mean() > 0.5


def test_window_fractions_match_direct_count():
    rng = np.random.default_rng(0)
    mask = rng.random((50, 60)) < 0.7
    fractions = window_fractions(mask, 16)
    assert fractions.shape == (35, 45)
    for top, left in ((0, 0), (10, 20), (34, 44)):
        assert fractions[top, left] == pytest.approx(foreground_fraction(mask, top, left, 16))


def test_half_white_patch_fails_the_75_percent_rule():
    from segclass.preprocess.foreground import MIN_FOREGROUND

    rgb = np.full((128, 128, 3), 245, np.uint8)
    rgb[:, :64] = (180, 80, 150)  # left half stained tissue
    mask = foreground_mask(rgb)
    assert foreground_fraction(mask, 0, 0, 128) == pytest.approx(0.5, abs=0.02)
    assert foreground_fraction(mask, 0, 0, 128) < MIN_FOREGROUND


@pytest.mark.parametrize("scale", [1 / 16, 0.3, 1.0])
def test_tissue_rows_are_the_thumbnail_looked_up_by_nearest_neighbour(scale):
    from segclass.preprocess.foreground import Foreground

    mask = np.random.default_rng(1).random((13, 9)) < 0.5
    foreground = Foreground(mask, scale)
    top, bottom, width = 3, 70, 60  # reaches past the thumbnail both ways at scale 1
    expected = np.zeros((bottom - top, width), bool)
    for r in range(top, bottom):
        for c in range(width):
            y, x = int((r + 0.5) * scale), int((c + 0.5) * scale)
            expected[r - top, c] = y < mask.shape[0] and x < mask.shape[1] and mask[y, x]
    assert np.array_equal(foreground.rows(top, bottom, width), expected)
    for first, last in ((0, 1), (5, 40), (60, 90), (0, 200)):
        assert np.array_equal(foreground.columns_with_tissue(first, last, width),
                              foreground.rows(first, last, width).any(axis=0))
