"""EigenGrad-CAM, FEM and KPCA-CAM: the formula by hand, and pytorch-grad-cam's maps on
resnet18, vgg16 and a small ViT (seeded weights), per image, at layer resolution."""

import numpy as np
import pytest
import torch
import torchvision

from camcli.engine.explainer import Explainer
from camcli.engine.methods import get_method
from camcli.errors import UsageError
from camcli.models.layer_names import resolve_layer

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


def peer_raw(method, model, module, x, targets, reshape=None):
    """The peer's map before its ReLU and scaling, so the other sign can be compared too."""
    cam = getattr(pgc, PEERS[method])(model=model, target_layers=[module], reshape_transform=reshape)
    store = {}
    original = cam.get_cam_image

    def keep(*args, **kwargs):
        store["raw"] = original(*args, **kwargs)
        return store["raw"]
    cam.get_cam_image = keep
    cam.get_target_width_height = lambda _x: None
    try:
        cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in targets])
    finally:
        cam.activations_and_grads.release()
    return store["raw"]


def check(method, ours, raw):
    for i in range(len(raw)):
        r = pearson(ours[i], minmax(raw[i]))
        if method in SIGNLESS:
            r = max(r, pearson(ours[i], minmax(-raw[i])))
        assert r >= 0.99, f"{method}, image {i}: r = {r:.4f}"


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
