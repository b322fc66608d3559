"""EigenGrad-CAM, FEM and KPCA-CAM: the formula by hand, and pytorch-grad-cam's maps on
resnet18, vgg16 and a small ViT (seeded weights), per image, at layer resolution."""

import numpy as np
import pytest
import torch
import torchvision

from camcli.engine.explainer import Explainer
from camcli.engine.method_options import takes
from camcli.engine.methods import get_method
from camcli.errors import UsageError
from camcli.engine.layer_names import resolve_layer

pgc = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

PEERS = {"eigengradcam": "EigenGradCAM", "fem": "FEM", "kpcacam": "KPCA_CAM"}
#: principal components have no sign; the peer keeps LAPACK's, so compare with either orientation
SIGNLESS = {"eigengradcam", "kpcacam"}


def pearson(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.std() == 0 or b.std() == 0:
        return 1.0 if np.allclose(a, b, atol=1e-6) else 0.0
    return float(np.corrcoef(a, b)[0, 1])


def minmax(a):
    a = np.maximum(a, 0)
    return (a - a.min()) / (a.max() - a.min()) if a.max() > a.min() else a * 0


def peer_raw(method, model, module, x, targets, reshape=None, peer=None, **call):
    """The peer's map before its ReLU and scaling, so the other sign can be compared too."""
    cam = getattr(pgc, peer or PEERS[method])(model=model, target_layers=[module], reshape_transform=reshape)
    store = {}
    original = cam.get_cam_image

    def keep(*args, **kwargs):
        store["raw"] = original(*args, **kwargs)
        return store["raw"]
    cam.get_cam_image = keep
    cam.get_target_width_height = lambda _x: None
    try:
        cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in targets], **call)
    finally:
        cam.activations_and_grads.release()
    return store["raw"]


def check(method, ours, raw):
    for i in range(len(raw)):
        r = pearson(ours[i], minmax(raw[i]))
        if method in SIGNLESS:
            r = max(r, pearson(ours[i], minmax(-raw[i])))
        assert r >= 0.99, f"{method}, image {i}: r = {r:.4f}"


@pytest.mark.slow
@pytest.mark.parametrize("method", list(PEERS))
@pytest.mark.parametrize("arch, layer", [("resnet18", "layer4[1]"), ("vgg16", "features[29]")])
def test_new_methods_match_pytorch_grad_cam(method, arch, layer):
    torch.manual_seed(0)
    model = torchvision.models.get_model(arch, num_classes=10).eval()
    name = resolve_layer(model, layer)
    x = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    ours = Explainer(model, [name], [get_method(method)])(x)
    raw = peer_raw(method, model, model.get_submodule(name), x, ours.targets)
    check(method, ours.maps[(method, name)].maps.numpy(), raw)


@pytest.mark.parametrize("method", list(PEERS))
def test_new_methods_on_vit_tokens_match_pytorch_grad_cam(method):
    from test_transformers import vit, vit_reshape
    model = vit()
    layer = "encoder.layers.encoder_layer_1.ln_1"
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    ours = Explainer(model, [layer], [get_method(method)])(x)
    raw = peer_raw(method, model, model.get_submodule(layer), x, ours.targets, vit_reshape(4))
    check(method, ours.maps[(method, layer)].maps.numpy(), raw)


def test_fem_by_hand():
    """The k-sigma rule in plain numpy: each channel's weight is the share of its positions
    above its mean + k standard deviations."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3).eval()
    x = torch.randn(1, 3, 64, 64)
    fp = Explainer(model, ["layer4.1"], [get_method("gradcam")]).forward(x, None)
    a = fp.activations["layer4.1"][0].double().numpy()  # (512, 2, 2)
    for k in (0.0, 1.0, 2.0):
        flat = a.reshape(a.shape[0], -1)
        weights = (flat > flat.mean(1, keepdims=True) + k * flat.std(1, keepdims=True)).mean(1)
        want = minmax((weights[:, None, None] * a).sum(0))
        ours = get_method("fem", fem_k=k)(fp, "layer4.1").maps[0].numpy()
        assert np.allclose(ours, want, atol=1e-5), k
    with pytest.raises(UsageError, match="fem_k"):
        get_method("fem", fem_k=-1)


def test_kpcacam_kernels_and_options(cli, tmp_path):
    from conftest import DEMO_CONFIG, SAMPLES
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3).eval()
    x = torch.randn(1, 3, 64, 64)
    fp = Explainer(model, ["layer4.1"], [get_method("eigencam")]).forward(x, None)
    linear = get_method("kpcacam", kpca_kernel="linear")(fp, "layer4.1").maps
    eigen = get_method("eigencam")(fp, "layer4.1").maps
    torch.testing.assert_close(linear, eigen, atol=1e-4, rtol=1e-4)  # a linear kernel is plain PCA
    image = next((SAMPLES / "single").iterdir())
    r = cli("explain", image, "--config", DEMO_CONFIG, "--method", "gradcam", "--kpca-kernel", "rbf",
            "--out", tmp_path / "a")
    assert r.exit_code == 2 and "--kpca-kernel applies to --method kpcacam only" in r.stderr
    r = cli("explain", image, "--config", DEMO_CONFIG, "--method", "kpcacam,eigengradcam,fem",
            "--kpca-kernel", "rbf", "--fem-k", "1", "--out", tmp_path / "b", "--quiet")
    assert r.exit_code == 0, r.stderr


def test_randomcam_is_seeded_per_image_not_per_batch(small_model, tmp_path):
    """The same image gets the same random weights alone, in a batch, after a resume; another
    seed gives another map; the weights are the formula's uniform [-1, 1] draw."""
    import camcli
    from conftest import SAMPLES
    from camcli.engine.stream import image_seed
    images = sorted((SAMPLES / "single").glob("*.jpg"))[:3]
    args = dict(model="resnet18", checkpoint=str(small_model / "r18.pth"), input_size=64, workers=0,
                method="randomcam")
    together = {r.item.rel: r.maps[0].layer_map for r in camcli.explain([str(p) for p in images], batch_size=3,
                                                                       **args)}
    alone = list(camcli.explain(str(images[1]), batch_size=1, **args))[0]
    assert np.allclose(alone.maps[0].layer_map, together[images[1].name], atol=1e-5)  # batch rounding only
    other = list(camcli.explain(str(images[1]), batch_size=1, seed=7, **args))[0]
    assert not np.allclose(other.maps[0].layer_map, alone.maps[0].layer_map)
    # by hand: the activations weighted by the image's draw
    fp = Explainer(*_small_resnet(small_model), [get_method("gradcam")]).forward(_input(images[1]), None)
    g = torch.Generator().manual_seed(image_seed(0, images[1].name))
    w = torch.rand(512, generator=g) * 2 - 1
    want = minmax((w[:, None, None] * fp.activations["layer4.1"][0]).sum(0).numpy())
    assert np.allclose(alone.maps[0].layer_map, want, atol=1e-5)


def _small_resnet(folder):
    model = torchvision.models.resnet18(num_classes=3).eval()
    model.load_state_dict(torch.load(folder / "r18.pth"))
    return model, ["layer4.1"]


def _input(path):
    import cv2
    rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    small = cv2.resize(rgb, (64, 64), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    mean, std = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)
    return torch.from_numpy((small - mean) / std).permute(2, 0, 1)[None]


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "xgradcam", "hirescam", "gradcam-elementwise",
                                    "layercam", "scorecam"])
@pytest.mark.slow
def test_eigen_smooth_matches_pytorch_grad_cam(method):
    """--eigen-smooth: the first principal component of the method's weighted activations, as the
    peer's eigen_smooth=True computes it (sign-free: the peer keeps LAPACK's sign)."""
    from test_parity import PEERS as OLD_PEERS
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    x = torch.randn(2, 3, 96 if method == "scorecam" else 128, 96 if method == "scorecam" else 128,
                    generator=torch.Generator().manual_seed(1))
    big = {"cam_batch_size": 256} if "cam_batch_size" in takes(method) else {}
    ours = Explainer(model, ["layer4.1"], [get_method(method, eigen_smooth=True, **big)])(x)
    raw = peer_raw(method, model, model.layer4[1], x, ours.targets, peer=OLD_PEERS[method], eigen_smooth=True)
    mine = ours.maps[(method, "layer4.1")].maps.numpy()
    for i in range(2):
        r = max(pearson(mine[i], minmax(raw[i])), pearson(mine[i], minmax(-raw[i])))
        assert r >= 0.99 if method != "scorecam" else r >= 0.95, f"{method}, image {i}: r = {r:.4f}"


def test_eigen_smooth_is_refused_for_components_and_changes_the_map():
    with pytest.raises(UsageError, match="eigencam is not a weighted sum"):
        get_method("eigencam", eigen_smooth=True)
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3).eval()
    x = torch.randn(1, 3, 64, 64)
    fp = Explainer(model, ["layer4.1"], [get_method("gradcam")]).forward(x, None)
    plain = get_method("gradcam")(fp, "layer4.1").maps
    smooth = get_method("gradcam", eigen_smooth=True)(fp, "layer4.1").maps
    assert not torch.allclose(plain, smooth)
    from camcli.engine.methods.principal import first_component
    g, a = fp.gradients["layer4.1"], fp.activations["layer4.1"]
    want = first_component(g.mean((2, 3), keepdim=True) * a).clamp_min(0)
    want = (want - want.min()) / (want.max() - want.min())
    torch.testing.assert_close(smooth, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", ["gradcam", "layercam", "hirescam"])
def test_aug_smooth_matches_pytorch_grad_cam(method):
    """--aug-smooth: six versions (flip x 0.9/1/1.1), maps flipped back and averaged, as the
    peer's aug_smooth=True does for the same target classes."""
    from test_parity import PEERS as OLD_PEERS
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    x = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    ours = Explainer(model, ["layer4.1"], [get_method(method)], aug_smooth=True)(x)
    plain = Explainer(model, ["layer4.1"], [get_method(method)])(x)
    cam = getattr(pgc, OLD_PEERS[method])(model=model, target_layers=[model.layer4[1]])
    cam.get_target_width_height = lambda _x: None
    try:
        theirs = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in ours.targets], aug_smooth=True)
    finally:
        cam.activations_and_grads.release()
    mine = ours.maps[(method, "layer4.1")].maps.numpy()
    for i in range(2):
        r = pearson(mine[i], theirs[i])
        assert r >= 0.99, f"{method}, image {i}: r = {r:.4f}"
    assert not np.allclose(mine, plain.maps[(method, "layer4.1")].maps.numpy(), atol=1e-3)
    torch.testing.assert_close(ours.logits, plain.logits)  # predictions come from the original image


def test_aug_smooth_and_eigen_smooth_from_the_command_line(cli, tmp_path):
    import json
    from conftest import CIRCLE, DEMO_CONFIG
    image = CIRCLE
    out = tmp_path / "o"
    r = cli("explain", image, "--config", DEMO_CONFIG, "--method", "gradcam,scorecam", "--aug-smooth",
            "--eigen-smooth", "--max-n", "8", "--out", out, "--quiet")
    assert r.exit_code == 0, r.stderr
    settings = json.loads((out / "run.json").read_text())["settings"]
    assert settings["aug_smooth"] is True and settings["eigen_smooth"] is True
    r = cli("explain", image, "--config", DEMO_CONFIG, "--method", "eigencam", "--eigen-smooth",
            "--out", tmp_path / "bad")
    assert r.exit_code == 2 and "eigencam is not a weighted sum" in r.stderr


def test_fem_k_and_kpca_gamma_take_effect_and_are_checked(cli, tmp_path):
    from conftest import CIRCLE, DEMO_CONFIG
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3).eval()
    fp = Explainer(model, ["layer3.1"], [get_method("eigencam")]).forward(torch.randn(1, 3, 96, 96), None)
    default = get_method("kpcacam")(fp, "layer3.1").maps
    assert not torch.allclose(get_method("kpcacam", kpca_gamma=0.5)(fp, "layer3.1").maps, default, atol=1e-3)
    with pytest.raises(UsageError, match="kpca_gamma"):
        get_method("kpcacam", kpca_gamma=0)
    assert not torch.allclose(get_method("fem", fem_k=0.5)(fp, "layer3.1").maps, get_method("fem")(fp, "layer3.1").maps)
    image = CIRCLE
    for args, said in [(("--method", "gradcam", "--fem-k", "1"), "--fem-k applies to --method fem only"),
                       (("--method", "fem", "--fem-k", "-1"), "--fem-k must be 0 or more"),
                       (("--method", "gradcam", "--kpca-gamma", "0.1"), "--kpca-gamma applies to --method kpcacam")]:
        r = cli("explain", image, "--config", DEMO_CONFIG, *args, "--out", tmp_path / "x")
        assert r.exit_code == 2 and said in r.stderr, r.stderr


def test_each_method_option_is_declared_once_and_offered_checked_and_refused_from_there(cli):
    """engine/method_options.py declares every method option; the flags and their help, the
    methods' own ``options``, ``camcli methods --json`` and the refusals all follow it."""
    import json
    import typer

    from camcli.cli import app
    from camcli.engine.method_options import OPTIONS
    from camcli.engine.methods import available
    from camcli.settings.fields import FIELDS

    command = typer.main.get_command(app).commands["explain"]
    flags = {opt: p for p in command.params for opt in p.opts}
    listed = {m["name"]: m["options"] for m in json.loads(cli("methods", "--json").stdout)}
    for option in OPTIONS:
        assert option.name in FIELDS and option.kind.__name__ in str(FIELDS[option.name].type)
        flag = flags["--" + option.name.replace("_", "-")]
        assert " ".join(option.help.split()[:6]) in " ".join(flag.help.split())
        for method in option.takers:
            assert option.name in available()[method].options
            if option.name != "cam_batch_size":
                assert option.name in listed[method]
    for name, cls in available().items():
        assert set(cls.options) == {o.name for o in OPTIONS if name in o.takers}
        assert set(listed[name]) == set(cls.options) - {"cam_batch_size"}
    # the Python API refuses what a method does not take, and says who does
    with pytest.raises(UsageError, match=r"gradcam does not take max_n \(it takes none\).*scorecam, sscam and iscam"):
        get_method("gradcam", max_n=3)
    with pytest.raises(UsageError, match="fem does not take noise_std"):
        get_method("fem", noise_std=0.5)
    with pytest.raises(UsageError, match="noise_samples must be at least 1, got 0"):
        get_method("sscam", noise_samples=0)
    with pytest.raises(UsageError, match="unknown method option samples"):
        get_method("sscam", samples=3)
    assert get_method("gradcam", max_n=None).name == "gradcam"  # None: the default, as the settings pass it
