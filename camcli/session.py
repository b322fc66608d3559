"""One object that turns settings into a ready explainer.

:class:`ExplainSession` resolves everything a run needs, once: the device, the model (with its
BatchNorm folded and channels-last convolutions), the target layers, the methods, the
:class:`~camcli.engine.explainer.Explainer` checked on a dummy batch, and the class to explain.
Every entry point asks it: ``camcli explain``, ``camcli.explain(...)``, resumed and sharded
runs, and ``camcli evaluate`` when it explains images itself.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from camcli.engine.devices import describe, pick_device
from camcli.engine.explainer import Explainer
from camcli.engine.images import ImageItem
from camcli.engine.layouts import NotAMap
from camcli.engine.methods import CAMMethod, get_method
from camcli.engine.stream import ImageResult, iter_results
from camcli.errors import UsageError, unknown
from camcli.models import LoadedModel, load_model
from camcli.models.batchnorm_folding import fold_batchnorm
from camcli.engine.layer_names import display_name, resolve_layer
from camcli.models.layer_search import default_layer
from camcli.settings import ExplainSettings, cam_batch_size_for
from camcli.settings.checks import numbers

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
    explainer: Explainer
    target: int | None  # the class explained in every image; None: each image's top-1

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
        methods = [get_method(m, cam_batch_size=cam_batch_size_for(settings, device), max_n=settings.max_n,
                              fem_k=settings.fem_k, kpca_kernel=settings.kpca_kernel, kpca_gamma=settings.kpca_gamma,
                              eigen_smooth=settings.eigen_smooth, finer_alpha=settings.finer_alpha,
                              noise_samples=settings.noise_samples, noise_std=settings.noise_std)
                   for m in dict.fromkeys(settings.method)]
        loaded = load_model(module if module is not None else settings.model,
                            weights=settings.weights, checkpoint=settings.checkpoint, model_args=settings.model_arg,
                            num_classes=settings.num_classes, labels=settings.labels,
                            input_size=settings.input_size, device=device, trust=settings.trust_checkpoint,
                            mean=numbers(settings.mean, "mean"), std=numbers(settings.std, "std"))
        layers = ([resolve_layer(loaded.model, spec) for spec in settings.layer] if settings.layer
                  else [default_layer(loaded.model, loaded.input_size, device)])
        # BatchNorm folded into its convolution (not at the target layers): ~10% faster inference
        fold_batchnorm(loaded.model, keep=layers)
        if device.type in ("cpu", "cuda"):
            # NHWC convolutions: 1.2-1.4x faster inference on 2 CPU cores (benchmarks/), and the
            # layout tensor cores want; results differ from NCHW only in float rounding
            loaded.model.to(memory_format=torch.channels_last)
        explainer = Explainer(loaded.model, layers, methods, score=settings.score, precision=settings.precision,
                              strict=settings.strict, layer_layout=settings.layer_layout,
                              aug_smooth=settings.aug_smooth, fuse=settings.fuse)
        try:
            explainer.validate(loaded.input_size, device)
        except NotAMap as e:
            suggestion = display_name(default_layer(loaded.model, loaded.input_size, device))
            raise UsageError(f"{e}; `layer` {suggestion} gives a map (see `camcli layers {settings.model}`)") from None
        target = resolve_target(settings.target, loaded.labels)
        return cls(settings, device, loaded, layers, methods, explainer, target)

    @property
    def maps_per_image(self) -> int:
        return len(self.explainer.map_keys())

    def describe(self) -> str:
        """One log line: model, layers, methods, device."""
        lm = self.loaded
        source = lm.source or {}
        weights = (lm.weights or lm.checkpoint or (source["spec"] if source.get("kind") == "huggingface" else None)
                   or ("its own weights" if source else "random weights"))
        return (f"model {lm.architecture} ({weights}), {lm.num_classes} "
                f"classes, input {lm.input_size[0]}x{lm.input_size[1]}; layer "
                f"{', '.join(display_name(l) for l in self.layers)}; method "
                f"{', '.join(m.name for m in self.methods)}; device {describe(self.device)}"
                + "".join(f"; note: {note}" for m in self.methods for note in m.notes))

    def cost_notes(self) -> list[str]:
        """A line for each method that runs many forward passes per image: how many, and which
        setting cuts them (in the core's vocabulary: `max_n`)."""
        lines = []
        for method in self.methods:
            for layer in (self.layers if method.uses_layer else []):
                channels = self.explainer.channels.get(layer, 0)
                passes = method.passes_per_image(channels) * (6 if self.settings.aug_smooth else 1)
                if passes >= MANY_PASSES:
                    lines.append(f"{method.name} runs up to {passes} forward passes per image at {display_name(layer)} "
                                 f"({channels} channels, {getattr(method, 'cam_batch_size', 1)} inputs a pass): {method.cut_by}")
        return lines

    def results(self, items: Sequence[ImageItem], skip: Collection[str] = frozenset(),
                plan: MemoryPlan | None = None) -> Iterator[ImageResult]:
        """Explain ``items`` in order (see :func:`~camcli.engine.stream.iter_results`), batched as
        ``plan`` says (by default: by count, with the ``workers`` setting)."""
        s = self.settings
        return iter_results(self.loaded, self.explainer, items, batch_size=s.batch_size,
                            workers=plan.workers if plan else s.workers, device=self.device, target=self.target,
                            topk=s.topk, max_pixels=s.max_pixels, skip=skip,
                            batches=plan.batches if plan else None, prefetch=plan.prefetch if plan else 2,
                            resize=s.resize, seed=s.seed)


def resolve_target(spec: str | None, labels: list[str]) -> int | None:
    """The ``target`` setting: a class index or a label name (case-insensitive), with suggestions."""
    if spec is None or str(spec).strip() == "":
        return None
    text = str(spec).strip()
    if text.lstrip("-").isdigit():
        index = int(text)
        if not 0 <= index < len(labels):
            raise UsageError(f"`target` {index} is out of range: the model has {len(labels)} classes "
                             f"(0..{len(labels) - 1})")
        return index
    lowered = [label.lower() for label in labels]
    if text.lower() in lowered:
        return lowered.index(text.lower())
    raise unknown("`target` label", text, labels)
