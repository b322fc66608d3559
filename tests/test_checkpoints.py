"""Checkpoints people really have: grayscale fine-tunes, their own normalisation, TorchScript
(test_robust.py), all loaded through ``--checkpoint`` and checked against the model run by hand."""

import json

import cv2
import numpy as np
import pytest
import torch
import torchvision
from torch import nn

import camcli
from camcli.models import load_model
from conftest import CIRCLE, read_csv

IMAGE = CIRCLE


@pytest.fixture(scope="module")
def gray_checkpoint(tmp_path_factory):
    """A resnet18 whose conv1 takes one channel, as in the MNIST tutorial among the seeds."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=4)
    model.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    path = tmp_path_factory.mktemp("gray") / "gray.pth"
    torch.save(model.eval().state_dict(), path)
    return path, model.eval()


def _luma_input(size, mean, std):
    rgb = cv2.cvtColor(cv2.imread(str(IMAGE)), cv2.COLOR_BGR2RGB)
    small = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    gray = small @ np.array([0.299, 0.587, 0.114], np.float32)
    return torch.from_numpy((gray - mean) / std)[None, None]


def test_grayscale_checkpoint_is_fed_the_luminance(gray_checkpoint, cli, tmp_path):
    path, model = gray_checkpoint
    out = tmp_path / "o"
    r = cli("explain", IMAGE, "--model", "resnet18", "--checkpoint", path, "--input-size", "96", "--workers", "0",
            "--topk", "4", "--save-heatmap", "npy", "--heatmap-size", "layer", "--out", out, "--quiet")
    assert r.exit_code == 0, r.stderr
    row = read_csv(out / "predictions.csv")[0]
    x = _luma_input(96, 0.449, 0.226)
    with torch.no_grad():
        probs = model(x).softmax(1)[0]
    assert int(row["pred_index"]) == int(probs.argmax())
    assert abs(float(row["score"]) - float(probs.max())) < 1e-4
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["model"]["input_channels"] == 1 and manifest["model"]["mean"] == [0.449] * 3

    # and the Grad-CAM map is the one-channel model's, computed by hand
    store = {}
    model.layer4[1].register_forward_hook(lambda m, i, o: store.setdefault("a", o))
    logits = model(x)
    a = store["a"]
    g = torch.autograd.grad(logits[0, int(row["pred_index"])], a)[0]
    cam = torch.relu((g.mean((2, 3), keepdim=True) * a).sum(1))[0].detach().numpy()
    cam = (cam - cam.min()) / (cam.max() - cam.min())
    ours = np.load(out / row["heatmap"])
    assert np.corrcoef(ours.ravel(), cam.ravel())[0, 1] > 0.999


def test_first_convolution_with_another_channel_count_is_refused(cli, tmp_path):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=4)
    model.conv1 = nn.Conv2d(4, 64, 7, 2, 3, bias=False)
    torch.save(model.state_dict(), tmp_path / "rgba.pth")
    r = cli("explain", IMAGE, "--model", "resnet18", "--checkpoint", tmp_path / "rgba.pth", "--out", tmp_path / "o")
    assert r.exit_code == 2
    assert "conv1) takes 4 input channels" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_mean_and_std_replace_the_normalisation(small_model, tmp_path):
    args = dict(model="resnet18", checkpoint=str(small_model / "r18.pth"), input_size=64, workers=0)
    mine = list(camcli.explain(str(IMAGE), mean="0.5", std="0.25,0.25,0.25", out=tmp_path / "o", **args))[0]
    rgb = cv2.cvtColor(cv2.imread(str(IMAGE)), cv2.COLOR_BGR2RGB)
    small = cv2.resize(rgb, (64, 64), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    x = torch.from_numpy((small - 0.5) / 0.25).permute(2, 0, 1)[None]
    model = torchvision.models.resnet18(num_classes=3).eval()
    model.load_state_dict(torch.load(small_model / "r18.pth"))
    with torch.no_grad():
        probs = model(x).softmax(1)[0]
    assert mine.pred_index == int(probs.argmax()) and abs(mine.score - float(probs.max())) < 1e-4
    manifest = json.loads((tmp_path / "o" / "run.json").read_text())
    assert manifest["model"]["mean"] == [0.5] * 3 and manifest["model"]["std"] == [0.25] * 3


def test_mean_from_a_config_list_and_bad_values(small_model, cli, tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(f'model = "resnet18"\ncheckpoint = "{small_model / "r18.pth"}"\nmean = [0.5, 0.5, 0.5]\n')
    r = cli("explain", IMAGE, "--config", config, "--input-size", "64", "--workers", "0", "--out", tmp_path / "a",
            "--quiet")
    assert r.exit_code == 0, r.stderr
    assert json.loads((tmp_path / "a" / "run.json").read_text())["model"]["mean"] == [0.5] * 3
    for flag, value, said in [("--mean", "0.5,0.5", "--mean has 2 values"), ("--std", "0,1,1", "positive"),
                              ("--mean", "a,b,c", "numbers separated by commas")]:
        r = cli("explain", IMAGE, "--config", config, flag, value, "--out", tmp_path / "b")
        assert r.exit_code == 2 and said in r.stderr, r.stderr


def _small_classifiers(limit_millions: float = 30) -> list[str]:
    """Every torchvision classifier with at most ``limit_millions`` parameters (40 of the 80;
    benchmarks/checkpoint_sweep.py runs the same check on all of them)."""
    import torchvision

    from camcli.models.classifiers import _structure
    names = []
    for name in torchvision.models.list_models(module=torchvision.models):
        if sum(p.numel() for p in _structure(name).parameters()) <= limit_millions * 1e6:
            names.append(name)
    return names


@pytest.mark.slow
@pytest.mark.parametrize("name", _small_classifiers())
def test_every_classifier_loads_a_user_state_dict_of_itself(name, tmp_path):
    """A user's fine-tune of each architecture: 10 classes, saved as a plain state dict
    (inception_v3 and googlenet without their auxiliary heads, as inference checkpoints are);
    the class count is read from the file and the logits are the saved model's."""
    torch.manual_seed(0)
    extra = {"aux_logits": False, "init_weights": False} if name in ("inception_v3", "googlenet") else {}
    model = torchvision.models.get_model(name, weights=None, num_classes=10, **extra).eval()
    torch.save(model.state_dict(), tmp_path / "mine.pth")
    loaded = load_model(name, checkpoint=tmp_path / "mine.pth")
    assert loaded.num_classes == 10
    side = 224 if name.startswith(("vit", "swin", "maxvit")) else 96
    x = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        assert torch.allclose(loaded.model(x), model(x), atol=1e-4, rtol=1e-4)
