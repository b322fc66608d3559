"""timm models (optional extra): built with pretrained=False, weights from a timm-style checkpoint,
token (ViT, DeiT) and channels-last (Swin) layers read as maps. Skipped where timm is absent."""

import numpy as np
import pytest
import torch

from conftest import CIRCLE, read_csv

timm = pytest.importorskip("timm")
pgc = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

from camcli.engine.explainer import Explainer  # noqa: E402
from camcli.engine.methods import get_method  # noqa: E402

IMAGE = CIRCLE


def _checkpoint(tmp_path, name):
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=3).eval()
    path = tmp_path / f"{name}.pth.tar"
    torch.save({"epoch": 3, "arch": name, "state_dict": model.state_dict()}, path)  # as timm's train.py saves
    return path, model


@pytest.mark.parametrize("name, layer, prefix", [("vit_tiny_patch16_224", "blocks.11.norm1", 1),
                                                 ("deit_tiny_distilled_patch16_224", "blocks.11.norm1", 2)])
def test_timm_vit_from_a_training_checkpoint(cli, tmp_path, name, layer, prefix):
    path, model = _checkpoint(tmp_path, name)
    out = tmp_path / "o"
    r = cli("explain", IMAGE, "--model", f"timm/{name}", "--checkpoint", path, "--workers", "0",
            "--save-heatmap", "npy", "--heatmap-size", "layer", "--out", out, "--quiet")
    assert r.exit_code == 0, r.stderr
    row = read_csv(out / "predictions.csv")[0]
    assert row["layer"] == layer.replace(".11.", "[11].") and row["status"] == "ok"
    ours = np.load(out / row["heatmap"])
    assert ours.shape == (14, 14)
    # the same map from pytorch-grad-cam with the documented reshape (prefix tokens dropped)
    from camcli.models import load_model
    from camcli.engine.images import decode, resize_for_model
    lm = load_model(f"timm/{name}", checkpoint=path)
    rgb, _ = decode(str(IMAGE))
    x = torch.from_numpy(resize_for_model(rgb, (224, 224))).permute(2, 0, 1).float()[None] / 255
    x = (x - torch.tensor(lm.mean).view(1, 3, 1, 1)) / torch.tensor(lm.std).view(1, 3, 1, 1)
    cam = pgc.GradCAM(model=model, target_layers=[model.get_submodule(layer)],
                      reshape_transform=lambda t: t[:, prefix:].reshape(t.size(0), 14, 14, -1).permute(0, 3, 1, 2))
    cam.get_target_width_height = lambda _x: None
    theirs = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(row["target_index"]))])[0]
    cam.activations_and_grads.release()
    assert np.corrcoef(ours.ravel(), theirs.ravel())[0, 1] >= 0.99


def test_timm_swin_is_channels_last(tmp_path):
    torch.manual_seed(0)
    model = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=3).eval()
    layer = "layers.3.blocks.1.norm1"
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(4))
    ex = Explainer(model, [layer], [get_method("gradcam")])
    ours = ex(x)
    assert ex.layout(layer, (224, 224)).kind == "nhwc"
    cam = pgc.GradCAM(model=model, target_layers=[model.get_submodule(layer)],
                      reshape_transform=lambda t: t.permute(0, 3, 1, 2))
    cam.get_target_width_height = lambda _x: None
    theirs = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(ours.targets[0]))])[0]
    cam.activations_and_grads.release()
    assert np.corrcoef(ours.maps[("gradcam", layer)].maps[0].ravel(), theirs.ravel())[0, 1] >= 0.99


def test_timm_defaults_and_refusals(cli, tmp_path):
    from camcli.models import load_model
    from camcli.models.layer_search import default_layer
    for name, want in [("swin_tiny_patch4_window7_224", "norm"), ("convnext_atto", "stages.3.blocks.1")]:
        lm = load_model(f"timm/{name}", weights="none", num_classes=3)
        assert default_layer(lm.model, lm.input_size) == want
    r = cli("explain", IMAGE, "--model", "timm/convnext_atto", "--out", tmp_path / "a")
    assert r.exit_code == 2 and "pretrained=False" in r.stderr and "--checkpoint" in r.stderr
    r = cli("explain", IMAGE, "--model", "timm/convnext_attoo", "--weights", "none", "--out", tmp_path / "b")
    assert r.exit_code == 2 and "convnext_atto" in r.stderr


def test_a_users_mean_and_std_win_over_a_timm_models_preset():
    """--mean and --std are the user's word: a timm model's pretrained config gives the default
    only (they used to be overwritten by it)."""
    from camcli.models import load_model

    preset = load_model("timm/convnext_atto", weights="none", num_classes=3)
    lm = load_model("timm/convnext_atto", weights="none", num_classes=3, mean=[0.5], std=[0.25, 0.25, 0.25])
    assert lm.mean == (0.5, 0.5, 0.5) and lm.std == (0.25, 0.25, 0.25)
    assert preset.mean != lm.mean
