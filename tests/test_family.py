"""SS-CAM, IS-CAM, Smooth Grad-CAM++, Finer-CAM, Shapley-CAM, FullGrad, Guided Backprop and
Guided Grad-CAM against the peer that has each (seeded weights, per image), and against their
formulas where we depart from the peer on purpose."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch.nn.attention import SDPBackend, sdpa_kernel

from camcli.engine.explainer import Explainer
from camcli.engine.methods import get_method
from camcli.engine.methods.scorecam_averaged import mask_noise
from camcli.errors import UsageError
from camcli.engine.layer_names import resolve_layer

pgc = pytest.importorskip("pytorch_grad_cam")
torchcam = pytest.importorskip("torchcam.methods")
from pytorch_grad_cam.utils.model_targets import (ClassifierOutputSoftmaxTarget,  # noqa: E402
                                                  ClassifierOutputTarget)


def pearson(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.std() == 0 or b.std() == 0:
        return 1.0 if np.allclose(a, b, atol=1e-6) else 0.0
    return float(np.corrcoef(a, b)[0, 1])


def seeded(arch: str):
    torch.manual_seed(0)
    return torchvision.models.get_model(arch, num_classes=10).eval()


def image_batch(n: int, side: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, side, side, generator=torch.Generator().manual_seed(seed))


def at_input(maps: torch.Tensor, size) -> np.ndarray:
    return F.interpolate(maps[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0].numpy()


def assert_parity(ours, theirs, what: str, limit: float = 0.99):
    for i in range(len(theirs)):
        r = pearson(ours[i], theirs[i])
        assert r >= limit, f"{what}, image {i}: r = {r:.4f}"


CASES = [("resnet18", "layer4[1]", 64), ("vgg16", "features[29]", 64)]
#: the Score-CAM family forwards once per channel and sample: vgg16 at a smaller input
SCORE_CASES = [("resnet18", "layer4[1]", 64), ("vgg16", "features[29]", 32)]


# --- the Score-CAM family: torchcam -------------------------------------------------------

class SameNoise:
    """torchcam's noise source, handing out the draws camcli makes for each image."""

    def __init__(self, draws):
        self.draws = iter(draws)

    def sample(self, size):
        draw = next(self.draws)
        assert tuple(draw.shape) == tuple(size)
        return draw


def torchcam_maps(cls, model, layer, x, targets, **kw):
    extractor = cls(model, target_layer=layer, input_shape=tuple(x.shape[1:]), **kw)
    return extractor, targets


def run_torchcam(extractor, model, x, targets):
    try:
        with torch.no_grad():
            logits = model(x)
        return extractor(targets.tolist(), logits)[0]
    finally:
        extractor.remove_hooks()


@pytest.mark.slow
@pytest.mark.parametrize("arch, layer, side", SCORE_CASES)
def test_sscam_matches_torchcam_given_the_same_noise(arch, layer, side):
    model = seeded(arch)
    name = resolve_layer(model, layer)
    x = image_batch(1, side)
    seeds, samples, std = [11], 2, 2.0
    ours = Explainer(model, [name], [get_method("sscam", noise_samples=samples, noise_std=std, cam_batch_size=128)])(
        x, seeds=seeds)
    channels = 512  # layer4[1] and features[29] alike
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    draws = [torch.stack([mask_noise(g, channels, (side, side), std, "cpu") for g in generators])
             for _ in range(samples)]
    extractor = torchcam.SSCAM(model, target_layer=name, batch_size=128, num_samples=samples, std=std,
                               input_shape=(3, side, side))
    extractor._distrib = SameNoise(draws)
    theirs = run_torchcam(extractor, model, x, ours.targets)
    assert_parity(ours.maps[("sscam", name)].maps.numpy(), theirs.numpy(), f"sscam {arch}")


@pytest.mark.slow
@pytest.mark.parametrize("arch, layer, side", SCORE_CASES)
def test_iscam_matches_torchcam(arch, layer, side):
    model = seeded(arch)
    name = resolve_layer(model, layer)
    x = image_batch(1, side)
    ours = Explainer(model, [name], [get_method("iscam", noise_samples=2, cam_batch_size=128)])(x)
    extractor = torchcam.ISCAM(model, target_layer=name, batch_size=128, num_samples=2, input_shape=(3, side, side))
    theirs = run_torchcam(extractor, model, x, ours.targets)
    assert_parity(ours.maps[("iscam", name)].maps.numpy(), theirs.numpy(), f"iscam {arch}")


def test_sscam_is_seeded_per_image():
    model = seeded("resnet18")
    x = image_batch(2, 32)
    explainer = Explainer(model, ["layer3"], [get_method("sscam", noise_samples=1)])
    run = lambda seeds, images=x: explainer(images, seeds=seeds).maps[("sscam", "layer3")].maps  # noqa: E731
    a, b, c = run([1, 2]), run([1, 2]), run([3, 4])
    assert torch.equal(a, b)
    assert not torch.allclose(a, c, atol=1e-3)
    # alone in its batch, an image gets the map it gets in the batch
    assert torch.allclose(run([2], x[1:])[0], a[1], atol=1e-5)


# --- Smooth Grad-CAM++: the formula; torchcam where it agrees ---------------------------------

def test_smoothgradcampp_by_hand():
    model = seeded("resnet18")
    x = image_batch(2, 64)
    samples, std, seeds = 3, 0.3, [5, 6]
    method = get_method("smoothgradcam++", noise_samples=samples, noise_std=std)
    explainer = Explainer(model, ["layer4.1"], [method])
    ours = explainer(x, seeds=seeds).maps[("smoothgradcam++", "layer4.1")].maps
    clean = explainer.forward(x, None)
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    grads = []
    for _ in range(samples):
        noise = torch.stack([torch.randn(x.shape[1:], generator=g) for g in generators]) * std
        grads.append(explainer.forward(x + noise, clean.targets).gradients["layer4.1"])
    g = torch.stack(grads)
    d1, d2, d3 = g.mean(0), (g ** 2).mean(0), (g ** 3).mean(0)
    acts = clean.activations["layer4.1"]
    alpha = d2 / (2 * d2 + acts.sum((2, 3), keepdim=True) * d3)
    alpha = torch.nan_to_num(alpha)
    raw = ((alpha * d1.clamp_min(0)).sum((2, 3), keepdim=True) * acts).sum(1).clamp_min(0)
    expected = (raw - raw.flatten(1).min(1).values[:, None, None])
    expected = expected / expected.flatten(1).max(1).values[:, None, None]
    assert torch.allclose(ours, expected, atol=1e-4)
    # torchcam uses the last sample's gradient and a position-wise sum; with one sample and
    # no spread left in the noise the two still agree closely
    extractor = torchcam.SmoothGradCAMpp(model, target_layer="layer4.1", num_samples=1, std=1e-6,
                                         input_shape=(3, 64, 64))
    try:
        theirs = extractor(clean.targets.tolist(), model(x))[0]
    finally:
        extractor.remove_hooks()
    single = Explainer(model, ["layer4.1"], [get_method("smoothgradcam++", noise_samples=1, noise_std=1e-6)])(x)
    for i in range(2):
        assert pearson(single.maps[("smoothgradcam++", "layer4.1")].maps[i], theirs[i].detach()) >= 0.9


# --- Finer-CAM and Shapley-CAM: pytorch-grad-cam ---------------------------------------------

@pytest.mark.parametrize("arch, layer, side", CASES)
def test_finercam_matches_pytorch_grad_cam(arch, layer, side):
    model = seeded(arch)
    name = resolve_layer(model, layer)
    x = image_batch(2, side)
    ours = Explainer(model, [name], [get_method("finercam")])(x)
    with pgc.FinerCAM(model, [model.get_submodule(name)]) as cam:
        theirs = cam(input_tensor=x, alpha=1.0)
    assert_parity(at_input(ours.maps[("finercam", name)].maps, (side, side)), theirs, f"finercam {arch}")


def test_finer_alpha_zero_is_grad_cam_of_a_weighted_logit_and_alpha_changes_the_map():
    model = seeded("resnet18")
    x = image_batch(2, 64)
    maps = {a: Explainer(model, ["layer4.1"], [get_method("finercam", finer_alpha=a)])(x).maps[("finercam", "layer4.1")]
            .maps for a in (0.0, 1.0)}
    grad = Explainer(model, ["layer4.1"], [get_method("gradcam")])(x).maps[("gradcam", "layer4.1")].maps
    assert torch.allclose(maps[0.0], grad, atol=1e-4)  # alpha 0: the target's logit alone
    assert not torch.allclose(maps[1.0], grad, atol=1e-2)
    with pytest.raises(UsageError, match="finer_alpha"):
        get_method("finercam", finer_alpha=-1.0)


@pytest.mark.parametrize("arch, layer, side", [("resnet18", "layer3", 64), ("vgg16", "features[22]", 64)])
def test_shapleycam_matches_pytorch_grad_cam(arch, layer, side):
    model = seeded(arch)
    name = resolve_layer(model, layer)
    x = image_batch(2, side)
    ours = Explainer(model, [name], [get_method("shapleycam")], score="softmax")(x)
    cam = pgc.ShapleyCAM(model, [model.get_submodule(name)])
    try:
        theirs = cam(input_tensor=x, targets=[ClassifierOutputSoftmaxTarget(int(t)) for t in ours.targets])
    finally:
        cam.activations_and_grads.release()
    assert_parity(at_input(ours.maps[("shapleycam", name)].maps, (side, side)), theirs, f"shapleycam {arch}")
    # the Hessian term is real here: the map is not Grad-CAM's
    grad = Explainer(model, [name], [get_method("gradcam")], score="softmax")(x).maps[("gradcam", name)].maps
    assert not torch.allclose(ours.maps[("shapleycam", name)].maps, grad, atol=1e-3)


def test_finercam_and_shapleycam_on_vit_tokens_match_pytorch_grad_cam():
    from test_transformers import vit, vit_reshape
    model = vit()
    layer = "encoder.layers.encoder_layer_1.ln_1"
    x = image_batch(2, 64, seed=2)
    ours = Explainer(model, [layer], [get_method("finercam"), get_method("shapleycam")], score="softmax")(x)
    with pgc.FinerCAM(model, [model.get_submodule(layer)], reshape_transform=vit_reshape(4)) as cam:
        theirs = cam(input_tensor=x, alpha=1.0)
    assert_parity(at_input(ours.maps[("finercam", layer)].maps, (64, 64)), theirs, "finercam vit")
    # pytorch-grad-cam's ShapleyCAM fails on token layers (its hooks detach views in place), so
    # Shapley-CAM on the ViT is checked against the formula: the map's features are the patch
    # tokens, and the Hessian-vector product is taken over them, the class token held as it is
    store = {}

    def patches_as_leaf(_m, _i, o):
        store["patches"] = o[:, 1:].detach().requires_grad_(True)
        return torch.cat([o[:, :1], store["patches"]], 1)
    handle = model.get_submodule(layer).register_forward_hook(patches_as_leaf)
    try:
        with sdpa_kernel([SDPBackend.MATH]):  # the fused CPU attention has no second derivative
            probs = model(x.clone()).softmax(1)
    finally:
        handle.remove()
    patches = store["patches"]
    score = probs.gather(1, ours.targets[:, None]).sum()
    (g,) = torch.autograd.grad(score, patches, create_graph=True)
    (hvp,) = torch.autograd.grad(g, patches, grad_outputs=patches.detach())
    grid = lambda t: t.reshape(2, 4, 4, -1).permute(0, 3, 1, 2)  # noqa: E731
    acts, weights = grid(patches.detach()), grid((g - 0.5 * hvp).detach()).mean((2, 3), keepdim=True)
    raw = (weights * acts).sum(1).clamp_min(0)
    expected = (raw - raw.flatten(1).min(1).values[:, None, None])
    expected = expected / expected.flatten(1).max(1).values[:, None, None]
    assert torch.allclose(ours.maps[("shapleycam", layer)].maps, expected, atol=1e-4)
    assert hvp.abs().max() > 0


# --- pixel-level methods: pytorch-grad-cam ----------------------------------------------------

@pytest.mark.parametrize("arch, layer, side", CASES)
def test_fullgrad_matches_pytorch_grad_cam(arch, layer, side):
    model = seeded(arch)
    x = image_batch(2, side)
    ours = Explainer(model, [resolve_layer(model, layer)], [get_method("fullgrad")])(x)
    assert list(ours.maps) == [("fullgrad", "input")]  # one map, whatever the layer
    cam = pgc.FullGrad(model, [])
    try:
        theirs = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in ours.targets])
    finally:
        cam.activations_and_grads.release()
    assert_parity(ours.maps[("fullgrad", "input")].maps.numpy(), theirs, f"fullgrad {arch}")


def test_fullgrad_biases_make_the_logit_complete():
    """The paper's completeness, which checks the BatchNorm effective biases camcli uses: the
    logit is the input term plus every bias term (the classifier's too), signed and summed."""
    from camcli.engine.methods.fullgrad import biased_modules
    model = seeded("resnet18")
    x = image_batch(1, 64).requires_grad_(True)
    biased = biased_modules(model) + [(model.fc, model.fc.bias.detach())]
    outputs = []
    handles = [m.register_forward_hook(lambda _m, _i, o, b=b: outputs.append((o, b))) for m, b in biased]
    try:
        logits = model(x)
    finally:
        for h in handles:
            h.remove()
    t = int(logits.argmax())
    grads = torch.autograd.grad(logits[0, t], [x] + [o for o, _ in outputs])
    total = (grads[0] * x).sum() + sum((g * b.view(1, -1, *[1] * (g.dim() - 2))).sum()
                                       for g, (_, b) in zip(grads[1:], outputs))
    assert float(total) == pytest.approx(float(logits[0, t]), rel=1e-3, abs=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("arch, layer, side", CASES)
def test_guided_backprop_and_guided_gradcam_match_pytorch_grad_cam(arch, layer, side):
    model = seeded(arch)
    name = resolve_layer(model, layer)
    x = image_batch(2, side)
    ours = Explainer(model, [name], [get_method("guidedbackprop"), get_method("guidedgradcam")])(x)
    theirs_model = copy.deepcopy(model)  # the peer swaps the model's ReLU modules
    gb = pgc.GuidedBackpropReLUModel(theirs_model, device="cpu")
    guided = np.stack([gb(x[i:i + 1].clone(), target_category=int(t)) for i, t in enumerate(ours.targets)])
    assert_parity(ours.maps[("guidedbackprop", "input")].maps.numpy(), np.abs(guided).max(-1), f"guided {arch}")
    # alone, Guided Backprop guides the shared forward instead of running its own: the same maps
    alone = Explainer(model, [name], [get_method("guidedbackprop")])(x).maps[("guidedbackprop", "input")].maps
    assert torch.allclose(alone, ours.maps[("guidedbackprop", "input")].maps, atol=1e-5)
    with pgc.GradCAM(model, [model.get_submodule(name)]) as cam:
        grad = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in ours.targets])
    assert_parity(ours.maps[("guidedgradcam", name)].maps.numpy(), np.abs(guided * grad[..., None]).max(-1),
                  f"guided grad-cam {arch}")


def test_guided_backprop_leaves_the_model_alone_and_guides_functional_relus():
    class Functional(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.conv2 = torch.nn.Conv2d(8, 8, 3, padding=1)
            self.relu = torch.nn.ReLU(inplace=True)
            self.fc = torch.nn.Linear(8, 4)

        def forward(self, x):
            x = self.relu(self.conv(x))
            x = F.relu(self.conv2(x))  # functional: pytorch-grad-cam does not see it
            return self.fc(x.mean((2, 3)))

    torch.manual_seed(0)
    model = Functional().eval()
    before = repr(model)
    x = image_batch(2, 16)
    ours = Explainer(model, ["conv2"], [get_method("guidedbackprop")])(x).maps[("guidedbackprop", "input")].maps
    assert repr(model) == before and model.relu.inplace
    # by hand: every ReLU passes only positive gradient at positive input
    x1 = x.clone().requires_grad_(True)
    a1 = model.conv(x1)
    r1 = a1.clamp_min(0)
    a2 = model.conv2(r1)
    r2 = a2.clamp_min(0)
    logits = model.fc(r2.mean((2, 3)))
    t = logits.argmax(1)
    g_r2 = torch.autograd.grad(logits.gather(1, t[:, None]).sum(), r2, retain_graph=True)[0]
    g_a2 = g_r2.clamp_min(0) * (a2 > 0)
    g_r1 = torch.autograd.grad(a2, r1, grad_outputs=g_a2, retain_graph=True)[0]
    g_a1 = g_r1.clamp_min(0) * (a1 > 0)
    g_x = torch.autograd.grad(a1, x1, grad_outputs=g_a1)[0]
    expected = g_x.abs().amax(1)
    expected = (expected - expected.flatten(1).min(1).values[:, None, None])
    expected = expected / expected.flatten(1).max(1).values[:, None, None]
    assert torch.allclose(ours, expected, atol=1e-5)


def test_fullgrad_refuses_models_whose_biases_it_cannot_place():
    from test_transformers import vit
    explainer = Explainer(vit(), ["encoder.layers.encoder_layer_1.ln_1"], [get_method("fullgrad")])
    with pytest.raises(UsageError, match="fullgrad.*LayerNorm"):
        explainer.validate((64, 64), "cpu")


def test_guided_backprop_refuses_a_model_without_relus():
    from test_transformers import vit
    explainer = Explainer(vit(), ["encoder.layers.encoder_layer_1.ln_1"], [get_method("guidedbackprop")])
    with pytest.raises(UsageError, match="guides ReLUs.*GELU"):
        explainer.validate((64, 64), "cpu")


# --- LeGrad: torchcam ------------------------------------------------------------------------

def test_legrad_matches_torchcam_from_the_layers_block_on():
    from test_transformers import vit
    model = vit()
    x = image_batch(2, 64, seed=3)
    blocks = [f"encoder.layers.encoder_layer_{i}" for i in range(len(model.encoder.layers))]
    for first in range(len(blocks)):  # the layer names the first block averaged
        ours = Explainer(model, [blocks[first] + ".ln_1"], [get_method("legrad")])(x)
        extractor = torchcam.LeGrad(model, blocks[first:])
        try:
            theirs = extractor(ours.targets.tolist(), model(x))[0]
        finally:
            extractor.remove_hooks()
        assert_parity(ours.maps[("legrad", blocks[first] + ".ln_1")].maps.numpy(), theirs.detach().numpy(),
                      f"legrad from block {first}")
    # and the model is as it was: no hooks left
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    with pytest.raises(UsageError, match="legrad averages transformer blocks"):
        Explainer(model, ["conv_proj"], [get_method("legrad")]).validate((64, 64), "cpu")


def test_legrad_refuses_a_convolutional_model():
    model = seeded("resnet18")
    with pytest.raises(UsageError, match="legrad.*VisionTransformer"):
        Explainer(model, ["layer4.1"], [get_method("legrad")]).validate((64, 64), "cpu")


# --- by hand, on a toy model ------------------------------------------------------------------

class Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.features = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU())
        self.fc = torch.nn.Linear(4, 5)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


def _minmax(raw):
    raw = raw.clamp_min(0)
    lo, hi = raw.flatten(1).min(1).values[:, None, None], raw.flatten(1).max(1).values[:, None, None]
    return (raw - lo) / (hi - lo)


def _masks(acts, size):
    up = F.interpolate(acts[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    lo, hi = up.flatten(1).min(1).values[:, None, None], up.flatten(1).max(1).values[:, None, None]
    return torch.where(hi > lo, (up - lo) / torch.where(hi > lo, hi - lo, 1), 0)


def test_iscam_and_sscam_by_hand():
    model = Toy().eval()
    x = image_batch(1, 8, seed=4)
    with torch.no_grad():
        acts = model.features(x)[0]
        target = int(model(x).argmax())
    masks = _masks(acts, (8, 8))
    score = lambda m: model(x * m[:, None]).detach()[:, target]  # noqa: E731
    n = 3
    coefficients = [sum(j / n for j in range(1, i + 1)) for i in range(1, n + 1)]  # 1/3, 1, 2
    weights = torch.stack([score(masks * c) for c in coefficients]).mean(0).softmax(0)
    expected = _minmax((weights[:, None, None] * acts).sum(0, keepdim=True))
    ours = Explainer(model, ["features"], [get_method("iscam", noise_samples=n)])(x)
    assert torch.allclose(ours.maps[("iscam", "features")].maps, expected, atol=1e-5)
    # SS-CAM: each sample adds a fresh N(0, std^2) draw to every mask pixel, channel by channel
    generator = torch.Generator().manual_seed(9)
    noisy = [masks + torch.stack([torch.randn((8, 8), generator=generator) for _ in range(4)]) * 0.5 for _ in range(2)]
    weights = torch.stack([score(m) for m in noisy]).mean(0).softmax(0)
    expected = _minmax((weights[:, None, None] * acts).sum(0, keepdim=True))
    ours = Explainer(model, ["features"], [get_method("sscam", noise_samples=2, noise_std=0.5)])(x, seeds=[9])
    assert torch.allclose(ours.maps[("sscam", "features")].maps, expected, atol=1e-5)


def test_max_n_keeps_iscam_and_sscam_to_the_widest_channels():
    """Faster Score-CAM's channel choice for the averaged variants: only the N channels with the
    largest spatial standard deviation are masked and weighed (in channel order, so SS-CAM's noise
    is drawn for them alone); the others weigh nothing."""
    model = Toy().eval()
    x = image_batch(1, 8, seed=4)
    with torch.no_grad():
        acts = model.features(x)[0]
        target = int(model(x).argmax())
    widest = acts.flatten(1).std(1).topk(2).indices.sort().values
    assert len(set(widest.tolist())) == 2 and acts.flatten(1).std(1).unique().numel() == 4
    masks = _masks(acts[widest], (8, 8))
    score = lambda m: model(x * m[:, None]).detach()[:, target]  # noqa: E731
    coefficients = [1 / 3, 1.0, 2.0]
    weights = torch.stack([score(masks * c) for c in coefficients]).mean(0).softmax(0)
    expected = _minmax((weights[:, None, None] * acts[widest]).sum(0, keepdim=True))
    calls = []
    handle = model.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    ours = Explainer(model, ["features"], [get_method("iscam", noise_samples=3, max_n=2)])(x)
    handle.remove()
    assert sum(calls) == 1 + 3 * 2  # the shared forward, then 3 steps of 2 masks
    assert torch.allclose(ours.maps[("iscam", "features")].maps, expected, atol=1e-5)
    generator = torch.Generator().manual_seed(9)
    noisy = [masks + torch.stack([torch.randn((8, 8), generator=generator) for _ in range(2)]) * 0.5 for _ in range(2)]
    weights = torch.stack([score(m) for m in noisy]).mean(0).softmax(0)
    expected = _minmax((weights[:, None, None] * acts[widest]).sum(0, keepdim=True))
    ours = Explainer(model, ["features"], [get_method("sscam", noise_samples=2, noise_std=0.5, max_n=2)])(x, seeds=[9])
    assert torch.allclose(ours.maps[("sscam", "features")].maps, expected, atol=1e-5)


def test_finercam_by_hand():
    model = Toy().eval()
    x = image_batch(2, 8, seed=5)
    store = {}
    handle = model.features.register_forward_hook(lambda _m, _i, o: store.setdefault("a", o))
    logits = model(x)
    handle.remove()
    expected = []
    for i in range(2):
        t = int(logits[i].argmax())
        others = [c for c in range(5) if c != t]
        rivals = sorted(others, key=lambda c: abs(float(logits[i, c] - logits[i, t])))[:3]
        p = logits[i].softmax(0)
        score = sum(p[d] * (logits[i, t] - 0.7 * logits[i, d]) for d in rivals) / sum(p[d] for d in rivals)
        (g,) = torch.autograd.grad(score, store["a"], retain_graph=True)
        w = g[i].mean((1, 2))
        expected.append((w[:, None, None] * store["a"][i].detach()).sum(0))
    ours = Explainer(model, ["features"], [get_method("finercam", finer_alpha=0.7)])(x)
    assert torch.allclose(ours.maps[("finercam", "features")].maps, _minmax(torch.stack(expected)), atol=1e-5)


# --- the new flags, from the command line ---------------------------------------------------

def test_fuse_writes_its_own_overlay_and_row_and_each_fusion_differs(cli, tmp_path):
    from conftest import CIRCLE, DEMO_CONFIG, read_csv
    image = CIRCLE
    layers = ("--layer", "layer3", "--layer", "layer4[1]")
    heat = {}
    for how in ("max", "product"):
        out = tmp_path / how
        r = cli("explain", image, "--config", DEMO_CONFIG, "--method", "gradcam,fullgrad", *layers, "--fuse", how,
                "--save-heatmap", "npy", "--heatmap-size", "layer", "--out", out)
        assert r.exit_code == 0, r.stderr
        rows = {(row["method"], row["layer"]): row for row in read_csv(out / "predictions.csv")}
        # per-layer rows, one fused row for the method that uses layers, one row for fullgrad
        assert set(rows) == {("gradcam", "layer3"), ("gradcam", "layer4[1]"), ("gradcam", "layer3+layer4[1]"),
                             ("fullgrad", "input")}
        fused = rows[("gradcam", "layer3+layer4[1]")]
        assert (out / fused["output"]).is_file() and fused["output"].endswith("gradcam@layer3_layer4.1.png")
        heat[how] = np.load(out / fused["heatmap"])
        finest = np.load(out / rows[("gradcam", "layer3")]["heatmap"])
        assert heat[how].shape == finest.shape  # on the finer layer's grid
    assert not np.allclose(heat["max"], heat["product"], atol=1e-3)


@pytest.mark.slow
def test_noise_and_finer_options_take_effect_and_are_checked(cli, tmp_path):
    from conftest import CIRCLE, DEMO_CONFIG, read_csv
    image = CIRCLE

    def heatmap(name, *args):
        out = tmp_path / name
        r = cli("explain", image, "--config", DEMO_CONFIG, *args, "--save-heatmap", "npy", "--heatmap-size", "layer",
                "--out", out)
        assert r.exit_code == 0, r.stderr
        return np.load(out / read_csv(out / "predictions.csv")[0]["heatmap"])

    # at layer3: after the last block a GAP + linear head makes the gradient the same for every input
    smooth = ("--method", "smoothgradcam++", "--layer", "layer3")
    assert not np.allclose(heatmap("s1", *smooth, "--noise-std", "0.5"), heatmap("s2", *smooth, "--noise-std", "2"),
                           atol=1e-3)
    assert np.array_equal(heatmap("s3", *smooth, "--noise-samples", "2"), heatmap("s4", *smooth, "--noise-samples", "2"))
    assert not np.allclose(heatmap("s5", *smooth, "--noise-samples", "2", "--seed", "1"),
                           heatmap("s6", *smooth, "--noise-samples", "2", "--seed", "2"), atol=1e-4)
    assert not np.allclose(heatmap("f1", "--method", "finercam", "--finer-alpha", "0"),
                           heatmap("f2", "--method", "finercam", "--finer-alpha", "2"), atol=1e-3)
    for args, said in [(("--method", "gradcam", "--noise-samples", "2"), "--noise-samples applies to --method sscam"),
                       (("--method", "sscam", "--noise-samples", "0"), "--noise-samples must be at least 1"),
                       (("--method", "iscam", "--noise-std", "1"), "(iscam adds no noise)"),
                       (("--method", "sscam", "--noise-std", "0"), "--noise-std must be a finite number above 0"),
                       (("--method", "gradcam", "--finer-alpha", "1"), "--finer-alpha applies to --method finercam"),
                       (("--method", "finercam", "--finer-alpha", "-1"), "--finer-alpha must be a finite number"),
                       (("--method", "gradcam", "--fuse", "max"), "--fuse combines the maps of several layers"),
                       (("--method", "gradcam", "--layer", "layer3", "--layer", "layer4", "--fuse", "min"),
                        "--fuse must be max, mean or product")]:
        r = cli("explain", image, "--config", DEMO_CONFIG, *args, "--out", tmp_path / "x")
        assert r.exit_code == 2 and said in r.stderr, (args, r.stderr)
