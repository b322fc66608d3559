"""pytorch-grad-cam's own test grid, run through camcli's Python API (issue 36).

Its ``test_run_all_models`` explains resnet18 at two layers and vgg11 at its last feature block,
batches of 2 square and 1 oblong image, the top class and class 100, with and without
``eigen_smooth``, by nine methods; its ``test_one_channel`` explains a resnet18 whose first
convolution takes one channel. The same cases here, with seeded random weights instead of
pretrained ones and images handed over in memory: every case gives one full-size map per image,
method and layer, or is refused as camcli documents it (``eigen_smooth`` on methods that are
principal components already).
"""

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

import camcli
from camcli.errors import UsageError

MODELS = [("resnet18", ["layer4[-1]", "layer4[-2]"]), ("vgg11", ["features[-1]"])]
SHAPES = [(2, 32, 32), (1, 32, 40)]  # batch, width, height
METHODS = ["scorecam", "ablationcam", "gradcam", "gradcam++", "xgradcam", "eigencam", "eigengradcam", "layercam",
           "fullgrad"]
#: camcli's documented refusals among the grid's combinations
REFUSED = {("eigencam", True): "eigen_smooth", ("eigengradcam", True): "eigen_smooth",
           ("fullgrad", True): "not a weighted sum"}


@pytest.fixture(scope="module")
def nets():
    found = {}
    for name, _ in MODELS:
        torch.manual_seed(0)
        found[name] = getattr(torchvision.models, name)(num_classes=1000).eval()
    return found


def _batch(size: int, width: int, height: int) -> torch.Tensor:
    rng = np.random.default_rng(0)
    picture = torch.from_numpy(rng.integers(0, 256, (3, height, width), dtype=np.uint8))
    return picture[None].repeat(size, 1, 1, 1)


@pytest.mark.slow
@pytest.mark.parametrize("eigen_smooth", [True, False])
@pytest.mark.parametrize("target", [None, 100])
@pytest.mark.parametrize("size,width,height", SHAPES)
@pytest.mark.parametrize("model,layers", MODELS)
def test_pytorch_grad_cams_grid(nets, model, layers, size, width, height, target, eigen_smooth):
    images = _batch(size, width, height)
    for method in METHODS:
        options = dict(model=nets[model], layer=layers, method=method, input_size=32, workers=0, target=target,
                       eigen_smooth=eigen_smooth, cam_batch_size=256)
        refused = REFUSED.get((method, eigen_smooth))
        if refused:
            with pytest.raises(UsageError, match=refused):
                list(camcli.explain(images, **options))
            continue
        results = list(camcli.explain(images, **options))
        assert len(results) == size
        for r in results:
            assert r.status == "ok", (method, r.error)
            expected = [(method, layer) for layer in (["input"] if method == "fullgrad" else layers)]
            assert [(m.method, m.layer) for m in r.maps] == [(mm, camcli_layer(nets[model], ll)) for mm, ll in expected]
            assert all(m.heatmap.shape == (height, width) and np.isfinite(m.heatmap).all() for m in r.maps)
            if target is not None:
                assert r.target_index == target


def camcli_layer(model: nn.Module, spec: str) -> str:
    from camcli.engine.layer_names import resolve_layer

    return spec if spec == "input" else resolve_layer(model, spec)


def test_pytorch_grad_cams_one_channel_case():
    """A resnet18 whose first convolution takes one channel, a batch of 16 grey images, at layer4."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    model.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    grey = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (1, 48, 64), dtype=np.uint8))
    results = list(camcli.explain(grey[None].repeat(16, 1, 1, 1), model=model.eval(), layer="layer4", input_size=64,
                                  workers=0))
    assert len(results) == 16 and all(r.status == "ok" and r.maps[0].heatmap.shape == (48, 64) for r in results)
    assert len({r.pred_index for r in results}) == 1  # the same picture, the same answer
