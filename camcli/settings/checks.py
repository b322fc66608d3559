"""Checks on a merged set of settings: each bad value is one clear usage error.

Messages name settings as the Python API and config files spell them (``batch_size``); the
command line shows them as its flags (``--batch-size``).
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING

from camcli import tasks
from camcli.engine import DETECTION_MAPS, FUSIONS, HEADS, METHOD_NAMES, RESIZE_MODES, SCORES, method_options
from camcli.errors import UsageError, gather, unknown

if TYPE_CHECKING:
    from camcli.settings.fields import ExplainSettings


#: the range of every whole-number setting: what a real run can use (an absurd value is refused
#: before torch loads, instead of allocating terabytes or looping over a billion workers)
INT_RANGES: dict[str, tuple[int, int]] = {
    "batch_size": (1, 4096),
    "workers": (0, 256),
    "topk": (1, 1000),
    "input_size": (8, 8192),
    "num_classes": (1, 1_000_000),
    "explain_topk": (1, 1000),
    "max_detections": (1, 10_000),
    "overlay_quality": (1, 100),
    "overlay_max_side": (16, 65_535),
    "memory_budget": (64, 1 << 24),  # megabytes: 16 TB
    "max_pixels": (1, 1 << 40),
    "clip_len": (1, 4096),
}


#: the settings that take one of fixed values (``--help`` shows them as ``[a|b]``, the shell completes them)
CHOICES: dict[str, tuple[str, ...]] = {
    "resize": RESIZE_MODES,
    "head": HEADS,
    "score": SCORES,
    "direction": ("higher", "lower"),
    "task": ("auto", *tasks.names()),
    "detection_maps": DETECTION_MAPS,
    "overlay_format": ("png", "jpg", "webp"),
    "save_heatmap": ("npy", "png16"),
    "heatmap_size": ("image", "layer"),
    "box_mode": ("largest", "all"),
    "precision": ("fp32", "bf16", "fp16"),
    "fuse": FUSIONS,
    "scaling": ("percentiles", "minmax", "zscore", "none"),
}


def in_range(s: ExplainSettings) -> None:
    """Every whole number within :data:`INT_RANGES` and every real number finite."""
    for name, (low, high) in INT_RANGES.items():
        value = getattr(s, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise UsageError(f"`{name}` must be a whole number, got {value!r}")
        if value is not None and not low <= value <= high:
            unit = " is in megabytes and" if name == "memory_budget" else ""
            raise UsageError(f"`{name}`{unit} must be {'at least' if value < low else 'at most'} "
                             f"{low if value < low else high}, got {value}")
    for name in ("alpha", "threshold", "score_threshold", "min_area", "box_threshold", "box_min_area", "clip_fps",
                 "frames_fps"):
        value = getattr(s, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise UsageError(f"`{name}` must be a number, got {value!r}")
        if value is not None and not math.isfinite(value):
            raise UsageError(f"`{name}` must be a finite number, got {value}")


def check(s: ExplainSettings) -> None:
    """Every check that needs no model, all of them: the mistakes found are reported together."""
    gather(lambda: in_range(s), lambda: check_values(s), lambda: check_methods(s), lambda: check_target(s),
           lambda: check_detection(s), lambda: check_files(s), lambda: check_target_labels(s))


def check_values(s: ExplainSettings) -> None:
    """The settings with fixed choices or bounds, each alone."""
    gather(*(lambda step=step: step(s) for step in (
        _alpha, _resize, _normalisation, _heatmap_outputs, _boxes, _overlay, _precision, _run_mode, _colormap,
        _intensity, _clips)))


def _clips(s: ExplainSettings) -> None:
    """A video's sampling: which clips, and rates that are positive and at most 1000 per second."""
    clips = str(s.clips)
    if clips not in ("one", "all") and not (clips.isdigit() and 1 <= int(clips) <= 100_000):
        raise UsageError(f"`clips` must be one, all or a number of clips (1 to 100000), got {s.clips!r}")
    for name in ("clip_fps", "frames_fps"):
        value = getattr(s, name)
        if value is not None and not 0 < value <= 1000:
            raise UsageError(f"`{name}` is in frames per second: above 0 and at most 1000, got {value}")


def _alpha(s: ExplainSettings) -> None:
    if not 0.0 <= s.alpha <= 1.0:
        raise UsageError(f"`alpha` must be between 0 and 1, got {s.alpha}")


def _intensity(s: ExplainSettings) -> None:
    """A volume's window and scaling (torch-free: engine/intensity.py's presets are checked where read)."""
    choices = CHOICES["scaling"]
    if s.scaling not in choices:
        raise UsageError(f"`scaling` must be {', '.join(choices[:-1])} or {choices[-1]}, got {s.scaling!r}")
    if s.window is not None:
        from camcli.engine.intensity import window_of

        window_of(s.window)


def _resize(s: ExplainSettings) -> None:
    if s.resize not in RESIZE_MODES:
        raise UsageError(f"`resize` must be {', '.join(RESIZE_MODES[:-1])} or {RESIZE_MODES[-1]}, got {s.resize!r}")


def _normalisation(s: ExplainSettings) -> None:
    numbers(s.mean, "mean")
    if any(v <= 0 for v in numbers(s.std, "std") or ()):
        raise UsageError(f"`std` divides the input: every value must be positive, got {s.std}")


def _heatmap_outputs(s: ExplainSettings) -> None:
    if s.save_heatmap is not None and s.save_heatmap not in ("npy", "png16"):
        raise UsageError(f"`save_heatmap` must be npy or png16, got {s.save_heatmap!r}")
    if s.heatmap_size not in ("image", "layer"):
        raise UsageError(f"`heatmap_size` must be image or layer, got {s.heatmap_size!r}")


def _boxes(s: ExplainSettings) -> None:
    if not 0.0 < s.box_threshold <= 1.0:
        raise UsageError(f"`box_threshold` must be in (0, 1], got {s.box_threshold}")
    if s.box_mode not in ("largest", "all"):
        raise UsageError(f"`box_mode` must be largest or all, got {s.box_mode!r}")
    if not 0.0 <= s.box_min_area < 1.0:
        raise UsageError(f"`box_min_area` is a share of the image area in [0, 1), got {s.box_min_area}")
    if s.draw_boxes or s.box_rotated or s.box_mode == "all":
        s.boxes = True


def _overlay(s: ExplainSettings) -> None:
    if s.overlay_format not in ("png", "jpg", "webp"):
        raise UsageError(f"`overlay_format` must be png, jpg or webp, got {s.overlay_format!r}")
    if s.overlay_format == "png" and s.sources.get("overlay_quality", "default") != "default":
        raise UsageError("`overlay_quality` applies to `overlay_format` jpg and webp; png overlays are lossless")


def _precision(s: ExplainSettings) -> None:
    if s.precision not in ("fp32", "bf16", "fp16"):
        raise UsageError(f"`precision` must be fp32, bf16 or fp16, got {s.precision!r}")


def _run_mode(s: ExplainSettings) -> None:
    if s.resume and s.overwrite:
        raise UsageError("`resume` and `overwrite` exclude each other")
    if s.shard is not None:
        parse_shard(s.shard)


def _colormap(s: ExplainSettings) -> None:
    from camcli.output.render import COLORMAPS  # OpenCV's names (no torch)

    if str(s.colormap).strip().lower() not in COLORMAPS:
        raise unknown("`colormap`", s.colormap, sorted(COLORMAPS))


def check_methods(s: ExplainSettings) -> None:
    """The methods named, then the options that belong to them (only once the names are right)."""
    if not s.method:
        raise UsageError("`method` is empty")
    chosen = {m.strip().lower() for m in s.method}  # the method-specific options check against it
    gather(*(lambda name=name: _known_method(name) for name in s.method))
    method_options.check({name: getattr(s, name) for name in method_options.BY_NAME}, chosen)
    if s.fuse is not None:
        if s.fuse not in FUSIONS:
            raise UsageError(f"`fuse` must be {', '.join(FUSIONS[:-1])} or {FUSIONS[-1]}, got {s.fuse!r}")
        if len(s.layer) < 2:
            raise UsageError("`fuse` combines the maps of several layers; give two or more with `layer`")


def _known_method(name: str) -> None:
    if name.strip().lower() not in METHOD_NAMES:
        raise unknown("method", name, METHOD_NAMES, "Run `camcli methods` for the list.")


#: settings that name a file or folder that must be there before anything is loaded
FILE_SETTINGS = ("checkpoint", "labels", "target_image", "target_embedding")


def check_files(s: ExplainSettings) -> None:
    """The files the settings name exist (a model file of ``file.py:function`` too)."""
    def exists(path: str, message: str) -> None:
        if not os.path.exists(path):
            raise UsageError(message)

    named = [(str(getattr(s, name)), f"`{name}` {getattr(s, name)} does not exist") for name in FILE_SETTINGS
             if isinstance(getattr(s, name), (str, os.PathLike)) and str(getattr(s, name))
             and not _from_saved_run(s, name)]
    code = str(s.model or "").rpartition(":")[0]
    if code.endswith(".py"):
        named.append((code, f"`model` {s.model}: file {code} does not exist"))
    gather(*(lambda path=path, message=message: exists(path, message) for path, message in named))


def _from_saved_run(s: ExplainSettings, name: str) -> bool:
    """Whether a setting comes from a finished run's run.json (evaluate reruns it): a file it named
    that has moved gets the rerun's own message, which says how to point to its new place."""
    return s.sources.get(name, "default").endswith("run.json")


def check_target_labels(s: ExplainSettings) -> None:
    """Label names in ``target`` against a ``labels`` file, when both are given: an unknown name is
    refused with the closest labels (and the labels there are) before the model loads."""
    if not s.target or not isinstance(s.labels, (str, os.PathLike)) or not os.path.isfile(s.labels):
        return
    from camcli.models.labels import class_indices, read_labels

    labels = read_labels(s.labels)
    if len(labels) == 1:  # a binary head's one name: its classes are `not X` and X
        labels = [f"not {labels[0]}", labels[0]]
    names = [p for p in str(s.target).split(",") if p.strip() and not p.strip().lstrip("-").isdigit()]
    if names:
        class_indices(",".join(names), labels)


def check_target(s: ExplainSettings) -> None:
    """The options that say what is explained, alone and together (before any model is loaded)."""
    if s.head not in HEADS:
        raise UsageError(f"`head` must be {', '.join(HEADS[:-1])} or {HEADS[-1]}, got {s.head!r}")
    if s.score not in SCORES:
        raise UsageError(f"`score` must be logit or probability, got {s.score!r}")
    if s.direction not in ("higher", "lower"):
        raise UsageError(f"`direction` must be higher or lower, got {s.direction!r}")
    if s.direction != "higher" and s.head != "regression":
        raise UsageError("`direction` applies to `head` regression only")
    if s.threshold is not None:
        if not 0.0 < s.threshold < 1.0:
            raise UsageError(f"`threshold` is a probability in (0, 1), got {s.threshold}")
        if s.head not in ("auto", "sigmoid"):
            raise UsageError(f"`threshold` applies to `head` sigmoid (labels over it are explained), not {s.head}")
    if s.explain_topk is not None and s.target:
        raise UsageError("`explain_topk` and `target` exclude each other: the classes explained are either each "
                         "image's best or the ones named")
    similarity = [name for name in ("target_image", "target_embedding") if getattr(s, name)]
    if len(similarity) == 2:
        raise UsageError("`target_image` and `target_embedding` exclude each other: one reference per run")
    if similarity:
        for other, given in (("target", s.target), ("explain_topk", s.explain_topk), ("threshold", s.threshold)):
            if given is not None and given != "":
                raise UsageError(f"`{similarity[0]}` explains a similarity to a reference, and `{other}` picks classes: "
                                 "use one of them")
        if s.head != "auto":
            raise UsageError(f"`{similarity[0]}` reads the model's output as an embedding; `head` {s.head} does not apply")


def check_detection(s: ExplainSettings) -> None:
    """The detection and segmentation options, alone (what the model is is known only once it is loaded)."""
    choices = ("auto", *tasks.names())  # the tasks camcli/tasks/ knows, and those registered
    if s.task not in choices:
        raise UsageError(f"`task` must be {', '.join(choices[:-1])} or {choices[-1]}, got {s.task!r}")
    if not 0.0 <= s.score_threshold <= 1.0:
        raise UsageError(f"`score_threshold` is a detection score in [0, 1], got {s.score_threshold}")
    if s.detection_maps not in DETECTION_MAPS:
        raise UsageError(f"`detection_maps` must be {' or '.join(DETECTION_MAPS)}, got {s.detection_maps!r}")
    if not 0.0 <= s.min_area <= 1.0:
        raise UsageError(f"`min_area` is a share of the image in [0, 1], got {s.min_area}")
    if s.region is not None:
        region_spec(s.region)


def region_spec(text: str) -> tuple[float, float, float, float] | str:
    """The ``region`` setting: a box (x0, y0, x1, y1) in image pixels, or a folder of mask images."""
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) == 4:
        try:
            box = tuple(float(p) for p in parts)
        except ValueError:
            box = None
        if box is not None:
            if not (box[2] > box[0] >= 0 and box[3] > box[1] >= 0):
                raise UsageError(f"`region` {text}: a box is x0,y0,x1,y1 with x1 > x0 >= 0 and y1 > y0 >= 0")
            return box
    if not os.path.isdir(text):
        raise UsageError(f"`region` {text!r} is neither a box x0,y0,x1,y1 nor a folder of mask images")
    return str(text)


def cam_batch_size_for(settings: ExplainSettings, device) -> int:
    """``cam_batch_size`` or its default for the device: 16 on a CPU, where larger masked
    batches ran 15-20% slower per image (ResNet-18, 2 cores, benchmarks/), 64 on a GPU."""
    if settings.cam_batch_size is not None:
        return settings.cam_batch_size
    return 64 if getattr(device, "type", str(device)) == "cuda" else 16


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/8"`` -> (2, 8): the third of eight shards (0-based index)."""
    try:
        i, n = (int(v) for v in str(text).split("/"))
    except ValueError:
        raise UsageError(f"`shard` takes INDEX/COUNT such as 0/4, got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise UsageError(f"`shard` {text}: INDEX must be in 0..COUNT-1")
    return i, n


def numbers(text: str | None, name: str) -> tuple[float, ...] | None:
    """A comma-separated list of numbers (``mean``, ``std``), or a usage error."""
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in str(text).split(","))
    except ValueError:
        raise UsageError(f"`{name}` must be numbers separated by commas (e.g. 0.5,0.5,0.5), got {text!r}") from None
    if not values or len(values) > 3:
        raise UsageError(f"`{name}` takes 1 or 3 values, got {len(values)}")
    if not all(math.isfinite(v) and abs(v) <= 1e6 for v in values):
        raise UsageError(f"`{name}` takes finite numbers (at most 1e6 in size), got {text!r}")
    return values
