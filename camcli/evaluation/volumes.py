"""Scoring a volume run against truth label volumes: does each map's peak voxel fall inside the
structure, and how much of the map's mass lies there.

Truth is a folder of NIfTI label volumes, one per scan, found by the scan's relative path
(``ct/a.nii.gz``: ``ct/a.nii.gz``; a NumPy file or a DICOM folder ``ct/a``: ``ct/a.nii.gz``); its
nonzero voxels are the structure. A label volume must lie on its scan file's grid: the shape and
affine of the map camcli wrote (which are the scan's). One on another grid is refused, never
compared voxel by voxel: resample it onto the scan first. Pointing is strict (the peak voxel
itself inside the structure); energy is the share of the map's sum inside it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from camcli.errors import UsageError
from camcli.evaluation.scoring import Summary, _mean
from camcli.output.csvfile import read_rows
from camcli.output.rows import VolumeRow

COLUMNS = ("path", "method", "layer", "truth_share", "pointing", "energy")


@dataclass
class VolumeScore:
    """One scan x method x layer with truth, and its map's figures."""

    row: VolumeRow
    truth_share: float
    pointing: bool
    energy: float


@dataclass
class VolumeEvaluation:
    summaries: list[Summary]
    rows: list[VolumeScore] = field(default_factory=list)
    without_truth: list[str] = field(default_factory=list)
    truth_without_image: list[str] = field(default_factory=list)


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


def score_volume_run(folder: Path, truth: Path) -> VolumeEvaluation:
    """Score ``folder``'s ``volumes.csv`` (its NIfTI maps) against the label volumes in ``truth``."""
    truth = Path(truth)
    if not truth.is_dir():
        raise UsageError(f"--truth {truth}: a volume run is scored against a folder of label volumes (NIfTI, one "
                         "per scan, by relative path)")
    _header, rows = read_rows(folder / "volumes.csv")
    scored: list[VolumeScore] = []
    without: list[str] = []
    matched: set[str] = set()
    labels: dict[str, np.ndarray] = {}
    for r in (r for r in rows if r.explained and r.ok and r.heatmap):
        found = truth_file(truth, r.path)
        if found is None:
            without.append(r.path)
            continue
        matched.add(found.relative_to(truth).as_posix())
        heat_image = _load(folder / r.heatmap)
        if r.path not in labels:
            image = _load(found)
            if image.shape[:3] != heat_image.shape[:3] or not np.allclose(image.affine, heat_image.affine, atol=1e-3):
                raise UsageError(f"{found}: its grid ({'x'.join(map(str, image.shape))}) or affine is not the scan's "
                                 f"({'x'.join(map(str, heat_image.shape))}): resample the labels onto the scan first")
            labels[r.path] = np.asarray(image.dataobj)[..., 0] if image.ndim == 4 else np.asarray(image.dataobj)
        mask = labels[r.path] != 0
        heat = np.asarray(heat_image.dataobj, dtype=np.float64)
        total = heat.sum()
        peak = np.unravel_index(int(heat.argmax()), heat.shape)
        scored.append(VolumeScore(r, float(mask.mean()), bool(mask.any() and mask[peak]),
                                  float(heat[mask].sum() / total) if total > 0 and mask.any() else 0.0))
    listed = {p.relative_to(truth).as_posix() for p in truth.rglob("*") if p.name.lower().endswith((".nii", ".nii.gz"))}
    return VolumeEvaluation(summarise(scored), scored, sorted(set(without)), sorted(listed - matched))


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

    write_table(path, list(COLUMNS), ((s.row.path, s.row.method, s.row.layer, s.truth_share, s.pointing, s.energy)
                                      for s in evaluation.rows))
