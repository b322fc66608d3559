"""`camcli explain` on a folder of 3D scans (issue 38): NIfTI stored in different orientations, a
NumPy volume and a DICOM series, explained by a 3D network of the user's own; each map lands on
the bright block the model responds to, in the scanner's millimetres, and its NIfTI opens over
the scan file voxel for voxel."""

from __future__ import annotations

import ast
import csv
import json
import re
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

nib = pytest.importorskip("nibabel", reason="the medical extra (nibabel) is not installed")
pytest.importorskip("pydicom", reason="the medical extra (pydicom) is not installed")

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (20, 24, 16)

#: a 3D network that answers to bright voxels: its first class's score is the mean of
#: ReLU(blur(x) - 0.6), so the evidence for it is where the scan is bright
MODEL = textwrap.dedent("""
    import torch
    from torch import nn

    class Bright(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv3d(1, 4, 3, padding=1)
            self.act = nn.ReLU()
            self.pool = nn.AdaptiveAvgPool3d(1)
            self.fc = nn.Linear(4, 2)
            with torch.no_grad():
                self.conv.weight.fill_(1 / 27)
                self.conv.bias.fill_(-0.6)
                self.fc.weight.copy_(torch.tensor([[1.0] * 4, [-1.0] * 4]))
                self.fc.bias.zero_()

        def forward(self, x):
            return self.fc(self.pool(self.act(self.conv(x))).flatten(1))

    def build():
        return Bright()
""")


def block_scan(at) -> np.ndarray:
    volume = np.random.default_rng(1).uniform(0, 0.15, SHAPE).astype(np.float32)
    x, y, z = at
    volume[x - 2:x + 3, y - 2:y + 3, z - 2:z + 3] = 1.0
    return volume


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    sys.path.insert(0, str(ROOT / "scripts"))
    from sample_volumes import write_dicom_series

    folder = tmp_path_factory.mktemp("scans")
    blocks = {}  # name -> the block's centre in RAS millimetres
    ras = np.diag([1.5, 1.0, 2.0, 1.0])
    ras[:3, 3] = (-10.0, 5.0, 0.0)
    nib.save(nib.Nifti1Image(block_scan((5, 6, 10)), ras), str(folder / "a_ras.nii.gz"))
    blocks["a_ras.nii.gz"] = (ras @ (5, 6, 10, 1))[:3]
    lps = np.diag([-1.5, -1.0, 2.0, 1.0])
    lps[:3, 3] = (30.0, 20.0, -40.0)
    nib.save(nib.Nifti1Image(block_scan((14, 17, 5)), lps), str(folder / "b_lps.nii.gz"))
    blocks["b_lps.nii.gz"] = (lps @ (14, 17, 5, 1))[:3]
    np.save(folder / "c.npy", block_scan((10, 10, 8)))  # no geometry: voxel indices are its millimetres
    blocks["c.npy"] = np.array([10.0, 10.0, 8.0])
    # a CT series: Hounsfield units, files numbered against slice order; DICOM's origin is in LPS
    hu = block_scan((12, 8, 9)) * 1000 - 500
    write_dicom_series(folder / "d_series", hu, (1.0, 1.25, 2.5), origin=(-5.0, 7.0, 12.0),
                       order=list(range(SHAPE[2]))[::-1])
    lps_mm = np.array([-5.0 + 12 * 1.0, 7.0 + 8 * 1.25, 12.0 + 9 * 2.5])
    blocks["d_series"] = lps_mm * (-1, -1, 1)
    (folder / "notes.png").write_bytes(b"")  # an image beside the scans: left out of a volume run
    (folder / "model.py").write_text(MODEL)
    return folder, blocks


def explain(folder: Path, out: Path, *args, model: Path | None = None):
    from camcli.cli import app

    return CliRunner().invoke(app, ["explain", str(folder), "--model", f"{model or folder / 'model.py'}:build",
                                    "--input-size", "24", "--out", str(out), "--workers", "0", *args])


def rows(out: Path) -> list[dict]:
    with open(out / "volumes.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_a_folder_of_scans_maps_each_on_its_object_in_millimetres(scans, tmp_path):
    folder, blocks = scans
    r = explain(folder, tmp_path / "out", "--method", "gradcam,layercam,scorecam", "--cam-batch-size", "4")
    assert r.exit_code == 0, r.output
    assert "left out 1 image(s)" in r.stderr and "explained 4 of 4 3D scan(s)" in r.stderr
    found = rows(tmp_path / "out")
    assert {row["path"] for row in found} == set(blocks) and len(found) == 3 * len(blocks)
    for row in found:
        assert row["status"] == "ok" and row["pred_label"] == "class_0", row
        peak = np.array([float(row[c]) for c in ("peak_x", "peak_y", "peak_z")])
        # within the block (5 voxels wide: 2 voxels of the coarsest spacing from its centre)
        assert np.abs(peak - blocks[row["path"]]).max() <= 2 * 2.5 + 1e-6, (row["path"], row["method"], peak)
        assert (tmp_path / "out" / row["output"]).is_file()
    # the map written for the LPS-stored file lies over it: same grid, same affine, peak on the block
    row = next(r for r in found if r["path"] == "b_lps.nii.gz" and r["method"] == "gradcam")
    written = nib.load(str(tmp_path / "out" / row["heatmap"]))
    source = nib.load(str(folder / "b_lps.nii.gz"))
    assert written.shape == source.shape and np.allclose(written.affine, source.affine)
    data = np.asarray(written.dataobj)
    peak = (int(row["peak_i"]), int(row["peak_j"]), int(row["peak_k"]))
    assert data[peak] == pytest.approx(data.max())  # the row's voxel is the map's peak in the file's own indices
    assert max(abs(p - b) for p, b in zip(peak, (14, 17, 5))) <= 2
    assert row["orientation"] == "LPS" and row["shape"] == "20x24x16"
    assert row["resampled"] == "1.2x1x1.5"  # to the 24^3 input: its voxels per scan voxel, along the file's axes


def test_bad_scans_get_a_row_and_flat_methods_a_usage_error(scans, tmp_path):
    folder, _ = scans
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.py").write_text(MODEL)
    (bad / "broken.nii.gz").write_bytes(b"not a nifti file")
    nib.save(nib.Nifti1Image(block_scan((5, 6, 10)), np.eye(4)), str(bad / "good.nii.gz"))
    r = explain(bad, tmp_path / "out")
    assert r.exit_code == 1
    by_path = {row["path"]: row for row in rows(tmp_path / "out")}
    assert by_path["good.nii.gz"]["status"] == "ok"
    assert by_path["broken.nii.gz"]["status"] == "error" and "NIfTI" in by_path["broken.nii.gz"]["error"]
    r = explain(folder, tmp_path / "out2", "--method", "fullgrad")
    assert r.exit_code == 2 and "flat images only" in r.stderr
    r = explain(folder, tmp_path / "out3", "--resize", "crop")
    assert r.exit_code == 2 and "--resize" in r.stderr and "volume run does not take" in r.stderr


def test_evaluate_scores_each_map_against_label_volumes_and_gates_on_pointing(scans, tmp_path):
    folder, _ = scans
    out = tmp_path / "out"
    assert explain(folder, out, "--method", "gradcam").exit_code == 0
    truth = tmp_path / "truth"
    truth.mkdir()
    ras = nib.load(str(folder / "a_ras.nii.gz"))
    right = np.zeros(SHAPE, np.uint8)
    right[3:8, 4:9, 8:13] = 1  # the block of a_ras: its map points into it
    nib.save(nib.Nifti1Image(right, ras.affine), str(truth / "a_ras.nii.gz"))
    lps = nib.load(str(folder / "b_lps.nii.gz"))
    wrong = np.zeros(SHAPE, np.uint8)
    wrong[1:4, 1:4, 10:14] = 2  # a structure away from b_lps's block: its map does not point into it
    nib.save(nib.Nifti1Image(wrong, lps.affine), str(truth / "b_lps.nii.gz"))
    from camcli.cli import app

    r = CliRunner().invoke(app, ["evaluate", str(out), "--truth", str(truth), "--min-pointing", "0.9"])
    assert r.exit_code == 1, r.output
    with open(out / "evaluation.csv", newline="") as f:
        scored = {row["path"]: row for row in csv.DictReader(f)}
    assert set(scored) == {"a_ras.nii.gz", "b_lps.nii.gz"}
    assert scored["a_ras.nii.gz"]["pointing"] == "true" and float(scored["a_ras.nii.gz"]["energy"]) > 0.3
    assert scored["b_lps.nii.gz"]["pointing"] == "false"
    assert "pointing" in r.stdout and "50" in r.stdout
    # labels on another grid are refused, not compared voxel by voxel
    nib.save(nib.Nifti1Image(right, np.eye(4)), str(truth / "a_ras.nii.gz"))
    r = CliRunner().invoke(app, ["evaluate", str(out), "--truth", str(truth)])
    assert r.exit_code == 2 and "resample the labels onto the scan" in r.stderr


def test_evaluate_takes_boxes_in_the_scan_files_voxels_as_truth(scans, tmp_path):
    """Boxes in the file's own voxel indices (as volumes.csv gives the peak): b_lps is stored L, P,
    S, so a box around its block in file indices must hold its map's peak, though camcli works in RAS."""
    from camcli.cli import app

    folder, _ = scans
    out = tmp_path / "out"
    assert explain(folder, out, "--method", "gradcam").exit_code == 0
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("path,i0,j0,k0,i1,j1,k1,label\n"
                     "b_lps.nii.gz,12,15,3,16,19,7,block\n"  # around the block at file voxel (14, 17, 5)
                     "./a_ras.nii.gz,0,0,0,2,2,2,corner\n"  # a corner far from a_ras's block at (5, 6, 10)
                     "a_ras.nii.gz,18,20,13,19,23,15,corner\n")  # the union of two boxes, both away
    r = CliRunner().invoke(app, ["evaluate", str(out), "--truth", str(boxes)])
    assert r.exit_code == 0, r.output
    with open(out / "evaluation.csv", newline="") as f:
        scored = {row["path"]: row for row in csv.DictReader(f)}
    assert set(scored) == {"a_ras.nii.gz", "b_lps.nii.gz"}
    assert scored["b_lps.nii.gz"]["pointing"] == "true" and float(scored["b_lps.nii.gz"]["energy"]) > 0.3
    assert scored["a_ras.nii.gz"]["pointing"] == "false"
    assert abs(float(scored["a_ras.nii.gz"]["truth_share"]) - (27 + 2 * 4 * 3) / np.prod(SHAPE)) < 1e-6  # the CSV rounds
    boxes.write_text("path,i0,j0,k0,i1,j1,k1\nb_lps.nii.gz,12,15,3,16,19,40\n")  # past the scan's 16 slices
    r = CliRunner().invoke(app, ["evaluate", str(out), "--truth", str(boxes)])
    assert r.exit_code == 2 and "lies outside the scan" in r.stderr
    boxes.write_text("path,x0,y0,x1,y1\nb_lps.nii.gz,1,2,3,4\n")  # 2D boxes are not a scan's
    r = CliRunner().invoke(app, ["evaluate", str(out), "--truth", str(boxes)])
    assert r.exit_code == 2 and "i0, j0, k0, i1, j1, k1" in r.stderr


def test_a_resumed_volume_run_explains_only_the_scans_it_had_not_finished(scans, tmp_path):
    """A run stopped part way is continued with --resume: the finished scans keep their files and
    rows, the new one is explained, and the CSV holds each scan once."""
    import shutil

    folder, _ = scans
    part = tmp_path / "scans"
    part.mkdir()
    for name in ("a_ras.nii.gz", "c.npy", "model.py"):
        shutil.copy(folder / name, part / name)
    out = tmp_path / "out"
    first = explain(part, out, "--method", "gradcam")
    assert first.exit_code == 0, first.output
    done = {p: p.stat().st_mtime_ns for p in (out / "heatmaps").iterdir()}
    assert len(done) == 2
    shutil.copy(folder / "b_lps.nii.gz", part / "b_lps.nii.gz")
    again = explain(part, out, "--method", "gradcam", "--resume")
    assert again.exit_code == 0, again.output
    assert "resumed: 2 3D scan(s) were already done" in again.stderr
    assert sorted(r["path"] for r in rows(out)) == ["a_ras.nii.gz", "b_lps.nii.gz", "c.npy"]
    assert all(p.stat().st_mtime_ns == t for p, t in done.items())  # not written again
    assert (out / "heatmaps" / "b_lps.nii.gz.gradcam@act.nii.gz").is_file()


def test_a_monai_network_by_name_explains_scans(scans, tmp_path):
    """`--model monai/DenseNet` with its constructor's arguments: a 3D network, its weights from a
    checkpoint of the test's own (seeded), explained like a network of one's own; an unknown name
    suggests MONAI's close ones."""
    pytest.importorskip("monai", reason="MONAI is not installed")
    import torch
    from monai.networks.nets import DenseNet
    from safetensors.torch import save_file

    from camcli.cli import app

    folder, blocks = scans
    args = ["spatial_dims=3", "in_channels=1", "out_channels=2", "init_features=4", "growth_rate=4",
            "block_config=(2,2)", "bn_size=2"]
    torch.manual_seed(0)
    net = DenseNet(**{k: ast.literal_eval(v) for k, v in (a.split("=") for a in args)})
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "net.safetensors"))
    base = ["explain", str(folder), "--model", "monai/DenseNet", "--checkpoint", str(tmp_path / "net.safetensors"),
            "--input-size", "24", "--workers", "0", *[x for a in args for x in ("--model-arg", a)]]
    r = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    found = rows(tmp_path / "out")
    assert {row["path"] for row in found} == set(blocks) and all(row["status"] == "ok" for row in found)
    assert len({row["layer"] for row in found}) == 1  # the default: the last 3D feature map before the pooling
    r = CliRunner().invoke(app, [*base, "--model", "monai/DenseNet12", "--out", str(tmp_path / "out2")])
    assert r.exit_code == 2 and "DenseNet121" in r.stderr


def test_a_ct_window_decides_what_the_model_sees(scans, tmp_path):
    """The DICOM series holds the block at 500 HU in a -500 HU background. Scaled per scan (the
    default) the block is 1 and the model finds it; through a window of 0 to 1000 HU it is 0.5,
    under the model's threshold, and every map is empty. A scaling camcli does not know is refused."""
    folder, _ = scans
    series = folder / "d_series"
    default = explain(series, tmp_path / "scaled", "--method", "gradcam", model=folder / "model.py")
    assert default.exit_code == 0, default.output
    assert [row["empty_map"] for row in rows(tmp_path / "scaled")] == ["false"]
    windowed = explain(series, tmp_path / "windowed", "--method", "gradcam", "--window", "500,1000",
                       model=folder / "model.py")
    assert windowed.exit_code == 0, windowed.output
    assert [row["empty_map"] for row in rows(tmp_path / "windowed")] == ["true"]
    r = explain(series, tmp_path / "bad", "--scaling", "robust", model=folder / "model.py")
    assert r.exit_code == 2 and "--scaling must be percentiles, minmax, zscore or none" in r.stderr


def test_the_gallery_slides_through_each_plane_of_a_scan(scans, tmp_path):
    """--html: each scan's card has a slider per plane; each map has a strip of 32 frames per plane
    beside its picture (written for the gallery only), and the axial strip is hottest at the
    frames through the block."""
    import cv2

    from camcli.output.volume_figures import SLIDER_FRAMES

    folder, _ = scans
    plain = tmp_path / "plain"
    assert explain(folder, plain, "--method", "gradcam").exit_code == 0
    assert not list(plain.rglob("*.axial.jpg"))  # the strips are the gallery's: none without it
    out = tmp_path / "out"
    assert explain(folder, out, "--method", "gradcam", "--html").exit_code == 0
    page = (out / "index.html").read_text()
    assert page.count('type="range"') == 3 * len(rows(out))
    assert f"{len(rows(out))} 3D scan(s)" in page  # the gallery counts scans, not images
    assert all(f'data-plane="{p}"' in page for p in ("axial", "coronal", "sagittal"))
    row = next(r for r in rows(out) if r["path"] == "a_ras.nii.gz")  # stored RAS: its block at slice z 10 of 16
    strips = {p: out / row["output"].replace(".png", f".{p}.jpg") for p in ("axial", "coronal", "sagittal")}
    assert all(s.is_file() for s in strips.values())
    axial = cv2.imread(str(strips["axial"]))[:, :, ::-1].astype(int)
    frames = np.split(axial, SLIDER_FRAMES)
    redness = [float((f[:, :, 0] - f[:, :, 2]).clip(0).mean()) for f in frames]  # jet's hot end over the scan
    hottest = int(np.argmax(redness)) * (SHAPE[2] - 1) / (SLIDER_FRAMES - 1)  # the frame's slice
    assert abs(hottest - 10) <= 2.5, (hottest, redness)
    # in a browser, each slider's plane shows its strip at the slider's frame, for the map the card shows
    from test_interface import _chromium, browse

    browser = _chromium()
    if browser is None:
        pytest.skip("no Chromium found: install Debian's chromium (CI does) to test the HTML gallery")
    dom = browse(browser, (out / "index.html").as_uri() + "#map=gradcam%40act", tmp_path)
    planes = re.findall(r'<div class="slice" data-plane="(\w+)"[^>]*style="([^"]*)"', dom)
    assert len(planes) == 3 * len(rows(out))
    for plane, style in planes:
        assert f".{plane}.jpg" in style and "background-position-y: 51.6" in style, style


def test_a_run_of_a_users_own_volume_model_never_imports_torchvision(scans, tmp_path):
    """torchvision's import loads torch._dynamo (over a second of start-up); a run that needs none
    of its models must not import it (camcli.models.kinds tells a detector without it)."""
    import subprocess

    folder, _ = scans
    code = textwrap.dedent(f"""
        import sys
        from typer.testing import CliRunner
        from camcli.cli import app
        r = CliRunner().invoke(app, ["explain", {str(folder)!r}, "--model", {str(folder / 'model.py')!r} + ":build",
                                     "--input-size", "24", "--out", {str(tmp_path / 'out')!r}, "--workers", "0",
                                     "--method", "gradcam"])
        print(r.exit_code, "torchvision" in sys.modules)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.stdout.split() == ["0", "False"], done.stdout + done.stderr
    assert json.loads((tmp_path / "out" / "run.json").read_text())["torchvision"]  # still recorded, from metadata
