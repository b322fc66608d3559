"""camcli's demo detector: an FCOS built from torchvision's own classes, small enough to ship.

A ResNet-18 trunk (up to ``layer3``; initialised from the demo classifier, which learnt these
shapes), a feature pyramid on ``layer2`` and ``layer3`` with two extra levels (strides 8 to
64), and FCOS's head. ``camcli explain --model demo/shapes_detector.py:build --checkpoint
demo/shapes_fcos.safetensors`` loads it; ``configs/demo-detect.toml`` says the same.
Trained by ``scripts/train_detector.py``.
"""

from __future__ import annotations

import torchvision
from torchvision.models.detection import FCOS
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

#: background first: torchvision's detectors number classes from 1
CLASSES = ("__background__", "circle", "square", "triangle", "star", "cross", "ring")
FPN_CHANNELS = 128


def build(num_classes: int = len(CLASSES), min_size: int = 256, max_size: int = 512,
          score_thresh: float = 0.2, detections_per_img: int = 20) -> FCOS:
    """The demo detector, untrained (weights come from its checkpoint)."""
    trunk = torchvision.models.resnet18(weights=None)
    backbone = BackboneWithFPN(trunk, {"layer2": "0", "layer3": "1"}, [128, 256], FPN_CHANNELS,
                               extra_blocks=LastLevelP6P7(FPN_CHANNELS, FPN_CHANNELS))
    anchors = AnchorGenerator(sizes=((8,), (16,), (32,), (64,)), aspect_ratios=((1.0,),) * 4)
    return FCOS(backbone, num_classes, min_size=min_size, max_size=max_size, anchor_generator=anchors,
                score_thresh=score_thresh, detections_per_img=detections_per_img)
