"""Findings of a tiled frame merged into one set, in source pixels.

A frame looked at whole and in overlapping tiles (``imaging.tiling``) gives one object several
boxes: from the whole view, coarse; from each tile it lies in, fine; and from two neighbouring
tiles, two halves of an object that crosses a seam. Boxes of one frame with the same label
(letter case aside) that overlap by ``OVERLAP`` of the smaller one, or that meet at all where
seams cut both, are one object. Its box is
the best tile box that no seam cuts (the object whole in that tile); where every tile cut it,
the union of its tile boxes; where no tile saw it, the whole view's. The rest of the finding
(description, confidence, tracking UID) is that of the box chosen, or of the most confident,
then largest, box of the union. Frames that were not tiled, findings without a box, and more
than ``MAX_GROUP`` boxes of one label on one frame (a flood, not read pairwise) pass unchanged.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace

from apolo_node.findings import Box, Finding

OVERLAP = 0.3  # intersection over the smaller box's area that makes two same-label boxes one
MAX_GROUP = 400  # boxes of one label on one frame compared pairwise; a bigger group passes unmerged


@dataclass(frozen=True)
class Seen:
    """A finding, the tile it was seen in (0: the whole frame), its place in the answer order,
    and whether its box touches a seam of its tile (``ModelImage.cut``)."""

    finding: Finding
    tile: int
    order: int
    cut: bool = False


def _area(box: Box) -> float:
    return (box.x2 - box.x1) * (box.y2 - box.y1)


def overlaps(a: Box, b: Box, threshold: float = OVERLAP) -> bool:
    """Whether the boxes share at least ``threshold`` of the smaller one's area (some area, at 0)."""
    width = min(a.x2, b.x2) - max(a.x1, b.x1)
    height = min(a.y2, b.y2) - max(a.y1, b.y1)
    if width <= 0 or height <= 0:
        return False
    return width * height >= threshold * min(_area(a), _area(b))


def _clusters(members: list[Seen]) -> list[list[Seen]]:
    """Groups of boxes linked by overlap (union-find: A~B and B~C put A, B, C together)."""
    parent = list(range(len(members)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(members)):
        for j in range(i + 1, len(members)):
            a, b = members[i].finding.box, members[j].finding.box
            # two boxes a seam cuts are halves of one object wherever they meet
            threshold = 0.0 if members[i].cut and members[j].cut else OVERLAP
            if a is not None and b is not None and overlaps(a, b, threshold):
                parent[root(j)] = root(i)
    groups: dict[int, list[Seen]] = defaultdict(list)
    for i, member in enumerate(members):
        groups[root(i)].append(member)
    return list(groups.values())


def _best(seen: list[Seen]) -> Seen:
    return max(seen, key=lambda s: (s.finding.confidence or 0.0, _area(s.finding.box) if s.finding.box else 0.0))


def _one(cluster: list[Seen]) -> Seen:
    """One finding for one object: its best whole tile box, else the union of its tile boxes."""
    order = min(s.order for s in cluster)
    fine = [s for s in cluster if s.tile] or cluster
    whole = [s for s in fine if not s.cut]
    if whole:
        return replace(_best(whole), order=order)
    boxes = [s.finding.box for s in fine if s.finding.box is not None]
    union = Box(min(b.x1 for b in boxes), min(b.y1 for b in boxes), max(b.x2 for b in boxes), max(b.y2 for b in boxes))
    best = _best(fine)
    return replace(best, finding=replace(best.finding, box=union), order=order)


def merge(seen: Sequence[Seen]) -> list[Finding]:
    """The findings with every tiled frame's overlapping same-label boxes made one, in the
    order they were first seen."""
    tiled = {(s.finding.sop_instance_uid, s.finding.frame) for s in seen if s.tile}
    kept: list[Seen] = []
    groups: dict[tuple[str, int, str], list[Seen]] = defaultdict(list)
    for s in seen:
        f = s.finding
        if (f.sop_instance_uid, f.frame) in tiled and f.box is not None:
            groups[(f.sop_instance_uid, f.frame, f.label.casefold())].append(s)
        else:
            kept.append(s)
    for members in groups.values():
        if len(members) > MAX_GROUP:  # a flood of boxes: bounded time before tidiness
            kept.extend(members)
            continue
        kept.extend(_one(cluster) for cluster in _clusters(members))
    return [s.finding for s in sorted(kept, key=lambda s: s.order)]
