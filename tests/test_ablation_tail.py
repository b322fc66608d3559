"""Ablation-CAM runs only the part of the model after the layer where the model can be cut there,
and gives the paper's map whichever way it runs: cut, whole (a skip crosses the layer), or a model
changed after it was cut."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from camcli.engine.explainer import Explainer
from camcli.engine.methods import get_method
from test_parity import _ablation_by_hand


def _by_hand(model: nn.Module, layer: str, x: torch.Tensor, target: int) -> torch.Tensor:
    """The paper's map, one zeroed channel at a time through the whole model (test_parity's)."""
    return torch.from_numpy(_ablation_by_hand(model, model.get_submodule(layer), x, target)).float()


def _stem_calls(model: nn.Module, stem: nn.Module, run) -> int:
    """How many times ``stem`` (the model's first layer) runs during ``run()``."""
    calls = [0]
    h = stem.register_forward_hook(lambda *a: calls.__setitem__(0, calls[0] + 1))
    try:
        run()
    finally:
        h.remove()
    return calls[0]


def _explained(model: nn.Module, stem: nn.Module, layer: str, x: torch.Tensor, target: int, cam_batch_size: int,
               **kw):
    """Ablation-CAM's maps of ``x`` at ``layer``, and how many times ``stem`` ran for them."""
    explainer = Explainer(model, [layer], [get_method("ablationcam", cam_batch_size=cam_batch_size)])
    result = {}
    calls = _stem_calls(model, stem, lambda: result.update(r=explainer(x, target=target, **kw)))
    return result["r"].maps[("ablationcam", layer)], calls


@pytest.mark.slow
def test_ablationcam_after_the_last_block_runs_the_backbone_once_not_once_per_channel():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=5).eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    maps, calls = _explained(model, model.conv1, "layer4.1", x, 3, 32)
    # the shared forward, and the tail checked against the whole model on one image; 512
    # channels in chunks of 32 would be 16 more forwards per image through the whole model
    assert calls == 2
    for i in range(2):
        want = _by_hand(model, "layer4.1", x[i:i + 1], 3)
        torch.testing.assert_close(maps.maps[i], want, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_ablationcam_inside_a_residual_block_feeds_the_tail_the_blocks_input():
    """Inside a residual block the block's input is added after the layer: the tail gets it as an
    input of its own, computed once per batch, and each image's map is still the paper's (also
    when only some images of the batch are wanted)."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=5).eval()
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    maps, calls = _explained(model, model.conv1, "layer4.0.conv1", x, 1, 32, wanted=[True, False, True])
    # the shared forward, the check (the whole model and the part before the cut, on two images),
    # the part before the cut for the batch; 16 chunks per image through the whole model would be 33
    assert calls == 4
    assert bool(maps.empty[1])
    for i in (0, 2):
        want = _by_hand(model, "layer4.0.conv1", x[i:i + 1], 1)
        torch.testing.assert_close(maps.maps[i], want, atol=1e-4, rtol=1e-4)


class _Batchless(nn.Module):
    """A head that adds a value made before the layer and not per image (the mean over the batch):
    the tail could not be fed copies of one image, so the model is not cut."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.body = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        s = self.stem(x)
        shared = s.mean((0, 2, 3))  # one value for the whole batch
        return self.fc(torch.relu(self.body(s)).mean((2, 3)) + shared)


def test_ablationcam_where_a_value_before_the_layer_is_not_per_image_runs_the_whole_model():
    torch.manual_seed(0)
    model = _Batchless().eval()
    x = torch.randn(1, 3, 10, 10, generator=torch.Generator().manual_seed(5))
    maps, calls = _explained(model, model.stem, "body", x, 0, 2)
    assert calls == 1 + 2 + 4 // 2  # the shared forward, the refused check (two forwards), 2 chunks
    torch.testing.assert_close(maps.maps[0], _by_hand(model, "body", x, 0), atol=1e-4, rtol=1e-4)


class _Scaled(nn.Module):
    """A small CNN whose head weighs its channels by a Python list (a trace freezes it as a constant)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 6, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(6, 3)
        self.gains = [1.0] * 6

    def forward(self, x):
        pooled = self.body(x).mean((2, 3))
        return self.fc(pooled.new_tensor(self.gains) * pooled)


def test_ablationcam_notices_a_model_changed_after_it_was_cut():
    torch.manual_seed(0)
    model = _Scaled().eval()
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    explainer = Explainer(model, ["body.3"], [get_method("ablationcam")])
    assert _stem_calls(model, model.body[0], lambda: explainer(x, target=0)) == 2  # cut after body.3
    first = explainer(x, target=0).maps[("ablationcam", "body.3")].maps[0]
    torch.testing.assert_close(first, _by_hand(model, "body.3", x, 0), atol=1e-4, rtol=1e-4)
    model.gains = [4.0, 0.0, 1.0, 0.5, 0.0, 2.0]  # the traced tail still has [1.0] * 6
    second = explainer(x, target=0).maps[("ablationcam", "body.3")].maps[0]
    want = _by_hand(model, "body.3", x, 0)
    assert not torch.allclose(want, first, atol=1e-2)  # the change matters to the map
    torch.testing.assert_close(second, want, atol=1e-4, rtol=1e-4)


class _PairBlock(nn.Module):
    """A block returning (features, extra), as attention blocks that return their weights do."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        return y, y.mean()


class _PairNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = _PairBlock()
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        # fed a tensor instead of the tuple, out[0] would be the first image: right for a batch of
        # one (the check), wrong for a batch of ablated copies
        out = self.block(x)
        return self.fc(out[0].mean((-2, -1)).reshape(-1, 6))


def test_ablationcam_at_a_layer_that_returns_a_tuple_runs_the_whole_model():
    torch.manual_seed(0)
    model = _PairNet().eval()
    x = torch.randn(1, 3, 12, 12, generator=torch.Generator().manual_seed(4))
    maps, calls = _explained(model, model.block.conv, "block", x, 1, 2)
    assert calls == 1 + 1 + 6 // 2  # the shared forward, the check of the cut (refused), 3 chunks
    with torch.no_grad():
        acts = model.block(x)[0][0]
        y = float(model(x)[0, 1])
    drops = torch.tensor([float(model.fc(torch.where(torch.arange(6)[:, None, None] == k, 0, acts).mean((1, 2)))[1])
                          for k in range(6)])
    cam = torch.relu((((y - drops) / y)[:, None, None] * acts).sum(0))
    want = (cam - cam.min()) / (cam.max() - cam.min())
    torch.testing.assert_close(maps.maps[0], want, atol=1e-4, rtol=1e-4)
