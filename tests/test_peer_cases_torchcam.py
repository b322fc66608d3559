"""torchcam's own image test cases, run through camcli's Python API (issue 36).

Its ``test_methods_gradient.py`` and ``test_methods_activation.py`` explain an untrained
mobilenet_v2 (Grad-CAM, Grad-CAM++, Smooth Grad-CAM++, XGrad-CAM and LayerCAM at
``features.18.0``; CAM at its default layer; Score-CAM, SS-CAM and IS-CAM at
``features.16.conv.3``) for batches of one and two, for the top class and for several classes;
a model whose layer is followed by an in-place ReLU; a tiny model at 8x8 where Score-CAM's chunk
size must not change the maps; and a fully convolutional model for CAM. The same cases here: each
gives finite full-size maps, or is refused as camcli documents it (CAM needs a linear classifier).
Its video cases wait for video models (issue 39); its hook and ``repr`` cases test its own API.
"""

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

import camcli
from camcli.errors import UsageError


@pytest.fixture(scope="module")
def mobilenet():
    torch.manual_seed(0)
    return torchvision.models.mobilenet_v2().eval()


def _images(batch: int, side: int = 224) -> torch.Tensor:
    picture = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, side, side), dtype=np.uint8))
    return picture[None].repeat(batch, 1, 1, 1)


def _check(results, batch: int, classes: int, side: int) -> None:
    assert len(results) == batch
    for r in results:
        assert r.status == "ok", r.error
        assert len(r.maps) == classes
        assert all(m.heatmap.shape == (side, side) and np.isfinite(m.heatmap).all() for m in r.maps)


CASES = [("gradcam", "features.18.0", 1), ("gradcam++", "features.18.0", 1), ("smoothgradcam++", "features.18.0", 1),
         ("xgradcam", "features.18.0", 1), ("layercam", "features.18.0", 1), ("layercam", "features.18.0", 2),
         ("cam", None, 1), ("cam", None, 2), ("scorecam", "features.16.conv.3", 1), ("sscam", "features.16.conv.3", 1),
         ("iscam", "features.16.conv.3", 1)]


@pytest.mark.slow
@pytest.mark.parametrize("method,layer,batch", CASES, ids=[f"{m}-{b}" for m, _, b in CASES])
def test_torchcams_image_cases(mobilenet, method, layer, batch):
    # the Score-CAM family runs a pass per channel (x 4 samples): at 112 px, to keep the suite's time
    side = 112 if method in ("scorecam", "sscam", "iscam") else 224
    options = dict(model=mobilenet, method=method, input_size=side, workers=0, cam_batch_size=64)
    if layer:
        options["layer"] = layer
    if method in ("sscam", "iscam", "smoothgradcam++"):
        options["noise_samples"] = 4  # as torchcam's tests cut them
    _check(list(camcli.explain(_images(batch, side), **options)), batch, 1, side)  # each image's top class
    # torchcam's "multiple class indices" (class i for image i): here every image explains classes 0 .. batch-1
    several = list(camcli.explain(_images(batch, side), target=list(range(batch)), **options))
    _check(several, batch, batch, side)
    assert [m.target_index for m in several[0].maps] == list(range(batch))


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "smoothgradcam++", "xgradcam", "layercam"])
def test_a_layer_followed_by_an_inplace_relu(method):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                          nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(1), nn.Linear(8, 10)).eval()
    _check(list(camcli.explain(_images(1, 32), model=model, layer="2", method=method, input_size=32, workers=0,
                               noise_samples=4 if method == "smoothgradcam++" else None)), 1, 1, 32)


@pytest.mark.parametrize("method", ["scorecam", "sscam", "iscam"])
def test_score_cams_do_not_depend_on_their_chunk_size(method):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3)).eval()
    extra = {} if method == "scorecam" else {"noise_samples": 2}
    maps = []
    for chunk in (3, 64):
        results = list(camcli.explain(_images(2, 8), model=model, layer=["1", "3"], method=method, input_size=8,
                                      workers=0, target=[1, 2], cam_batch_size=chunk, **extra))
        _check(results, 2, 4, 8)
        maps.append([m.layer_map for r in results for m in r.maps])
    for a, b in zip(*maps):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_cam_on_a_fully_convolutional_model_is_refused_with_the_reason():
    """torchcam reads a 1x1 convolution as CAM's classifier; camcli documents that CAM needs a linear one."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU()), nn.Conv2d(8, 10, 1),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(1)).eval()
    with pytest.raises(UsageError, match="method 'cam' needs"):
        list(camcli.explain(_images(1, 32), model=model, layer="0", method="cam", input_size=32, workers=0))
    results = list(camcli.explain(_images(1, 32), model=model, layer="0", method="gradcam", input_size=32, workers=0))
    _check(results, 1, 1, 32)  # what the refusal advises works
