import math

import numpy as np

from segclass.preprocess.centered import component_centers, crop_centered


def test_small_component_gives_one_centred_patch():
    mask = np.zeros((300, 300), np.uint8)
    mask[100:120, 200:240] = 2
    centers = component_centers(mask, patch_size=128)
    assert len(centers) == 1
    assert (centers[0].row, centers[0].col, centers[0].label) == (110, 220, 2)


def test_large_component_split_by_kmeans():
    mask = np.zeros((400, 400), np.uint8)
    mask[20:380, 50:150] = 1  # 360 x 100 = 36000 px, taller than a patch
    centers = component_centers(mask, patch_size=128, seed=0)
    assert len(centers) == math.ceil(1 + 36000 / 128**2)
    rows = sorted(c.row for c in centers)
    assert rows[0] < 120 and rows[-1] > 280  # spread along the component


def test_each_class_and_component_separately_and_background_ignored():
    mask = np.zeros((200, 200), np.uint8)
    mask[10:20, 10:20] = 1
    mask[50:60, 50:60] = 1
    mask[100:110, 100:110] = 3
    labels = sorted(c.label for c in component_centers(mask))
    assert labels == [1, 1, 3]


def test_crop_is_clamped_inside_and_pads_small_images():
    image = np.arange(300 * 300).reshape(300, 300)
    patch = crop_centered(image, 5, 295, 128)
    assert patch.shape == (128, 128)
    assert patch[0, 0] == image[0, 300 - 128]
    small = crop_centered(np.ones((50, 60, 3), np.uint8), 25, 30, 128, fill=255)
    assert small.shape == (128, 128, 3) and small[100, 100, 0] == 255
