"""Video in: files decoded a frame at a time, folders of frames, the windows a model's clips are
sampled from, and each frame fitted to the model's input.

Decoding is OpenCV's FFmpeg build (already camcli's image library: no new dependency, frame
rate and frame count from the container, frames read one after the other, seeking where a
window starts). A folder of frames is one clip, its frames in name order at ``frames_fps``.
Nothing holds a whole video: readers yield frames, a window keeps only its sampled frames at the
model's input size.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from camcli.engine.discovery import IMAGE_EXTENSIONS
from camcli.errors import UsageError

#: the frame rate of a folder of frames, or of a file that states none, when ``frames_fps`` does not say
DEFAULT_FPS = 25.0


_STDERR = threading.Lock()


@contextlib.contextmanager
def quiet(stderr: bool = False):
    """FFmpeg's and OpenCV's own messages kept off the terminal while a video is opened (a damaged
    file's reason becomes the row's error instead); the user's ``OPENCV_FFMPEG_LOGLEVEL`` wins. With
    ``stderr``, file descriptor 2 itself is silenced for the moment: OpenCV prints a note on every
    WebM writer it opens, through no log level. Another thread's line written in that moment is lost."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    try:
        if not stderr:
            yield
            return
        with _STDERR:
            sys.stderr.flush()
            saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(null, 2)
                yield
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                os.close(null)
    finally:
        cv2.utils.logging.setLogLevel(level)


@dataclass(frozen=True)
class Video:
    """One video as its container (or its folder) describes it."""

    path: str
    fps: float
    frames: int
    width: int
    height: int
    #: a folder's frame files in order (empty for a video file)
    frame_files: tuple[str, ...] = ()
    #: what the run's row should say about how the video was read (an assumed frame rate)
    note: str = ""

    @property
    def seconds(self) -> float:
        return self.frames / self.fps


@dataclass(frozen=True)
class Window:
    """One clip of a video: source frames ``start`` to ``stop`` (exclusive), of which ``sampled``
    (``clip_len`` indices, repeated where the video is shorter than the clip) are the model's input."""

    index: int
    start: int
    stop: int
    sampled: tuple[int, ...]


def probe(path: str, frames_fps: float | None = None, max_pixels: int | None = None) -> Video:
    """What ``path`` holds (a video file, or a folder of frames), without decoding it whole; a
    file OpenCV cannot open, an empty one or frames above ``max_pixels`` are refused."""
    if os.path.isdir(path):
        return _probe_folder(path, frames_fps, max_pixels)
    with quiet():
        capture = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
    try:
        if not capture.isOpened():
            raise UsageError("cannot decode: not a video OpenCV's FFmpeg reads")
        fps = capture.get(cv2.CAP_PROP_FPS)
        frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        _check_pixels(int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                      max_pixels)  # before a frame is decoded
        ok, first = capture.read()  # the frames' size as decoded (a phone's rotated video: after rotation)
        if not ok:
            raise UsageError("cannot decode: the video holds no frame")
        height, width = first.shape[:2]
        note = ""
        if frames <= 0:  # a stream that does not say: counted (decoding nothing but the packets' headers)
            frames = 1
            while capture.grab():
                frames += 1
    finally:
        capture.release()
    if frames <= 0 or width <= 0 or height <= 0:
        raise UsageError("cannot decode: the video holds no frame")
    if not 0 < fps < 1000:
        fps = frames_fps or DEFAULT_FPS
        note = f"the video states no frame rate: read as {fps:g} fps"
    _check_pixels(width, height, max_pixels)
    return Video(path, float(fps), frames, width, height, note=note)


def _probe_folder(path: str, frames_fps: float | None, max_pixels: int | None) -> Video:
    names = sorted(n for n in os.listdir(path) if Path(n).suffix.lower() in IMAGE_EXTENSIONS and not n.startswith("."))
    if not names:
        raise UsageError("a folder of frames holds no image")
    files = tuple(os.path.join(path, n) for n in names)
    first = _read_frame_file(files[0])
    height, width = first.shape[:2]
    _check_pixels(width, height, max_pixels)
    fps = frames_fps or DEFAULT_FPS
    note = "" if frames_fps else f"a folder of frames: played at {fps:g} fps (set `frames_fps`)"
    return Video(path, float(fps), len(files), width, height, files, note)


def _check_pixels(width: int, height: int, max_pixels: int | None) -> None:
    if max_pixels and width * height > max_pixels:
        raise UsageError(f"frames of {width}x{height} exceed `max_pixels` {max_pixels}")


def _read_frame_file(path: str) -> np.ndarray:
    data = np.fromfile(path, dtype=np.uint8)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None:
        raise UsageError(f"cannot decode frame {os.path.basename(path)}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_frames(video: Video, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """``(index, RGB frame)`` from ``start`` to ``stop`` (the end), one at a time; a video whose
    frames end before its stated count, or change size, is refused when it does."""
    stop = video.frames if stop is None else min(stop, video.frames)
    if video.frame_files:
        for k in range(start, stop):
            frame = _read_frame_file(video.frame_files[k])
            if frame.shape[:2] != (video.height, video.width):
                name = os.path.basename(video.frame_files[k])
                raise UsageError(f"frame {name} is {frame.shape[1]}x{frame.shape[0]}, "
                                 f"the first {video.width}x{video.height}: a clip's frames share one size")
            yield k, frame
        return
    with quiet():
        capture = cv2.VideoCapture(video.path, cv2.CAP_FFMPEG)
    try:
        if start > 0:
            capture.set(cv2.CAP_PROP_POS_FRAMES, start)
        for k in range(start, stop):
            ok, bgr = capture.read()
            if not ok:
                raise UsageError(f"the video ends at frame {k}, before the {video.frames} frames it states")
            if bgr.shape[:2] != (video.height, video.width):
                raise UsageError(f"frame {k} is {bgr.shape[1]}x{bgr.shape[0]}, the video {video.width}x{video.height}")
            yield k, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    finally:
        capture.release()


def frame_step(video: Video, clip_fps: float | None) -> int:
    """Source frames between sampled ones: the video's rate over ``clip_fps`` (``None``: every frame)."""
    return max(1, round(video.fps / clip_fps)) if clip_fps else 1


def windows(video: Video, clip_len: int, step: int, clips: str) -> list[Window]:
    """The clips a run explains: ``one`` (the middle of the video), ``N`` (N evenly spaced from
    start to end), ``all`` (back to back over the whole video, the last one ending at its end).
    A video shorter than one clip gives one window over all of it, its frames repeated evenly."""
    span = (clip_len - 1) * step + 1
    n = video.frames
    if n < span:
        sampled = tuple(int(v) for v in np.linspace(0, n - 1, clip_len).round())
        return [Window(0, 0, n, sampled)]
    last = n - span
    if clips == "one":
        starts = [last // 2]
    elif clips == "all":
        starts = list(range(0, last + 1, span))
        if starts[-1] != last:
            starts.append(last)
    else:
        starts = list(dict.fromkeys(int(v) for v in np.linspace(0, last, int(clips)).round()))
    return [Window(k, s, s + span, tuple(range(s, s + span, step))) for k, s in enumerate(starts)]


@dataclass(frozen=True)
class ClipFraming:
    """How a frame becomes the model's input: resized to ``resized`` (h, w), then the ``crop``
    (h, w) cut from its centre at ``top``, ``left``; and where that crop lies in the frame."""

    frame: tuple[int, int]
    resized: tuple[int, int]
    crop: tuple[int, int]
    top: int
    left: int

    @property
    def region(self) -> tuple[float, float, float, float]:
        """The crop in the frame's pixels: x0, y0, x1, y1 (what the model saw; a map covers only it)."""
        sy, sx = self.frame[0] / self.resized[0], self.frame[1] / self.resized[1]
        return (self.left * sx, self.top * sy, (self.left + self.crop[1]) * sx, (self.top + self.crop[0]) * sy)

    def fit(self, rgb: np.ndarray) -> np.ndarray:
        """The frame as the model's input pixels, (crop h, crop w, 3) uint8 (area averaging when
        shrinking: torchvision's antialiased resize)."""
        h, w = self.resized
        shrink = h * w < rgb.shape[0] * rgb.shape[1]
        resized = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        return resized[self.top:self.top + self.crop[0], self.left:self.left + self.crop[1]]


def framing(frame: tuple[int, int], crop: tuple[int, int], resize: tuple[int, ...] | None) -> ClipFraming:
    """Resize as torchvision's video presets do (``resize``: (h, w) exactly, or the short side to
    one value, the long side in proportion; ``None``: the short side to the crop's), then
    centre-crop; a resize smaller than the crop grows to hold it."""
    fh, fw = frame
    if resize and len(resize) == 2:
        rh, rw = resize
    else:
        side = resize[0] if resize else max(crop)
        rh, rw = (side, int(side * fw / fh)) if fh <= fw else (int(side * fh / fw), side)
    if rh < crop[0] or rw < crop[1]:
        grow = max(crop[0] / rh, crop[1] / rw)
        rh, rw = max(crop[0], round(rh * grow)), max(crop[1], round(rw * grow))
    return ClipFraming(frame, (rh, rw), crop, int(round((rh - crop[0]) / 2)), int(round((rw - crop[1]) / 2)))
