"""Dynamic tiling: a big frame looked at in overlapping tiles besides the whole, downscaled view.

A model sees at most ``max_pixels``; a 3000x2500 radiograph or a 4k mammogram shrunk to that
loses findings a few pixels wide. DeepSeek-VL2 and InternVL answer with tiles: a grid whose
shape is nearest the image's aspect, each tile at the model's resolution, plus a global
thumbnail. We do the same outside the model, so every backend gains from it: the grid is chosen
among those of at most ``max_tiles`` tiles, tiles share ``overlap`` of their side with their
neighbours (so an object on a seam is whole in one of them), and each tile keeps its own
transform back to source pixels (``Transform.left`` / ``top``).

Which frames are tiled (``[vision] tiling``): ``off``; ``auto``, frames over ``AUTO_FACTOR``
times ``max_pixels`` (the whole view shows them at under half their resolution per side); or
``always``, every frame over ``max_pixels``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

TILINGS = ("off", "auto", "always")
AUTO_FACTOR = 4  # "auto" tiles frames whose whole view is shrunk by more than 2 per side
MAX_TILE_ASPECT = 2.0  # a tile is at most twice as long as it is wide, as the models' tiles


@dataclass(frozen=True)
class Tile:
    """A region of a source frame, in source pixels: columns [left, left + columns), rows likewise."""

    left: int
    top: int
    columns: int
    rows: int


def _side(length: int, count: int, overlap: float) -> int:
    """The side of ``count`` equal tiles covering ``length`` with ``overlap`` of a side shared."""
    return min(length, math.ceil(length / (1 + (count - 1) * (1 - overlap))))


def _starts(length: int, side: int, count: int) -> list[int]:
    if count == 1:
        return [0]
    return [round(i * (length - side) / (count - 1)) for i in range(count)]


def grid(columns: int, rows: int, max_pixels: int, max_tiles: int, overlap: float) -> tuple[int, int]:
    """(across, down): the grid of at most ``max_tiles`` tiles whose tiles are shown sharpest,
    tiles no longer than ``MAX_TILE_ASPECT`` to one where any grid allows; ties go to fewer
    tiles, then to squarer ones."""
    best: tuple[tuple[bool, float, int, float], tuple[int, int]] | None = None
    for across in range(1, max_tiles + 1):
        for down in range(1, max_tiles // across + 1):
            if across * down < 2:
                continue
            width, height = _side(columns, across, overlap), _side(rows, down, overlap)
            skew = abs(math.log(width / height))
            scale = min(1.0, math.sqrt(max_pixels / (width * height)))
            key = (skew <= math.log(MAX_TILE_ASPECT), round(scale, 3), -across * down, -skew)
            if best is None or key > best[0]:
                best = (key, (across, down))
    assert best is not None  # max_tiles >= 2
    return best[1]


def plan(
    columns: int, rows: int, max_pixels: int, tiling: str = "auto", max_tiles: int = 6, overlap: float = 0.125
) -> list[Tile]:
    """The tiles to look at besides the whole view of a ``columns`` x ``rows`` frame; none when
    the frame is small enough or tiling is off. Tiles cover the frame, row by row."""
    if tiling not in TILINGS:
        raise ValueError(f"tiling must be one of {', '.join(TILINGS)}, got {tiling!r}")
    if not 0 <= overlap < 1:
        raise ValueError(f"tile overlap must be a fraction in [0, 1), got {overlap!r}")
    limit = max_pixels * (AUTO_FACTOR if tiling == "auto" else 1)
    if tiling == "off" or max_tiles < 2 or columns * rows <= limit:
        return []
    across, down = grid(columns, rows, max_pixels, max_tiles, overlap)
    width, height = _side(columns, across, overlap), _side(rows, down, overlap)
    return [
        Tile(left, top, width, height)
        for top in _starts(rows, height, down)
        for left in _starts(columns, width, across)
    ]
