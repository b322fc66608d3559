"""Video classifiers by name: torchvision's ``r3d_18``, ``mc3_18``, ``r2plus1d_18``, ``s3d``,
``mvit_v1_b``, ``mvit_v2_s`` and ``swin3d_t/s/b``, with their Kinetics-400 weights or a checkpoint.

A video model takes a clip, (N, 3, T, H, W). What the clip must be travels with the weights, as
for images: ``transforms()`` gives the frames' resize and crop, mean and std; the weights' notes
give the clip as the model was measured on it (``clip_len=16``, ``frame_rate=15``), which camcli
samples by default (:class:`ClipPreset`). MViT takes one clip size only (its positional encoding
and token grid are built for it): that size is read from the model and any other is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from camcli.engine.loaded import LoadedModel
from camcli.errors import UsageError, unknown
from camcli.models.checkpoints import OWN_MODEL_HINT, file_sha256, load_into, named_state
from camcli.models.labels import fit_labels, given_labels
from camcli.models.sources import ModelRequest, ModelSource
from camcli.models.torchvision_weights import build_with_weights, weights_for_classes

#: frames per clip and the frames' side when neither the weights nor the settings say (R3D's)
DEFAULT_CLIP_LEN = 16
DEFAULT_SIDE = 112
#: Kinetics' mean and standard deviation, as torchvision's video weights normalise
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)


@dataclass(frozen=True)
class ClipPreset:
    """How a video model's clips are made: ``clip_len`` frames ``frame_rate`` frames per second
    apart (``None``: every frame), each resized (``resize``: a short side, or (height, width)) and
    centre-cropped to the model's input."""

    clip_len: int = DEFAULT_CLIP_LEN
    frame_rate: float | None = None
    resize: tuple[int, ...] | None = None

    def describe(self) -> dict:
        return {"clip_len": self.clip_len, "frame_rate": self.frame_rate,
                "resize": list(self.resize) if self.resize else None}


def video_models() -> list[str]:
    """Every video architecture in torchvision's registry (no download)."""
    import torchvision  # here: a run of one's own 3D model never imports torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models.video))


def is_video_model(model: nn.Module) -> bool:
    """Whether ``model`` is of one of torchvision's video classes (whatever its weights or size)."""
    if not type(model).__module__.startswith("torchvision."):
        return False
    from torchvision.models.video import MViT, S3D, SwinTransformer3d, VideoResNet

    return isinstance(model, (VideoResNet, S3D, MViT, SwinTransformer3d))


def fixed_clip(model: nn.Module) -> tuple[int, int, int] | None:
    """The one (T, H, W) an MViT takes (its positional grid times its patch stride), else ``None``."""
    encoding, proj = getattr(model, "pos_encoding", None), getattr(model, "conv_proj", None)
    if not (hasattr(encoding, "temporal_size") and isinstance(proj, nn.Conv3d)):
        return None
    grid = (int(encoding.temporal_size), *map(int, encoding.spatial_size))
    return tuple(g * s for g, s in zip(grid, proj.stride))


def preset_of(weights) -> ClipPreset:
    """The clip the weights were measured on: their notes' ``clip_len`` and ``frame_rate``, their
    transforms' resize."""
    docs = str(weights.meta.get("_docs", ""))
    length = re.search(r"clip_len=(\d+)", docs)
    rate = re.search(r"frame_rate=([\d.]+)", docs)
    resize = tuple(int(v) for v in weights.transforms().resize_size)
    return ClipPreset(int(length.group(1)) if length else DEFAULT_CLIP_LEN, float(rate.group(1)) if rate else None,
                      resize)


def load_video_model(architecture: str, weights: str | None, checkpoint, num_classes: int | None, labels,
                     trust: bool, side: tuple[int, int] | None) -> LoadedModel:
    """``architecture`` with torchvision weights, or built empty and filled from ``checkpoint`` (the
    DEFAULT weights' preprocessing and clip then stand for its own: a fine-tune keeps them)."""
    if architecture not in video_models():
        raise unknown("video model", architecture, video_models(), "Run `camcli models` for the list.")
    import torchvision

    label_list = given_labels(labels)
    defaults = torchvision.models.get_model_weights(architecture).DEFAULT
    extra: dict = {}
    if checkpoint is not None:
        state = named_state(checkpoint, weights, trust)
        n = num_classes or _classes_in(architecture, state)
        model = _build(architecture, n)
        load_into(model, state, str(checkpoint), hint=OWN_MODEL_HINT)
        if label_list is None and n == len(defaults.meta["categories"]):
            label_list, extra["labels_from"] = list(defaults.meta["categories"]), str(defaults)
        extra |= {"checkpoint": str(checkpoint), "checkpoint_sha256": file_sha256(checkpoint)}
        w = defaults
    elif weights is None or str(weights).lower() == "none":
        n = num_classes or (len(label_list) if label_list else len(defaults.meta["categories"]))
        model, w = _build(architecture, n), defaults
    else:
        w, categories = weights_for_classes(architecture, str(weights), num_classes)
        model = build_with_weights(architecture, w)
        n, label_list, extra["weights"] = len(categories), label_list or categories, str(w)
    t = w.transforms()
    preset = preset_of(w)
    crop = tuple(int(v) for v in t.crop_size) if len(t.crop_size) == 2 else (int(t.crop_size[0]),) * 2
    fixed = fixed_clip(model)
    if side and fixed and tuple(side) != fixed[1:]:
        raise UsageError(f"{architecture} takes {fixed[1]}x{fixed[2]} frames only (its token grid is built for them); "
                         "leave `input_size` out")
    size = fixed or (preset.clip_len, *(side or crop))
    return LoadedModel(model.eval(), architecture, fit_labels(label_list, n, "`labels`"), size, tuple(t.mean),
                       tuple(t.std), clip=ClipPreset(size[0], preset.frame_rate, preset.resize), **extra)


def _build(architecture: str, num_classes: int) -> nn.Module:
    import torchvision

    try:
        return torchvision.models.get_model(architecture, weights=None, num_classes=num_classes)
    except (TypeError, ValueError) as e:
        raise UsageError(f"cannot build {architecture}: {e}") from e


def _classes_in(architecture: str, state: dict[str, torch.Tensor]) -> int:
    """Class count from the last classifier weight the architecture has (S3D's is a 1x1x1 convolution)."""
    with torch.device("meta"):
        probe = _build(architecture, 400)
    key = None
    for name, module in probe.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv3d)):
            key = f"{name}.weight"
    if key not in state:
        raise UsageError(f"the checkpoint is not a {architecture}'s: it has no {key!r}; pass `num_classes`, or name "
                         "the code that builds your model with `model` path/to/file.py:function")
    return int(state[key].shape[0])


class TorchvisionVideo(ModelSource):
    """torchvision's video classifiers by name, with their weights or a checkpoint."""

    name = "torchvision-video"

    def claims(self, request: ModelRequest) -> bool:
        return isinstance(request.spec, str) and request.spec in video_models()

    def load(self, request: ModelRequest) -> LoadedModel:
        if request.model_args:
            raise UsageError("`model_arg` is for a factory or a detector's builder; a named video classifier takes "
                             "none")
        return load_video_model(request.spec, request.weights, request.checkpoint, request.num_classes,
                                request.labels, request.trust, request.input_size)


VIDEO = TorchvisionVideo()
