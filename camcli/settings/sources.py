"""Where settings come from, and how they are merged.

Precedence, lowest to highest: built-in defaults < a finished run's saved settings (``camcli
evaluate`` rerunning a run) < ``--config FILE.toml`` < ``CAMCLI_*`` environment variables <
command-line options. Paths given in a config file (``checkpoint``, ``labels``) are relative to
that file, so a config works from any working directory.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from camcli.errors import UsageError, closest
from camcli.settings.checks import check
from camcli.settings.fields import FIELDS, ExplainSettings, kind

_PATH_KEYS = ("checkpoint", "labels")
_LIST_KEYS = ("method", "layer", "model_arg")
_NUMBER_LISTS = ("mean", "std")


def coerce(name: str, value: Any, origin: str) -> Any:
    """Check and convert a value from a config file, the environment or a saved run to the field's type."""
    t = kind(name)
    if t is list:
        if isinstance(value, str):
            value = [value]
        if not (isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)):
            raise UsageError(f"{origin}: {name} must be a string or a list of strings")
        # methods may be comma-separated ("gradcam,cam"); layer names never contain commas
        parts = [p for v in value for p in (v.split(",") if name == "method" else [v])]
        return [p.strip() for p in parts if p.strip()]
    if value is None:
        return None
    if name in _NUMBER_LISTS and isinstance(value, (list, tuple)):  # TOML: mean = [0.5, 0.5, 0.5]
        value = ",".join(str(v) for v in value)
    try:
        if t is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(value)
        if t is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if t is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if isinstance(value, (list, dict)):
            raise ValueError(value)
        return str(value)
    except (TypeError, ValueError):
        raise UsageError(f"{origin}: invalid value {value!r} for {name} (expected {t.__name__})") from None


#: settings written as comma-separated text that the Python API also takes as a list or tuple
_JOINED = ("target", "mean", "std", "layer_layout", "region")


def from_python(name: str, value: Any) -> Any:
    """A keyword's value of the natural Python type as the setting takes it: ``target=100`` or
    ``[100, 3]`` -> ``"100,3"``, ``mean=[0.485, 0.456, 0.406]`` -> ``"0.485,0.456,0.406"``,
    ``input_size=(224, 224)`` -> ``224``, a path object -> its text, ``batch_size="16"`` -> ``16``;
    a value that is none of these is a ``UsageError`` naming the keyword, never a ``TypeError``."""
    t = kind(name)
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if name in _JOINED and isinstance(value, (list, tuple)):
        if not value or not all(isinstance(v, (int, float, str)) and not isinstance(v, bool) for v in value):
            raise UsageError(f"`{name}` takes numbers or names, got {value!r}")
        return ",".join(str(v) for v in value)
    if name == "input_size" and isinstance(value, (list, tuple)):
        if len(value) == 2 and value[0] == value[1]:
            value = value[0]
        else:
            raise UsageError(f"`input_size` is the side of a square input, got {tuple(value)!r}; camcli fits each "
                             "image to a square (see `resize`)")
    if t is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if t in (int, float, bool) and isinstance(value, str):
        return coerce(name, value, "Python API")
    if t in (int, float) and value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise UsageError(f"`{name}` takes a number, got {value!r}")
    return value


def read_config(path: str | Path) -> dict[str, Any]:
    """Settings from a TOML file: top-level keys or an ``[explain]`` table; unknown keys are errors."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise UsageError(f"cannot read config file {p}: {e.strerror or e}") from e
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
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
        value = coerce(key, value, f"config file {p}, key {raw_key!r}")
        if key in _PATH_KEYS and value is not None:
            value = str((p.parent / value)) if not Path(value).is_absolute() else value
        if key == "model" and isinstance(value, str):
            value = _model_beside(p.parent, value)
        out[key] = value
    return out


def _model_beside(folder: Path, spec: str) -> str:
    """A config's ``model`` that names a file or folder (``nets/tiny.py:build``, ``./my-vit``) is
    relative to the config file, as its other paths are; names and dotted modules stay as they are."""
    code, sep, attribute = spec.rpartition(":")
    if sep and code.endswith(".py") and not Path(code).is_absolute():
        return f"{folder / code}:{attribute}"
    if not sep and ("/" in spec or spec.startswith(".")) and not Path(spec).is_absolute():
        return str(folder / spec)
    return spec


def read_env(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """Settings from ``CAMCLI_<NAME>`` variables (``CAMCLI_BATCH_SIZE=32``)."""
    env = os.environ if environ is None else environ
    out = {}
    for key in FIELDS:
        var = f"CAMCLI_{key.upper()}"
        if var in env and env[var] != "":
            out[key] = coerce(key, env[var], f"environment variable {var}")
    return out


def read_saved(saved: dict[str, Any], origin: str) -> dict[str, Any]:
    """Settings recorded in a finished run's ``run.json`` (keys camcli no longer knows are ignored)."""
    return {k: coerce(k, v, f"{origin}, setting {k!r}") for k, v in saved.items() if k in FIELDS}


def resolve(cli: dict[str, Any], config: str | Path | None = None, environ: dict[str, str] | None = None,
            saved: dict[str, Any] | None = None, saved_origin: str = "run.json", checked: bool = True) -> ExplainSettings:
    """Merge defaults, a saved run, config file, environment and command line (``None`` means "not given").

    Command-line values are the flags' own types; ``method`` and ``layer`` may be a string or a
    list, and methods may be comma-separated (``"gradcam,cam"``). ``checked=False`` leaves
    :func:`~camcli.settings.checks.check` to the caller (who gathers its errors with others).
    """
    settings = ExplainSettings()
    sources = {k: "default" for k in FIELDS}
    given = {k: from_python(k, v) for k, v in cli.items() if v is not None and k in FIELDS}
    for key in _LIST_KEYS:
        if key in given:
            value = given[key]
            given[key] = coerce(key, value if isinstance(value, (list, str)) else list(value), "command line")
            if not given[key]:
                del given[key]
    layers = [(saved_origin, read_saved(saved, saved_origin) if saved else {}),
              (f"config {config}", read_config(config) if config else {}),
              ("environment", read_env(environ)), ("command line", given)]
    for origin, values in layers:
        for key, value in values.items():
            setattr(settings, key, value)
            sources[key] = origin
    settings.sources = sources
    if checked:
        check(settings)
    return settings
