"""Where each file goes inside the output folder, and how it is written there.

Every output path is built from an image's relative path and checked to stay inside the
output folder. Files are written to a temporary name and renamed, so a killed run never
leaves a half-written PNG (the temporary names: :mod:`.tempfiles`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from camcli.engine.layer_names import file_safe
from camcli.output.tempfiles import temp_path


def inside(out_dir: Path, rel: str) -> Path:
    """``out_dir / rel``, refusing anything that would land outside ``out_dir``.

    ``rel`` is POSIX-style: on a system whose paths use ``/`` only, a backslash is a character of a
    file name (``a\\b.jpg`` is one file, apart from ``a/b.jpg``), never a separator.
    """
    parts = PurePosixPath(rel.replace("\\", "/") if os.sep == "\\" else rel).parts
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


#: what separates the layer from the class or box a map explains in a file name: a layer name
#: never holds it, so ``@layer4.1--class3-cup`` cannot read as a layer ``layer4.1.3``
TARGET_MARK = "--"


def class_part(index: int | None, label: str | None) -> str:
    """``--class3-cup``: the explained class in the file names of runs that explain several per image."""
    return "" if index is None else f"{TARGET_MARK}class{index}-{file_safe(label or '')}"


def box_part(rank: int, label: str) -> str:
    """``--box2-dog``: the box a detection map explains (its rank in the image, its label)."""
    return f"{TARGET_MARK}box{rank}-{file_safe(label)}"


def overlay_rel(image_rel: str, method: str, layer: str, ext: str = "png", target: str = "") -> str:
    """``overlays/a/cat.jpg.gradcam@layer4.1.png``: mirrors the input tree, names method and layer
    (and, with ``target`` from :func:`class_part` or :func:`box_part`, what the map explains:
    ``...@layer4.1--class3-cup.png``)."""
    return f"overlays/{image_rel}.{method_file_name(method)}@{file_safe(layer)}{target}.{ext}"


#: a volume map's slider strips, one per plane, beside its planes picture
SLICE_PLANES = ("axial", "coronal", "sagittal")


def slices_rel(overlay: str, plane: str) -> str:
    """``overlays/ct.nii.gz.gradcam@block3.axial.jpg``: a plane's slider strip beside the planes
    picture ``overlay`` (the gallery finds it by this name)."""
    return f"{overlay.removesuffix('.png')}.{plane}.jpg"


def heatmap_rel(image_rel: str, method: str, layer: str, fmt: str, target: str = "") -> str:
    """``heatmaps/a/cat.jpg.gradcam@layer4.1.npy`` (or ``.png`` for png16)."""
    return (f"heatmaps/{image_rel}.{method_file_name(method)}@{file_safe(layer)}{target}."
            f"{'npy' if fmt == 'npy' else 'png'}")


def mask_rel(image_rel: str) -> str:
    """``masks/a/cat.jpg.mask.png``: a segmentation run's predicted label mask for the image (the
    word keeps a PNG input's mask from reading ``cat.png.png``)."""
    return f"masks/{image_rel}.mask.png"


def panel_rel(image_rel: str) -> str:
    """``panels/a/cat.jpg.panel.png``: every map of the image side by side."""
    return f"panels/{image_rel}.panel.png"


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
