"""3D segmenters (issue 38, items 2 and 5): a network that scores every voxel of a scan is explained
class by class, its predicted labels are written as NIfTI over the scan file, and `camcli evaluate`
scores its IoU per class and where each class's maps point."""

from __future__ import annotations

import csv
import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

nib = pytest.importorskip("nibabel", reason="the medical extra (nibabel) is not installed")

SHAPE = (20, 24, 16)

#: class 1 ("block") where the blurred scan is bright, class 0 elsewhere: a segmenter whose
#: evidence for the block is the block
MODEL = textwrap.dedent("""
    import torch
    from torch import nn

    class Seg(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv3d(1, 4, 3, padding=1)
            self.act = nn.ReLU()
            self.head = nn.Conv3d(4, 2, 1)
            with torch.no_grad():
                self.conv.weight.fill_(1 / 27)
                self.conv.bias.fill_(-0.5)
                self.head.weight.copy_(torch.tensor([[-4.0] * 4, [4.0] * 4]).view(2, 4, 1, 1, 1))
                self.head.bias.copy_(torch.tensor([0.2, -0.2]))

        def forward(self, x):
            return self.head(self.act(self.conv(x)))

    def build():
        return Seg()
""")


def block_scan(at) -> np.ndarray:
    volume = np.random.default_rng(2).uniform(0, 0.15, SHAPE).astype(np.float32)
    x, y, z = at
    volume[x - 2:x + 3, y - 2:y + 3, z - 2:z + 3] = 1.0
    return volume


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scans")
    blocks = {"a_ras.nii.gz": ((5, 6, 10), np.diag([1.5, 1.0, 2.0, 1.0])),
              "b_lps.nii.gz": ((14, 17, 5), np.diag([-1.5, -1.0, 2.0, 1.0]))}  # file voxel indices
    for name, (at, affine) in blocks.items():
        nib.save(nib.Nifti1Image(block_scan(at), affine), str(folder / name))
    (folder / "model.py").write_text(MODEL)
    (folder / "labels.txt").write_text("background\nblock\n")
    return folder, blocks


def explain(folder: Path, out: Path, *args):
    from camcli.cli import app

    return CliRunner().invoke(app, ["explain", str(folder), "--model", f"{folder / 'model.py'}:build", "--labels",
                                    str(folder / "labels.txt"), "--input-size", "24", "--out", str(out),
                                    "--workers", "0", *args])


def rows(out: Path) -> list[dict]:
    with open(out / "volume_segments.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_each_class_found_is_explained_and_the_labels_lie_over_the_scan_file(scans, tmp_path):
    folder, blocks = scans
    out = tmp_path / "out"
    r = explain(folder, out, "--method", "gradcam,scorecam", "--json")
    assert r.exit_code == 0, r.output
    assert "3D segmenter" in r.stderr and "layer act" in r.stderr  # the map before the score convolution
    found = rows(out)
    assert {(x["path"], x["method"]) for x in found} == {(p, m) for p in blocks for m in ("gradcam", "scorecam")}
    for x in found:
        at, affine = blocks[x["path"]]
        assert x["seg_label"] == "block" and x["seg_index"] == "1" and x["segments"] == "1"
        assert abs(float(x["voxel_share"]) - 125 / np.prod(SHAPE)) < 0.02
        peak = np.array([int(x["peak_i"]), int(x["peak_j"]), int(x["peak_k"])])
        assert np.abs(peak - at).max() <= 2, (x["path"], x["method"], peak, at)  # on the block, in the file's voxels
        labels = nib.load(str(out / x["mask"]))
        assert labels.shape == SHAPE and np.allclose(labels.affine, affine)
        data = np.asarray(labels.dataobj)
        assert data[at] == 1 and data[0, 0, 0] == 0
        assert abs(int((data == 1).sum()) - 125) < 40
        heat = nib.load(str(out / x["heatmap"]))
        assert heat.shape == SHAPE and np.allclose(heat.affine, affine)
        assert (out / x["output"]).is_file()
    entries = [e for e in map(json.loads, r.stdout.splitlines()) if e["type"] == "image"]
    assert {e["path"] for e in entries} == set(blocks)
    assert all(e["segments"][0]["label"] == "block" and len(e["segments"][0]["maps"]) == 2 for e in entries)


def test_evaluate_scores_iou_per_class_and_gates_on_it(scans, tmp_path):
    from camcli.cli import app

    folder, blocks = scans
    out = tmp_path / "out"
    assert explain(folder, out, "--method", "gradcam").exit_code == 0
    truth = tmp_path / "truth"
    truth.mkdir()
    for name, (at, affine) in blocks.items():
        labels = np.zeros(SHAPE, np.uint8)
        x, y, z = at
        labels[x - 2:x + 3, y - 2:y + 3, z - 2:z + 3] = 1
        nib.save(nib.Nifti1Image(labels, affine), str(truth / name))
    r = CliRunner().invoke(app, ["evaluate", str(out), "--truth", str(truth), "--min-iou", "0.5"])
    assert r.exit_code == 0, r.output
    assert "mIoU" in r.stdout and "block" in r.stdout
    with open(out / "evaluation.csv", newline="") as f:
        scored = list(csv.DictReader(f))
    assert {s["path"] for s in scored} == set(blocks)
    assert all(float(s["iou"]) > 0.6 and s["pointing"] == "true" and s["seg_label"] == "block" for s in scored)
    r = CliRunner().invoke(app, ["evaluate", str(out), "--truth", str(truth), "--min-iou", "0.999"])
    assert r.exit_code == 1 and "mIoU" in r.stderr
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("path,i0,j0,k0,i1,j1,k1\na_ras.nii.gz,3,4,8,7,8,12\n")
    r = CliRunner().invoke(app, ["evaluate", str(out), "--truth", str(boxes)])
    assert r.exit_code == 2 and "boxes carry no classes" in r.stderr


def test_the_score_layer_is_explained_only_with_a_warning_and_flat_methods_are_refused(scans, tmp_path):
    folder, _ = scans
    r = explain(folder, tmp_path / "out", "--method", "gradcam", "--layer", "head")
    assert r.exit_code == 0, r.output
    assert "redraws the model's own scores" in r.stderr
    r = explain(folder, tmp_path / "out2", "--method", "cam")
    assert r.exit_code == 2 and "cam" in r.stderr


def test_camcli_layers_lists_a_volume_models_layers_and_its_default(scans):
    """`camcli layers` feeds a 3D network a volume of its own channels (it crashed on an RGB image),
    and names the default layer each volume task would take."""
    from camcli.cli import app

    folder, _ = scans
    r = CliRunner().invoke(app, ["layers", f"{folder / 'model.py'}:build", "--input-size", "24", "--json"])
    assert r.exit_code == 0, r.output
    listed = json.loads(r.stdout)
    default = [x["name"] for x in listed if x.get("default")]
    assert default == ["act"]  # the segmenter's: before its score convolution
    root = Path(__file__).resolve().parents[1]
    r = CliRunner().invoke(app, ["layers", f"{root / 'demo' / 'shapes_volume_net.py'}:build", "--input-size", "32",
                                 "--json"])
    assert r.exit_code == 0, r.output
    assert [x["name"] for x in json.loads(r.stdout) if x.get("default")] == ["block3"]


def test_monais_unet_by_name_is_a_3d_segmenter(scans, tmp_path):
    pytest.importorskip("monai.networks.nets", reason="MONAI (the monai extra) is not installed")
    from camcli.cli import app

    folder, blocks = scans
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["explain", str(folder), "--model", "monai/UNet", "--model-arg", "spatial_dims=3",
                                 "--model-arg", "in_channels=1", "--model-arg", "out_channels=3", "--model-arg",
                                 "channels=(4,8,16)", "--model-arg", "strides=(2,2)", "--input-size", "16",
                                 "--min-area", "0", "--out", str(out), "--workers", "0", "--method", "gradcam"])
    assert r.exit_code == 0, r.output
    assert "3D segmenter" in r.stderr and "layer model[1]" in r.stderr  # before the last up-convolution
    found = rows(out)
    assert {x["path"] for x in found} == set(blocks)
    assert all(nib.load(str(out / x["mask"])).shape == SHAPE for x in found)
