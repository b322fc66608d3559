"""Where each file goes inside the output folder, and how it is written there.

Every output path is built from an image's relative path and checked to stay inside the
output folder. Files are written to a temporary name and renamed, so a killed run never
leaves a half-written PNG. A temporary name says which process wrote it (:func:`temp_path`), so
the next run into the folder can remove what a killed one left (:func:`leftover_writer`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import socket
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from camcli.engine.layer_names import file_safe


def inside(out_dir: Path, rel: str) -> Path:
    """``out_dir / rel``, refusing anything that would land outside ``out_dir``."""
    parts = PurePosixPath(rel.replace("\\", "/")).parts
    if not parts or any(p in ("..", "") for p in parts) or PurePosixPath(rel).is_absolute():
        raise ValueError(f"unsafe output path {rel!r}")
    target = (out_dir / Path(*parts)).resolve()
    root = out_dir.resolve()
    if target != root and root not in target.parents:
        raise ValueError(f"output path {rel!r} escapes the output folder")
    return target


def method_file_name(method: str) -> str:
    """A method's name as it appears in file names: ``gradcam++`` -> ``gradcampp``."""
    return method.replace("+", "p")


def overlay_rel(image_rel: str, method: str, layer: str, ext: str = "png") -> str:
    """``overlays/a/cat.jpg.gradcam@layer4.1.png``: mirrors the input tree, names method and layer."""
    return f"overlays/{image_rel}.{method_file_name(method)}@{file_safe(layer)}.{ext}"


def heatmap_rel(image_rel: str, method: str, layer: str, fmt: str) -> str:
    """``heatmaps/a/cat.jpg.gradcam@layer4.1.npy`` (or ``.png`` for png16)."""
    return f"heatmaps/{image_rel}.{method_file_name(method)}@{file_safe(layer)}.{'npy' if fmt == 'npy' else 'png'}"


def panel_rel(image_rel: str) -> str:
    return f"panels/{image_rel}.png"


def host_id() -> str:
    """This machine, in eight hex digits (a temporary name must stay short)."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def temp_path(path: Path) -> Path:
    """``.cat.png.camcli-4242-1a2b3c4d-9f8e7d.tmp`` beside ``path``: hidden, and naming the writing
    process and host, so that only the temporary files of runs that have ended are ever removed."""
    return path.with_name(f".{path.name}.camcli-{os.getpid()}-{host_id()}-{secrets.token_hex(3)}.tmp")


_TEMP = re.compile(r"\..+\.camcli-(\d+)-([0-9a-f]{8})-[0-9a-f]{6}\.tmp")


def leftover_writer(name: str) -> tuple[int, str] | None:
    """The (pid, host) that wrote a temporary file named by :func:`temp_path`; ``None`` for any other name."""
    match = _TEMP.fullmatch(name)
    return (int(match.group(1)), match.group(2)) if match else None


def atomic_write(path: Path, data: bytes | Iterable[bytes]) -> None:
    """Write ``data`` (bytes, or pieces written one after the other as they come) to a temporary
    file beside ``path`` and rename it into place.

    The file gets the mode an ordinary ``open()`` would give it (0666 less the umask), not the
    temporary file's private 0600: overlays must be readable by whoever publishes the run.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            for piece in ([data] if isinstance(data, (bytes, bytearray, memoryview)) else data):
                f.write(piece)
            os.fchmod(f.fileno(), 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def current_umask() -> int:
    """The process's umask, read without changing it (``os.umask`` can only be read by setting
    it, which would race with the writer threads creating files)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return _UMASK_AT_IMPORT


def _read_umask_once() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK_AT_IMPORT = _read_umask_once()  # at import, before any writer thread exists


def write_json(path: Path, obj) -> None:
    atomic_write(path, (json.dumps(obj, indent=2, default=str) + "\n").encode())
