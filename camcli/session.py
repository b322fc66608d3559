"""One object that turns settings into a ready explainer.

:class:`ExplainSession` resolves everything a run needs, once: the device, the model (with its
BatchNorm folded and channels-last convolutions), the target layers, the methods, the
:class:`~camcli.engine.explainer.Explainer` checked on a dummy batch, and the class to explain.
Every entry point asks it: ``camcli explain``, ``camcli.explain(...)``, resumed and sharded
runs, and ``camcli evaluate`` when it explains images itself.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from camcli.engine.devices import describe, pick_device
from camcli.engine.detection import DetectionExplainer
from camcli.engine.detection_stream import iter_detections
from camcli.engine.segmentation import SegmentationExplainer
from camcli.engine.segmentation_stream import Regions, iter_segments
from camcli.engine.explainer import Explainer
from camcli.engine.heads import checked_kind, probe, read_embedding, reference_embedding
from camcli.engine.method_options import BY_NAME, takes
from camcli.engine.images import ImageItem
from camcli.engine.layouts import NotAMap
from camcli.engine.methods import CAMMethod, get_method
from camcli.engine.stream import ImageResult, iter_results
from camcli.engine.targets import THRESHOLD, Target, resolve_classes
from camcli.errors import UsageError, first_line
from camcli.models import LoadedModel, load_model
from camcli.models.batchnorm_folding import fold_batchnorm
from camcli.engine.layer_names import display_name, resolve_layer
from camcli.models.detectors import default_detector_layer
from camcli.models.segmenters import background_index, default_segmenter_layer, own_segmenter_layer, redraws_output
from camcli.models.layer_search import default_layer
from camcli.settings import ExplainSettings, cam_batch_size_for
from camcli.settings.checks import numbers, region_spec
from camcli.settings.tasks import checked_task

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
    explainer: Explainer | DetectionExplainer | SegmentationExplainer
    target: int | None  # the class explained in every image; None: each image's top-1
    #: or detection: a map per box (engine/detection.py); segmentation: a map per class found
    #: (engine/segmentation.py)
    task: str = "classification"
    regions: Regions | None = None  # segmentation: what each class's score sums over, when not its own mask
    #: what the run should know about how the model is run (kept channels-first, and why)
    notes: list[str] = field(default_factory=list)

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
        options = {name: getattr(settings, name) for name in BY_NAME} | {
            "cam_batch_size": cam_batch_size_for(settings, device)}
        methods = [get_method(m, eigen_smooth=settings.eigen_smooth,
                              **{k: v for k, v in options.items() if k in takes(m.strip().lower())})
                   for m in dict.fromkeys(settings.method)]
        loaded = load_model(module if module is not None else settings.model,
                            weights=settings.weights, checkpoint=settings.checkpoint, model_args=settings.model_arg,
                            num_classes=settings.num_classes, labels=settings.labels,
                            input_size=settings.input_size, device=device, trust=settings.trust_checkpoint,
                            mean=numbers(settings.mean, "mean"), std=numbers(settings.std, "std"),
                            output=settings.output)
        task = checked_task(settings, loaded)
        if task == "detection":
            return cls._detector(settings, device, loaded, methods)
        if task == "segmentation":
            return cls._segmenter(settings, device, loaded, methods)
        layers = ([resolve_layer(loaded.model, spec) for spec in settings.layer] if settings.layer
                  else [default_layer(loaded.model, loaded.input_size, device)])
        # BatchNorm folded into its convolution (not at the target layers): ~10% faster inference
        fold_batchnorm(loaded.model, keep=layers)
        kept_nchw = None
        if device.type in ("cpu", "cuda"):
            # NHWC convolutions: 1.2-1.4x faster inference on 2 CPU cores (benchmarks/), and the
            # layout tensor cores want; results differ from NCHW only in float rounding
            kept_nchw = to_channels_last(loaded.model, loaded.input_size, device)
        target = build_target(settings, loaded, device)
        explainer = Explainer(loaded.model, layers, methods, precision=settings.precision,
                              strict=settings.strict, layer_layout=settings.layer_layout,
                              aug_smooth=settings.aug_smooth, fuse=settings.fuse, target=target)
        try:
            explainer.validate(loaded.input_size, device)
        except NotAMap as e:
            suggestion = display_name(default_layer(loaded.model, loaded.input_size, device))
            raise UsageError(f"{e}; `layer` {suggestion} gives a map (see `camcli layers {settings.model}`)") from None
        session = cls(settings, device, loaded, layers, methods, explainer,
                      target.fixed[0] if len(target.fixed) == 1 else None)
        session.notes = [kept_nchw] if kept_nchw else []
        return session

    @classmethod
    def _detector(cls, settings: ExplainSettings, device: torch.device, loaded: LoadedModel,
                  methods: list[CAMMethod]) -> ExplainSession:
        """The session of a detection run: the detector as it is (no folding: its own frozen
        norms), its backbone as the default layer, checked on a dummy image."""
        model = loaded.model
        default = default_detector_layer(model)
        if settings.layer:
            layers = [resolve_layer(model, spec) for spec in settings.layer]
        elif default is not None:
            layers = [default]
        else:
            raise UsageError(f"{loaded.architecture} has no `backbone`: name the layer to explain with `layer` (see "
                             f"`camcli layers`)")
        if settings.sources.get("method", "default") == "default" and hasattr(model, "default_method"):
            methods = [get_method(model.default_method)]  # YOLO: Eigen-CAM unless a method is named
        explainer = DetectionExplainer(model, layers, methods, loaded.labels, settings.score_threshold,
                                       settings.max_detections, strict=settings.strict)
        explainer.validate(loaded.input_size[0], device)
        return cls(settings, device, loaded, layers, methods, explainer, None, task="detection")

    @classmethod
    def _segmenter(cls, settings: ExplainSettings, device: torch.device, loaded: LoadedModel,
                   methods: list[CAMMethod]) -> ExplainSession:
        """The session of a segmentation run: the segmenter fed as a classifier is (BatchNorm
        folded, channels-last), its backbone's last block (or its decoder's fused features) as the
        default layer, the classes named with `target` or found in each image, checked on a
        dummy image."""
        model = loaded.model
        if settings.layer:
            layers = [resolve_layer(model, spec) for spec in settings.layer]
        else:
            layers = [default_segmenter_layer(model)
                      or own_segmenter_layer(model, loaded.input_size, device, len(loaded.labels))]
        squashed = probe(model, loaded.input_size, device, settings.output).squashed_by is not None
        fold_batchnorm(model, keep=layers)
        notes = [to_channels_last(model, loaded.input_size, device)] if device.type in ("cpu", "cuda") else []
        explainer = SegmentationExplainer(model, layers, methods, list(loaded.labels), settings.min_area,
                                          settings.background, output=settings.output, squashed=squashed,
                                          strict=settings.strict, layer_layout=settings.layer_layout)
        try:
            explainer.validate(loaded.input_size, device)
        except NotAMap as e:
            raise UsageError(f"{e}; name a layer whose output is a map with `layer` (see `camcli layers`)") from None
        if explainer.head.binary:  # one logit per pixel: its two sides are the classes, the negative the background
            named = explainer.labels != ["class_0"]
            explainer.labels = binary_labels(explainer.labels) if named else ["background", "foreground"]
        loaded.labels = explainer.labels
        explainer.classes = resolve_classes(settings.target, explainer.labels)
        explainer.background_index = 0 if explainer.head.binary else background_index(explainer.labels)
        regions = Regions(region_spec(settings.region)) if settings.region else None
        for layer in layers:  # a wrong map without a warning is the worst thing camcli can write
            if redraws_output(model, layer, loaded.input_size, device, explainer.head.scores):
                notes.append(f"warning: the map at {display_name(layer)} redraws the model's own scores (that layer "
                             "outputs the score map itself, resized at most): it shows the predicted mask, not what "
                             "made it; explain a layer before the scores with `layer` (see `camcli layers`)")
        return cls(settings, device, loaded, layers, methods, explainer, None, task="segmentation", regions=regions,
                   notes=[n for n in notes if n])

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
        size = "" if self.task == "detection" else f"input {lm.input_size[0]}x{lm.input_size[1]}; "
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
        if self.task == "segmentation":
            e = self.explainer
            which = (", ".join(e.labels[c] for c in e.classes) if e.classes else
                     f"each class covering {100 * e.min_area:g}% of the image or more"
                     + (", the background included" if e.background else ""))
            over = f"its scores summed over the {self.regions.name}" if self.regions else \
                "the sum of its scores over its predicted mask"
            return f"segmenter: {which}, explained by {over} (pytorch-grad-cam's SemanticSegmentationTarget)"
        if self.task == "detection":
            e = self.explainer
            return (f"detector: each box scoring {e.score_threshold:g} or more (at most {e.max_detections} per image), "
                    "explained by its class score plus its IoU with itself (pytorch-grad-cam's box score)")
        return self.explainer.target.describe()

    def empty_cause(self) -> str | None:
        """Why maps are empty at every layer, when the cause is the model's head and not the layer:
        a classifier whose weights are all zero scores every class the same for every image."""
        from camcli.engine.methods.cam import linear_head

        if self.task != "classification":
            return None
        head = linear_head(self.loaded.model)
        if head is not None and not head[1].weight.detach().any():
            return (f"the model's classifier ({display_name(head[0])}) has all-zero weights, so every class scores "
                    "the same whatever the image and no layer can show evidence; torchvision initialises ViT heads "
                    "to zero: with `weights` none, load trained weights (`checkpoint`)")
        return None

    def cost_notes(self) -> list[str]:
        """The session's notes, then a line for each method that runs many forward passes per image:
        how many, and which setting cuts them (in the core's vocabulary: `max_n`)."""
        lines = list(self.notes)
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
        if self.task == "detection":
            return iter_detections(self.loaded, self.explainer, items, batch_size=s.batch_size,
                                   workers=plan.workers if plan else s.workers, device=self.device,
                                   max_pixels=s.max_pixels, skip=skip, batches=plan.batches if plan else None,
                                   prefetch=plan.prefetch if plan else 2, seed=s.seed)
        if self.task == "segmentation":
            return iter_segments(self.loaded, self.explainer, items, batch_size=s.batch_size,
                                 workers=plan.workers if plan else s.workers, device=self.device,
                                 max_pixels=s.max_pixels, skip=skip, batches=plan.batches if plan else None,
                                 prefetch=plan.prefetch if plan else 2, resize=s.resize, seed=s.seed,
                                 regions=self.regions)
        return iter_results(self.loaded, self.explainer, items, batch_size=s.batch_size,
                            workers=plan.workers if plan else s.workers, device=self.device, target=self.target,
                            topk=s.topk, max_pixels=s.max_pixels, skip=skip,
                            batches=plan.batches if plan else None, prefetch=plan.prefetch if plan else 2,
                            resize=s.resize, seed=s.seed)


def resolve_target(spec: str | None, labels: list[str]) -> int | None:
    """The ``target`` setting as one class index (or ``None``): an index or a label name."""
    found = resolve_classes(spec, labels)
    return found[0] if found else None


def binary_labels(labels: list[str]) -> list[str]:
    """The binary head's two classes, negative first: two given names, ``not X`` and ``X`` for one
    given name, else negative and positive."""
    if len(labels) == 2:
        return list(labels)
    if labels == ["class_0"]:
        return ["negative", "positive"]
    return [f"not {labels[0]}", labels[0]]


def to_channels_last(model, input_size: tuple[int, int], device: torch.device) -> str | None:
    """Make the model channels-last when one dummy pass shows it still runs so (a model that flattens
    with ``x.view(N, -1)`` fails on an NHWC tensor); else keep it as it was and say why."""
    model.to(memory_format=torch.channels_last)
    x = torch.zeros(1, 3, *input_size, device=device).contiguous(memory_format=torch.channels_last)
    try:
        with torch.inference_mode():
            model(x)
    except RuntimeError as e:
        model.to(memory_format=torch.contiguous_format)
        return (f"the model runs channels-first (NCHW), as it was: it fails on a channels-last input "
                f"({first_line(e)})")
    return None


def build_target(s: ExplainSettings, loaded: LoadedModel, device: torch.device) -> Target:
    """What the settings ask to explain, checked against the model's output on a dummy batch."""
    score = "probability" if s.score == "softmax" else s.score
    if s.target_image or s.target_embedding:
        if s.target_image:
            reference = reference_embedding(loaded.model, s.target_image, loaded.input_size, loaded.mean, loaded.std,
                                            s.resize, loaded.crop_fraction, device, s.output, s.max_pixels)
        else:
            reference = read_embedding(s.target_embedding)
        if score != "logit":
            raise UsageError("`score` probability needs a classifier's head; a similarity is explained as it is")
        name = Path(s.target_image or s.target_embedding).name
        return Target("similarity", output=s.output, labels=[f"similarity to {name}"], reference=reference,
                      reference_name=name)
    facts = probe(loaded.model, loaded.input_size, device, s.output)
    kind, squashed = checked_kind(s.head, facts)
    if s.threshold is not None and kind != "sigmoid":
        raise UsageError(f"`threshold` applies to the sigmoid head, and this model's is {kind} (`head` {s.head}); "
                         "say `head` sigmoid if its outputs are independent labels")
    labels = binary_labels(loaded.labels) if kind == "binary" else list(loaded.labels)
    if kind == "regression":
        if score != "logit":
            raise UsageError("`score` probability needs a classifier's head; a regression output is explained as it is")
        if s.explain_topk is not None:
            raise UsageError("`explain_topk` ranks classes; a regression head has outputs, named with `target`")
        if facts.width > 1 and not s.target:
            raise UsageError(f"the regression head has {facts.width} outputs: name the one to explain with `target`")
        if facts.width < 1:
            raise UsageError(f"the regression head reads (N, outputs) values, but the model's output has {facts.dims} "
                             "dimensions; pick another part of it with `output`")
    fixed = resolve_classes(s.target, labels) or ((0,) if kind == "regression" else ())
    return Target(kind, score=score, squashed=squashed, output=s.output, labels=labels, fixed=fixed,
                  threshold=THRESHOLD if s.threshold is None else s.threshold, explain_topk=s.explain_topk,
                  direction=-1.0 if s.direction == "lower" else 1.0)
