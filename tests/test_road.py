"""ROAD: the imputation against pytorch-grad-cam's (the authors' code), and the metric's behaviour."""

import numpy as np
import pytest
import torch
from pytorch_grad_cam.metrics.perturbation_confidence import (PerturbationConfidenceMetric, RemoveLeastRelevantFirst,
                                                              RemoveMostRelevantFirst)
from pytorch_grad_cam.metrics.road import NoisyLinearImputer
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

from camcli.evaluation.road import PERCENTILES, impute, keep_masks, road
from test_faithfulness import TopLeft, checker


def smooth_map(h, w, seed):
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 1, 5, 5, generator=g)
    return torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)[0, 0]


def test_imputation_equals_the_sparse_solve():
    """Every MoRF and LeRF mask at every percentile: the same pixels removed and the same values
    filled in as pytorch-grad-cam's SciPy solve (noise off)."""
    torch.manual_seed(0)
    x = torch.randn(3, 72, 66)  # large enough for the half-resolution start
    heat = smooth_map(72, 66, 1)
    masks = keep_masks(heat)
    ours = impute(x[None].expand(len(masks), *x.shape), masks, noise=0, tol=1e-6)
    quick = impute(x[None].expand(len(masks), *x.shape), masks, noise=0)  # the default tolerance
    assert (quick - ours).abs().max() < 0.02
    imputer = NoisyLinearImputer(noise=0)
    for i, p in enumerate(PERCENTILES):
        for j, remove in enumerate((RemoveMostRelevantFirst, RemoveLeastRelevantFirst)):
            ref = remove(p, imputer)(x, heat)
            got = ours[i + j * len(PERCENTILES)]
            assert torch.equal(ref == x, got == x), f"{remove.__name__} {p}: other pixels removed"
            assert torch.allclose(got, ref, atol=1e-3), f"{remove.__name__} {p}: {(got - ref).abs().max():.2e}"


def test_removed_share_follows_the_percentile():
    heat = smooth_map(50, 50, 2)
    masks = keep_masks(heat)
    kept = masks.float().mean((1, 2, 3))
    for i, p in enumerate(PERCENTILES):
        assert kept[i] == pytest.approx(p / 100, abs=0.01)  # MoRF keeps the p% least relevant
        assert kept[i + len(PERCENTILES)] == pytest.approx(p / 100, abs=0.01)


def test_road_scores_equal_pytorch_grad_cam():
    """The per-percentile change in class probability, averaged as ROADMostRelevantFirstAverage
    and ROADLeastRelevantFirstAverage do, on a small CNN (noise off on both sides)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(4),
                                torch.nn.Flatten(), torch.nn.Linear(128, 5)).eval()
    x = torch.randn(3, 32, 32)
    heat = smooth_map(32, 32, 3)
    ours = road(model, x, heat, target=2, noise=0, tol=1e-6)
    targets = [ClassifierOutputSoftmaxTarget(2)]
    imputer = NoisyLinearImputer(noise=0)
    for name, remove, values in (("morf", RemoveMostRelevantFirst, ours.morf), ("lerf", RemoveLeastRelevantFirst, ours.lerf)):
        ref = [float(PerturbationConfidenceMetric(remove(p, imputer))(x[None], heat[None].numpy(), targets, model)[0])
               for p in PERCENTILES]
        assert np.allclose(values, ref, atol=1e-4), (name, values, ref)
    assert ours.combined == pytest.approx((np.mean(ours.lerf) - np.mean(ours.morf)) / 2)


def test_a_map_on_the_evidence_scores_better():
    """The toy model looks only at the top-left quadrant: removing it first (the right map) drops
    the class probability; removing the rest first does not."""
    model = TopLeft().eval()
    x = (0.4 * checker(32)).expand(3, 32, 32).clone()
    right = torch.zeros(32, 32)
    right[:16, :16] = 1.0
    right += torch.linspace(0, 0.01, 32 * 32).view(32, 32)  # break ties, as real maps do
    wrong = right.flip(0).flip(1)
    good = road(model, x, right, 0, generator=torch.Generator().manual_seed(0))
    bad = road(model, x, wrong, 0, generator=torch.Generator().manual_seed(0))
    assert good.morf_mean < bad.morf_mean - 0.1
    assert abs(good.lerf_mean) < 0.05  # removing what the model ignores changes nothing
    assert good.combined > bad.combined


def _relative_residual(x, keep, filled):
    """|| A u - b || / || b || of the imputation system, written independently of camcli's solver:
    a 3x3 convolution over the image, the kept pixels as known values."""
    k = torch.tensor([[1 / 12, 1 / 6, 1 / 12], [1 / 6, 0, 1 / 6], [1 / 12, 1 / 6, 1 / 12]], dtype=torch.float64)
    conv = lambda t: torch.nn.functional.conv2d(t, k.expand(t.shape[1], 1, 3, 3), padding=1, groups=t.shape[1])  # noqa: E731
    removed = (~keep).double()
    u, x = filled.double(), x.double()
    degree = conv(torch.ones_like(u))
    b = conv(x * (1 - removed)) * removed
    au = (degree * u - conv(u * removed)) * removed
    return ((au - b).flatten(1).norm(dim=1) / b.flatten(1).norm(dim=1).clamp_min(1e-30))


@pytest.mark.slow
@pytest.mark.parametrize("h, w", [(224, 224), (131, 97)])
def test_imputation_solves_its_system_at_every_percentile(h, w):
    """The multigrid-preconditioned solve meets its tolerance on every MoRF and LeRF mask, at the
    model's size and at odd sizes (the coarse grids pad), and leaves the kept pixels alone."""
    torch.manual_seed(1)
    x = torch.randn(3, h, w)
    masks = keep_masks(smooth_map(h, w, 4))
    batch = x[None].expand(len(masks), *x.shape)
    filled = impute(batch, masks, noise=0)
    assert torch.equal(filled[masks.expand_as(filled)], batch[masks.expand_as(batch)])
    assert float(_relative_residual(batch, masks, filled).max()) <= 1e-4


def test_imputation_of_nothing_and_of_everything():
    """Nothing removed: the image comes back. Everything removed (no value to spread): zeros,
    the mean of a normalised input."""
    x = torch.randn(2, 3, 40, 40)
    keep = torch.ones(2, 1, 40, 40, dtype=torch.bool)
    keep[1] = False
    filled = impute(x, keep, noise=0)
    assert torch.equal(filled[0], x[0]) and torch.equal(filled[1], torch.zeros_like(x[1]))
