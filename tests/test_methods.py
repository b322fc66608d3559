"""CAM methods against their formulas (hand computations) and against peers used as oracles."""

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from camcli.errors import UsageError
from camcli.engine.explainer import Explainer
from camcli.engine.layer_names import resolve_layer
from camcli.engine.method_options import takes
from camcli.engine.methods import available, get_method
from camcli.engine.targets import Target


def pearson(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(np.corrcoef(a, b)[0, 1])


class Toy(nn.Module):
    """Activations A = 1x1 conv of the input (known weights); a non-linear head so that
    Grad-CAM's weights depend on the activations and differ from CAM's."""

    def __init__(self):
        super().__init__()
        self.features = nn.Conv2d(3, 2, 1, bias=False)
        with torch.no_grad():
            self.features.weight.copy_(torch.tensor([[1.0, 0.5, 0.0], [0.0, -1.0, 2.0]]).view(2, 3, 1, 1))

    def forward(self, x):
        a = self.features(x)
        m0, m1 = a[:, 0].mean((1, 2)), a[:, 1].mean((1, 2))
        return torch.stack([3 * m0 ** 2 + m1, a[:, 1].sum((1, 2)) - m0], 1)


def test_gradcam_matches_hand_computation():
    model = Toy().eval()
    x = torch.randn(3, 3, 4, 5, generator=torch.Generator().manual_seed(3))
    result = Explainer(model, ["features"], [get_method("gradcam")])(x, target=0)
    maps = result.maps[("gradcam", "features")].maps.numpy()
    w = model.features.weight.detach().numpy()[:, :, 0, 0]
    for i in range(3):
        a = np.einsum("kc,chw->khw", w, x[i].numpy())  # the activations by hand
        hw = a.shape[1] * a.shape[2]
        # d logit_0 / dA_0 = 6 * mean(A_0) / HW everywhere, d logit_0 / dA_1 = 1 / HW
        alpha = np.array([6 * a[0].mean() / hw, 1 / hw])
        cam = np.maximum((alpha[:, None, None] * a).sum(0), 0)
        expected = (cam - cam.min()) / (cam.max() - cam.min())
        np.testing.assert_allclose(maps[i], expected, atol=1e-5)


def test_cam_matches_hand_computation_and_checks_the_head():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=4).eval()
    x = torch.randn(2, 3, 64, 64)
    ex = Explainer(model, ["layer4.1"], [get_method("cam")])
    ex.validate((64, 64), "cpu")
    result = ex(x, target=2)
    with torch.no_grad():
        feats = nn.Sequential(*list(model.children())[:-2])(x).numpy()
    w = model.fc.weight.detach().numpy()[2]
    for i in range(2):
        cam = np.maximum(np.einsum("c,chw->hw", w, feats[i]), 0)
        expected = (cam - cam.min()) / (cam.max() - cam.min())
        np.testing.assert_allclose(result.maps[("cam", "layer4.1")].maps[i].numpy(), expected, atol=1e-5)
    with pytest.raises(UsageError, match="gradcam"):
        Explainer(model, ["layer3.1"], [get_method("cam")]).validate((64, 64), "cpu")
    vgg = torchvision.models.vgg11(num_classes=3).eval()
    with pytest.raises(UsageError, match="global average pooling"):
        Explainer(vgg, ["features.20"], [get_method("cam")]).validate((64, 64), "cpu")


PARITY = [("resnet18", "layer4[1]"), ("vgg16", "features[29]"), ("densenet121", "features.denseblock4"),
          ("mobilenet_v3_large", "features[-1]")]


@pytest.mark.slow
@pytest.mark.parametrize("arch, layer", PARITY)
def test_gradcam_agrees_with_pytorch_grad_cam(arch, layer):
    """Per-image Pearson r >= 0.99 at layer resolution against pytorch-grad-cam's GradCAM.

    DenseNet is compared at ``features.denseblock4``: at ``features`` its forward applies
    ``F.relu(inplace=True)`` to the hooked output, so pytorch-grad-cam's stored activation is
    rectified after the fact, while camcli keeps the layer's true output (r ~ 0.997 there).
    """
    pgc = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(0)
    model = torchvision.models.get_model(arch).eval()
    x = torch.randn(3, 3, 160, 160)
    name = resolve_layer(model, layer)
    ours = Explainer(model, [name], [get_method("gradcam")])(x)
    targets = ours.targets.tolist()
    peer = pgc.GradCAM(model=model, target_layers=[model.get_submodule(name)])
    peer.get_target_width_height = lambda _x: None  # keep maps at layer resolution
    theirs = peer(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets])
    peer.activations_and_grads.release()
    for i in range(3):
        assert pearson(ours.maps[("gradcam", name)].maps[i], theirs[i]) >= 0.99


def test_cam_agrees_with_torchcam():
    torchcam = pytest.importorskip("torchcam.methods")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    x = torch.randn(3, 3, 128, 128)
    ours = Explainer(model, ["layer4.1"], [get_method("cam")])(x)
    extractor = torchcam.CAM(model, target_layer="layer4.1", fc_layer="fc", input_shape=(3, 128, 128))
    with torch.no_grad():
        logits = model(x)
    theirs = extractor(ours.targets.tolist(), logits)[0]
    extractor.remove_hooks()
    for i in range(3):
        assert pearson(ours.maps[("cam", "layer4.1")].maps[i], theirs[i]) >= 0.99


def quick(name: str):
    """The method, with one noisy sample or integration step where it takes them (keeps it quick)."""
    return get_method(name, **({"noise_samples": 1} if "noise_samples" in takes(name) else {}))


def heads(model_of):
    """Every head a map can explain, each with a model whose output it reads: ``model_of(classes)``."""
    torch.manual_seed(0)
    many, one = model_of(5), model_of(1)
    return {"softmax": (many, Target("softmax")), "probability": (many, Target("softmax", score="probability")),
            "sigmoid": (many, Target("sigmoid")), "binary": (one, Target("binary")),
            "regression-lower": (one, Target("regression", direction=-1.0, fixed=(0,))),
            "similarity": (many, Target("similarity", reference=torch.randn(5)))}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(available()))
def test_every_method_keeps_the_contract(name):
    """Shape, range, no NaN, batch == singles, hooks removed, no gradients, flags restored; with
    every head (softmax, sigmoid, binary, regression, similarity: the explained score differs)."""
    torch.manual_seed(0)
    if get_method(name).transformers.startswith("ViT only"):
        from test_transformers import vit
        model_of, side, sizes = (lambda k: vit(classes=k)), 64, {"encoder.layers.encoder_layer_1.ln_1": 4}
        frozen = "encoder.layers.encoder_layer_0"
    else:
        model_of, side, sizes = (lambda k: torchvision.models.resnet18(num_classes=k).eval()), 96, \
            {"layer4.1": 3, "layer3.1": 6}
        frozen = "layer1"
    x = torch.randn(4, 3, side, side)
    for head, (model, target) in heads(model_of).items():
        model.get_submodule(frozen).requires_grad_(False)  # a caller's own choice that must survive the run
        flags = {n: p.requires_grad for n, p in model.named_parameters()}
        valid = []
        for layer in sizes:  # some methods (cam) apply at the last block only
            try:
                Explainer(model, [layer], [quick(name)], target=target).validate((side, side), "cpu")
                valid.append(layer)
            except UsageError as e:
                if name in ("cam", "finercam") and head == "similarity":
                    assert "similarity" in str(e) or "rival" in str(e), e  # refused, and says why
        if name in ("cam", "finercam") and head in ("similarity", "regression-lower") and not valid:
            continue  # a cosine has no classifier row; Finer-CAM needs rival classes
        assert list(sizes)[0] in valid, (head, valid)
        if head != "softmax":
            valid = valid[:1]
        method = quick(name)
        ex = Explainer(model, valid, [method], target=target)
        with torch.no_grad():  # the caller's no_grad must not break gradient methods
            batch = ex(x)
        layers = valid if method.uses_layer else ["input"]  # one map for the whole network, listed as the input's
        assert sorted(batch.maps) == sorted((name, layer) for layer in layers)
        for layer in layers:
            size = side if method.pixel_level else sizes.get(layer, 4)  # legrad: the ViT's 4x4 patch grid
            maps = batch.maps[(name, layer)].maps
            assert maps.shape == (4, size, size) and maps.dtype == torch.float32, head
            assert torch.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1, head
            singles = torch.cat([ex(x[i:i + 1], batch.targets[i:i + 1]).maps[(name, layer)].maps for i in range(4)])
            torch.testing.assert_close(maps, singles, atol=1e-4, rtol=1e-4, msg=head)
        assert all(p.grad is None for p in model.parameters())
        assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
        assert not any(m._forward_hooks or m._backward_hooks for m in model.modules())


def test_hooks_removed_when_a_method_fails():
    model = torchvision.models.resnet18(num_classes=3).eval()

    class Broken(type(get_method("gradcam"))):
        def raw_maps(self, fp, layer):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        Explainer(model, ["layer4.1"], [Broken()])(torch.randn(1, 3, 64, 64))
    assert not any(m._forward_hooks for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())


def test_all_zero_map_is_uniform_and_flagged():
    class Dead(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
            self.fc = nn.Linear(4, 2)
            with torch.no_grad():
                self.features[0].bias.fill_(-1e3)  # every activation is 0 after the ReLU

        def forward(self, x):
            return self.fc(self.features(x).mean((2, 3)))

    model = Dead().eval()
    result = Explainer(model, ["features"], [get_method("gradcam"), get_method("cam")])(torch.randn(2, 3, 16, 16))
    for key in (("gradcam", "features"), ("cam", "features")):
        mb = result.maps[key]
        assert mb.empty.all() and torch.equal(mb.maps, torch.zeros_like(mb.maps))


def test_inplace_relu_after_the_target_layer_is_harmless():
    """VGG's features[28] is a conv followed by ReLU(inplace=True): we see the conv's output."""
    torch.manual_seed(0)
    model = torchvision.models.vgg11(num_classes=3).eval()
    x = torch.randn(2, 3, 64, 64)
    ex = Explainer(model, ["features.16"], [get_method("gradcam")])
    fp = ex.forward(x, None)
    with torch.no_grad():
        conv_out = model.features[:17](x)
    torch.testing.assert_close(fp.activations["features.16"], conv_out)
    assert (fp.activations["features.16"] < 0).any()  # not rectified by the in-place ReLU


def test_gradcampp_xgradcam_layercam_hirescam_match_hand_computation():
    """The toy model's gradients are known in closed form, so every weighting is checkable."""
    model = Toy().eval()
    x = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(4))
    names = ["gradcam++", "xgradcam", "layercam", "hirescam", "gradcam-elementwise"]
    result = Explainer(model, ["features"], [get_method(n) for n in names])(x, target=0)
    w = model.features.weight.detach().numpy()[:, :, 0, 0]
    for i in range(2):
        a = np.einsum("kc,chw->khw", w, x[i].numpy()).astype(np.float64)
        hw = a.shape[1] * a.shape[2]
        g = np.stack([np.full(a.shape[1:], 6 * a[0].mean() / hw), np.full(a.shape[1:], 1 / hw)])
        g2, g3 = g ** 2, g ** 3
        alpha = g2 / (2 * g2 + a.sum((1, 2))[:, None, None] * g3)
        expected = {
            "gradcam++": ((alpha * np.maximum(g, 0)).sum((1, 2))[:, None, None] * a).sum(0),
            "xgradcam": ((g * a / a.sum((1, 2))[:, None, None]).sum((1, 2))[:, None, None] * a).sum(0),
            "layercam": (np.maximum(g, 0) * a).sum(0),
            "hirescam": (g * a).sum(0),
            "gradcam-elementwise": np.maximum(g * a, 0).sum(0),
        }
        for name in names:
            cam = np.maximum(expected[name], 0)
            want = (cam - cam.min()) / (cam.max() - cam.min())
            np.testing.assert_allclose(result.maps[(name, "features")].maps[i].numpy(), want, atol=1e-4, err_msg=name)


@pytest.mark.slow
def test_scorecam_matches_hand_computation():
    """Masks, masked scores and the softmax over channels, written out step by step."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=4).eval()
    x = torch.randn(1, 3, 64, 64)
    result = Explainer(model, ["layer4.1"], [get_method("scorecam", cam_batch_size=200)])(x, target=1)
    with torch.no_grad():
        acts = torch.nn.Sequential(*list(model.children())[:-2])(x)[0]  # (512, 2, 2)
        scores = []
        for k in range(acts.shape[0]):
            up = torch.nn.functional.interpolate(acts[k][None, None], size=(64, 64), mode="bilinear", align_corners=False)[0, 0]
            mask = (up - up.min()) / (up.max() - up.min()) if up.max() > up.min() else torch.zeros_like(up)
            scores.append(model(x * mask)[0, 1])
        weights = torch.stack(scores).softmax(0)
        cam = torch.relu((weights[:, None, None] * acts).sum(0))
        want = (cam - cam.min()) / (cam.max() - cam.min())
    torch.testing.assert_close(result.maps[("scorecam", "layer4.1")].maps[0], want, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_scorecam_deduplication_is_exact():
    """Dead (constant) channels and affine copies share one masked forward; results are unchanged."""
    from camcli.engine.methods.scorecam import distinct_channels
    from camcli.engine.methods.base import ForwardPass

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3).eval()
    x = torch.randn(2, 3, 64, 64)
    fp = Explainer(model, ["layer4.1"], [get_method("scorecam")]).forward(x, None)
    acts = fp.activations["layer4.1"].clone()
    acts[:, :200] = 0.0  # dead channels, as after a ReLU
    acts[:, 200:260] = 3.0 * acts[:, 300:360] + 1.0  # positive affine copies
    fp = ForwardPass(fp.model, fp.inputs, fp.logits, fp.targets, {"layer4.1": acts}, target=Target("softmax"))
    reps, inverse = distinct_channels(acts[0])
    assert len(reps) <= 512 - 200 - 60 + 1

    calls = []
    handle = model.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    deduped = get_method("scorecam", cam_batch_size=512).raw_maps(fp, "layer4.1")
    handle.remove()
    assert sum(calls) == sum(len(distinct_channels(acts[i])[0]) for i in range(2))

    # the plain computation: one masked forward per channel, no sharing
    plain = torch.zeros_like(deduped)
    from camcli.engine.methods.scorecam import normalised_masks
    with torch.no_grad():
        for i in range(2):
            masks = normalised_masks(acts[i], (64, 64))
            scores = model(x[i:i + 1] * masks[:, None])[:, fp.targets[i]]
            plain[i] = (scores.softmax(0)[:, None, None] * acts[i]).sum(0)
    torch.testing.assert_close(deduped, plain, atol=1e-5, rtol=1e-5)


def test_faster_scorecam_uses_only_the_widest_channels():
    """With max_n=N only the N channels with the largest spatial standard deviation weigh in:
    the map equals Score-CAM's formula computed by hand on exactly those channels."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3).eval()
    x = torch.randn(1, 3, 64, 64)
    calls = []
    handle = model.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    result = Explainer(model, ["layer4.1"], [get_method("scorecam", max_n=10, cam_batch_size=64)])(x, target=1)
    handle.remove()
    assert sum(calls) <= 1 + 10  # the shared forward, then at most N masked inputs
    with torch.no_grad():
        acts = torch.nn.Sequential(*list(model.children())[:-2])(x)[0]
        widest = acts.flatten(1).std(1).topk(10).indices
        ups = torch.nn.functional.interpolate(acts[widest][:, None], size=(64, 64), mode="bilinear",
                                              align_corners=False)[:, 0]
        lo, hi = ups.flatten(1).min(1).values, ups.flatten(1).max(1).values
        masks = (ups - lo[:, None, None]) / (hi - lo)[:, None, None]
        scores = model(x * masks[:, None])[:, 1]
        weights = scores.softmax(0)
        cam = torch.relu((weights[:, None, None] * acts[widest]).sum(0))
        want = (cam - cam.min()) / (cam.max() - cam.min())
    torch.testing.assert_close(result.maps[("scorecam", "layer4.1")].maps[0], want, atol=1e-4, rtol=1e-4)


def test_ablationcam_matches_hand_computation():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=4).eval()
    x = torch.randn(1, 3, 64, 64)
    result = Explainer(model, ["layer4.1"], [get_method("ablationcam", cam_batch_size=100)])(x, target=2)
    with torch.no_grad():
        acts = torch.nn.Sequential(*list(model.children())[:-2])(x)[0]
        head = lambda a: model.fc(a.mean((-2, -1)))  # noqa: E731
        y = head(acts[None])[0, 2]
        drops = []
        for k in range(acts.shape[0]):
            ablated = acts.clone()
            ablated[k] = 0
            drops.append((y - head(ablated[None])[0, 2]) / y)
        cam = torch.relu((torch.stack(drops)[:, None, None] * acts).sum(0))
        want = (cam - cam.min()) / (cam.max() - cam.min())
    torch.testing.assert_close(result.maps[("ablationcam", "layer4.1")].maps[0], want, atol=1e-4, rtol=1e-4)


def test_eigencam_is_the_first_principal_component_and_class_agnostic():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=4).eval()
    x = torch.randn(2, 3, 96, 96)
    ex = Explainer(model, ["layer4.1"], [get_method("eigencam")])
    a, b = ex(x, target=0), ex(x, target=3)
    torch.testing.assert_close(a.maps[("eigencam", "layer4.1")].maps, b.maps[("eigencam", "layer4.1")].maps)
    acts = ex.forward(x, None).activations["layer4.1"][0].numpy()
    m = acts.reshape(acts.shape[0], -1).T
    m = m - m.mean(0)
    proj = m @ np.linalg.svd(m, full_matrices=False)[2][0]
    energy = acts.mean(0).ravel()
    proj = proj if np.dot(proj, energy - energy.mean()) >= 0 else -proj
    cam = np.maximum(proj, 0).reshape(acts.shape[1:])
    np.testing.assert_allclose(a.maps[("eigencam", "layer4.1")].maps[0].numpy(), _norm(cam), atol=1e-4)


def _norm(a):
    return (a - a.min()) / (a.max() - a.min())


def test_layer_with_a_tuple_output():
    """Some blocks return (features, extras); the first tensor is the map, the rest passes through."""
    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x):
            y = torch.relu(self.conv(x))
            return y, y.mean()

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = Pair()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            feats, extra = self.block(x)
            return self.fc(feats.mean((2, 3))) + 0 * extra

    torch.manual_seed(0)
    model = Net().eval()
    result = Explainer(model, ["block"], [get_method("gradcam"), get_method("cam")])(torch.randn(2, 3, 8, 8))
    g, c = result.maps[("gradcam", "block")].maps, result.maps[("cam", "block")].maps
    assert g.shape == (2, 8, 8) and torch.allclose(g, c, atol=1e-5)  # GAP + linear: Grad-CAM == CAM
