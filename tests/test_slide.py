import numpy as np
import pytest
import tifffile
from PIL import Image

from segclass.slide import SlideError, read_image, read_mask
from segclass.slide import write_pyramidal_tiff


def test_slide_read_at_1_25x_uses_metadata(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (512, 768, 3), dtype=np.uint8)
    path = tmp_path / "slide.tiff"
    write_pyramidal_tiff(path, rgb, mpp=2.0)  # level 0 at 5x
    image = read_image(path, magnification=1.25)
    assert image.downsample == pytest.approx(4.0)
    assert image.rgb.shape == (128, 192, 3)
    assert image.mpp == pytest.approx(8.0)
    assert read_image(path, magnification=2.5).rgb.shape == (256, 384, 3)


def test_slide_without_resolution_needs_scale(tmp_path):
    path = tmp_path / "bare.tiff"
    rgb = np.full((512, 512, 3), 200, np.uint8)
    tifffile.imwrite(path, rgb, tile=(256, 256), photometric="rgb")
    with pytest.raises(SlideError, match="bare.tiff.*--scale"):
        read_image(path)
    assert read_image(path, scale=0.5).rgb.shape == (256, 256, 3)


def test_plain_image_native_and_scaled(tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(path)
    assert read_image(path).rgb.shape == (40, 60, 3)
    assert read_image(path, scale=0.5).rgb.shape == (20, 30, 3)


def test_unreadable_and_missing_files(tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG garbage")
    with pytest.raises(SlideError, match="broken.png"):
        read_image(broken)
    with pytest.raises(SlideError, match="missing.svs"):
        read_image(tmp_path / "missing.svs")


def test_mask_resized_nearest_and_rgb_mask_rejected(tmp_path):
    path = tmp_path / "mask.png"
    Image.fromarray(np.array([[0, 3], [1, 2]], np.uint8)).save(path)
    assert read_mask(path, (4, 4)).tolist() == [[0, 0, 3, 3], [0, 0, 3, 3], [1, 1, 2, 2], [1, 1, 2, 2]]
    rgb_mask = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(rgb_mask)
    with pytest.raises(SlideError, match="rgb.png.*single-channel"):
        read_mask(rgb_mask, (2, 2))
