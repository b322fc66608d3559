"""One object that turns settings into a ready explainer.

:class:`ExplainSession` resolves everything a run needs, once: the device, the model (with its
BatchNorm folded and channels-last convolutions), the target layers, the methods, the
:class:`~camcli.engine.explainer.Explainer` checked on a dummy batch, and the class to explain.
Every entry point asks it: ``camcli explain``, ``camcli.explain(...)``, resumed and sharded
runs, and ``camcli evaluate`` when it explains images itself.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import torch

from camcli import tasks
from camcli.engine.devices import describe, pick_device
from camcli.engine.images import ImageItem
from camcli.engine.layer_names import display_name
from camcli.engine.method_options import BY_NAME, takes
from camcli.engine.methods import CAMMethod, get_method
from camcli.engine.stream import ImageResult
from camcli.errors import UsageError
from camcli.models import LoadedModel, load_model
from camcli.settings import ExplainSettings, cam_batch_size_for
from camcli.settings.checks import numbers
from camcli.tasks import Task

if TYPE_CHECKING:
    from camcli.run.memory import MemoryPlan


#: from this many forward passes per image on, the run's log says what they cost and what cuts them
MANY_PASSES = 32


@dataclass
class ExplainSession:
    """A loaded model and a checked explainer, ready for images."""

    settings: ExplainSettings
    device: torch.device
    loaded: LoadedModel
    layers: list[str]  # canonical dotted names
    methods: list[CAMMethod]
    explainer: object  # the task's explainer (camcli.engine.explainer.Explainer for classifiers)
    target: int | None  # the class explained in every image; None: each image's own (or no classes)
    #: what the model does (camcli/tasks/): how its images are explained, written and evaluated
    task: Task = field(default_factory=lambda: tasks.fallback())
    #: what the run should know about how the model is run (kept channels-first, and why)
    notes: list[str] = field(default_factory=list)
    #: what else the task's results need (a segmentation run's regions)
    context: object = None

    @classmethod
    def open(cls, settings: ExplainSettings, local_rank: int | None = None,
             module: torch.nn.Module | None = None) -> ExplainSession:
        """Load the model, resolve layers, methods and target, and check them on a dummy batch.

        Under a launcher (``local_rank`` set) device ``auto`` means this rank's own GPU.
        ``module``: the model itself (``camcli.explain(model=net)``) instead of ``settings.model``.
        """
        device = pick_device(settings.device)
        if local_rank is not None and device.type == "cuda" and device.index is None:
            device = torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
        if settings.precision != "fp32" and device.type != "cuda":
            raise UsageError(f"`precision` {settings.precision} is GPU-only (CUDA autocast); on {device.type} camcli "
                             "computes in fp32 (CPU bf16 autocast is slower or unsupported on many CPUs)")
        loaded = load_model(module if module is not None else settings.model,
                            weights=settings.weights, checkpoint=settings.checkpoint, model_args=settings.model_arg,
                            num_classes=settings.num_classes, labels=settings.labels,
                            input_size=settings.input_size, device=device, trust=settings.trust_checkpoint,
                            mean=numbers(settings.mean, "mean"), std=numbers(settings.std, "std"),
                            output=settings.output)
        task = tasks.decide(settings, loaded)
        if loaded.task != task.name:  # stated with `task` (a model of the user's own class as a segmenter)
            loaded = replace(loaded, task=task.name)
        names, notes = list(dict.fromkeys(settings.method)), []
        default = task.default_method(loaded) if settings.sources.get("method", "default") == "default" else None
        if default is not None:
            names, notes = [default[0]], [default[1]]
        built = task.open(settings, device, loaded, build_methods(names, settings, device))
        return cls(settings, device, built.loaded, built.layers, built.methods, built.explainer, built.target,
                   task=task, notes=notes + built.notes, context=built.context)

    @property
    def maps_per_image(self) -> int:
        """Maps per explained class (a detection run: per box)."""
        return len(self.explainer.map_keys())

    def describe(self) -> str:
        """One log line: model, layers, methods, device."""
        lm = self.loaded
        source = lm.source or {}
        weights = (lm.weights or lm.checkpoint or (source["spec"] if source.get("kind") == "huggingface" else None)
                   or ("its own weights" if source else "random weights"))
        size = self.task.input_in_words(lm)
        return (f"model {lm.architecture} ({weights}), {lm.num_classes} "
                f"classes, {size}{self.explained}; layer "
                f"{', '.join(display_name(l) for l in self.layers)}; method "
                f"{', '.join(m.name for m in self.methods)}; device {describe(self.device)}"
                + (f"; labels of {lm.labels_from} (its class count matches the checkpoint's; `labels` names "
                   "others)" if lm.labels_from else "")
                + "".join(f"; note: {note}" for m in self.methods for note in m.notes))

    @property
    def explained(self) -> str:
        """What each map explains, in words (the log line and run.json)."""
        return self.task.explained(self)

    def empty_cause(self) -> str | None:
        """Why maps are empty at every layer when the cause is the model and not the layer (a
        classifier whose weights are all zero scores every class the same for every image)."""
        return self.task.empty_cause(self)

    def many_passes(self) -> list[tuple[CAMMethod, str, int, int]]:
        """``(method, layer, channels, passes)`` for each method that runs many forward passes per image."""
        found = []
        for method in self.methods:
            for layer in (self.layers if method.uses_layer else []):
                channels = self.explainer.channels.get(layer, 0)
                passes = method.passes_per_image(channels) * (6 if self.settings.aug_smooth else 1)
                if passes >= MANY_PASSES:
                    found.append((method, layer, channels, passes))
        return found

    def cost_notes(self) -> list[str]:
        """The session's notes, then a line for each method that runs many forward passes per image:
        how many, and which setting cuts them (in the core's vocabulary: `max_n`)."""
        return list(self.notes) + [
            f"{method.name} runs up to {passes} forward passes per image at {display_name(layer)} "
            f"({channels} channels, {getattr(method, 'cam_batch_size', 1)} inputs a pass): {method.cut_by}"
            for method, layer, channels, passes in self.many_passes()]

    @property
    def batch_size(self) -> int:
        """Images per shared forward: the setting's, or 1 when a method runs many passes per image and
        the batch size was not given. Such a method explains one image after another anyway, and a
        batch would hold back every image's files (and its progress) until the last one is done."""
        if self.settings.sources.get("batch_size", "default") == "default" and self.many_passes():
            return 1
        return self.settings.batch_size

    def results(self, items: Sequence[ImageItem], skip: Collection[str] = frozenset(),
                plan: MemoryPlan | None = None) -> Iterator[ImageResult]:
        """The images' results in input order (``skip``: relative paths to pass over; ``plan``: the
        memory plan's batches, workers and prefetch)."""
        return self.task.results(self, items, skip, plan)


def build_methods(names: Sequence[str], settings: ExplainSettings, device: torch.device) -> list[CAMMethod]:
    """The methods named, each given the settings it takes (``cam_batch_size`` sized for the device)."""
    options = {name: getattr(settings, name) for name in BY_NAME} | {
        "cam_batch_size": cam_batch_size_for(settings, device)}
    return [get_method(m, eigen_smooth=settings.eigen_smooth,
                       **{k: v for k, v in options.items() if k in takes(m.strip().lower())})
            for m in names]
