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

from collections.abc import Sequence

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


def windowed(voxels: np.ndarray, level: float, width: float) -> np.ndarray:
    """Values from ``level - width/2`` (0) to ``level + width/2`` (1), clipped, float32."""
    low = level - width / 2
    return np.clip((voxels.astype(np.float32) - low) / width, 0.0, 1.0)


def scaled(voxels: np.ndarray, how: str) -> np.ndarray:
    """Per-volume scaling (see the module's docstring); a constant volume becomes zeros."""
    v = voxels.astype(np.float32)
    if how == "none":
        return v
    if how == "zscore":
        std = float(v.std())
        return (v - float(v.mean())) / std if std > 0 else np.zeros_like(v)
    if how == "minmax":
        low, high = float(v.min()), float(v.max())
    elif how == "percentiles":
        low, high = (float(x) for x in np.percentile(v, (0.5, 99.5)))
    else:
        raise UsageError(f"unknown scaling {how!r}; choose one of {', '.join(SCALINGS)}")
    if high <= low:
        return np.zeros_like(v)
    return np.clip((v - low) / (high - low), 0.0, 1.0)


def fitted(voxels: np.ndarray, size: Sequence[int] | None) -> tuple[torch.Tensor, tuple[float, ...]]:
    """(1, X, Y, Z) float32 tensor at ``size`` (trilinear; ``None``: as it is) and the factor per
    axis (new size / old size)."""
    import torch  # here: the settings' checks read the presets above before torch loads
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(voxels, dtype=np.float32))[None, None]
    if size is None or tuple(size) == tuple(voxels.shape):
        return t[0], (1.0,) * voxels.ndim
    if len(size) != voxels.ndim or any(int(s) < 1 for s in size):
        raise UsageError(f"input size {tuple(size)} does not fit a {voxels.ndim}-D volume")
    out = F.interpolate(t, size=tuple(int(s) for s in size), mode="trilinear", align_corners=False)
    return out[0], tuple(int(s) / int(n) for s, n in zip(size, voxels.shape))
