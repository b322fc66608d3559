"""The picture of a map of a 3D scan (its NIfTI volume: :mod:`camcli.output.volume_nifti`).

The picture shows the three orthogonal planes through the map's peak, in the
radiological convention viewers use (axial and coronal: the patient's right on the picture's
left; axial: anterior up; coronal and sagittal: superior up; sagittal: anterior on the left),
each plane drawn at its true aspect from the voxel spacing, lettered at its edges, with a
crosshair on the peak; below them, a montage of axial slices across the map. For the gallery's
sliders, :func:`plane_strips` draws each plane's slices through the whole scan as one strip of
frames.
"""

from __future__ import annotations

from collections.abc import Sequence
import cv2
import numpy as np

from camcli.output.render import overlay

#: pixels per millimetre are chosen so that a plane's longer side is about this many pixels
PLANE_SIDE = 256
MONTAGE_SLICES = 12
#: the gallery's sliders: frames per plane (a scan with fewer slices repeats some) and their longer side
SLIDER_FRAMES = 32
SLIDER_SIDE = 128
#: each plane's name, the RAS axis its slices are taken across, and (rows, columns) of the others
PLANES = (("axial", 2, (1, 0)), ("coronal", 1, (2, 0)), ("sagittal", 0, (2, 1)))


def planes_figure(grey: np.ndarray, heat: np.ndarray, peak: Sequence[int], spacing: Sequence[float],
                  colormap: str = "jet", alpha: float = 0.5, title: str = "", depth: int | None = None) -> np.ndarray:
    """RGB picture: axial, coronal and sagittal planes through ``peak`` (a RAS voxel index), then a
    montage of axial slices. ``grey`` and ``heat``: (X, Y, Z) in [0, 1] on the RAS grid, perhaps
    shrunk from the scan's; ``depth``: the scan's own number of axial slices, which the montage's
    labels count in (``None``: ``grey``'s)."""
    x, y, z = (int(v) for v in peak)
    sx, sy, sz = (float(v) for v in spacing)
    # each plane as rows (top to bottom) x columns (left to right) in the radiological convention
    axial = (grey[:, :, z], heat[:, :, z], (sy, sx), (y, x), "axial")  # rows: A to P, columns: R to L
    coronal = (grey[:, y, :], heat[:, y, :], (sz, sx), (z, x), "coronal")  # rows: S to I
    sagittal = (grey[x, :, :], heat[x, :, :], (sz, sy), (z, y), "sagittal")  # columns: A to P
    scale = PLANE_SIDE / max(n * s for n, s in zip(grey.shape, spacing))  # pixels per mm, one for all planes
    tiles = [_plane(g, h, step, at, name, scale, colormap, alpha) for g, h, step, at, name in
             (axial, coronal, sagittal)]
    row = _hstack(tiles)
    montage = _montage(grey, heat, (sy, sx), scale, colormap, alpha, row.shape[1], depth or grey.shape[2])
    parts = [row] + ([montage] if montage is not None else [])
    if title:
        bar = np.full((22, row.shape[1], 3), 255, np.uint8)
        cv2.putText(bar, title[:120], (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        parts.insert(0, bar)
    return np.ascontiguousarray(np.vstack(parts))


def plane_strips(grey: np.ndarray, heat: np.ndarray, spacing: Sequence[float], colormap: str = "jet",
                 alpha: float = 0.5, full_shape: Sequence[int] | None = None) -> dict[str, np.ndarray]:
    """Per plane, a vertical strip of :data:`SLIDER_FRAMES` frames: slices evenly spaced through
    the scan (feet to head, right to left, front to back), each drawn in the radiological
    convention at its true aspect and labelled with the scan's own slice index (``full_shape``:
    the scan's, when ``grey`` is shrunk). The gallery's slider for a plane shows one frame of its
    strip at a time. The map is blended over the scan once for the whole volume (every step is
    per voxel), then each frame is cut from it and resized."""
    full = tuple(full_shape or grey.shape)
    x, y, z = grey.shape
    levels = (np.clip(grey, 0, 1) * 255).astype(np.uint8).reshape(x, y * z)
    blended = overlay(np.repeat(levels[:, :, None], 3, 2), np.clip(heat, 0, 1).reshape(x, y * z).astype(np.float32),
                      colormap, alpha).reshape(x, y, z, 3)
    out = {}
    for name, axis, (r, c) in PLANES:
        n = grey.shape[axis]
        scale = SLIDER_SIDE / max(grey.shape[r] * spacing[r], grey.shape[c] * spacing[c])
        height = max(1, int(round(grey.shape[r] * spacing[r] * scale)))
        width = max(1, int(round(grey.shape[c] * spacing[c] * scale)))
        frames = []
        for k in np.linspace(0, n - 1, SLIDER_FRAMES).round().astype(int):
            plane = np.take(blended, k, axis)  # (first remaining axis, second, 3)
            tile = cv2.resize(np.ascontiguousarray(plane.transpose(1, 0, 2)[::-1, ::-1]), (width, height),
                              interpolation=cv2.INTER_LINEAR)  # as :func:`_oriented` lays a plane out
            index = min(full[axis] - 1, int((k + 0.5) * full[axis] / n))
            cv2.putText(tile, f"{'zyx'[2 - axis]} {index}", (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1,
                        cv2.LINE_AA)
            frames.append(tile)
        out[name] = np.ascontiguousarray(np.vstack(frames))
    return out


def encode_jpeg(rgb: np.ndarray, quality: int = 80) -> bytes:
    """RGB as JPEG bytes (the sliders' strips: many frames, seen small)."""
    ok, data = cv2.imencode(".jpg", np.ascontiguousarray(rgb[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("cannot encode the slices as JPEG")
    return data.tobytes()


def _oriented(a: np.ndarray) -> np.ndarray:
    """A plane of the RAS grid, (first axis, second axis), as a picture's (rows, columns): the
    second axis from high to low down the rows (anterior or superior up), the first from high to
    low across (axial and coronal: x grows towards the patient's right, which the radiological
    convention puts on the picture's left; sagittal: anterior on the left)."""
    return a.T[::-1, ::-1]


def _plane(grey2d, heat2d, step, at, name, scale, colormap, alpha, marked: bool = True) -> np.ndarray:
    """One plane as a picture at its true aspect; ``marked``: the crosshair on ``at`` and the
    edge letters (the montage's slices have neither)."""
    rows_mm, cols_mm = step
    g, h = _oriented(grey2d), _oriented(heat2d)
    height = max(1, int(round(g.shape[0] * rows_mm * scale)))
    width = max(1, int(round(g.shape[1] * cols_mm * scale)))
    grey_u8 = cv2.resize((np.clip(g, 0, 1) * 255).astype(np.uint8), (width, height), interpolation=cv2.INTER_LINEAR)
    heat_r = cv2.resize(h.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    tile = overlay(np.repeat(grey_u8[:, :, None], 3, 2), np.clip(heat_r, 0, 1), colormap, alpha)
    if not marked:
        return tile
    # the peak's row and column in the picture (the plane was flipped on both axes)
    r = (g.shape[0] - 1 - at[0] + 0.5) * height / g.shape[0]
    c = (g.shape[1] - 1 - at[1] + 0.5) * width / g.shape[1]
    cv2.line(tile, (int(c), 0), (int(c), height - 1), (255, 255, 255), 1)
    cv2.line(tile, (0, int(r)), (width - 1, int(r)), (255, 255, 255), 1)
    letters = {"axial": ("A", "P", "R", "L"), "coronal": ("S", "I", "R", "L"), "sagittal": ("S", "I", "A", "P")}[name]
    for text, (px, py) in zip(letters, [(width // 2 - 4, 12), (width // 2 - 4, height - 4), (2, height // 2),
                                        (width - 10, height // 2)]):
        cv2.putText(tile, text, (px, py), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 0), 1, cv2.LINE_AA)
    label = np.full((16, width, 3), 0, np.uint8)
    cv2.putText(label, name, (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return np.vstack([label, tile])


def _hstack(tiles: list[np.ndarray], gap: int = 4) -> np.ndarray:
    height = max(t.shape[0] for t in tiles)
    padded = []
    for t in tiles:
        pad = np.zeros((height, t.shape[1] + gap, 3), np.uint8)
        pad[:t.shape[0], :t.shape[1]] = t
        padded.append(pad)
    return np.hstack(padded)


def _montage(grey, heat, step, scale, colormap, alpha, width, depth) -> np.ndarray | None:
    """Axial slices evenly across the extent of the map (its non-zero part), feet to head, each
    labelled with the scan's slice index (of ``depth``)."""
    shown = grey.shape[2]
    hot = np.flatnonzero(heat.reshape(-1, shown).max(0) > 0.05)
    lo, hi = (int(hot[0]), int(hot[-1])) if len(hot) else (0, shown - 1)
    picks = sorted(set(np.linspace(lo, hi, min(MONTAGE_SLICES, hi - lo + 1)).round().astype(int).tolist()))
    tiles = [_plane(grey[:, :, k], heat[:, :, k], step, (0, 0), "axial", scale * 0.5, colormap, alpha, marked=False)
             for k in picks]
    for k, t in zip(picks, tiles):
        cv2.putText(t, f"z {min(depth - 1, int((k + 0.5) * depth / shown))}", (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    (255, 255, 255), 1, cv2.LINE_AA)
    per_row = max(1, width // (tiles[0].shape[1] + 4))
    rows = [_hstack(tiles[i:i + per_row]) for i in range(0, len(tiles), per_row)]
    out = np.zeros((sum(r.shape[0] + 4 for r in rows), width, 3), np.uint8)
    top = 0
    for r in rows:
        out[top:top + r.shape[0], :min(width, r.shape[1])] = r[:, :width]
        top += r.shape[0] + 4
    return out
