"""A class's maps as strategies: clusters, their mean maps and exemplars, and the outliers.

Per class (of one method at one layer), the maps' unit vectors are clustered spectrally
(:mod:`.spectral`); each cluster gets its mean map, where its peaks lie (their median point, how far they typically are from it and
what share is within ``PLACE_RADIUS`` of it),
its exemplars (the maps nearest its centre) and, with truth, its share of correct predictions.
An outlier is a map far from every cluster: its cosine distance to the nearest cluster's centre
is above Tukey's fence (the third quartile plus ``fence`` interquartile ranges) of the class's
such distances. Empty maps (all zero) join no cluster and are listed apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from camcli.auditing.spectral import spectral_clusters

EXEMPLARS = 6
PLACE_RADIUS = 0.1  # peaks this close (a fraction of the picture) are at one place
MIN_OUTLIER_MAPS = 8  # fewer maps give no meaningful quartiles


@dataclass
class Cluster:
    id: int
    members: np.ndarray  # indices into the class's maps
    mean_map: np.ndarray  # (grid, grid), its maximum 1
    peak: tuple[float, float]  # the median of its maps' peaks, fractions (x, y) of the picture
    spread: float  # the median distance of its maps' peaks from that point, a fraction of the picture
    near: float  # the share of its maps whose peak is within PLACE_RADIUS of that point
    exemplars: list[int]  # members nearest the centre, nearest first
    correct: float | None = None  # share of correct predictions, with truth
    flags: list = field(default_factory=list)  # audit.flags.Flag

    @property
    def size(self) -> int:
        return len(self.members)


@dataclass
class Strategies:
    clusters: list[Cluster]
    labels: np.ndarray  # cluster id per map; -1 for an empty map
    distance: np.ndarray  # cosine distance to the nearest cluster centre (nan for an empty map)
    outlier: np.ndarray  # bool per map
    k_chosen: str
    eigenvalues: np.ndarray
    mean_map: np.ndarray  # the class's mean map, (grid, grid)


def strategies(vectors: np.ndarray, small: np.ndarray, peaks: np.ndarray, empty: np.ndarray, grid: int, *,
               max_clusters: int = 8,
               clusters: int | None = None, neighbours: int | None = None, fence: float = 1.5,
               seed: int = 0) -> Strategies:
    """Cluster one class's maps (``vectors``: unit rows to compare; ``small``: the maps on the grid, for
    mean maps; ``peaks``: (x, y) fractions; ``empty``: no map)."""
    n = len(vectors)
    live = np.flatnonzero(~empty)
    labels = np.full(n, -1, np.int64)
    distance = np.full(n, np.nan, np.float32)
    outlier = np.zeros(n, bool)
    if len(live) == 0:
        return Strategies([], labels, distance, outlier, "no maps", np.zeros(0), np.zeros((grid, grid), np.float32))
    x = vectors[live]
    found = spectral_clusters(x, max_clusters=max_clusters, clusters=clusters, neighbours=neighbours, seed=seed)
    labels[live] = found.labels
    centres = np.stack([_unit(x[found.labels == j].mean(0)) for j in range(found.k)])
    near = 1.0 - x @ centres.T  # cosine distance to every centre
    distance[live] = near.min(1)
    if len(live) >= MIN_OUTLIER_MAPS:
        q1, q3 = np.percentile(distance[live], [25, 75])
        outlier[live] = distance[live] > q3 + fence * (q3 - q1)
    out = []
    for j in range(found.k):
        local = np.flatnonzero(found.labels == j)
        members = live[local]
        p = peaks[members]
        median = np.median(p, axis=0)
        away = np.sqrt(((p - median) ** 2).sum(1))
        spread, near_share = float(np.median(away)), float((away <= PLACE_RADIUS).mean())
        order = local[np.argsort(near[local, j], kind="stable")][:EXEMPLARS]
        out.append(Cluster(j, members, _mean_map(small[members], grid), (float(median[0]), float(median[1])), spread, near_share,
                           [int(live[i]) for i in order]))
    return Strategies(out, labels, distance, outlier, found.chosen, found.eigenvalues, _mean_map(small[live], grid))


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-12)


def _mean_map(x: np.ndarray, grid: int) -> np.ndarray:
    m = x.astype(np.float32).mean(0).reshape(grid, grid)
    return (m / max(float(m.max()), 1e-12)).astype(np.float32)


def where(x: float, y: float) -> str:
    """A place in the picture in words: ``top-left corner``, ``top edge``, ``centre``, ..."""
    col = "left" if x < 1 / 3 else "right" if x > 2 / 3 else ""
    row = "top" if y < 1 / 3 else "bottom" if y > 2 / 3 else ""
    if row and col:
        return f"{row}-{col} corner"
    if row:
        return f"{row} edge" if min(y, 1 - y) < 0.15 else f"{'upper' if row == 'top' else 'lower'} middle"
    if col:
        return f"{col} edge" if min(x, 1 - x) < 0.15 else f"{col} of centre"
    return "centre"


def peaks_in_words(c: Cluster) -> str:
    """``peaks at the top-left corner (9 of 10 within 10%)`` or ``peaks spread 27% around the centre``."""
    place = where(*c.peak)
    if c.near >= 0.5:
        return f"peaks at the {place} ({round(c.near * c.size)} of {c.size} within {PLACE_RADIUS:.0%})"
    return f"peaks spread {c.spread:.0%} around the {place}"
