import numpy as np

from segclass.preprocess.tiles import classify_tile, tile_mask


def test_dominant_class_tile_is_classification():
    tile = np.zeros((128, 128), np.uint8)
    tile[:, :12] = 3  # 9.4% other class: 90.6% dominant
    assert classify_tile(tile, 5) == ("cls", 0)


def test_two_class_tile_is_segmentation_labelled_by_rarer_class():
    tile = np.zeros((128, 128), np.uint8)
    tile[:, :40] = 2
    assert classify_tile(tile, 5) == ("seg", 2)


def test_three_class_tile_is_ignored():
    tile = np.zeros((128, 128), np.uint8)
    tile[:, :40] = 2
    tile[:, 40:60] = 1
    assert classify_tile(tile, 5) is None


def test_tile_mask_grid():
    mask = np.zeros((256, 300), np.uint8)
    mask[:128, 128:256] = 1
    mask[:128, 128:160] = 0  # two classes, neither >= 90%
    mask[128:, :128] = 1
    tiles = tile_mask(mask, 2)
    assert [(t.top, t.left, t.kind, t.label) for t in tiles] == [
        (0, 0, "cls", 0), (0, 128, "seg", 0), (128, 0, "cls", 1), (128, 128, "cls", 0)]
