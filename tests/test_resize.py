"""--resize stretch|letterbox|crop: what the model sees, and maps read back onto the original."""

import json

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import camcli

MEAN = np.array([0.485, 0.456, 0.406])


@pytest.fixture
def wide_image(tmp_path):
    """A 300x100 picture with a bright disc at the right: squeezed 3x by stretch."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 60, (100, 300, 3), dtype=np.uint8)
    cv2.circle(img, (240, 50), 35, (250, 240, 30), -1)
    path = tmp_path / "wide.png"
    cv2.imwrite(str(path), img[..., ::-1])
    return path, img


def _run(path, small_model, resize, out=None):
    return list(camcli.explain(str(path), model="resnet18", checkpoint=str(small_model / "r18.pth"),
                               input_size=64, workers=0, resize=resize, out=out))[0]


def test_letterbox_keeps_the_aspect_and_the_padding_never_shows(wide_image, small_model, tmp_path):
    path, img = wide_image
    r = _run(path, small_model, "letterbox", tmp_path / "o")
    small = cv2.resize(img, (64, 21), interpolation=cv2.INTER_AREA)  # 300x100 -> 64x21, 21 rows at 21..42
    want = np.empty((64, 64, 3), np.uint8)
    want[:] = np.round(MEAN * 255).astype(np.uint8)
    want[21:42] = small
    assert np.array_equal(r.pixels.permute(1, 2, 0).numpy(), want)
    # the full-size map is the input-sized map's image rows only, stretched back to 300x100
    layer_map = torch.from_numpy(r.maps[0].layer_map)
    at_input = F.interpolate(layer_map[None, None], size=(64, 64), mode="bilinear", align_corners=False)[0, 0]
    by_hand = cv2.resize(at_input[21:42].numpy(), (300, 100), interpolation=cv2.INTER_LINEAR)
    assert np.corrcoef(r.maps[0].heatmap.ravel(), by_hand.ravel())[0, 1] > 0.995
    settings = json.loads((tmp_path / "o" / "run.json").read_text())["settings"]
    assert settings["resize"] == "letterbox"


def test_crop_sees_the_centre_and_the_cut_border_gets_no_heat(wide_image, small_model):
    path, img = wide_image
    r = _run(path, small_model, "crop")
    # torchvision's preset: shorter side to 64 / 0.875 = 73, then the centre 64x64
    resized = cv2.resize(img, (219, 73), interpolation=cv2.INTER_AREA)
    top, left = int(round((73 - 64) / 2)), int(round((219 - 64) / 2))
    assert np.array_equal(r.pixels.permute(1, 2, 0).numpy(), resized[top:top + 64, left:left + 64])
    heat = r.maps[0].heatmap
    seen = slice(int(np.ceil(left * 300 / 219)), int((left + 64) * 300 / 219))
    assert heat[:, :seen.start - 1].max() == 0 and heat[:, seen.stop + 1:].max() == 0
    assert heat[:, seen].max() == pytest.approx(1.0, abs=0.02)


@pytest.mark.slow
def test_stretch_is_unchanged_and_resume_refuses_another_resize(wide_image, small_model, tmp_path, cli):
    path, img = wide_image
    r = _run(path, small_model, "stretch")
    assert np.array_equal(r.pixels.permute(1, 2, 0).numpy(), cv2.resize(img, (64, 64), interpolation=cv2.INTER_AREA))
    args = ["explain", path, "--model", "resnet18", "--checkpoint", small_model / "r18.pth", "--input-size", "64",
            "--workers", "0", "--out", tmp_path / "o", "--quiet"]
    assert cli(*args, "--resize", "crop").exit_code == 0
    again = cli(*args, "--resize", "letterbox", "--resume")
    assert again.exit_code == 2 and "resize" in again.stderr
    bad = cli(*args, "--resize", "pad")
    assert bad.exit_code == 2 and "--resize must be stretch, letterbox or crop" in bad.stderr


@pytest.mark.slow
def test_a_run_from_before_these_settings_resumes(wide_image, small_model, tmp_path, cli):
    """run-settings.json written by an earlier camcli lacks resize, mean, std, layer_layout, seed...:
    those count as their defaults, so the run resumes; a different value is still refused."""
    path, _ = wide_image
    args = ["explain", path, "--model", "resnet18", "--checkpoint", small_model / "r18.pth", "--input-size", "64",
            "--workers", "0", "--out", tmp_path / "o", "--quiet"]
    assert cli(*args).exit_code == 0
    saved_file = tmp_path / "o" / "run-settings.json"
    saved = json.loads(saved_file.read_text())
    for key in ("resize", "mean", "std", "layer_layout", "seed", "fem_k", "kpca_kernel", "kpca_gamma"):
        del saved[key]
    saved_file.write_text(json.dumps(saved))
    assert cli(*args, "--resume").exit_code == 0
    again = cli(*args, "--resume", "--resize", "crop")
    assert again.exit_code == 2 and "resize ('stretch' -> 'crop')" in again.stderr
