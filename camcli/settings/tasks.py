"""Which task a run is, and the settings each task does not take.

A model's task comes from what it is (torchvision's detectors and segmenters, HuggingFace's
semantic segmenters); `task` may state it, and may make a model of the user's own class a
segmenter, but never changes it otherwise. A setting of another task is refused, not ignored:
it would change nothing. Torch-free: it reads the loaded model's recorded task alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from camcli.errors import UsageError

if TYPE_CHECKING:
    from camcli.engine.loaded import LoadedModel
    from camcli.settings.fields import ExplainSettings


#: settings a detection run has no use for: what they choose is a classifier's (its class, head,
#: input framing) or is not offered for boxes yet; the value that leaves them out
CLASSIFIER_ONLY = {"target": None, "head": "auto", "threshold": None, "explain_topk": None, "output": None,
                   "target_image": None, "target_embedding": None, "direction": "higher", "score": "logit",
                   "aug_smooth": False, "fuse": None, "resize": "stretch", "input_size": None, "mean": None,
                   "std": None, "topk": 1, "boxes": False, "caption": False, "panel": False, "precision": "fp32"}
#: of those, what a segmentation run takes too: the classes to explain, the part of the output, the
#: input's size, framing and normalisation (a segmenter is fed as a classifier is)
SEGMENTATION_TAKES = ("target", "output", "resize", "input_size", "mean", "std")
#: settings only a segmentation run takes, and the value that leaves them out
SEGMENTATION_ONLY = {"min_area": 0.01, "background": False, "region": None, "save_mask": False}
#: settings only a detection run takes
DETECTION_ONLY = {"score_threshold": 0.5, "max_detections": 20, "detection_maps": "each"}
#: what `task` may make of a model loaded as a classifier (camcli cannot tell a segmenter of one's own class)
_CAN_BE_STATED = {"classification": ("segmentation",)}


def checked_task(s: ExplainSettings, loaded: LoadedModel) -> str:
    """The run's task: the model's own, which `task` may state but not change (except that a model
    of the user's own class is a segmenter when `task` says so); each task refuses the settings it
    does not take."""
    task = loaded.task
    if s.task not in ("auto", task):
        if s.task not in _CAN_BE_STATED.get(task, ()):
            if task == "classification":  # and `task` detection: a detector's outputs are read only where known
                raise UsageError(f"`task` detection, but {loaded.architecture} is no detector camcli knows: camcli "
                                 "explains torchvision's detector classes (Faster/Mask/Keypoint R-CNN, RetinaNet, "
                                 "FCOS, SSD) and Ultralytics YOLO, whose outputs it can read for certain")
            what = {"detection": "a detector: it returns boxes", "segmentation": "a segmenter: it scores every pixel"}
            raise UsageError(f"`task` {s.task}, but {loaded.architecture} is {what[task]}; leave `task` out")
        task = loaded.task = s.task
    _refuse_others(s, task)
    return task


def _refuse_others(s: ExplainSettings, task: str) -> None:
    """A setting of another task is refused, not ignored: it would change nothing."""
    if task == "detection":
        given = [name for name, left_out in CLASSIFIER_ONLY.items() if getattr(s, name) != left_out]
        if given:
            raise UsageError(f"{', '.join(f'`{name}`' for name in given)}: a classifier's setting, which a detection "
                             "run does not take (each box is explained by its own score; the detector sizes images "
                             "itself)")
    if task == "segmentation":
        given = [name for name, left_out in CLASSIFIER_ONLY.items()
                 if name not in SEGMENTATION_TAKES and getattr(s, name) != left_out]
        given += [name for name, left_out in DETECTION_ONLY.items() if getattr(s, name) != left_out]
        if given:
            raise UsageError(f"{', '.join(f'`{name}`' for name in given)}: not a segmentation run's setting (each "
                             "class found is explained by the sum of its scores over its mask)")
        if s.resize == "crop":
            raise UsageError("`resize` crop cuts parts of the image away, which a segmentation run would leave "
                             "unsegmented: use stretch or letterbox")
    else:
        given = [name for name, left_out in SEGMENTATION_ONLY.items() if getattr(s, name) != left_out]
        if given:
            raise UsageError(f"{', '.join(f'`{name}`' for name in given)}: a segmentation run's setting, and this "
                             f"is a {task} run (`task` segmentation makes a model of your own class a segmenter)")
