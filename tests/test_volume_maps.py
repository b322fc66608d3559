"""Maps of volumes (issue 38, items 3 and 6): a 3D network's (N, C, d, h, w) layers explained in
three dimensions through the same explainer as images, equal to pytorch-grad-cam's 5-D Grad-CAM
and to MONAI's GradCAM and GradCAMpp on the same model, layer and volume; methods defined on flat
images only are refused with the reason."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from camcli.errors import UsageError

SIZE = (12, 16, 14)  # (D, H, W): three different sides, so a swapped axis cannot pass


class Tiny3D(nn.Module):
    """A small 3D classifier: two convolution blocks, global average pooling, a linear head."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv3d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool3d(2),
                                      nn.Conv3d(8, 16, 3, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


def model_and_volume(seed: int = 0):
    torch.manual_seed(seed)
    model = Tiny3D().eval()
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.rand(2, 1, *SIZE, generator=g) * 0.2
    x[0, 0, 3:7, 4:9, 8:12] += 1.0  # a bright block in each volume, at different places
    x[1, 0, 6:11, 9:14, 2:6] += 1.0
    return model, x


def explain(model, x, layer, method, **options):
    from camcli.engine.explainer import Explainer
    from camcli.engine.methods import get_method

    explainer = Explainer(model, [layer], [get_method(method, **options)])
    explainer.validate(SIZE, "cpu", channels=1)
    return explainer(x).maps[(method, layer)]


def up(maps: torch.Tensor) -> torch.Tensor:
    """(N, d, h, w) maps at the input's size, trilinear, min-max per volume (as MONAI does after upsampling)."""
    big = F.interpolate(maps[:, None], size=SIZE, mode="trilinear", align_corners=False)[:, 0]
    flat = big.flatten(1)
    lo, hi = flat.min(1).values.view(-1, 1, 1, 1), flat.max(1).values.view(-1, 1, 1, 1)
    return (big - lo) / (hi - lo)


def pearson(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    return float(np.corrcoef(a, b)[0, 1])


def test_gradcam_of_a_volume_equals_pytorch_grad_cams_5d_gradcam():
    pgc = pytest.importorskip("pytorch_grad_cam", reason="pytorch-grad-cam (the dev extra) is not installed")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    from scipy.ndimage import zoom

    model, x = model_and_volume()
    targets = [ClassifierOutputTarget(c) for c in model(x).argmax(1).tolist()]
    # at the first convolution (the input's own grid): no resizing on either side, the maps must match
    ours = explain(model, x, "features.0", "gradcam")
    assert tuple(ours.maps.shape) == (2, *SIZE)
    with pgc.GradCAM(model, [model.features[0]]) as cam:
        theirs = cam(x, targets=targets)
    assert theirs.shape == (2, *SIZE)
    np.testing.assert_allclose(ours.maps.numpy(), theirs, atol=1e-4)
    # at the last block (half the grid): pytorch-grad-cam min-maxes, resizes with scipy's cubic
    # zoom, clips and min-maxes again; camcli's layer-resolution maps taken through the same steps
    ours = explain(model, x, "features.4", "gradcam")
    assert tuple(ours.maps.shape) == (2, *(s // 2 for s in SIZE))
    with pgc.GradCAM(model, [model.features[4]]) as cam:
        theirs = cam(x, targets=targets)
    for i in range(2):
        m = ours.maps[i].numpy()
        big = np.maximum(zoom(m, [t / s for s, t in zip(m.shape, SIZE)]), 0)
        np.testing.assert_allclose((big - big.min()) / (big.max() - big.min()), theirs[i], atol=1e-4)


def test_gradcampp_of_a_volume_is_the_papers_formula():
    """Grad-CAM++ (Chattopadhyay et al., eq. 19 with the exponential's derivatives) on a volume,
    from the layer's activations and gradients taken here with hooks of the test's own:
    alpha = g^2 / (2 g^2 + sum(A) g^3), w = sum alpha relu(g), map = ReLU(sum_k w_k A_k).
    (pytorch-grad-cam's GradCAMPlusPlus refuses 5-D activations, so the definition is the oracle.)"""
    model, x = model_and_volume(seed=2)
    ours = explain(model, x, "features.4", "gradcam++").maps
    kept = {}
    handle = model.features[4].register_forward_hook(lambda _m, _i, out: kept.setdefault("a", out))
    logits = model(x)
    handle.remove()
    a = kept["a"]
    g = torch.autograd.grad(logits.gather(1, logits.argmax(1, keepdim=True)).sum(), a)[0]
    a, g = a.detach(), g.detach()
    denom = 2 * g ** 2 + a.sum((2, 3, 4), keepdim=True) * g ** 3
    alpha = torch.where(g ** 2 != 0, g ** 2 / torch.where(denom != 0, denom, torch.ones_like(denom)), 0.0)
    w = (alpha * g.clamp_min(0)).sum((2, 3, 4), keepdim=True)
    raw = (w * a).sum(1).clamp_min(0)
    flat = raw.flatten(1)
    lo, hi = flat.min(1).values.view(-1, 1, 1, 1), flat.max(1).values.view(-1, 1, 1, 1)
    np.testing.assert_allclose(ours.numpy(), ((raw - lo) / (hi - lo)).numpy(), atol=1e-4)


def test_gradcam_of_a_volume_equals_monais():
    visualize = pytest.importorskip("monai.visualize", reason="MONAI is not installed")

    model, x = model_and_volume(seed=3)
    ours = up(explain(model, x, "features.4", "gradcam").maps)
    # MONAI's default normaliser maps (min, max) to (1, 0) ("this will flip magnitudes", its
    # docstring says); camcli's 1 is the most evidence, so its map is compared with 1 - MONAI's
    theirs = 1 - visualize.GradCAM(model, target_layers="features.4")(x)[:, 0]
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=1e-4)


def test_gradcampp_of_a_volume_against_monais_which_departs_from_the_paper():
    """MONAI's GradCAMpp puts sum(A * g^3) in alpha's denominator where the paper (eq. 19),
    pytorch-grad-cam and camcli put sum(A) * g^3, and it takes one volume at a time (its exp(score)
    does not broadcast over a batch). camcli follows the paper (the test above); against MONAI the
    maps stay close (r 0.95 to 0.998 on four seeded models) but not equal, so
    this bound is looser than the Grad-CAM test's equality."""
    visualize = pytest.importorskip("monai.visualize", reason="MONAI is not installed")

    for seed in (3, 5):
        model, x = model_and_volume(seed=seed)
        ours = up(explain(model, x, "features.4", "gradcam++").maps)
        cam = visualize.GradCAMpp(model, target_layers="features.4")
        for i in range(2):
            assert pearson(ours[i], 1 - cam(x[i:i + 1])[0, 0]) >= 0.94, (seed, i)


VOLUME_METHODS = ["cam", "gradcam", "gradcam++", "xgradcam", "hirescam", "gradcam-elementwise", "layercam",
                  "eigencam", "eigengradcam", "scorecam", "sscam", "iscam", "ablationcam", "finercam", "shapleycam"]


@pytest.mark.parametrize("method", VOLUME_METHODS)
def test_every_method_defined_in_three_dimensions_maps_a_volume(method):
    model, x = model_and_volume(seed=5)
    options = {"cam_batch_size": 8} if method in ("scorecam", "sscam", "iscam", "ablationcam") else {}
    found = explain(model, x, "features.4", method, **options)
    assert tuple(found.maps.shape) == (2, *(s // 2 for s in SIZE))
    assert torch.isfinite(found.maps).all() and found.maps.min() >= 0 and found.maps.max() <= 1
    # each volume's map is its own: the two volumes' maps differ (a map broadcast over the batch would not)
    assert not torch.allclose(found.maps[0], found.maps[1])


def test_score_cam_of_a_volume_masks_it_with_trilinear_channel_maps():
    """Score-CAM's definition on a volume, channel by channel: each channel upsampled
    trilinearly to the volume and min-max scaled masks it; the softmax of the masked scores
    weights the channels."""
    model, x = model_and_volume(seed=7)
    ours = explain(model, x[:1], "features.4", "scorecam", cam_batch_size=5).maps[0]
    with torch.no_grad():
        cls = int(model(x[:1]).argmax())
        acts = model.features(x[:1])[0]  # (C, d, h, w)
        scores = []
        for a in acts:
            m = F.interpolate(a[None, None], size=SIZE, mode="trilinear", align_corners=False)[0, 0]
            m = (m - m.min()) / (m.max() - m.min()) if m.max() > m.min() else torch.zeros_like(m)
            scores.append(float(model(x[:1] * m)[0, cls]))
        w = torch.tensor(scores).softmax(0)
        raw = (w[:, None, None, None] * acts).sum(0).clamp_min(0)
        expected = (raw - raw.min()) / (raw.max() - raw.min())
    np.testing.assert_allclose(ours.numpy(), expected.numpy(), atol=1e-4)


@pytest.mark.parametrize("method", ["fullgrad", "guidedgradcam", "fem"])
def test_methods_defined_on_flat_images_are_refused_for_volumes_with_the_reason(method):
    model, x = model_and_volume()
    with pytest.raises(UsageError, match="flat images only.*gradcam"):
        explain(model, x, "features.3", method)


def test_smoothing_averages_six_versions_of_a_volume_mirrored_left_to_right():
    """aug_smooth on a volume: the maps of the volume scaled by 0.9, 1 and 1.1, each also mirrored
    across the patient's left and right (the RAS x axis) and mirrored back, averaged, min-maxed."""
    from camcli.engine.explainer import Explainer
    from camcli.engine.methods import get_method
    from camcli.engine.methods.base import normalise

    model, x = model_and_volume()
    explainer = Explainer(model, ["features.3"], [get_method("gradcam")], aug_smooth=True)
    explainer.validate(SIZE, "cpu", channels=1)
    smoothed = explainer(x)
    key = ("gradcam", "features.3")
    targets = smoothed.targets
    plain = Explainer(model, ["features.3"], [get_method("gradcam")])
    total = 0
    for flip in (False, True):
        for factor in (0.9, 1.0, 1.1):
            y = (x.flip(2) if flip else x) * factor
            maps = plain(y, targets).maps[key].maps
            total = total + (maps.flip(1) if flip else maps)
    expected = normalise(total / 6, relu=False)
    np.testing.assert_allclose(smoothed.maps[key].maps.numpy(), expected.maps.numpy(), atol=1e-5)
    unsmoothed = plain(x, targets).maps[key].maps
    assert not torch.allclose(smoothed.maps[key].maps, unsmoothed, atol=1e-3)  # it changed something


def test_fusing_layers_of_a_volume_upsamples_them_trilinearly_to_the_finest_grid():
    from camcli.engine.explainer import Explainer
    from camcli.engine.methods import get_method
    from camcli.engine.methods.base import normalise

    model, x = model_and_volume()
    explainer = Explainer(model, ["features.1", "features.4"], [get_method("gradcam")], fuse="max")
    explainer.validate(SIZE, "cpu", channels=1)
    found = explainer(x).maps
    fine, coarse = found[("gradcam", "features.1")].maps, found[("gradcam", "features.4")].maps
    assert tuple(fine.shape[1:]) == SIZE and tuple(coarse.shape[1:]) == tuple(s // 2 for s in SIZE)
    up = F.interpolate(coarse[:, None], size=SIZE, mode="trilinear", align_corners=False)[:, 0].clamp(0, 1)
    expected = normalise(torch.maximum(fine, up), relu=False)
    np.testing.assert_allclose(found[("gradcam", "features.1+features.4")].maps.numpy(), expected.maps.numpy(), atol=1e-5)


class Projected(nn.Module):
    """A 3D block, then the depth axis taken away (a maximum projection), then a 2D block."""

    def __init__(self) -> None:
        super().__init__()
        self.block3d = nn.Conv3d(1, 4, 3, padding=1)
        self.block2d = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.block2d(self.block3d(x).amax(2)).mean((2, 3)))


def test_a_flat_layer_inside_a_volume_model_is_refused_not_read_as_an_image():
    """After the projection the layer's output has no depth axis: its map would not cover the
    volume, so it is refused (naming the volume's size), while the 3D block is explained."""
    from camcli.engine.explainer import Explainer
    from camcli.engine.layouts import NotAMap
    from camcli.engine.methods import get_method

    torch.manual_seed(0)
    model = Projected().eval()
    Explainer(model, ["block3d"], [get_method("gradcam")]).validate(SIZE, "cpu", channels=1)
    with pytest.raises(NotAMap, match="12x16x14"):
        Explainer(model, ["block2d"], [get_method("gradcam")]).validate(SIZE, "cpu", channels=1)


class TinySeg3D(nn.Module):
    """A small 3D segmenter: a convolution block at the input's grid, then three classes per voxel."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv3d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv3d(8, 8, 3, padding=1),
                                      nn.ReLU())
        self.head = nn.Conv3d(8, 3, 1)

    def forward(self, x):
        return self.head(self.features(x))


def test_a_3d_segmenters_gradcam_equals_pytorch_grad_cams_with_its_segmentation_target():
    """Each class found, explained by the sum of its scores over its predicted voxels: the same map
    as pytorch-grad-cam's GradCAM with SemanticSegmentationTarget on the 5-D input (at the input's
    grid, where neither side resizes)."""
    pgc = pytest.importorskip("pytorch_grad_cam", reason="pytorch-grad-cam (the dev extra) is not installed")
    from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget

    from camcli.engine.methods import get_method
    from camcli.engine.segmentation import SegmentationExplainer, SegmentationHead

    torch.manual_seed(8)  # a seed whose segmenter predicts all three classes in both volumes
    model = TinySeg3D().eval()
    _, x = model_and_volume()
    head = SegmentationHead.read(model, SIZE, "cpu", channels=1)
    explainer = SegmentationExplainer(model, ["features.3"], [get_method("gradcam")], ["a", "b", "c"], min_area=1e-9,
                                      head=head)  # every class predicted anywhere
    explainer.validate(SIZE, "cpu", channels=1)
    found = explainer(x)
    predicted = model(x).argmax(1)
    compared = 0
    for i, image in enumerate(found):
        assert image.labels.shape == SIZE and torch.equal(image.labels.long(), predicted[i])
        for segment, maps in zip(image.segments, image.maps):
            ours = maps[("gradcam", "features.3")][0]
            mask = (predicted[i] == segment.index).float().numpy()
            with pgc.GradCAM(model, [model.features[3]]) as cam:
                theirs = cam(x[i:i + 1], targets=[SemanticSegmentationTarget(segment.index, mask)])[0]
            np.testing.assert_allclose(ours.numpy(), theirs, atol=1e-4)
            compared += 1
    assert compared == 6  # three classes in each volume
