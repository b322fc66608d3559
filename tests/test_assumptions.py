"""Warnings when a method's assumptions fail at the chosen layer (and when every map is empty)."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
import torch
import torchvision

import camcli
from camcli.engine.layer_names import resolve_layer
from conftest import read_csv


@pytest.fixture(scope="module")
def folder(small_model, tmp_path_factory):
    d = tmp_path_factory.mktemp("assume")
    shutil.copy(small_model / "r18.pth", d / "r18.pth")
    rng = np.random.default_rng(5)
    (d / "imgs").mkdir()
    for i in range(3):
        cv2.imwrite(str(d / "imgs" / f"{i}.png"), rng.integers(0, 256, (48, 56, 3), dtype=np.uint8))
    return d


def explain(cli, folder, out, *args):
    return cli("explain", folder / "imgs", "--model", "resnet18", "--checkpoint", folder / "r18.pth",
               "--input-size", "64", "--workers", "0", "--out", out, *args)


def test_signed_activations_warn_for_gradcampp_and_xgradcam_only(cli, folder, tmp_path):
    out = tmp_path / "signed"
    # a BatchNorm output, before the block's ReLU: signed
    r = explain(cli, folder, out, "--layer", "layer4[1].bn2", "--method", "gradcam,gradcam++,xgradcam")
    assert r.exit_code == 0, r.stderr
    lines = [line for line in r.stderr.splitlines() if "warning" in line]
    assert len(lines) == 2  # once per method x layer, not once per image
    assert "gradcam++ at layer4[1].bn2 assumes non-negative activations" in lines[0]
    assert "xgradcam at layer4[1].bn2 assumes non-negative activations" in lines[1]
    rows = read_csv(out / "predictions.csv")
    assert all(("% of the activation mass is negative" in row["warning"]) == (row["method"] != "gradcam")
               for row in rows)
    warnings = json.loads((out / "run.json").read_text())["warnings"]
    assert [(w["method"], w["layer"], w["images"]) for w in warnings] == \
        [("gradcam++", "layer4[1].bn2", 3), ("xgradcam", "layer4[1].bn2", 3)]
    assert all(0.01 < w["worst"] <= 1 and w["advice"] for w in warnings)


def test_rectified_layer_gives_no_warning(cli, folder, tmp_path):
    out = tmp_path / "rectified"
    r = explain(cli, folder, out, "--layer", "layer4[1]", "--method", "gradcam,gradcam++,xgradcam")
    assert r.exit_code == 0 and "warning" not in r.stderr
    assert all(row["warning"] == "" for row in read_csv(out / "predictions.csv"))
    assert json.loads((out / "run.json").read_text())["warnings"] == []


def test_strict_makes_a_failed_assumption_a_usage_error_before_anything_is_written(cli, folder, tmp_path):
    out = tmp_path / "strict"
    r = explain(cli, folder, out, "--layer", "layer4[1].bn2", "--method", "xgradcam", "--strict", "--quiet")
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "--strict: xgradcam at layer4[1].bn2 assumes non-negative activations" in r.stderr
    assert not (out / "overlays").exists() and read_csv(out / "predictions.csv") == []
    assert explain(cli, folder, tmp_path / "ok", "--layer", "layer4[1]", "--method", "xgradcam",
                   "--strict").exit_code == 0


def test_maps_empty_because_of_the_head_do_not_advise_another_layer(cli, folder, tmp_path):
    """An all-zero classifier (torchvision's ViT heads start so) scores every class the same: no
    layer has evidence, and the warning says why instead of sending the user to an earlier layer."""
    state = torch.load(folder / "r18.pth", weights_only=True)
    state["fc.weight"] = torch.zeros_like(state["fc.weight"])  # no gradient reaches any layer
    torch.save(state, tmp_path / "flat.pth")
    out = tmp_path / "empty"
    r = cli("explain", folder / "imgs", "--model", "resnet18", "--checkpoint", tmp_path / "flat.pth",
            "--input-size", "64", "--workers", "0", "--out", out)
    assert r.exit_code == 0
    assert "every gradcam map at layer4[1] was empty (3 image(s))" in r.stderr
    assert "classifier (fc) has all-zero weights" in r.stderr and "earlier layer" not in r.stderr
    (w,) = json.loads((out / "run.json").read_text())["warnings"]
    assert w["assumption"] == "maps with evidence" and w["images"] == 3 and "all-zero weights" in w["advice"]


@pytest.mark.parametrize("arch, layer, fires", [("efficientnet_b0", "features[8]", True),
                                                 ("convnext_tiny", "features[7][2]", True),
                                                 ("resnet18", "layer4[1]", False)])
def test_the_architectures_where_the_formulas_are_fragile(arch, layer, fires):
    """SiLU (EfficientNet) and residual sums (ConvNeXt) give signed maps; ResNet's block output is rectified."""
    torch.manual_seed(0)
    model = torchvision.models.get_model(arch, num_classes=10).eval()
    name = resolve_layer(model, layer)
    methods = [camcli.get_method(m) for m in ("gradcam", "gradcam++", "xgradcam")]
    result = camcli.Explainer(model, [name], methods)(torch.randn(2, 3, 64, 64))
    assert ("gradcam", name) not in result.checks  # Grad-CAM assumes nothing of the sign
    for method in ("gradcam++", "xgradcam"):
        (check,) = result.checks[(method, name)]
        assert bool(check.failed.all()) is fires and bool(check.failed.any()) is fires, (method, check.values)
