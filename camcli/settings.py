"""Settings of an ``explain`` run and where each value came from.

Precedence, lowest to highest: built-in defaults < ``--config FILE.toml`` < ``CAMCLI_*``
environment variables < command-line options. Paths given in a config file (``checkpoint``,
``labels``) are relative to that file, so a config works from any working directory.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from camcli.errors import UsageError, closest

#: Pillow's own decompression-bomb limit (89.5 megapixels); --max-pixels changes it
DEFAULT_MAX_PIXELS = 89_478_485


@dataclass
class ExplainSettings:
    """Every option of ``camcli explain``, with its default."""

    model: str = "resnet50"
    weights: str = "DEFAULT"
    checkpoint: str | None = None
    num_classes: int | None = None
    labels: str | None = None
    input_size: int | None = None
    method: list[str] = field(default_factory=lambda: ["gradcam"])
    layer: list[str] = field(default_factory=list)  # empty: found automatically
    target: str | None = None
    score: str = "logit"
    cam_batch_size: int | None = None  # None: 16 on a CPU, 64 on a GPU (cam_batch_size_for)
    max_n: int | None = None
    out: str = "camcli-out"
    alpha: float = 0.5
    colormap: str = "jet"
    topk: int = 1
    save_heatmap: str | None = None  # npy or png16
    heatmap_size: str = "image"  # image or layer
    panel: bool = False
    grid: bool = False
    boxes: bool = False
    box_threshold: float = 0.5
    box_mode: str = "largest"  # largest or all
    box_min_area: float = 0.01  # with box_mode all: share of the image area
    box_rotated: bool = False
    draw_boxes: bool = False
    caption: bool = False
    html: bool = False
    hidden: bool = False
    max_pixels: int = DEFAULT_MAX_PIXELS
    fail_fast: bool = False
    resume: bool = False
    overwrite: bool = False
    trust_checkpoint: bool = False
    shard: str | None = None  # "i/n": this job's share of the sorted image list
    batch_size: int = 16
    workers: int = 2
    device: str = "auto"
    precision: str = "fp32"  # fp32, or bf16 / fp16 autocast on CUDA
    quiet: bool = False
    sources: dict[str, str] = field(default_factory=dict, repr=False, compare=False)


FIELDS = {f.name: f for f in dataclasses.fields(ExplainSettings) if f.name != "sources"}
_PATH_KEYS = ("checkpoint", "labels")
_LIST_KEYS = ("method", "layer")


def _coerce(name: str, value: Any, origin: str) -> Any:
    """Check and convert a value from a config file or the environment to the field's type."""
    kind = FIELDS[name].type
    if name in _LIST_KEYS:
        if isinstance(value, str):
            items = [v.strip() for v in value.split(",")] if name == "method" else [value.strip()]
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            items = [v.strip() for v in value]
        else:
            raise UsageError(f"{origin}: {name} must be a string or a list of strings")
        return [i for i in items if i]
    if value is None:
        return None
    try:
        if "bool" in str(kind):
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(value)
        if "int" in str(kind):
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if "float" in str(kind):
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if isinstance(value, (list, dict)):
            raise ValueError(value)
        return str(value)
    except (TypeError, ValueError):
        raise UsageError(f"{origin}: invalid value {value!r} for {name} (expected {kind})") from None


def read_config(path: str | Path) -> dict[str, Any]:
    """Settings from a TOML file: top-level keys or an ``[explain]`` table; unknown keys are errors."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise UsageError(f"cannot read config file {p}: {e.strerror or e}") from e
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"config file {p}: {e}") from e
    if "explain" in data and isinstance(data["explain"], dict):
        extra = [k for k in data if k != "explain"]
        if extra:
            raise UsageError(f"config file {p}: unknown key {extra[0]!r} beside the [explain] table")
        data = data["explain"]
    out = {}
    for raw_key, value in data.items():
        key = raw_key.replace("-", "_")
        if key not in FIELDS:
            near = closest(key, FIELDS)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise UsageError(f"config file {p}: unknown key {raw_key!r}{hint}")
        value = _coerce(key, value, f"config file {p}, key {raw_key!r}")
        if key in _PATH_KEYS and value is not None:
            value = str((p.parent / value)) if not Path(value).is_absolute() else value
        out[key] = value
    return out


def read_env(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """Settings from ``CAMCLI_<NAME>`` variables (``CAMCLI_BATCH_SIZE=32``)."""
    env = os.environ if environ is None else environ
    out = {}
    for key in FIELDS:
        var = f"CAMCLI_{key.upper()}"
        if var in env and env[var] != "":
            out[key] = _coerce(key, env[var], f"environment variable {var}")
    return out


def resolve(cli: dict[str, Any], config: str | Path | None = None,
            environ: dict[str, str] | None = None) -> ExplainSettings:
    """Merge defaults, config file, environment and command line (``None`` means "not given")."""
    settings = ExplainSettings()
    sources = {k: "default" for k in FIELDS}
    layers = [("config", read_config(config) if config else {}), ("environment", read_env(environ)),
              ("command line", {k: v for k, v in cli.items() if v is not None and k in FIELDS})]
    for origin, values in layers:
        for key, value in values.items():
            if origin == "command line" and key in _LIST_KEYS:
                value = _coerce(key, value if isinstance(value, (list, str)) else list(value), "command line")
                if key == "method":
                    value = [m.strip() for v in value for m in v.split(",") if m.strip()]
                if not value:
                    continue
            setattr(settings, key, value)
            sources[key] = origin if origin != "config" else f"config {config}"
    settings.sources = sources
    _check(settings)
    return settings


def _check(s: ExplainSettings) -> None:
    if not 0.0 <= s.alpha <= 1.0:
        raise UsageError(f"--alpha must be between 0 and 1, got {s.alpha}")
    if s.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {s.batch_size}")
    if s.workers < 0:
        raise UsageError(f"--workers must be 0 or more, got {s.workers}")
    if s.topk < 1:
        raise UsageError(f"--topk must be at least 1, got {s.topk}")
    if s.input_size is not None and s.input_size < 8:
        raise UsageError(f"--input-size must be at least 8 pixels, got {s.input_size}")
    if s.num_classes is not None and s.num_classes < 1:
        raise UsageError(f"--num-classes must be at least 1, got {s.num_classes}")
    if not s.method:
        raise UsageError("--method is empty")
    if s.save_heatmap is not None and s.save_heatmap not in ("npy", "png16"):
        raise UsageError(f"--save-heatmap must be npy or png16, got {s.save_heatmap!r}")
    if s.heatmap_size not in ("image", "layer"):
        raise UsageError(f"--heatmap-size must be image or layer, got {s.heatmap_size!r}")
    if not 0.0 < s.box_threshold <= 1.0:
        raise UsageError(f"--box-threshold must be in (0, 1], got {s.box_threshold}")
    if s.box_mode not in ("largest", "all"):
        raise UsageError(f"--box-mode must be largest or all, got {s.box_mode!r}")
    if not 0.0 <= s.box_min_area < 1.0:
        raise UsageError(f"--box-min-area is a share of the image area in [0, 1), got {s.box_min_area}")
    if s.draw_boxes or s.box_rotated or s.box_mode == "all":
        s.boxes = True
    if s.precision not in ("fp32", "bf16", "fp16"):
        raise UsageError(f"--precision must be fp32, bf16 or fp16, got {s.precision!r}")
    if s.resume and s.overwrite:
        raise UsageError("--resume and --overwrite exclude each other")
    if s.max_pixels < 1:
        raise UsageError(f"--max-pixels must be positive, got {s.max_pixels}")
    if s.shard is not None:
        parse_shard(s.shard)
    if s.cam_batch_size is not None and s.cam_batch_size < 1:
        raise UsageError(f"--cam-batch-size must be at least 1, got {s.cam_batch_size}")
    if s.max_n is not None:
        if s.max_n < 1:
            raise UsageError(f"--max-n must be at least 1, got {s.max_n}")
        if "scorecam" not in [m.strip().lower() for m in s.method]:
            raise UsageError("--max-n (Faster Score-CAM) applies to --method scorecam only")


def cam_batch_size_for(settings: ExplainSettings, device) -> int:
    """``--cam-batch-size`` or its default for the device: 16 on a CPU, where larger masked
    batches ran 15-20% slower per image (ResNet-18, 2 cores, benchmarks/), 64 on a GPU."""
    if settings.cam_batch_size is not None:
        return settings.cam_batch_size
    return 64 if getattr(device, "type", str(device)) == "cuda" else 16


#: settings that change what a run writes; a resumed run must match them exactly
OUTPUT_KEYS = ("model", "weights", "checkpoint", "num_classes", "labels", "input_size", "method", "layer", "target",
               "score", "max_n", "alpha", "colormap", "topk", "save_heatmap", "heatmap_size", "panel", "grid", "boxes",
               "box_threshold", "box_mode", "box_min_area", "box_rotated", "draw_boxes", "caption", "html", "hidden",
               "max_pixels", "shard")


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/8"`` -> (2, 8): the third of eight shards (0-based index)."""
    try:
        i, n = (int(v) for v in str(text).split("/"))
    except ValueError:
        raise UsageError(f"--shard takes INDEX/COUNT such as 0/4, got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise UsageError(f"--shard {text}: INDEX must be in 0..COUNT-1")
    return i, n
