"""The volume demos as README and docs/volumes.md run them: camcli's own 3D classifier and 3D
segmenter on sample_volumes/ (NIfTI stored RAS, LPS and permuted, and a DICOM series), each scan
named after the shape it holds."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

nib = pytest.importorskip("nibabel", reason="the medical extra (nibabel) is not installed")
pytest.importorskip("pydicom", reason="the medical extra (pydicom) is not installed")

ROOT = Path(__file__).resolve().parents[1]
SHAPES = ("sphere", "cube", "torus")


def shape_of(path: str) -> str:
    return next(s for s in SHAPES if path.startswith(s))


def run(config: str, out: Path, *args) -> list[dict]:
    from camcli.cli import app

    r = CliRunner().invoke(app, ["explain", str(ROOT / "sample_volumes"), "--config", str(ROOT / "configs" / config),
                                 "--out", str(out), "--workers", "0", *args])
    assert r.exit_code == 0, r.output
    name = "volume_segments.csv" if "segmenter" in config else "volumes.csv"
    with open(out / name, newline="") as f:
        return list(csv.DictReader(f))


def test_the_demo_classifier_names_the_shape_of_every_sample_scan(tmp_path):
    rows = run("demo-volume.toml", tmp_path / "out", "--method", "gradcam")
    assert len({r["path"] for r in rows}) == 7
    assert all(r["pred_label"] == shape_of(r["path"]) for r in rows), [(r["path"], r["pred_label"]) for r in rows]


def test_the_demo_segmenter_labels_each_sample_scans_shape_and_its_map_lies_on_it(tmp_path):
    out = tmp_path / "out"
    rows = run("demo-volume-segmenter.toml", out, "--method", "gradcam")
    assert len({r["path"] for r in rows}) == 7
    for path in {r["path"] for r in rows}:
        mine = [r for r in rows if r["path"] == path]
        largest = next(r for r in mine if r["seg_rank"] == "1")
        assert largest["seg_label"] == shape_of(path), (path, largest["seg_label"])
        labels = np.asarray(nib.load(str(out / largest["mask"])).dataobj)
        peak = (int(largest["peak_i"]), int(largest["peak_j"]), int(largest["peak_k"]))
        near = labels[tuple(slice(max(0, p - 2), p + 3) for p in peak)]  # the peak on the class's voxels, or beside
        assert (near == int(largest["seg_index"])).any(), (path, peak)
