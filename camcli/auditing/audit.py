"""``camcli.audit``: what ``camcli audit RUN`` does, from a finished run's saved maps.

For each method and layer of the run, the maps are grouped by class (the class each map
explains, or with ``by="true"`` the images' true classes from a truth file), each class's maps
clustered into strategies (:mod:`.strategies`), each cluster checked for the signatures of a
shortcut (:mod:`.flags`). Written into the run's folder: ``audit.csv`` (a row per map),
``audit.json`` (the classes, clusters, flags, mean maps) and with ``html`` ``audit.html``
(:mod:`camcli.output.audit_page`). Gates: ``fail_on="largest"`` fails when a class's largest
cluster is flagged, ``"any"`` when any cluster is.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from camcli.auditing.flags import Flag, flag_cluster, objects_of
from camcli.auditing.maps import GRID, MapSet, read_run_maps
from camcli.auditing.strategies import Strategies, peaks_in_words, strategies, where
from camcli.errors import UsageError
from camcli.geometry import Box
from camcli.output.paths import atomic_write

FAIL_ON = ("largest", "any")
BY = ("explained", "true")
CSV_COLUMNS = ("path", "method", "layer", "class", "cluster", "cluster_size", "distance", "outlier", "predicted",
               "correct", "peak_x", "peak_y", "flags")


@dataclass
class ClassAudit:
    maps: MapSet  # the method and layer's maps
    name: str  # the class
    indices: np.ndarray  # its maps, indices into the MapSet's records
    found: Strategies
    correct: list[bool | None]  # per map: its prediction right (None: no truth for its image)

    @property
    def method(self) -> str:
        return self.maps.method

    @property
    def layer(self) -> str:
        return self.maps.layer


@dataclass
class AuditReport:
    folder: Path
    by: str
    settings: dict
    maps: list[MapSet]
    classes: list[ClassAudit]
    truth_given: bool
    without_truth: list[str] = field(default_factory=list)  # images the truth file has no entry for
    gates_failed: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.gates_failed

    @property
    def unreadable(self) -> list[str]:
        """One line per map that could not be read (it joined no cluster)."""
        return [f"{m.records[i].path} ({m.method} at {m.layer}): {why}" for m in self.maps for i, why in m.unreadable.items()]

    @property
    def flagged(self) -> list[tuple[ClassAudit, object]]:
        return [(c, k) for c in self.classes for k in c.found.clusters if k.flags]

    def __repr__(self) -> str:
        return (f"AuditReport({len(self.classes)} class(es), {sum(len(c.found.clusters) for c in self.classes)} "
                f"cluster(s), {len(self.flagged)} flagged, gates {'passed' if self.passed else 'failed'})")

    def as_dict(self) -> dict:
        classes = []
        for c in self.classes:
            ms = c.maps
            paths = [ms.records[i].path for i in c.indices]
            f = c.found
            bad = {j for j, i in enumerate(c.indices) if i in ms.unreadable}
            classes.append({
                "method": c.method, "layer": c.layer, "class": c.name, "maps": int(len(c.indices)),
                "empty_maps": [paths[i] for i in np.flatnonzero(f.labels < 0) if i not in bad],
                "unreadable_maps": [paths[i] for i in sorted(bad)],
                "clusters_chosen_by": f.k_chosen, "eigenvalues": [round(float(v), 4) for v in f.eigenvalues[:10]],
                "mean_map": _grid(f.mean_map),
                "clusters": [{
                    "cluster": k.id, "size": k.size, "share": round(k.size / len(c.indices), 4),
                    "correct": None if k.correct is None else round(k.correct, 4),
                    "peak": [round(k.peak[0], 4), round(k.peak[1], 4)], "where": where(*k.peak),
                    "peaks": peaks_in_words(k),
                    "spread": round(k.spread, 4), "near": round(k.near, 4), "exemplars": [paths[i] for i in k.exemplars],
                    "flags": [fl.as_dict() for fl in k.flags], "mean_map": _grid(k.mean_map),
                } for k in f.clusters],
                "outliers": [{"path": paths[i], "distance": round(float(f.distance[i]), 4)}
                             for i in np.flatnonzero(f.outlier)],
            })
        return {"run": str(self.folder), "by": self.by, "truth": self.truth_given, "settings": self.settings,
                "classes": classes, "flagged": len(self.flagged), "unreadable": self.unreadable,
                "images_without_truth": self.without_truth, "gates_failed": self.gates_failed,
                "passed": self.passed, "files": [str(p) for p in self.files]}


def _grid(m: np.ndarray) -> list[list[float]]:
    return [[round(float(v), 3) for v in row] for row in m]


def audit(run: str | os.PathLike, truth: str | os.PathLike | None = None, *, normalized: bool = False,
          by: str = "explained", method: str | None = None, layer: str | None = None, grid: int = GRID,
          clusters: int | None = None, max_clusters: int = 8, neighbours: int | None = None, fence: float = 1.5,
          fail_on: str | None = None, html: bool = False, write: bool = True, seed: int = 0) -> AuditReport:
    """Audit the finished run in ``run``: per class, the strategies its maps show and the flagged ones.

    The keywords are ``camcli audit``'s options; ``write=False`` leaves the run's folder as it is
    (the report only). Truth paths match the run's as ``camcli evaluate`` matches them: the same
    relative path, or the one truth path that ends with it.

    >>> report = camcli.audit("runs/demo", fail_on="largest")   # doctest: +SKIP
    >>> report.flagged                                          # doctest: +SKIP
    """
    folder = Path(run)
    _check(by, grid, clusters, max_clusters, neighbours, fence, fail_on, truth)
    sets = read_run_maps(folder, grid, method, layer)
    boxes = _truth(truth, normalized, sets) if truth is not None else None
    if by == "true" and not any(b.label for bs in boxes.values() for b in bs):
        raise UsageError(f"`by` true needs the truth's labels: {truth} has none")
    classes = []
    for ms in sets:
        for name, idx in _groups(ms, by, boxes).items():
            found = strategies(ms.vectors[idx], ms.small[idx], ms.peaks[idx], ms.empty[idx], ms.grid, max_clusters=max_clusters,
                               clusters=clusters, neighbours=neighbours, fence=fence, seed=seed)
            records = [ms.records[i] for i in idx]
            paths, peaks, sizes = [r.path for r in records], ms.peaks[idx], [(r.width, r.height) for r in records]
            objects = [objects_of(boxes.get(r.path), name) if boxes is not None
                       else [Box(*r.box, label=name)] if r.box is not None else None for r in records]
            correct = [is_correct(r, name, by, boxes) for r in records]
            for k in found.clusters:
                known = [correct[i] for i in k.members if correct[i] is not None]
                k.correct = float(np.mean(known)) if known else None
                k.flags = flag_cluster(k, paths, peaks, sizes, objects, name)
            classes.append(ClassAudit(ms, name, idx, found, correct))
    settings = {"grid": grid, "clusters": clusters, "max_clusters": max_clusters, "neighbours": neighbours or "auto",
                "fence": fence, "seed": seed, "method": method, "layer": layer}
    report = AuditReport(folder, by, settings, sets, classes, truth is not None,
                         without_truth=sorted({r.path for ms in sets for r in ms.records} - set(boxes)) if boxes is not None
                         else [])
    report.gates_failed = gates(report, fail_on)
    if write:
        report.files = [folder / "audit.csv", folder / "audit.json"] + ([folder / "audit.html"] if html else [])
        write_csv(report)
        d = report.as_dict()
        atomic_write(folder / "audit.json", (json.dumps(d, indent=1) + "\n").encode())
        if html:
            from camcli.output.audit_page import write_audit_page

            write_audit_page(d, folder)
    return report


def _check(by, grid, clusters, max_clusters, neighbours, fence, fail_on, truth) -> None:
    if by not in BY:
        raise UsageError(f"`by` must be one of {', '.join(BY)}, got {by!r}")
    if by == "true" and truth is None:
        raise UsageError("`by` true needs a truth file (`truth`) with the images' labels")
    if not 4 <= grid <= 64:
        raise UsageError(f"`grid` must be 4 .. 64, got {grid}")
    if clusters is not None and not 1 <= clusters <= 32:
        raise UsageError(f"`clusters` must be 1 .. 32, got {clusters}")
    if not 1 <= max_clusters <= 32:
        raise UsageError(f"`max_clusters` must be 1 .. 32, got {max_clusters}")
    if neighbours is not None and not 2 <= neighbours <= 200:
        raise UsageError(f"`neighbours` must be 2 .. 200, got {neighbours}")
    if not 0 < fence <= 10:
        raise UsageError(f"`fence` must be above 0 and at most 10, got {fence}")
    if fail_on is not None and fail_on not in FAIL_ON:
        raise UsageError(f"`fail_on` must be one of {', '.join(FAIL_ON)}, got {fail_on!r}")


def _truth(truth, normalized: bool, sets: list[MapSet]) -> dict[str, list[Box]]:
    """The truth boxes of each of the run's images (by the run's paths), those with an entry only."""
    from camcli.evaluation.scoring import match_path
    from camcli.evaluation.truth import read_truth

    sizes = {r.path: (r.width, r.height) for ms in sets for r in ms.records}
    given = read_truth(truth, normalized, sizes)
    matched = {p: match_path(p, given) for p in sizes}
    return {p: given[k] for p, k in matched.items() if k is not None}


def _groups(ms: MapSet, by: str, boxes) -> dict[str, np.ndarray]:
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(ms.records):
        if by == "explained":
            groups.setdefault(r.explained, []).append(i)
        else:
            for label in sorted({b.label for b in boxes.get(r.path, []) if b.label}):
                groups.setdefault(label, []).append(i)
    return {k: np.array(v, np.int64) for k, v in sorted(groups.items())}


def is_correct(record, name: str, by: str, boxes) -> bool | None:
    """Whether the map's image was classified right: its prediction among the image's true labels
    (grouped by true class: the prediction is the class); None without labelled truth or a prediction."""
    if boxes is None or record.predicted is None:
        return None
    labels = {b.label for b in boxes.get(record.path, []) if b.label}
    if not labels:
        return None
    return record.predicted == name if by == "true" else record.predicted in labels


def gates(report: AuditReport, fail_on: str | None) -> list[str]:
    failed = []
    if fail_on is None:
        return failed
    for c in report.classes:
        for k in c.found.clusters:
            if k.flags and (fail_on == "any" or k.id == 0):
                which = "largest cluster" if k.id == 0 else f"cluster {k.id}"
                failed.append(f"{c.method} at {c.layer}, class {c.name}: the {which} ({k.size} of {len(c.indices)} "
                              f"maps) is flagged {', '.join(f.kind for f in k.flags)}")
    return failed


def write_csv(report: AuditReport) -> Path:
    """``audit.csv``: a row per map, its cells spelled as camcli's other tables (spreadsheet-safe)."""
    from camcli.output.csvfile import write_table

    rows = []
    for c in report.classes:
        ms = c.maps
        f = c.found
        sizes = {k.id: k.size for k in f.clusters}
        kinds = {k.id: [fl.kind for fl in k.flags] for k in f.clusters}
        for j, i in enumerate(c.indices):
            r = ms.records[i]
            cl = int(f.labels[j])
            gone = ["unreadable"] if i in ms.unreadable else ["empty-map"] if cl < 0 else []
            flags = list(kinds.get(cl, [])) + (["outlier"] if f.outlier[j] else []) + gone
            rows.append([r.path, r.method, r.layer, c.name, cl if cl >= 0 else None, sizes.get(cl),
                         None if np.isnan(f.distance[j]) else round(float(f.distance[j]), 4), bool(f.outlier[j]),
                         r.predicted, c.correct[j], None if cl < 0 else round(float(ms.peaks[i][0]), 4),
                         None if cl < 0 else round(float(ms.peaks[i][1]), 4), ";".join(flags)])
    path = report.folder / "audit.csv"  # a link planted at this name is replaced, never followed
    write_table(path, CSV_COLUMNS, rows)
    return path


__all__ = ["audit", "AuditReport", "ClassAudit", "Flag"]
