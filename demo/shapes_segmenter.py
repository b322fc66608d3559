"""camcli's demo segmenter: a Lite R-ASPP built from torchvision's own classes, small enough to ship.

A ResNet-18 trunk up to ``layer3`` (stride 16; initialised from the demo classifier, which learnt
these shapes) feeds torchvision's ``LRASPP`` head, which refines the coarse ``layer3`` map with
``layer2``'s stride-8 features; the output is ``{"out": (N, 7, H, W)}``, as torchvision's
segmenters give it. ``camcli explain --model demo/shapes_segmenter.py:build --checkpoint
demo/shapes_lraspp.safetensors`` loads it; ``configs/demo-segment.toml`` says the same.
Trained by ``scripts/train_segmenter.py``.
"""

from __future__ import annotations

import torchvision
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.segmentation.lraspp import LRASPP

#: background first, as torchvision's segmenters number their classes
CLASSES = ("__background__", "circle", "square", "triangle", "star", "cross", "ring")


def build(num_classes: int = len(CLASSES)) -> LRASPP:
    """The demo segmenter, untrained (weights come from its checkpoint)."""
    trunk = torchvision.models.resnet18(weights=None)
    backbone = IntermediateLayerGetter(trunk, {"layer2": "low", "layer3": "high"})
    return LRASPP(backbone, low_channels=128, high_channels=256, num_classes=num_classes, inter_channels=128)
