"""A video's files and rows: per clip window and method x layer, the overlay as a WebM video at the
source's frame rate, a strip of evenly spaced frames, the map as (frames, H, W) with
``--save-heatmap npy``, and a row with the prediction and the frame and pixel where the map peaks.

The frames are decoded a second time, window by window (the explaining pass kept only the
model's small inputs): each frame gets the clip's map at its moment, linear in time between the
layer's time steps (whose centres sit where the model's input frames put them) and bilinear in
space over the part of the frame the model saw (its crop; outside it the map is zero). Every map
of a window is written in that one pass. WebM (VP8) is what OpenCV's FFmpeg build encodes and
every current browser plays; H.264 is not in its wheels.
"""

from __future__ import annotations

import io
import os
import tempfile
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from camcli.engine.clips import quiet, read_frames
from camcli.engine.layer_names import display_name
from camcli.engine.video_stream import ClipMap, ClipResult, VideoResult
from camcli.errors import UsageError
from camcli.output.paths import TARGET_MARK, atomic_write, current_umask, heatmap_rel, inside, overlay_rel
from camcli.output.render import encode_png, fit_side, overlay
from camcli.output.rows import VideoRow
from camcli.output.tempfiles import temp_path

#: frames in a window's strip, and the strip's height in pixels
STRIP_FRAMES = 8
STRIP_HEIGHT = 144
#: the overlay video's codec (VP8 in WebM)
FOURCC = "VP80"


def clip_part(clip: int) -> str:
    """``--clip3``: the window a map explains, in its file names."""
    return f"{TARGET_MARK}clip{clip}"


def base_row(result: VideoResult) -> VideoRow:
    row = VideoRow(result.item.index, result.item.rel, status=result.status, error=result.error, note=result.note)
    if result.status == "ok" and result.video is not None:
        v = result.video
        row.width, row.height, row.fps, row.frames = v.width, v.height, round(v.fps, 3), v.frames
    return row


def write_video(result: VideoResult, out: Path, settings) -> list[VideoRow]:
    """Write one video's files; its rows (one per window x method x layer, an error row per window
    the model failed on, or the video's one error row)."""
    base = base_row(result)
    if result.status != "ok":
        return [base]
    clips = sorted(result.clips, key=lambda c: c.window.index)
    base.clips = len(clips)
    rows: list[VideoRow] = []
    for clip in clips:
        w = clip.window
        fps = result.video.fps
        row = replace(base, clip=w.index, start_frame=w.start, end_frame=w.stop - 1, start_time=round(w.start / fps, 3),
                      end_time=round(w.stop / fps, 3))
        if clip.error:
            rows.append(replace(row, status="error", error=clip.error))
            continue
        row.pred_index, row.pred_label, row.score = clip.topk[0]
        rows += _write_clip(result, clip, row, out, settings)
    return rows


def _write_clip(result: VideoResult, clip: ClipResult, base: VideoRow, out: Path, settings) -> list[VideoRow]:
    """One window's maps, all from one decoding pass over its frames."""
    rel, w = result.item.rel, clip.window
    part = clip_part(w.index)
    rows = [replace(base, method=m.method, layer=display_name(m.layer), empty_map=m.empty, warning=m.warning or None,
                    output=overlay_rel(rel, m.method, m.layer, "webm", part),
                    strip=overlay_rel(rel, m.method, m.layer, "strip.png", part),
                    heatmap=heatmap_rel(rel, m.method, m.layer, "npy", part) if settings.save_heatmap else None)
            for m in clip.maps]
    try:
        with tempfile.TemporaryDirectory(prefix="camcli-video-") as scratch:
            _render(result, clip, rows, out, settings, Path(scratch))
    except UsageError as e:  # the decoder's refusal of a frame (the file changed since it was read): this window only
        _failed(rows, str(e))
    except (OSError, ValueError, cv2.error) as e:
        _failed(rows, f"cannot write outputs: {e}")
    return rows


def _failed(rows: list[VideoRow], error: str) -> None:
    for row in rows:
        row.status, row.error, row.output, row.strip, row.heatmap = "error", error, None, None, None


class _Track:
    """One map's writing through a window: its video, its strip's frames, its heatmap file, its peak."""

    def __init__(self, m: ClipMap, row: VideoRow, out: Path, scratch: Path, size: tuple[int, int], fps: float,
                 frames: int, full: tuple[int, int] | None) -> None:
        self.map, self.row = m, row
        self.video_tmp = scratch / f"{len(os.listdir(scratch))}.webm"
        with quiet(stderr=True):
            self.writer = cv2.VideoWriter(str(self.video_tmp), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*FOURCC), fps,
                                          size)
        if not self.writer.isOpened():
            raise OSError("OpenCV cannot encode WebM (VP8) video here")
        self.strip: list[np.ndarray] = []
        self.best, self.peak = -1.0, (0, 0, 0)
        self.heat_file = self.heat_tmp = None
        if row.heatmap and full is not None:  # (frames, H, W) float32, written a frame at a time
            target = inside(out, row.heatmap)
            target.parent.mkdir(parents=True, exist_ok=True)
            self.heat_tmp, self.heat_path = temp_path(target), target
            self.heat_file = open(self.heat_tmp, "wb")
            header = io.BytesIO()
            np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                          "shape": (frames, *full)})
            self.heat_file.write(header.getvalue())

    def close(self, out: Path) -> None:
        self.writer.release()
        atomic_write(inside(out, self.row.output), _chunks(self.video_tmp))
        if self.heat_file is not None:
            self.heat_file.close()
            os.chmod(self.heat_tmp, 0o666 & ~current_umask())
            os.replace(self.heat_tmp, self.heat_path)

    def abandon(self) -> None:
        self.writer.release()
        if self.heat_file is not None:
            self.heat_file.close()
            Path(self.heat_tmp).unlink(missing_ok=True)


def _render(result: VideoResult, clip: ClipResult, rows: list[VideoRow], out: Path, settings, scratch: Path) -> None:
    video, fit, w = result.video, result.framing, clip.window
    scale = fit_side(np.zeros((video.height, video.width, 1), np.uint8), settings.overlay_max_side)[1]
    size = (max(1, round(video.width * scale)), max(1, round(video.height * scale)))
    n = w.stop - w.start
    strip_at = set(np.linspace(w.start, w.stop - 1, min(STRIP_FRAMES, n)).round().astype(int).tolist())
    full = (video.height, video.width) if settings.save_heatmap and settings.heatmap_size != "layer" else None
    tracks: list[_Track] = []
    try:
        for m, row in zip(clip.maps, rows):
            tracks.append(_Track(m, row, out, scratch, size, video.fps, n, full))
            if row.heatmap and full is None:  # the layer's (t, h, w)
                buf = io.BytesIO()
                np.save(buf, np.ascontiguousarray(m.small, dtype=np.float32), allow_pickle=False)
                atomic_write(inside(out, row.heatmap), buf.getvalue())
        region = fit.region
        for f, rgb in read_frames(video, w.start, w.stop):
            shown = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA) if scale != 1.0 else rgb
            position = _layer_time(f, w.sampled)
            for t in tracks:
                small = _at_time(t.map.small, position, len(w.sampled))
                heat = _placed(small, region, (size[1], size[0]), scale)
                value = float(small.max())
                if value > t.best:
                    _, _, _, (x, y) = cv2.minMaxLoc(heat)
                    t.best = value
                    t.peak = (f, int(min(video.width - 1, x / scale)), int(min(video.height - 1, y / scale)))
                picture = overlay(shown, heat, settings.colormap, settings.alpha)
                t.writer.write(cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
                if f in strip_at:
                    h = STRIP_HEIGHT
                    t.strip.append(cv2.resize(picture, (max(1, round(picture.shape[1] * h / picture.shape[0])), h),
                                              interpolation=cv2.INTER_AREA))
                if t.heat_file is not None:
                    t.heat_file.write(_placed(small, region, full, 1.0).astype("<f4").tobytes())
        for t in tracks:
            t.close(out)
            atomic_write(inside(out, t.row.strip), encode_png(_strip(t.strip)))
            f, x, y = t.peak
            t.row.peak_frame, t.row.peak_time, t.row.peak_x, t.row.peak_y = f, round(f / video.fps, 3), x, y
    except BaseException:
        for t in tracks:
            t.abandon()
        raise


def _layer_time(frame: int, sampled: tuple[int, ...]) -> float:
    """Where ``frame`` lies among the model's input frames (0 .. T-1, fractional between them)."""
    return float(np.interp(frame, sampled, np.arange(len(sampled))))


def _at_time(small: np.ndarray, position: float, frames: int) -> np.ndarray:
    """The map's (h, w) at input frame ``position``: linear between the layer's time steps, each
    centred on the input frames it covers (as trilinear upsampling with align_corners=False)."""
    t = small.shape[0]
    c = min(max((position + 0.5) * t / frames - 0.5, 0.0), t - 1.0)
    lo = int(np.floor(c))
    hi, a = min(lo + 1, t - 1), c - lo
    return small[lo] if a == 0 or hi == lo else (1 - a) * small[lo] + a * small[hi]


def _placed(small: np.ndarray, region, shape: tuple[int, int], scale: float) -> np.ndarray:
    """The (h, w) map upsampled (bilinear) over the crop ``region`` of a frame of ``shape`` (at
    ``scale`` of the video's pixels); zero where the model saw nothing."""
    x0, y0, x1, y1 = (round(v * scale) for v in region)
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(shape[1], x1), min(shape[0], y1)
    heat = np.zeros(shape, np.float32)
    if x1 > x0 and y1 > y0:
        heat[y0:y1, x0:x1] = cv2.resize(np.ascontiguousarray(small, dtype=np.float32), (x1 - x0, y1 - y0),
                                        interpolation=cv2.INTER_LINEAR)
    return np.clip(heat, 0.0, 1.0, out=heat)


def _strip(frames: list[np.ndarray]) -> np.ndarray:
    """The strip's frames side by side, two pixels of black between them."""
    gap = np.zeros((STRIP_HEIGHT, 2, 3), np.uint8)
    parts = []
    for k, f in enumerate(frames):
        parts += [gap, f] if k else [f]
    return np.hstack(parts)


def _chunks(path: Path, size: int = 1 << 20):
    with open(path, "rb") as f:
        while chunk := f.read(size):
            yield chunk
    os.unlink(path)
