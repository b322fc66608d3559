"""Videos through a video model: clips sampled while the video is decoded, explained a batch at a time.

One thread decodes (OpenCV releases the interpreter while it does) and makes each window's
sampled frames the model's input; the main thread stacks windows into batches, from one video
or several (short clips fill a batch together), and explains each batch with one forward and
one partial backward for every method at every layer, as for images and scans. A video's result
holds its windows' predictions and their maps at the layer's (t, h, w): never its frames, so a
ten-minute film costs what its clips cost. Its overlays are written from a second decoding pass
(:mod:`camcli.output.video_writer`). A video that cannot be read becomes an error result with
its reason; the run goes on.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from camcli.engine.clips import ClipFraming, Video, Window, frame_step, framing, probe, read_frames, windows
from camcli.engine.discovery import ImageItem
from camcli.engine.loaded import LoadedModel
from camcli.engine.methods.assumptions import failures as failed_at
from camcli.engine.methods.assumptions import on_host as on_host_checks
from camcli.engine.stream import NOT_FINITE, ImageResult, image_seed
from camcli.errors import UsageError

#: windows read in a segment: windows closer than this many frames are decoded through, not sought
SEEK_GAP = 64


@dataclass
class ClipMap:
    """One method x layer's map of a window, at the layer's (t, h, w), normalised over the clip."""

    method: str
    layer: str
    small: np.ndarray
    empty: bool
    failures: tuple = ()

    @property
    def warning(self) -> str:
        return "; ".join(f"{a.name}: {a.describe(v)}" for a, v in self.failures)


@dataclass
class ClipResult:
    """One window of a video: its top classes and a map per method x layer of the first."""

    window: Window
    topk: list[tuple[int, str, float]] = field(default_factory=list)
    maps: list[ClipMap] = field(default_factory=list)
    error: str = ""


@dataclass
class VideoResult(ImageResult):
    """What camcli learnt about one video: the :class:`ImageResult` fields (``width`` and
    ``height`` its frames'), how it was read and framed, and its windows in order."""

    video: Video | None = None
    framing: ClipFraming | None = None
    clips: list[ClipResult] = field(default_factory=list)


@dataclass(frozen=True)
class Sampling:
    """How clips are cut from a video: ``clip_len`` frames, ``clip_fps`` (``None``: every frame),
    which windows (``clips``), the frames' resize, a folder's frame rate, the pixel limit."""

    clip_len: int
    clip_fps: float | None
    clips: str
    resize: tuple[int, ...] | None
    frames_fps: float | None = None
    max_pixels: int | None = None


def iter_videos(loaded: LoadedModel, explainer, items: Sequence[ImageItem], sampling: Sampling, *,
                batch_size: int = 4, prefetch: int = 2, device: torch.device | str = "cpu",
                skip: Collection[str] = frozenset(), seed: int = 0, topk: int = 5) -> Iterator[VideoResult]:
    """One :class:`VideoResult` per item not in ``skip``, in order; up to ``prefetch`` batches of
    windows decoded ahead."""
    device = torch.device(device)
    todo = [i for i in items if i.rel not in skip]
    if not todo:
        return
    by_index = {i.index: i for i in todo}
    batch_size = max(1, batch_size)
    inbox: queue.Queue = queue.Queue(maxsize=max(1, prefetch) * batch_size + 2)
    stop = threading.Event()
    reader = threading.Thread(target=_decode, args=(todo, loaded, sampling, inbox, stop), daemon=True,
                              name="camcli-video-decoder")
    reader.start()
    labels = explainer.target.labels or loaded.labels
    k = max(1, min(topk, len(labels)))
    results: dict[int, VideoResult] = {}
    waiting: dict[int, int] = {}  # item index -> windows not yet explained
    ended: set[int] = set()
    order = [i.index for i in todo]
    batch: list[tuple[int, Window, torch.Tensor]] = []
    head = 0
    try:
        while True:
            message = inbox.get()
            if message is None:
                break
            kind, index, *rest = message
            if kind == "start":
                video, frame_fit, count = rest
                results[index] = VideoResult(by_index[index], "ok", width=video.width, height=video.height,
                                             note=video.note, video=video, framing=frame_fit)
                waiting[index] = count
            elif kind == "clip":
                batch.append((index, *rest))
                if len(batch) >= batch_size:
                    _explain(batch, explainer, results, waiting, labels, k, device, seed)
                    batch = []
            else:  # end: the item is read (or failed: its error)
                error = rest[0]
                if error:
                    results[index] = VideoResult(by_index[index], "error", error=error)
                    waiting[index] = 0
                    batch = [b for b in batch if b[0] != index]
                ended.add(index)
            while head < len(order) and order[head] in ended and waiting.get(order[head], 0) == 0:
                yield results.pop(order[head])
                head += 1
        if batch:
            _explain(batch, explainer, results, waiting, labels, k, device, seed)
        while head < len(order):  # the decoder ended early (a failure of its own): no video goes unsaid
            index = order[head]
            if index in ended and index in results:
                yield results.pop(index)
            else:
                yield VideoResult(by_index[index], "error", error="the decoding thread stopped before this video was "
                                                                  "read to its end")
            head += 1
    finally:
        stop.set()
        while reader.is_alive():
            try:
                inbox.get(timeout=0.05)
            except queue.Empty:
                pass


def _explain(batch, explainer, results: dict[int, VideoResult], waiting: dict[int, int], labels, k: int,
             device, seed: int) -> None:
    """One batch of windows (from one video or several) through the explainer; each window's top
    classes and maps go to its video's result."""
    x = torch.stack([t for _, _, t in batch]).to(device)
    seeds = [image_seed(seed, f"{results[i].item.rel}#{w.index}") for i, w, _ in batch]
    try:
        exp = explainer(x, None, seeds=seeds)
    except (RuntimeError, ValueError) as e:
        for i, w, _ in batch:
            results[i].clips.append(ClipResult(w, error=f"model failed on this batch: {str(e).splitlines()[0]}"))
            waiting[i] -= 1
        return
    probs, idx = exp.probs.topk(k, dim=1)
    probs, idx = probs.cpu().tolist(), idx.cpu().tolist()
    finite = torch.isfinite(exp.logits).all(1).cpu().tolist()
    on_host = {key: (mb.maps.cpu().numpy(), mb.empty.cpu().tolist()) for key, mb in exp.maps.items()}
    checks = {key: on_host_checks(found) for key, found in exp.checks.items()}
    for n, (i, w, _) in enumerate(batch):
        if not finite[n]:
            clip = ClipResult(w, error=NOT_FINITE)
        else:
            maps = [ClipMap(method, layer, small[n], bool(empty[n]), failed_at(checks.get((method, layer), []), n))
                    for (method, layer), (small, empty) in on_host.items()]
            clip = ClipResult(w, [(c, labels[c], p) for c, p in zip(idx[n], probs[n])], maps)
        results[i].clips.append(clip)
        waiting[i] -= 1


def _decode(items: list[ImageItem], loaded: LoadedModel, sampling: Sampling, inbox: queue.Queue,
            stop: threading.Event) -> None:
    """The decoding thread: per item a ``start``, its windows' clips as they fill, an ``end``
    (with the error that ended it early, if one did); ``None`` when all are read."""
    clip_len, crop = loaded.input_size[0], tuple(loaded.input_size[1:])
    mean = torch.tensor(loaded.mean, dtype=torch.float32).view(3, 1, 1, 1) * 255
    std = torch.tensor(loaded.std, dtype=torch.float32).view(3, 1, 1, 1) * 255

    def put(message) -> bool:
        while not stop.is_set():
            try:
                inbox.put(message, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    try:
        for item in items:
            error = ""
            try:
                if item.kind != "video":  # named by the user: an image or a scan is no clip
                    raise UsageError(f"not a video ({'an image' if item.kind == 'image' else 'a 3D scan'}): a video "
                                     "model explains video files, animated GIFs and folders of frames")
                video = probe(item.path, sampling.frames_fps, sampling.max_pixels)
                found = windows(video, clip_len, frame_step(video, sampling.clip_fps), sampling.clips)
                fit = framing((video.height, video.width), crop, sampling.resize)
                if not put(("start", item.index, video, fit, len(found))):
                    return
                for window, frames in _sampled(video, found, fit):
                    x = (torch.from_numpy(frames).permute(3, 0, 1, 2).float() - mean) / std
                    if not put(("clip", item.index, window, x)):
                        return
            except (UsageError, ValueError, OSError, RuntimeError, cv2.error) as e:
                error = str(e).splitlines()[0] if str(e) else type(e).__name__
            except MemoryError:
                error = "out of memory while decoding the video"
            if not put(("end", item.index, error)):
                return
    finally:
        put(None)


def _sampled(video: Video, found: list[Window], fit: ClipFraming) -> Iterator[tuple[Window, np.ndarray]]:
    """Each window with its sampled frames fitted to the model, (T, h, w, 3) uint8, as soon as its
    last one is decoded; windows close together are read in one pass, far ones sought."""
    for segment in _segments(found):
        need: dict[int, list[tuple[int, int]]] = {}
        for w in segment:
            for pos, f in enumerate(w.sampled):
                need.setdefault(f, []).append((w.index, pos))
        filled = {w.index: [None] * len(w.sampled) for w in segment}
        left = {w.index: len(w.sampled) for w in segment}
        by_index = {w.index: w for w in segment}
        start, stop = min(w.start for w in segment), max(w.stop for w in segment)
        for k, rgb in read_frames(video, start, stop):
            if k not in need:
                continue
            small = fit.fit(rgb)
            for wi, pos in need[k]:
                filled[wi][pos] = small
                left[wi] -= 1
                if left[wi] == 0:
                    yield by_index[wi], np.stack(filled.pop(wi))


def _segments(found: list[Window]) -> list[list[Window]]:
    """Windows grouped into runs that are decoded in one pass (overlapping, or under :data:`SEEK_GAP` apart)."""
    runs: list[list[Window]] = []
    for w in sorted(found, key=lambda w: w.start):
        if runs and w.start <= max(v.stop for v in runs[-1]) + SEEK_GAP:
            runs[-1].append(w)
        else:
            runs.append([w])
    return runs
