"""Predicted regions as GeoJSON that QuPath imports as classified annotations.

One Feature per class with predicted tissue: a MultiPolygon of that class's
regions, in level-0 pixel coordinates (QuPath's: origin at the top-left of the
full-resolution image), with `properties.objectType = "annotation"` and
`properties.classification = {name, color}` as QuPath writes and reads them
(File > Import objects, or drag the file on the slide). Class 0 is drawn on
tissue only: outside the tissue the mask's 0 means glass, not normal tissue.

Polygons follow pixel edges exactly, so a class's polygon area is its pixel
count times the pixel's level-0 area. Regions are 4-connected: two pixels
touching at a corner only are two polygons (touching at that point, which
GeoJSON/OGC allows), and a region that pinches at a corner is split there
into a shell and a hole touching at one point, so every polygon is valid.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from segclass.files import atomic_write
from segclass.palette import class_colours

# (dx, dy) of a step along a pixel edge; the region is on the right of every step (y points down)
_RIGHT, _DOWN, _LEFT, _UP = (1, 0), (0, 1), (-1, 0), (0, -1)
_TURN_RIGHT = {_RIGHT: _DOWN, _DOWN: _LEFT, _LEFT: _UP, _UP: _RIGHT}


def region_polygons(region: np.ndarray) -> list[list[list[tuple[int, int]]]]:
    """Polygons (shell ring, then hole rings; each ring closed, as (x, y) pixel corners) of a boolean mask."""
    from skimage.measure import label

    if not region.any():
        return []
    labels = label(region, connectivity=1)
    padded = np.pad(region, 1)
    inside = padded[1:-1, 1:-1]
    outgoing: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
    # each boundary edge of a region pixel (row r, column c), directed with the pixel on its right
    for (dr, dc), start, step in (((-1, 0), (0, 0), _RIGHT), ((0, 1), (1, 0), _DOWN),
                                  ((1, 0), (1, 1), _LEFT), ((0, -1), (0, 1), _UP)):
        neighbour = padded[1 + dr : padded.shape[0] - 1 + dr, 1 + dc : padded.shape[1] - 1 + dc]
        rows, columns = np.nonzero(inside & ~neighbour)
        for x, y in zip((columns + start[0]).tolist(), (rows + start[1]).tolist()):
            outgoing[(x, y)].append(step)
    shells: dict[int, list[tuple[int, int]]] = {}
    holes: dict[int, list[list[tuple[int, int]]]] = defaultdict(list)
    for ring in _trace(outgoing):
        for loop in _split_at_touches(ring):
            owner = int(labels[_pixel_right_of(loop)])
            if _signed_area(loop) > 0:
                shells[owner] = loop
            else:
                holes[owner].append(loop)
    return [[_closed(shells[owner]), *(_closed(h) for h in holes.get(owner, []))] for owner in sorted(shells)]


def _trace(outgoing: dict[tuple[int, int], list[tuple[int, int]]]) -> list[list[tuple[int, int]]]:
    """Rings of vertices (corners where the boundary turns) from the directed edges."""
    rings = []
    while outgoing:
        start = next(iter(outgoing))
        vertex, heading, ring = start, None, []
        while True:
            steps = outgoing.get(vertex)
            if not steps:
                break
            # at a corner shared by two diagonal pixels, turn right: stay with the same pixel (4-connectivity)
            step = _TURN_RIGHT[heading] if len(steps) > 1 and heading is not None else steps[0]
            steps.remove(step)
            if not steps:
                del outgoing[vertex]
            if step != heading:
                ring.append(vertex)
            heading = step
            vertex = (vertex[0] + step[0], vertex[1] + step[1])
        if ring and ring[0] == start and len(ring) > 1 and _straight(ring[-1], ring[0], ring[1]):
            ring = ring[1:]  # the start was mid-edge
        rings.append(ring)
    return rings


def _straight(before: tuple[int, int], at: tuple[int, int], after: tuple[int, int]) -> bool:
    return (at[0] - before[0]) * (after[1] - at[1]) == (at[1] - before[1]) * (after[0] - at[0])


def _split_at_touches(ring: list[tuple[int, int]]) -> list[list[tuple[int, int]]]:
    """A ring that passes one vertex twice, cut there into simple loops."""
    loops, stack, seen = [], [], {}
    for vertex in ring:
        if vertex in seen:
            start = seen[vertex]
            loop = stack[start:]
            for v in loop[1:]:
                seen.pop(v, None)
            del stack[start + 1 :]
            loops.append(loop)
        else:
            seen[vertex] = len(stack)
            stack.append(vertex)
    loops.append(stack)
    return [loop for loop in loops if len(loop) >= 3]


def _signed_area(ring: list[tuple[int, int]]) -> float:
    """Shoelace area; positive for a shell (the region on the right of each step, y down), negative for a hole."""
    xs, ys = np.array(ring, dtype=np.float64).T
    return float(np.dot(xs, np.roll(ys, -1)) - np.dot(np.roll(xs, -1), ys)) / 2.0


def _pixel_right_of(ring: list[tuple[int, int]]) -> tuple[int, int]:
    """(row, column) of the region pixel on the right of the ring's first step."""
    (x0, y0), (x1, y1) = ring[0], ring[1]
    dx, dy = int(np.sign(x1 - x0)), int(np.sign(y1 - y0))
    # the pixel right of a unit step from (x0, y0): right -> row y0, down -> column x0 - 1, and so on
    column = x0 if dx > 0 else x0 - 1 if dx < 0 else (x0 - 1 if dy > 0 else x0)
    row = y0 if dx > 0 else y0 - 1 if dx < 0 else (y0 if dy > 0 else y0 - 1)
    return row, column


def _closed(ring: list[tuple[int, int]]) -> list[tuple[int, int]]:
    return [*ring, ring[0]]


def prediction_features(mask: np.ndarray, tissue: np.ndarray, class_names: tuple[str, ...],
                        downsample: float) -> list[dict[str, Any]]:
    """One QuPath annotation Feature per class present on tissue, coordinates in level-0 pixels."""
    colours = class_colours(len(class_names))
    features = []
    for index, name in enumerate(class_names):
        region = (mask == index) & tissue if index == 0 else mask == index
        polygons = region_polygons(region)
        if not polygons:
            continue
        coordinates = [[[[_level0(x, downsample), _level0(y, downsample)] for x, y in ring] for ring in polygon]
                       for polygon in polygons]
        features.append({
            "type": "Feature",
            "geometry": {"type": "MultiPolygon", "coordinates": coordinates},
            "properties": {"objectType": "annotation", "name": name,
                           "classification": {"name": name, "color": [int(c) for c in colours[index]]},
                           "isLocked": False},
        })
    return features


def _level0(value: int, downsample: float) -> float | int:
    scaled = value * downsample
    return int(scaled) if float(scaled).is_integer() else round(scaled, 3)


def write_geojson(path: Path, mask: np.ndarray, tissue: np.ndarray, class_names: tuple[str, ...],
                  downsample: float) -> Path:
    """`path` as a GeoJSON FeatureCollection of the predicted regions (QuPath: File > Import objects)."""
    import json

    collection = {"type": "FeatureCollection",
                  "features": prediction_features(mask, tissue, class_names, downsample)}
    atomic_write(path, lambda target: target.write_text(json.dumps(collection, separators=(",", ":"))))
    return path
