"""A scan's values made a model's input: CT windows, per-volume scaling, and resampling to a size.

CT values are Hounsfield units, the same tissue the same number in every scanner; a radiologist
reads them through a window (a level and a width: the values shown from black to white), and CT
models are trained on windowed inputs. ``window`` takes ``level,width`` or a preset's name;
:data:`WINDOWS` holds the common presets (Radiopaedia's figures). Other scans (MR, whose values
have no fixed meaning) are scaled per volume instead: ``minmax`` to [0, 1] (MONAI's
``ScaleIntensity``), ``percentiles`` (the 0.5th to the 99.5th percentile to [0, 1], clipped: one hot
voxel does not darken the rest) or ``zscore`` (MONAI's ``NormalizeIntensity``).

:func:`fitted` resamples a volume to the model's input size trilinearly and returns the factor
per axis; the input covers the whole scan, so a map comes back by resizing it to the scan's shape.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from typing import TYPE_CHECKING

import numpy as np

from camcli.errors import UsageError

if TYPE_CHECKING:
    import torch

#: name -> (level, width) in Hounsfield units
WINDOWS: dict[str, tuple[float, float]] = {
    "brain": (40.0, 80.0),
    "subdural": (75.0, 215.0),
    "stroke": (32.0, 8.0),
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "soft-tissue": (50.0, 400.0),
    "liver": (30.0, 150.0),
    "bone": (400.0, 1800.0),
}
SCALINGS = ("minmax", "percentiles", "zscore", "none")


def window_of(spec: str) -> tuple[float, float]:
    """``level,width`` or a preset's name -> (level, width)."""
    key = spec.strip().lower().replace("_", "-").replace(" ", "-")
    if key in WINDOWS:
        return WINDOWS[key]
    parts = [p.strip() for p in spec.split(",")]
    try:
        level, width = (float(p) for p in parts)
    except ValueError:
        raise UsageError(f"`window` {spec!r}: give level,width in Hounsfield units (40,80) or one of "
                         f"{', '.join(WINDOWS)}") from None
    if not width > 0:
        raise UsageError(f"`window` {spec!r}: its width must be positive")
    return level, width


def windowed(voxels: np.ndarray, level: float, width: float, in_place: bool = False) -> np.ndarray:
    """Values from ``level - width/2`` (0) to ``level + width/2`` (1), clipped, float32
    (``in_place``: into ``voxels`` when they are float32, which a caller that owns them saves a
    copy by: a CT's is 420 MB)."""
    return _affine(voxels, level - width / 2, width, in_place, clip=True)


def scaled(voxels: np.ndarray, how: str, in_place: bool = False) -> np.ndarray:
    """Per-volume scaling (see the module's docstring); a constant volume becomes zeros;
    ``in_place`` as for :func:`windowed`."""
    v = voxels.astype(np.float32, copy=False)
    if how == "none":
        return v
    if how == "zscore":
        std = float(v.std())
        return _affine(v, float(v.mean()), std, in_place, clip=False) if std > 0 else np.zeros_like(v)
    if how == "minmax":
        low, high = float(v.min()), float(v.max())
    elif how == "percentiles":
        low, high = percentiles(v, (0.5, 99.5))
    else:
        raise UsageError(f"unknown scaling {how!r}; choose one of {', '.join(SCALINGS)}")
    if high <= low:
        return np.zeros_like(v)
    return _affine(v, low, high - low, in_place, clip=True)


def _affine(v: np.ndarray, low: float, width: float, in_place: bool, clip: bool) -> np.ndarray:
    """``(v - low) / width``, clipped to [0, 1] where asked, in one float32 array: ``v`` itself
    where allowed, else one new C-ordered one (never the temporaries of ``(v - low) / width``)."""
    if in_place and v.dtype == np.float32:
        out = np.subtract(v, np.float32(low), out=v)
    else:
        out = np.subtract(v, np.float32(low), dtype=np.float32, order="C")
    out /= np.float32(width)
    return np.clip(out, 0.0, 1.0, out=out) if clip else out


#: voxels above which percentiles are found by counting instead of sorting a copy
LARGE = 1 << 24
HISTOGRAM_BINS = 1 << 16
CHUNK = 1 << 22


def percentiles(v: np.ndarray, qs: Sequence[float]) -> tuple[float, ...]:
    """``np.percentile(v, qs)`` (its default, linear interpolation between order statistics),
    found without a copy of a large volume: a histogram of the values, a chunk at a time, says
    which bin holds each wanted order statistic, and only that bin's values are sorted."""
    if v.size <= LARGE:
        return tuple(float(x) for x in np.percentile(v, qs))
    flat = v.reshape(-1) if v.flags.c_contiguous else v.ravel(order="K")
    low, high = float(flat.min()), float(flat.max())
    if high <= low:
        return (low,) * len(qs)
    scale, start = np.float32(HISTOGRAM_BINS / (high - low)), np.float32(low)

    def chunks() -> Iterator[np.ndarray]:
        return (flat[k:k + CHUNK] for k in range(0, flat.size, CHUNK))

    def bins(chunk: np.ndarray) -> np.ndarray:  # monotone in the value, and the same in both passes
        return np.minimum(((chunk - start) * scale).astype(np.int32), HISTOGRAM_BINS - 1)

    counts = np.zeros(HISTOGRAM_BINS, np.int64)
    for chunk in chunks():
        counts += np.bincount(bins(chunk), minlength=HISTOGRAM_BINS)
    before = np.concatenate([[0], np.cumsum(counts)])
    positions = [q / 100 * (flat.size - 1) for q in qs]
    ranks = sorted({r for p in positions for r in (int(np.floor(p)), min(int(np.floor(p)) + 1, flat.size - 1))})
    wanted = {r: int(np.searchsorted(before, r, side="right")) - 1 for r in ranks}
    held: dict[int, list[np.ndarray]] = {b: [] for b in set(wanted.values())}
    for chunk in chunks():
        index = bins(chunk)
        for b in held:
            held[b].append(chunk[index == b])
    ordered = {b: np.sort(np.concatenate(parts)) for b, parts in held.items()}
    value = {r: float(ordered[b][r - before[b]]) for r, b in wanted.items()}
    out = []
    for p in positions:
        lower = int(np.floor(p))
        a, b = value[lower], value[min(lower + 1, flat.size - 1)]
        out.append(float(np.percentile(np.array([a, b], np.float64), (p - lower) * 100)))
    return tuple(out)


def shrunk(volume: np.ndarray, most: int) -> np.ndarray:
    """``volume`` averaged down (area) so that no axis exceeds ``most`` voxels; as it is when none
    does. The pictures of a scan are drawn from it: a plane is at most a few hundred pixels wide,
    so a CT's 420 MB need not be kept to draw them."""
    import torch.nn.functional as F

    if max(volume.shape) <= most:
        return np.array(volume, dtype=np.float32, order="C")
    size = tuple(min(int(n), most) for n in volume.shape)
    return np.ascontiguousarray(F.adaptive_avg_pool3d(as_tensor(volume)[None, None], size)[0, 0].numpy())


def as_tensor(volume: np.ndarray) -> torch.Tensor:
    """``volume`` as a float32 tensor sharing its memory whatever its axis order (nibabel's arrays
    are Fortran-ordered; torch reads any positive strides), copied only where an axis is flipped
    in memory (torch refuses negative strides)."""
    import torch

    a = np.asarray(volume, dtype=np.float32)
    if any(s < 0 for s in a.strides):
        a = np.ascontiguousarray(a)
    return torch.from_numpy(a)


def fitted(voxels: np.ndarray, size: Sequence[int] | None) -> tuple[torch.Tensor, tuple[float, ...]]:
    """(1, X, Y, Z) float32 tensor at ``size`` (trilinear; ``None``: as it is) and the factor per
    axis (new size / old size)."""
    import torch.nn.functional as F  # here: the settings' checks read the presets above before torch loads

    t = as_tensor(voxels)[None, None]
    if size is None or tuple(size) == tuple(voxels.shape):
        return t[0].contiguous(), (1.0,) * voxels.ndim
    if len(size) != voxels.ndim or any(int(s) < 1 for s in size):
        raise UsageError(f"input size {tuple(size)} does not fit a {voxels.ndim}-D volume")
    out = F.interpolate(t, size=tuple(int(s) for s in size), mode="trilinear", align_corners=False)
    return out[0], tuple(int(s) / int(n) for s, n in zip(size, voxels.shape))

