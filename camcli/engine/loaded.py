"""What the engine is handed: a model in eval mode and everything needed to feed it and name its outputs.

:mod:`camcli.models` makes one from a name, a checkpoint, a factory or a module; the engine
(:mod:`.stream`) reads it and knows nothing of where it came from.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from camcli.engine.framing import DEFAULT_CROP_FRACTION

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class LoadedModel:
    """A model in eval mode plus everything needed to feed it and name its outputs."""

    model: nn.Module
    architecture: str
    labels: list[str]
    input_size: tuple[int, ...]  # (height, width) fed to the model; a volume's (d, h, w), a clip's (frames, h, w)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    weights: str | None = None  # torchvision weights enum member, e.g. "ResNet18_Weights.IMAGENET1K_V1"
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None
    input_channels: int = 3  # what the checkpoint's first convolution takes (1: fed the luminance)
    crop_fraction: float = DEFAULT_CROP_FRACTION  # `resize` crop: crop size over resize size (the weights' preset)
    #: where the model came from beyond a torchvision or timm name: kind (module, factory, pickled),
    #: class (qualified name), and the factory's spec, file and file_sha256 or the weights' hash
    source: dict | None = None
    #: the task a session decided the model serves (a camcli/tasks/ name; the tasks recognise the
    #: model, its source does not say), recorded in run.json
    task: str = "classification"
    #: where the labels came from when no labels were given and the checkpoint has none: torchvision
    #: weights of the same architecture and class count (``ResNet18_Weights.IMAGENET1K_V1``)
    labels_from: str | None = None
    #: a video model's clips as its weights were measured on them (frames, frame rate, the frames'
    #: resize): :class:`camcli.models.video_models.ClipPreset`; ``None`` for every other model
    clip: object | None = None

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def describe(self) -> dict:
        """What run.json records so that a result can be reproduced."""
        return {"architecture": self.architecture, "weights": self.weights, "checkpoint": self.checkpoint,
                "checkpoint_sha256": self.checkpoint_sha256, "num_classes": self.num_classes,
                "input_size": list(self.input_size), "input_channels": self.input_channels,
                "mean": list(self.mean), "std": list(self.std), "source": self.source, "task": self.task,
                **({"labels_from": self.labels_from} if self.labels_from else {}),
                **({"clip": self.clip.describe()} if self.clip is not None else {})}

    def identity(self) -> dict:
        """What ``--resume`` compares beyond the settings: the checkpoint's hash, the model's class,
        the factory file's hash, the handed-over module's weights."""
        ident = {"checkpoint": self.checkpoint_sha256} if self.checkpoint_sha256 else {}
        for key in ("class", "file_sha256", "weights_sha256"):
            if self.source and self.source.get(key):
                ident[f"model_{key}"] = self.source[key]
        return ident
