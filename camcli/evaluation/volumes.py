"""Scoring a volume run against truth label volumes: does each map's peak voxel fall inside the
structure, and how much of the map's mass lies there.

Truth is a folder of NIfTI label volumes, one per scan, found by the scan's relative path
(``ct/a.nii.gz``: ``ct/a.nii.gz``; a NumPy file or a DICOM folder ``ct/a``: ``ct/a.nii.gz``); its
nonzero voxels are the structure. A label volume must lie on its scan file's grid: the shape and
affine of the map camcli wrote (which are the scan's). One on another grid is refused, never
compared voxel by voxel: resample it onto the scan first. Pointing is strict (the peak voxel
itself inside the structure); energy is the share of the map's sum inside it.

Truth may instead be boxes in voxel coordinates: a CSV file ``path,i0,j0,k0,i1,j1,k1`` (a header
row; an optional ``label`` column is read past), the corners as the scan file's own voxel indices
(those ``volumes.csv`` gives the peak in), both inside the box; a scan's several rows are the
union of their boxes. A box must lie inside its scan: one that does not is refused with its line.

A 3D segmenter's run is scored against label volumes of the model's class indices: its predicted
labels (``masks/``) give each class's IoU over the run (intersection over union of all its voxels,
255 counting nowhere, as in 2D) and the mIoU; each class's maps point into that class's voxels.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from camcli.errors import UsageError
from camcli.evaluation.scoring import Summary, _mean
from camcli.evaluation.truth import norm_path
from camcli.output.csvfile import read_rows
from camcli.evaluation.segments import SegmenterScore, recorded_labels
from camcli.output.rows import VolumeRow, VolumeSegmentRow

COLUMNS = ("path", "method", "layer", "truth_share", "pointing", "energy")
SEGMENT_COLUMNS = ("path", "seg_index", "seg_label", "iou", "method", "layer", "truth_share", "pointing", "energy")
BOX_COLUMNS = ("path", "i0", "j0", "k0", "i1", "j1", "k1")
VoxelBox = tuple[int, int, int, int, int, int]


@dataclass
class VolumeScore:
    """One scan x method x layer with truth, and its map's figures."""

    row: VolumeRow
    truth_share: float
    pointing: bool
    energy: float
    iou: float | None = None  # a segmenter's class: its IoU on this scan


@dataclass
class VolumeEvaluation:
    summaries: list[Summary]
    rows: list[VolumeScore] = field(default_factory=list)
    without_truth: list[str] = field(default_factory=list)
    truth_without_image: list[str] = field(default_factory=list)
    segmenter: SegmenterScore | None = None  # a 3D segmenter's IoU per class over the run
    heatmaps: bool = True  # a volume run always writes its maps (the gates ask)


def truth_file(folder: Path, rel: str) -> Path | None:
    """The label volume of the scan at ``rel``: the same name, else ``rel`` + ``.nii.gz``."""
    for candidate in (folder / rel, folder / f"{rel}.nii.gz", folder / f"{rel}.nii"):
        if candidate.is_file() and candidate.name.lower().endswith((".nii", ".nii.gz")):
            return candidate
    return None


def _load(path: Path):
    try:
        nib = importlib.import_module("nibabel")
    except ImportError:
        raise UsageError("scoring maps of scans needs the medical extra: pip install 'camcli[medical]'") from None
    try:
        return nib.load(str(path))
    except Exception as e:  # nibabel's errors name no common base
        raise UsageError(f"{path}: not a readable NIfTI file ({str(e).splitlines()[0] if str(e) else e})") from None


def read_voxel_boxes(path: Path) -> dict[str, list[VoxelBox]]:
    """``{scan's relative path: [(i0, j0, k0, i1, j1, k1), ...]}`` from a box CSV (see the module)."""
    import csv

    out: dict[str, list[VoxelBox]] = {}
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in BOX_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise UsageError(f"{path}: no {', '.join(missing)} column(s); voxel boxes are "
                                 f"{','.join(BOX_COLUMNS)} (the scan file's voxel indices, both corners inside)")
            for line, row in enumerate(reader, start=2):
                try:
                    box = tuple(int(row[c]) for c in BOX_COLUMNS[1:])
                except (TypeError, ValueError):
                    raise UsageError(f"{path}, line {line}: corners must be whole voxel indices: {row}") from None
                if any(box[a] > box[a + 3] for a in range(3)):
                    raise UsageError(f"{path}, line {line}: a far corner before the near one (i1 < i0, j1 < j0 or "
                                     f"k1 < k0): {row}")
                out.setdefault(norm_path(row["path"] or ""), []).append(box)
    except OSError as e:
        raise UsageError(f"--truth {path}: cannot read it ({e.strerror or e})") from None
    return out


def box_mask(boxes: list[VoxelBox], shape: tuple[int, ...], where: str) -> np.ndarray:
    """The union of ``boxes`` as a mask of the scan file's ``shape``."""
    mask = np.zeros(shape[:3], bool)
    for box in boxes:
        if any(box[a] < 0 or box[a + 3] >= shape[a] for a in range(3)):
            raise UsageError(f"{where}: box {box} lies outside the scan ({'x'.join(map(str, shape[:3]))} voxels)")
        mask[box[0]:box[3] + 1, box[1]:box[4] + 1, box[2]:box[5] + 1] = True
    return mask


def score_volume_run(folder: Path, truth: Path, csv_name: str = "volumes.csv") -> VolumeEvaluation:
    """Score ``folder``'s ``volumes.csv`` (or a segmenter's ``csv_name``; its NIfTI maps) against
    the label volumes in ``truth``, a folder, or the voxel boxes of a CSV file."""
    truth = Path(truth)
    if truth.is_file() and truth.suffix.lower() == ".csv":
        if csv_name != "volumes.csv":
            raise UsageError(f"--truth {truth}: boxes carry no classes; a 3D segmenter's run is scored against label "
                             "volumes of its class indices (a folder of NIfTI files, one per scan)")
        return _scored(folder, truth, read_voxel_boxes(truth), csv_name)
    if not truth.is_dir():
        raise UsageError(f"--truth {truth}: a volume run is scored against a folder of label volumes (NIfTI, one "
                         "per scan, by relative path) or a CSV of voxel boxes (path,i0,j0,k0,i1,j1,k1)")
    return _scored(folder, truth, None, csv_name)


def _scored(folder: Path, truth: Path, boxes: dict[str, list[VoxelBox]] | None, csv_name: str) -> VolumeEvaluation:
    _header, rows = read_rows(folder / csv_name)
    segmenter = SegmenterScore() if rows and isinstance(rows[0], VolumeSegmentRow) else None
    if segmenter is not None:  # the model's labels (run.json keeps them), else those of the classes explained
        segmenter.labels.update(recorded_labels(folder))
        segmenter.labels.update({row.seg_index: row.seg_label for row in rows if row.seg_index is not None})
    ious: dict[str, dict[int, float]] = {}
    scored: list[VolumeScore] = []
    without: list[str] = []
    matched: set[str] = set()
    labels: dict[str, np.ndarray] = {}
    for r in (r for r in rows if r.explained and r.ok and (r.heatmap or segmenter is not None)):
        found = truth_file(truth, r.path) if boxes is None else (r.path if r.path in boxes else None)
        if found is None:
            without.append(r.path)
            continue
        heat_image = _load(folder / (r.heatmap or r.mask))
        if boxes is not None:
            matched.add(r.path)
            if r.path not in labels:
                labels[r.path] = box_mask(boxes[r.path], heat_image.shape, f"{truth}: {r.path}")
        elif r.path not in labels:
            matched.add(found.relative_to(truth).as_posix())
            image = _load(found)
            if image.shape[:3] != heat_image.shape[:3] or not np.allclose(image.affine, heat_image.affine, atol=1e-3):
                raise UsageError(f"{found}: its grid ({'x'.join(map(str, image.shape))}) or affine is not the scan's "
                                 f"({'x'.join(map(str, heat_image.shape))}): resample the labels onto the scan first")
            labels[r.path] = np.asarray(image.dataobj)[..., 0] if image.ndim == 4 else np.asarray(image.dataobj)
            if segmenter is not None:  # the scan's predicted labels against its truth, once per scan
                ious[r.path] = segmenter.add(np.asarray(_load(folder / r.mask).dataobj), labels[r.path])
        if not r.heatmap:  # a scan where the segmenter found no class: counted for IoU only
            continue
        mask = labels[r.path] == r.seg_index if segmenter is not None else labels[r.path] != 0
        heat = np.asarray(heat_image.dataobj, dtype=np.float64)
        total = heat.sum()
        # the peak the row gives (the first of tied maxima in the order the map was written)
        peak = (r.peak_i, r.peak_j, r.peak_k) if r.peak_i is not None else np.unravel_index(int(heat.argmax()),
                                                                                             heat.shape)
        scored.append(VolumeScore(r, float(mask.mean()), bool(mask.any() and mask[peak]),
                                  float(heat[mask].sum() / total) if total > 0 and mask.any() else 0.0,
                                  ious.get(r.path, {}).get(r.seg_index) if segmenter is not None else None))
    if boxes is not None:
        listed = set(boxes)
    else:
        listed = {p.relative_to(truth).as_posix() for p in truth.rglob("*")
                  if p.name.lower().endswith((".nii", ".nii.gz"))}
    return VolumeEvaluation(summarise(scored), scored, sorted(set(without)), sorted(listed - matched), segmenter)


def summarise(rows: list[VolumeScore]) -> list[Summary]:
    """Per method x layer, over the scans whose truth holds the structure: pointing and energy."""
    groups: dict[tuple[str, str], list[VolumeScore]] = {}
    for r in rows:
        groups.setdefault((r.row.method, r.row.layer), []).append(r)
    out = []
    for (method, layer), rs in groups.items():
        held = [r for r in rs if r.truth_share > 0]
        out.append(Summary(method, layer, images=len(held), pointing=_mean(r.pointing for r in held),
                           energy=_mean(r.energy for r in held)))
    return out


def write_volume_csv(path: Path, evaluation: VolumeEvaluation) -> None:
    from camcli.output.csvfile import write_table

    if evaluation.segmenter is not None:
        write_table(path, list(SEGMENT_COLUMNS), ((s.row.path, s.row.seg_index, s.row.seg_label, s.iou, s.row.method,
                                                   s.row.layer, s.truth_share, s.pointing, s.energy)
                                                  for s in evaluation.rows))
        return
    write_table(path, list(COLUMNS), ((s.row.path, s.row.method, s.row.layer, s.truth_share, s.pointing, s.energy)
                                      for s in evaluation.rows))
