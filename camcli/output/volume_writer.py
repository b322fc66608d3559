"""A scan's files and rows: per method x layer, the map as NIfTI on the scan's grid, the picture of
the planes through its peak, and a row with the prediction and where the peak lies (the scan
file's voxel index and the scanner's millimetres)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from camcli.engine.layer_names import display_name, file_safe
from camcli.engine.volume_stream import VolumeMap, VolumeResult
from camcli.output.paths import atomic_write, inside, method_file_name, overlay_rel
from camcli.output.render import encode_png
from camcli.output.rows import VolumeRow
from camcli.output.volume_figures import planes_figure
from camcli.output.volume_nifti import FullMap


def nifti_rel(scan_rel: str, method: str, layer: str) -> str:
    """``heatmaps/ct/chest.nii.gz.gradcam@block3.nii.gz``: mirrors the input tree, as overlays do."""
    return f"heatmaps/{scan_rel}.{method_file_name(method)}@{file_safe(layer)}.nii.gz"


def display_map(m: VolumeMap, shape: tuple[int, int, int]) -> np.ndarray:
    """The layer's map on the grid of the scan's picture values (trilinear: the input cube covers
    the whole scan)."""
    small = torch.from_numpy(np.ascontiguousarray(m.small, dtype=np.float32))[None, None]
    return F.interpolate(small, size=shape, mode="trilinear", align_corners=False)[0, 0].clamp_(0, 1).numpy()


def base_row(result: VolumeResult) -> VolumeRow:
    row = VolumeRow(result.item.index, result.item.rel, status=result.status, error=result.error, note=result.note)
    grid = result.grid
    if result.status == "ok" and grid is not None:
        row.shape = "x".join(str(int(v)) for v in grid.stored_shape)
        row.spacing = "x".join(f"{v:.4g}" for v in np.linalg.norm(grid.file_affine[:3, :3], axis=0))
        row.orientation = grid.stored or "none"
        row.pred_index, row.pred_label, row.score = result.topk[0] if result.topk else (None, None, None)
    return row


def write_volume(result: VolumeResult, out: Path, settings) -> list[VolumeRow]:
    """Write one scan's files; its rows (one per method x layer, or its one error row). Each map
    goes to its NIfTI a slab at a time (:class:`FullMap`), its peak found on the way; the picture
    is drawn from the scan's shrunk values."""
    base = base_row(result)
    if result.status != "ok" or not result.maps:
        return [base]
    grid, grey = result.grid, result.display
    to_display = np.array(grey.shape) / np.array(grid.shape)
    display_spacing = tuple(s / f for s, f in zip(grid.spacing, to_display))
    rows = []
    for m in result.maps:
        row = replace(base, method=m.method, layer=display_name(m.layer), empty_map=m.empty, warning=m.warning or None,
                      output=overlay_rel(result.item.rel, m.method, m.layer, "png"),
                      heatmap=nifti_rel(result.item.rel, m.method, m.layer))
        try:
            full = FullMap(m.small, grid)
            atomic_write(inside(out, row.heatmap), full.nifti())
            row.peak_i, row.peak_j, row.peak_k = full.peak
            peak = grid.ras_index(full.peak)
            row.peak_x, row.peak_y, row.peak_z = (round(v, 2) for v in grid.millimetres(peak))
            title = (f"{result.item.rel}  {m.method} @ {display_name(m.layer)}  {base.pred_label} {base.score:.3f}  "
                     f"peak ({row.peak_x:g}, {row.peak_y:g}, {row.peak_z:g}) mm")
            at = tuple(min(n - 1, int((p + 0.5) * f)) for p, f, n in zip(peak, to_display, grey.shape))
            picture = planes_figure(grey, display_map(m, grey.shape), at, display_spacing, settings.colormap,
                                    settings.alpha, title, depth=grid.shape[2])
            atomic_write(inside(out, row.output), encode_png(picture))
        except (OSError, ValueError) as e:
            row.status, row.error, row.output, row.heatmap = "error", f"cannot write outputs: {e}", None, None
        rows.append(row)
    return rows
