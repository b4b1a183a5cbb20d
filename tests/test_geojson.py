"""Predicted regions as polygons: exact pixel-edge areas and valid geometry, whatever the mask's shapes."""

import numpy as np
import pytest

from segclass.predict.geojson import prediction_features, region_polygons

shapely = pytest.importorskip("shapely")
from shapely.geometry import MultiPolygon, Polygon, shape  # noqa: E402


def test_every_polygon_is_valid_and_covers_exactly_its_pixels():
    rng = np.random.default_rng(0)
    for _ in range(200):  # noise: pixels touching at corners only, pinched regions, holes in holes
        height, width = rng.integers(1, 25, 2)
        region = rng.random((height, width)) < rng.uniform(0.2, 0.8)
        polygons = [Polygon(rings[0], rings[1:]) for rings in region_polygons(region)]
        assert all(p.is_valid for p in polygons)
        assert not polygons or MultiPolygon(polygons).is_valid
        assert sum(p.area for p in polygons) == region.sum()


def test_a_ring_with_a_hole_and_a_diagonal_neighbour():
    region = np.zeros((6, 6), bool)
    region[1:4, 1:4] = True
    region[2, 2] = False  # a hole
    region[4, 4] = True  # touches the ring at one corner: a polygon of its own (4-connectivity)
    polygons = region_polygons(region)
    assert len(polygons) == 2
    ring = Polygon(polygons[0][0], polygons[0][1:])
    assert ring.area == 8 and len(polygons[0]) == 2 and ring.bounds == (1, 1, 4, 4)


def test_features_are_level0_qupath_annotations_and_class_0_only_on_tissue():
    mask = np.zeros((4, 4), np.uint8)
    mask[1:3, 1:3] = 2
    tissue = np.zeros((4, 4), bool)
    tissue[:, :3] = True
    features = prediction_features(mask, tissue, ("normal", "benign", "tumour"), downsample=4.0)
    names = [f["properties"]["classification"]["name"] for f in features]
    assert names == ["normal", "tumour"]  # no benign pixel: no feature
    normal, tumour = (shape(f["geometry"]) for f in features)
    assert tumour.area == 4 * 16 and tumour.bounds == (4, 4, 12, 12)
    assert normal.area == (12 - 4) * 16  # tissue pixels of class 0, not the glass beside them
