"""``run.json``: what a run was (versions, model, layers, methods, settings) and how it went.

``camcli evaluate`` reads it back to rerun the same model on the same images.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

from camcli import __version__
from camcli.engine.devices import describe
from camcli.errors import UsageError
from camcli.engine.layer_names import display_name
from camcli.output.paths import write_json
from camcli.run.resume import read_json_file

MANIFEST_FILE = "run.json"
_PATH_SETTINGS = ("checkpoint", "labels", "out")


def _version(package: str) -> str | None:
    """An installed package's version, read without importing it (importing torchvision costs a second)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def write_manifest(path: Path, session, inputs: list[str], shard, summary, stopped: bool,
                   warnings: list[dict]) -> None:
    import torch

    settings = {k: v for k, v in vars(session.settings).items() if k != "sources"}
    for key in _PATH_SETTINGS:  # absolute, so that evaluate can rerun the run from anywhere
        if isinstance(settings.get(key), (str, os.PathLike)) and settings[key]:
            settings[key] = os.path.abspath(settings[key])
    if session.loaded.checkpoint and not session.loaded.weights:  # the checkpoint's weights, no torchvision ones
        settings["weights"] = "none"
    spec = (session.loaded.source or {}).get("spec")  # a factory file's or a HuggingFace folder's path, absolute
    if spec:
        settings["model"] = spec
    write_json(path, {
        "camcli": __version__, "torch": torch.__version__, "torchvision": _version("torchvision"),
        "python": platform.python_version(), "platform": platform.platform(),
        # saved masks hold class indices: their names go with them (records_labels)
        "model": session.loaded.describe() | ({"labels": list(session.loaded.labels)}
                                              if session.task.records_labels else {}),
        "layers": [display_name(l) for l in session.layers],
        "methods": [m.name for m in session.methods], "device": describe(session.device),
        "task": session.task.name, "target": session.target, "head": session.explained, "inputs": [os.path.abspath(i) for i in inputs],
        "shard": {"index": shard.index, "count": shard.count} if shard.count > 1 else None,
        "settings": settings,
        "counts": {"images": summary.images, "ok": summary.ok, "failed": summary.failed,
                   "empty_maps": summary.empty_maps, "resumed": summary.resumed},
        "warnings": warnings,
        "interrupted": summary.interrupted, "stopped_at_first_failure": stopped, "seconds": round(summary.seconds, 3),
    })


def read_manifest(out_dir: Path) -> dict:
    """A finished run's ``run.json``; a missing or damaged one is a one-line ``UsageError``."""
    p = out_dir / MANIFEST_FILE
    if not p.is_file():
        raise UsageError(f"{out_dir} has no {MANIFEST_FILE}: is it a finished `camcli explain` output folder?")
    manifest = read_json_file(p)
    if not isinstance(manifest.get("settings"), dict) or not isinstance(manifest.get("inputs"), list):
        raise UsageError(f"{p} lacks the run's settings or inputs: it was not written by camcli explain")
    return manifest
