"""Transformers: token layers (ViT) and channels-last layers (Swin) explained as maps.

Small configurations built with torchvision's own classes (the same code path as the
full-size models, which benchmarks/zoo_sweep.py and benchmarks/transformer_parity.py cover).
The oracle is pytorch-grad-cam with the ``reshape_transform`` its documentation shows for
ViT (drop the class token, fold the patch tokens into a grid) and a permute for torchvision's
channels-last Swin blocks.
"""

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.models import VisionTransformer
from torchvision.models.swin_transformer import SwinTransformer

from camcli.engine.explainer import Explainer
from camcli.engine.methods import get_method
from camcli.errors import UsageError
from camcli.models.layer_search import default_layer
from conftest import SAMPLES, read_csv

pgc = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

PEERS = {"gradcam": "GradCAM", "gradcam++": "GradCAMPlusPlus", "xgradcam": "XGradCAM", "hirescam": "HiResCAM",
         "gradcam-elementwise": "GradCAMElementWise", "layercam": "LayerCAM", "scorecam": "ScoreCAM"}
GRADIENT = [m for m in PEERS if m != "scorecam"]


def vit(image_size=64, patch_size=16, classes=5):
    torch.manual_seed(0)
    model = VisionTransformer(image_size=image_size, patch_size=patch_size, num_layers=2, num_heads=2,
                              hidden_dim=32, mlp_dim=64, num_classes=classes).eval()
    nn.init.normal_(model.heads.head.weight, std=0.5)  # torchvision starts the head at zero: blank maps
    return model


def swin(classes=5):
    torch.manual_seed(0)
    return SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 2], window_size=[4, 4],
                           num_classes=classes).eval()


def pearson(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(np.corrcoef(a, b)[0, 1])


def peer(method, model, layer, x, targets, reshape):
    cam = getattr(pgc, PEERS[method])(model=model, target_layers=[model.get_submodule(layer)],
                                      reshape_transform=reshape)
    cam.get_target_width_height = lambda _x: None  # keep maps at layer resolution
    try:
        return cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in targets])
    finally:
        cam.activations_and_grads.release()


def vit_reshape(grid):
    def reshape(t):  # pytorch-grad-cam's documented ViT reshape_transform
        return t[:, 1:, :].reshape(t.size(0), grid, grid, t.size(2)).permute(0, 3, 1, 2)
    return reshape


@pytest.mark.parametrize("method", GRADIENT)
@pytest.mark.parametrize("image_size, patch", [(64, 16), (96, 32)])
def test_vit_token_layer_matches_pytorch_grad_cam(method, image_size, patch):
    model = vit(image_size, patch)
    layer = "encoder.layers.encoder_layer_1.ln_1"
    x = torch.randn(2, 3, image_size, image_size, generator=torch.Generator().manual_seed(1))
    ours = Explainer(model, [layer], [get_method(method)])(x)
    maps = ours.maps[(method, layer)].maps
    grid = image_size // patch
    assert tuple(maps.shape) == (2, grid, grid)
    theirs = peer(method, model, layer, x, ours.targets, vit_reshape(grid))
    for i in range(2):
        r = pearson(maps[i], theirs[i])
        assert r >= 0.99, f"{method} ViT/{patch}, image {i}: r = {r:.4f}"


def scorecam_by_hand(model, layer, x, target, to_map, align_corners):
    """Score-CAM's formula for one image on a token or channels-last layer, step by step."""
    import torch.nn.functional as F
    store = {}
    h = model.get_submodule(layer).register_forward_hook(lambda m, i, o: store.setdefault("a", o.clone()))
    with torch.no_grad():
        model(x)
        h.remove()
        acts = to_map(store["a"])[0]
        up = F.interpolate(acts[:, None], size=x.shape[2:], mode="bilinear", align_corners=align_corners)[:, 0]
        lo = up.flatten(1).min(1).values.view(-1, 1, 1)
        hi = up.flatten(1).max(1).values.view(-1, 1, 1)
        masks = torch.where(hi > lo, (up - lo) / (hi - lo).clamp_min(1e-12), torch.zeros_like(up))
        weights = model(x * masks[:, None])[:, target].softmax(0)
        cam = torch.relu((weights[:, None, None] * acts).sum(0))
    return (cam - cam.min()) / (cam.max() - cam.min())


@pytest.mark.parametrize("family", ["vit", "swin"])
def test_scorecam_on_transformers_is_the_formula_and_the_peer_differs_only_in_upsampling(family):
    """Masks come from the reshaped maps. pytorch-grad-cam upsamples them with align_corners=True
    (we follow the Score-CAM authors: False); on a 4x4 grid that moves the map a lot, so each
    tool is checked against the formula with its own upsampling."""
    if family == "vit":
        model, layer, grid = vit(), "encoder.layers.encoder_layer_1.ln_1", 4
        to_map = vit_reshape(grid)
    else:
        model, layer, to_map = swin(), "features.3.1.norm1", (lambda t: t.permute(0, 3, 1, 2))
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    ours = Explainer(model, [layer], [get_method("scorecam")])(x)
    theirs = peer("scorecam", model, layer, x, ours.targets, to_map)
    for i in range(2):
        t = int(ours.targets[i])
        mine = scorecam_by_hand(model, layer, x[i:i + 1], t, to_map, align_corners=False)
        peers = scorecam_by_hand(model, layer, x[i:i + 1], t, to_map, align_corners=True)
        assert pearson(ours.maps[("scorecam", layer)].maps[i], mine) >= 0.99
        assert pearson(theirs[i], peers) >= 0.99


@pytest.mark.parametrize("method", ["gradcam", "hirescam", "gradcam-elementwise", "layercam"])
def test_swin_channels_last_block_matches_pytorch_grad_cam(method):
    """torchvision's Swin blocks output (N, H, W, C); read as (N, C, H, W) the map is noise.
    (Grad-CAM++ and XGrad-CAM assume rectified activations, which a LayerNorm output is not:
    camcli warns there, and the peer's epsilon then decides its map; see test_assumptions.py.)"""
    model = swin()
    layer = "features.3.1.norm1"  # (N, 8, 8, 32) at 64 px
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    ex = Explainer(model, [layer], [get_method(method)])
    ours = ex(x)
    assert ex.layout(layer, (64, 64)).kind == "nhwc"
    theirs = peer(method, model, layer, x, ours.targets, lambda t: t.permute(0, 3, 1, 2))
    for i in range(2):
        r = pearson(ours.maps[(method, layer)].maps[i], theirs[i])
        assert r >= 0.99, f"{method} Swin, image {i}: r = {r:.4f}"


def test_ablationcam_on_tokens_zeroes_one_channel_of_every_patch_token():
    """The formula by hand: channel k of the 16 patch tokens set to zero (the class token kept),
    weight (y - y_k) / y."""
    model = vit()
    layer = "encoder.layers.encoder_layer_1.ln_1"
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    result = Explainer(model, [layer], [get_method("ablationcam", cam_batch_size=7)])(x, target=2)
    store = {}
    module = model.get_submodule(layer)
    with torch.no_grad():
        h = module.register_forward_hook(lambda m, i, o: store.setdefault("a", o.clone()))
        y = model(x)[0, 2]
        h.remove()
        tokens = store["a"]
        weights = []
        for k in range(tokens.shape[2]):
            ablated = tokens.clone()
            ablated[:, 1:, k] = 0
            h = module.register_forward_hook(lambda m, i, o, a=ablated: a)
            weights.append((y - model(x)[0, 2]) / y)
            h.remove()
        acts = tokens[0, 1:].reshape(4, 4, -1).permute(2, 0, 1)
        cam = torch.relu((torch.stack(weights)[:, None, None] * acts).sum(0))
        want = (cam - cam.min()) / (cam.max() - cam.min())
    torch.testing.assert_close(result.maps[("ablationcam", layer)].maps[0], want, atol=1e-4, rtol=1e-4)


def test_eigencam_works_on_tokens_and_cam_refuses():
    model = vit()
    layer = "encoder.layers.encoder_layer_1.ln_1"
    result = Explainer(model, [layer], [get_method("eigencam")])(torch.randn(2, 3, 64, 64))
    mb = result.maps[("eigencam", layer)]
    assert tuple(mb.maps.shape) == (2, 4, 4) and not mb.empty.any()
    with pytest.raises(UsageError, match="global average pooling"):
        Explainer(model, [layer], [get_method("cam")]).validate((64, 64), "cpu")


def test_default_layers_for_transformers():
    """ViT: the last block's ln_1 (after it only the class token reaches the head, so maps there
    are blank); Swin: the last stage's NCHW output; MaxViT: the last block, not an operation inside it."""
    assert default_layer(vit(), (64, 64)) == "encoder.layers.encoder_layer_1.ln_1"
    assert default_layer(swin(), (64, 64)) == "permute"
    import torchvision
    assert default_layer(torchvision.models.maxvit_t().eval(), (224, 224)) == "blocks.3.layers.1"


def test_the_last_vit_block_output_gives_blank_maps():
    """Why the default is ln_1: at the block's output the patch tokens get no gradient."""
    model = vit()
    layer = "encoder.layers.encoder_layer_1"
    result = Explainer(model, [layer], [get_method("gradcam")])(torch.randn(2, 3, 64, 64))
    assert result.maps[("gradcam", layer)].empty.all()


class Square(nn.Module):
    """A 1x1 convolution to 16 channels on a 16x16 input: (N, 16, 16, 16) reads both ways, and
    the model takes no other input size, so the axes cannot be told apart."""

    def __init__(self):
        super().__init__()
        self.features = nn.Conv2d(3, 16, 1)
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        assert x.shape[-2:] == (16, 16), "this model takes 16x16 inputs only"
        return self.fc(self.features(x).mean((2, 3)))


def test_ambiguous_layout_is_refused_then_taken_when_stated():
    x = torch.randn(2, 3, 16, 16)
    with pytest.raises(UsageError, match="more than one way.*layer_layout nchw or nhwc"):
        Explainer(Square(), ["features"], [get_method("gradcam")])(x)
    stated = Explainer(Square(), ["features"], [get_method("gradcam")], layer_layout="nchw")(x)
    assert tuple(stated.maps[("gradcam", "features")].maps.shape) == (2, 16, 16)
    with pytest.raises(UsageError, match="cannot be read as layer_layout tokens"):
        Explainer(Square(), ["features"], [get_method("gradcam")], layer_layout="tokens")(x)


def test_ambiguous_shape_settled_by_a_larger_input():
    """A model that takes any size: the axes that grow with the input are the spatial ones."""
    class AnySize(Square):
        def forward(self, x):
            return self.fc(self.features(x).mean((2, 3)))
    ex = Explainer(AnySize(), ["features"], [get_method("gradcam")])
    ex(torch.randn(1, 3, 16, 16))
    assert ex.layout("features", (16, 16)).kind == "nchw"


@pytest.mark.slow
def test_cli_vit_default_layer_and_refused_layer(cli, tmp_path):
    image = SAMPLES / "single" / sorted(p.name for p in (SAMPLES / "single").iterdir())[0]
    out = tmp_path / "vit"
    r = cli("explain", image, "--model", "vit_b_32", "--weights", "none", "--out", out, "--quiet")
    assert r.exit_code == 0, r.output
    rows = read_csv(out / "predictions.csv")
    assert rows[0]["layer"] == "encoder.layers.encoder_layer_11.ln_1" and rows[0]["status"] == "ok"
    r = cli("explain", image, "--model", "vit_b_32", "--weights", "none", "--layer", "heads",
            "--out", tmp_path / "bad")
    assert r.exit_code == 2
    assert "heads outputs shape 1x1000" in r.output and "encoder.layers.encoder_layer_11.ln_1" in r.output
    assert not (tmp_path / "bad" / "predictions.csv").exists()


def test_cli_layers_shows_the_map_each_layer_gives(cli):
    r = cli("layers", "vit_b_32")
    assert r.exit_code == 0
    lines = r.stdout.splitlines()
    ln1 = next(l for l in lines if l.strip().startswith("*") and "encoder_layer_11.ln_1" in l)
    assert ln1.rstrip().endswith("tokens 50x768 -> 7x7")
    r = cli("layers", "swin_t")
    assert any("features[7][1].norm1" in l and l.rstrip().endswith("nhwc 7x7x768 -> 7x7") for l in r.stdout.splitlines())


def test_layer_layout_per_layer_and_refused_where_it_does_not_fit():
    model = swin()
    layers = ["features.3.1.norm1", "permute"]
    x = torch.randn(1, 3, 64, 64)
    ex = Explainer(model, layers, [get_method("gradcam")], layer_layout="nhwc,nchw")
    ex(x)
    assert [ex.layout(l, (64, 64)).kind for l in layers] == ["nhwc", "nchw"]
    with pytest.raises(UsageError, match="permute outputs shape 1x32x8x8, which cannot be read as layer_layout nhwc"):
        Explainer(model, layers, [get_method("gradcam")], layer_layout="nhwc")(x)
    with pytest.raises(UsageError, match="3 values for 2 layers"):
        Explainer(model, layers, [get_method("gradcam")], layer_layout="nhwc,nchw,auto")
