"""What kind of model a module is, asked without importing torchvision.

Importing torchvision's detection operators loads ``torch._dynamo``: over a second of every run's
start, which a run of a user's 3D network, an exported program or a HuggingFace folder never needs.
An instance of one of torchvision's detector or segmenter classes (or of camcli's YOLO wrapper)
can only exist once the module that defines its class has been imported, so the classes are
looked up in ``sys.modules``: a model whose class module was never imported is none of them.
"""

from __future__ import annotations

import sys

from torch import nn

#: (module, class) of the detector classes camcli explains as detectors (their subclasses too)
DETECTOR_CLASSES = (("torchvision.models.detection.generalized_rcnn", "GeneralizedRCNN"),
                    ("torchvision.models.detection.retinanet", "RetinaNet"),
                    ("torchvision.models.detection.fcos", "FCOS"),
                    ("torchvision.models.detection.ssd", "SSD"),
                    ("camcli.models.yolo", "YoloDetector"))
#: the same for torchvision's semantic segmenters
SEGMENTER_CLASSES = (("torchvision.models.segmentation._utils", "_SimpleSegmentationModel"),
                     ("torchvision.models.segmentation.lraspp", "LRASPP"))


def _imported(classes: tuple[tuple[str, str], ...]) -> tuple[type, ...]:
    return tuple(getattr(sys.modules[m], c) for m, c in classes if m in sys.modules and hasattr(sys.modules[m], c))


def is_detector(model: nn.Module) -> bool:
    """Whether ``model`` is one of torchvision's detector classes (or a subclass), or a YOLO."""
    classes = _imported(DETECTOR_CLASSES)
    return bool(classes) and isinstance(model, classes) or is_yolo_model(model)


def is_segmenter(model: nn.Module) -> bool:
    """Whether ``model`` is one of torchvision's segmenter classes or a HuggingFace semantic segmenter."""
    classes = _imported(SEGMENTER_CLASSES)
    if classes and isinstance(model, classes):
        return True
    return type(model).__name__.endswith("ForSemanticSegmentation") and hasattr(model, "config")


def is_yolo_model(obj) -> bool:
    """Whether ``obj`` is an Ultralytics detection model (without importing Ultralytics)."""
    return any(c.__name__ == "DetectionModel" and c.__module__.startswith("ultralytics") for c in type(obj).__mro__)
