"""A map at its scan's full size, never held whole: upsampled a slab at a time on the file's own
grid, its peak found and its gzipped NIfTI written as the slabs come.

A 512 x 512 x 400 CT's map is 420 MB in float32; held whole, with its copy on the file's grid and
the encoded file, one map would cost over a gigabyte. Trilinear interpolation is separable: the
layer's map is brought to full size along the file's first two axes at once (small: the third
axis keeps the layer's size), then each slab of the third axis is two of those slices weighed as
PyTorch's ``trilinear`` (``align_corners=False``) weighs them. The map is laid out on the file's
grid before it is upsampled (flips and transposes commute with this interpolation), so the slabs
go to the file in its own voxel order, and the map overlays the scan in 3D Slicer, ITK-SNAP or
FSLeyes voxel for voxel, with the scan's own affine. A 3D segmenter's predicted labels go the same
way, each voxel taking the label whose voxel centre is nearest (PyTorch's ``nearest-exact``, which
unlike ``nearest`` is the same in every axis direction, so the file's flips do not shift it), as
16-bit integers.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from camcli.engine.scans import Grid
from camcli.errors import UsageError

try:  # the same gzip stream, faster (as the PNG writer)
    from zlib_ng import zlib_ng as deflate
except ImportError:  # pragma: no cover - platforms without a zlib-ng wheel
    deflate = zlib

#: bytes of float32 map upsampled at a time (a slab of a 512 x 512 CT's map is 32 slices)
SLAB_BYTES = 32 << 20
#: gzip level: a float map's low bits do not compress at any level, so the fastest costs little size
GZIP_LEVEL = 1
NIFTI_HEADER_BYTES = 352  # the 348-byte header and the 4-byte "no extensions" flag


def source_weights(out_size: int, in_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each output index along one axis: the two input indices and the second one's weight,
    as PyTorch's linear modes compute them with ``align_corners=False``."""
    src = np.maximum((np.arange(out_size, dtype=np.float64) + 0.5) * (in_size / out_size) - 0.5, 0.0)
    low = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    high = np.minimum(low + 1, in_size - 1)
    return low, high, (src - low).astype(np.float32)


def nearest_index(out_size: int, in_size: int) -> np.ndarray:
    """For each output index along one axis, the input index PyTorch's ``nearest-exact`` takes."""
    scale = np.float32(in_size / out_size)
    centres = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale
    return np.minimum(np.floor(centres).astype(np.int64), in_size - 1)


class FullMap:
    """One map (the layer's (d, h, w) on the scan's RAS grid, values in [0, 1]) at the scan's full
    size on the file's grid. :meth:`slabs` yields it a slab of the file's last axis at a time;
    :attr:`peak` (the file's voxel index of the maximum) is known once they have all been seen.
    ``labels``: a segmenter's class per voxel instead, upsampled nearest-exact, written as int16."""

    def __init__(self, small: np.ndarray, grid: Grid, labels: bool = False):
        self.grid = grid
        self.shape = grid.stored_shape
        self.labels = labels
        on_file = np.ascontiguousarray(grid.on_stored_grid(np.asarray(small, dtype=np.float32)))
        self._planar = F.interpolate(torch.from_numpy(on_file)[None, None],
                                     size=(self.shape[0], self.shape[1], on_file.shape[2]),
                                     **({"mode": "nearest-exact"} if labels else {"mode": "trilinear", "align_corners": False})
                                     )[0, 0].numpy()
        self.peak: tuple[int, int, int] | None = None
        self._best = -np.inf

    def slabs(self) -> Iterator[np.ndarray]:
        """(X, Y, k) float32 slabs along the file's last axis, clipped to [0, 1], in order (a
        segmenter's labels: int16)."""
        x, y, z = self.shape
        step = max(1, SLAB_BYTES // (4 * x * y))
        if self.labels:
            nearest = nearest_index(z, self._planar.shape[2])
            for k0 in range(0, z, step):
                yield self._planar[:, :, nearest[k0:k0 + step]].astype(np.int16)
            return
        low, high, weight = source_weights(z, self._planar.shape[2])
        for k0 in range(0, z, step):
            k = slice(k0, min(z, k0 + step))
            w = weight[k]
            slab = self._planar[:, :, low[k]] * (1 - w) + self._planar[:, :, high[k]] * w
            np.clip(slab, 0.0, 1.0, out=slab)
            flat = int(slab.argmax())
            if slab.flat[flat] > self._best:  # the first maximum in the file's order wins ties
                self._best = float(slab.flat[flat])
                i, j, kk = np.unravel_index(flat, slab.shape)
                self.peak = (int(i), int(j), int(k0 + kk))
            yield slab

    def nifti(self) -> Iterator[bytes]:
        """The map as a gzipped float32 NIfTI-1 file on the file's grid, in pieces (for
        :func:`camcli.output.paths.atomic_write`); :attr:`peak` is set once they are consumed."""
        dtype = "<i2" if self.labels else "<f4"
        header = nifti_header(self.grid, dtype)
        gz = deflate.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        yield gz.compress(header.binaryblock + b"\0\0\0\0")
        for slab in self.slabs():  # NIfTI's voxel order is Fortran's: x fastest, then y, then z
            yield gz.compress(slab.astype(dtype, copy=False).tobytes(order="F"))
        yield gz.flush()


def nifti_header(grid: Grid, dtype: str = "<f4"):
    """A NIfTI-1 header (float32, or ``dtype``) for a volume on the file's grid, with its affine
    as qform and sform (scanner coordinates, code 1, as the scan's own) and millimetres as units."""
    try:
        import nibabel as nib
    except ImportError:
        raise UsageError("writing NIfTI maps needs the medical extra: pip install 'camcli[medical]'") from None
    header = nib.Nifti1Header()
    header.set_data_shape(grid.stored_shape)
    header.set_data_dtype(dtype)
    header.set_qform(grid.file_affine, code=1)
    header.set_sform(grid.file_affine, code=1)
    header.set_xyzt_units("mm")
    header["vox_offset"] = NIFTI_HEADER_BYTES
    return header
