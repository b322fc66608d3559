"""Finding images: which files a run takes, in which order, under which relative paths.

Discovery is deterministic (sorted, recursive) and gives every image a relative path that
the output tree mirrors: with one folder argument, paths are relative to it; with several
arguments, relative to their common parent, so ``a/cat.jpg`` and ``b/cat.jpg`` stay apart.
It needs neither torch nor an image library, so the command line reports a mistyped folder
before it loads them.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from camcli.errors import UsageError, UsageErrors

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"})
#: 3D scans taken as one file each (a DICOM series is a folder: :func:`dicom_folder`)
SCAN_SUFFIXES = (".nii", ".nii.gz", ".npy", ".npz")
#: video files (an animated GIF is an image to an image model, a clip to a video model)
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".avi", ".mkv", ".webm", ".mov"})
#: what a run calls an input of each kind in its lines
KIND_NOUNS = {"image": "image", "scan": "3D scan", "video": "video"}
#: the formats a run of each kind reads, for the line that finds none
KIND_FORMATS = {"scan": " (NIfTI, NumPy, DICOM series)",
                "video": f" ({', '.join(sorted(VIDEO_SUFFIXES))}, animated GIF, a folder of frames)"}
#: names a DICOM slice may have: no suffix, .dcm, or a UID's last number (1.2.840....5.12)
_DICOM_NAME_SUFFIXES = frozenset({"", ".dcm", ".dicom", ".ima"})
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class ImageItem:
    """One input image: where it is and the relative path its outputs mirror."""

    index: int
    path: str
    rel: str  # POSIX-style, never absolute, never containing '..'
    #: the RGB pixels (H, W, 3) uint8 of an image handed over in memory (:mod:`.in_memory`); None: read ``path``
    pixels: object = field(default=None, compare=False, repr=False)
    #: ``image``, ``scan`` (a NIfTI or NumPy volume, or a folder holding a DICOM series) or
    #: ``video`` (a video file; in a video run also a GIF, or a folder of frames)
    kind: str = "image"
    #: given by name (not found in a folder): a run whose model takes the other kind still gives it a row
    named: bool = field(default=False, compare=False)


def kind_of(path: str) -> str:
    """``scan`` for NIfTI and NumPy volumes and DICOM folders, ``video`` for video files, else
    ``image`` (an image's name says so without a look at the disk)."""
    if Path(path).suffix.lower() in IMAGE_EXTENSIONS:
        return "image"
    if Path(path).suffix.lower() in VIDEO_SUFFIXES:
        return "video"
    return "scan" if path.lower().endswith(SCAN_SUFFIXES) or os.path.isdir(path) else "image"


def is_dicom_file(path: str) -> bool:
    """A file DICOM's Part 10 magic ("DICM" after 128 bytes) marks, among names a slice may have."""
    suffix = Path(path).suffix.lower()
    if suffix not in _DICOM_NAME_SUFFIXES and not suffix[1:].isdigit():
        return False
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would wait for a writer for ever
            return False
        with open(path, "rb") as f:
            return f.read(132)[128:] == b"DICM"
    except OSError:
        return False


def dicom_folder(folder: str, names: Sequence[str]) -> bool:
    """Whether ``folder`` holds a DICOM series (its files ``names``): it is then one scan."""
    return any(is_dicom_file(os.path.join(folder, n)) for n in names)


def expand_inputs(args: Sequence[str], stdin=None) -> list[str]:
    """``-`` reads paths from standard input, ``@list.txt`` from a file (one per line, ``#`` comments)."""
    import sys
    out: list[str] = []
    for arg in args:
        if arg == "-":
            stream = stdin if stdin is not None else sys.stdin
            out += [line.strip() for line in stream.read().splitlines() if line.strip()]
        elif arg.startswith("@") and len(arg) > 1:
            try:
                lines = Path(arg[1:]).read_text(encoding="utf-8").splitlines()
            except OSError as e:
                raise UsageError(f"cannot read list file {arg[1:]}: {e.strerror or e}") from e
            out += [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        else:
            out.append(arg)
    if not out:
        raise UsageError("no input paths given" + (" on standard input" if "-" in args else ""))
    return out


#: the file every camcli output folder holds from its first moment: folders with it are not walked
RUN_MARK = "run-settings.json"


def _walk(root: str, hidden: bool, skip: frozenset[str] = frozenset()) -> list[str]:
    """Image and scan files, and folders holding a DICOM series, under ``root``, sorted (a DICOM
    folder's slices are its, not items of their own); symbolic links are followed, each directory once; the
    folders in ``skip`` (real paths: the run's own output folder) and camcli's output folders
    (:data:`RUN_MARK`: explaining ``.`` twice must not explain the first run's overlays) are not entered."""
    found = []
    visited = {os.path.realpath(root)} | set(skip)
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        keep = []
        for d in sorted(dirnames):
            if d.startswith(".") and not hidden:
                continue
            real = os.path.realpath(os.path.join(dirpath, d))
            if real in visited:  # a symlink loop or a second way to the same folder
                continue
            if os.path.isfile(os.path.join(real, RUN_MARK)):  # an earlier run's outputs (runs/explain2/)
                continue
            visited.add(real)
            keep.append(d)
        dirnames[:] = keep
        names = [n for n in filenames if hidden or not n.startswith(".")]
        if dicom_folder(dirpath, [n for n in names if Path(n).suffix.lower() not in IMAGE_EXTENSIONS]):
            found.append(dirpath)  # one scan: the series its slices make
            names = [n for n in names if Path(n).suffix.lower() in IMAGE_EXTENSIONS]
        for name in names:
            suffix = Path(name).suffix.lower()
            if suffix in IMAGE_EXTENSIONS or suffix in VIDEO_SUFFIXES or name.lower().endswith(SCAN_SUFFIXES):
                found.append(os.path.join(dirpath, name))
    # one order for everyone: by relative path, as `sort` would list them
    return sorted(found, key=lambda f: Path(os.path.relpath(f, root)).as_posix())


def discover(inputs: Sequence[str | os.PathLike], hidden: bool = False,
             out: str | os.PathLike | None = None) -> list[ImageItem]:
    """Expand files, folders (recursively, sorted) and globs into a list of images.

    A file named explicitly is always taken, whatever its extension or name: if it is not an
    image, its row says so. In folders, only image extensions are taken, and hidden files and
    folders only with ``hidden``. The run's output folder ``out``, when it lies inside an input
    folder, is never walked: a resumed run would explain its own overlays.
    """
    skip = frozenset({os.path.realpath(out)}) if out is not None else frozenset()
    if not inputs:
        raise UsageError("no input given: pass image files or folders")
    import glob
    found: list[tuple[str, str]] = []  # (absolute path, anchor directory)
    args: list[str] = []
    for raw in inputs:
        text = os.fspath(raw)
        if not os.path.lexists(text) and _GLOB_CHARS & set(text):
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                raise UsageError(f"no file matches {text!r}")
            args += matches
        else:
            args.append(text)
    missing = [UsageError(f"input {text!r} does not exist") for text in args if not os.path.lexists(text)]
    if missing:
        raise missing[0] if len(missing) == 1 else UsageErrors(missing)
    named: set[str] = set()
    for text in args:
        p = Path(text)
        if p.is_dir():
            anchor = os.path.abspath(p)
            if os.path.realpath(anchor) in skip:
                continue
            walked = _walk(anchor, hidden, skip)
            if anchor in walked:  # the folder named is itself a DICOM series: named after itself
                walked.remove(anchor)
                found.append((anchor, os.path.dirname(anchor)))
                named.add(anchor)
            found += [(f, anchor) for f in walked]
        else:
            found.append((os.path.abspath(p), os.path.dirname(os.path.abspath(p))))
            named.add(os.path.abspath(p))
    if not found:
        raise UsageError("no images found in " + ", ".join(map(str, inputs))
                         + f" (extensions: {', '.join(sorted(IMAGE_EXTENSIONS))}), nor 3D scans (NIfTI, NumPy, "
                         f"DICOM series), nor videos ({', '.join(sorted(VIDEO_SUFFIXES))})")
    if len(args) > 1:
        common = os.path.commonpath([a for _, a in found])
        found = [(a, common) for a, _ in found]
    items, seen = [], set()
    for path, anchor in found:
        if path in seen:
            continue
        seen.add(path)
        rel = PurePosixPath(*Path(os.path.relpath(path, anchor)).parts).as_posix()
        items.append(ImageItem(len(items), path, rel, kind=kind_of(path), named=path in named))
    return items


def as_videos(items: Sequence[ImageItem]) -> list[ImageItem]:
    """A video run's inputs: video files and GIFs as clips, and the images of each folder that holds
    no video file as one clip of frames (named after the folder); named image files and scans
    stay what they are (the run leaves them out, or their rows say why they are no video)."""
    with_videos = {os.path.dirname(i.path) for i in items if i.kind == "video"}
    out: list[ImageItem] = []
    frames: dict[str, list[ImageItem]] = {}
    for i in items:
        if i.kind == "video" or (i.kind == "image" and i.path.lower().endswith(".gif")):
            out.append(ImageItem(0, i.path, i.rel, kind="video", named=i.named))
        elif i.kind == "image" and not i.named and i.pixels is None and os.path.dirname(i.path) not in with_videos:
            frames.setdefault(os.path.dirname(i.path), []).append(i)
        else:
            out.append(i)
    for folder, group in frames.items():
        parent = PurePosixPath(group[0].rel).parent.as_posix()
        out.append(ImageItem(0, folder, parent if parent != "." else os.path.basename(folder), kind="video"))
    out.sort(key=lambda i: i.rel)
    return [ImageItem(k, i.path, i.rel, i.pixels, i.kind, i.named) for k, i in enumerate(out)]
