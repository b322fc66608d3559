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
from camcli.output.paths import atomic_write, class_part, inside, method_file_name, overlay_rel, slices_rel
from camcli.output.render import encode_png
from camcli.output.rows import VolumeRow, VolumeSegmentRow
from camcli.output.volume_figures import encode_jpeg, plane_strips, planes_figure
from camcli.output.volume_nifti import FullMap


def nifti_rel(scan_rel: str, method: str, layer: str, target: str = "") -> str:
    """``heatmaps/ct/chest.nii.gz.gradcam@block3.nii.gz``: mirrors the input tree, as overlays do
    (a segmenter's class after the layer: ``...gradcam@up3--class1-liver.nii.gz``)."""
    return f"heatmaps/{scan_rel}.{method_file_name(method)}@{file_safe(layer)}{target}.nii.gz"


def mask_rel(scan_rel: str) -> str:
    """``masks/ct/chest.nii.gz.labels.nii.gz``: a 3D segmenter's predicted labels for the scan."""
    return f"masks/{scan_rel}.labels.nii.gz"


def display_map(m: VolumeMap, shape: tuple[int, int, int]) -> np.ndarray:
    """The layer's map on the grid of the scan's picture values (trilinear: the input cube covers
    the whole scan)."""
    small = torch.from_numpy(np.ascontiguousarray(m.small, dtype=np.float32))[None, None]
    return F.interpolate(small, size=shape, mode="trilinear", align_corners=False)[0, 0].clamp_(0, 1).numpy()


def base_row(result: VolumeResult, row_type: type[VolumeRow] = VolumeRow) -> VolumeRow:
    row = row_type(result.item.index, result.item.rel, status=result.status, error=result.error, note=result.note)
    grid = result.grid
    if result.status == "ok" and grid is not None:
        row.shape = "x".join(str(int(v)) for v in grid.stored_shape)
        row.spacing = "x".join(f"{v:.4g}" for v in grid.on_file_axes(grid.spacing))
        row.orientation = grid.stored or "none"
        if result.factors:  # along the file's axes, as shape and spacing
            row.resampled = "x".join(f"{v:.4g}" for v in grid.on_file_axes(result.factors))
        if result.topk:
            row.pred_index, row.pred_label, row.score = result.topk[0]
    return row


def write_volume(result: VolumeResult, out: Path, settings) -> list[VolumeRow]:
    """Write one scan's files; its rows (one per method x layer, or its one error row). Each map
    goes to its NIfTI a slab at a time (:class:`FullMap`), its peak found on the way; the picture
    is drawn from the scan's shrunk values. A 3D segmenter's scan also gets its predicted labels
    as NIfTI, and a row per class found x method x layer (one row with the note when none is)."""
    segmenter = result.segments is not None
    base = base_row(result, VolumeSegmentRow if segmenter else VolumeRow)
    if result.status != "ok":
        return [base]
    if segmenter:
        base.segments = len(result.segments)
        base.mask = mask_rel(result.item.rel)
        try:
            atomic_write(inside(out, base.mask), FullMap(result.labels, result.grid, labels=True).nifti())
        except (OSError, ValueError) as e:
            base.status, base.error, base.mask = "error", f"cannot write outputs: {e}", None
            return [base]
    if not result.maps:
        return [base]
    grid, grey = result.grid, result.display
    to_display = np.array(grey.shape) / np.array(grid.shape)
    display_spacing = tuple(s / f for s, f in zip(grid.spacing, to_display))
    rows = []
    for m in result.maps:
        row = replace(base, method=m.method, layer=display_name(m.layer), empty_map=m.empty, warning=m.warning or None,
                      output=overlay_rel(result.item.rel, m.method, m.layer, "png", _target(m)),
                      heatmap=nifti_rel(result.item.rel, m.method, m.layer, _target(m)))
        if m.segment is not None:
            seg = m.segment
            row.seg_rank, row.seg_index, row.seg_label = seg.rank, seg.index, seg.label
            row.voxel_share, row.mean_probability = seg.pixel_share, seg.probability
        what = f"{row.seg_label} {row.mean_probability:.3f}" if m.segment is not None else \
            f"{base.pred_label} {base.score:.3f}"
        try:
            full = FullMap(m.small, grid)
            atomic_write(inside(out, row.heatmap), full.nifti())
            row.peak_i, row.peak_j, row.peak_k = full.peak
            peak = grid.ras_index(full.peak)
            row.peak_x, row.peak_y, row.peak_z = (round(v, 2) for v in grid.millimetres(peak))
            title = (f"{result.item.rel}  {m.method} @ {display_name(m.layer)}  {what}  "
                     f"peak ({row.peak_x:g}, {row.peak_y:g}, {row.peak_z:g}) mm")
            at = tuple(min(n - 1, int((p + 0.5) * f)) for p, f, n in zip(peak, to_display, grey.shape))
            heat = display_map(m, grey.shape)
            picture = planes_figure(grey, heat, at, display_spacing, settings.colormap, settings.alpha, title,
                                    depth=grid.shape[2])
            atomic_write(inside(out, row.output), encode_png(picture))
            if settings.html:  # the gallery's sliders: a third of a map's writing, for the gallery alone
                for plane, strip in plane_strips(grey, heat, display_spacing, settings.colormap, settings.alpha,
                                                 grid.shape).items():
                    atomic_write(inside(out, slices_rel(row.output, plane)), encode_jpeg(strip))
        except (OSError, ValueError) as e:
            row.status, row.error, row.output, row.heatmap = "error", f"cannot write outputs: {e}", None, None
        rows.append(row)
    return rows


def _target(m: VolumeMap) -> str:
    """The part of a file name that says which class a segmenter's map explains."""
    return class_part(m.segment.index, m.segment.label) if m.segment is not None else ""
