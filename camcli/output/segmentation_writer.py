"""Writing one image of a segmentation run: an overlay per class found x method x layer with the
class's mask outlined, raw heatmaps, the predicted label mask (``save_mask``), and one row per
class x method x layer.

Runs in the run's writer threads, as :mod:`.image_writer` does for classifiers; a file that
cannot be written turns its rows into error rows and never stops the run.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from camcli.engine.layer_names import display_name
from camcli.engine.stream import ImageResult, MapResult
from camcli.geometry import energy_in_mask
from camcli.output.image_writer import first_columns, write_heatmap
from camcli.output.paths import atomic_write, class_part, inside, mask_rel, overlay_rel
from camcli.output.render import (OVERLAY_FORMATS, draw_mask_outline, encode_label_mask, fit_side, overlay_strips,
                                  picture_pieces)
from camcli.output.rows import SegmentRow
from camcli.settings import ExplainSettings

#: the longer side of the map on which a class's share of the energy is measured
ENERGY_SIDE = 512


def measure_size(h: int, w: int) -> tuple[int, int]:
    """The size (at most :data:`ENERGY_SIDE` a side) at which maps and masks are compared."""
    scale = min(1.0, ENERGY_SIDE / max(h, w))
    return max(1, round(h * scale)), max(1, round(w * scale))


def energy_in_own_mask(m: MapResult, labels: np.ndarray) -> float | None:
    """The share of the map's sum on its class's predicted mask (``labels`` at :func:`measure_size`),
    ``None`` for an empty map."""
    if m.empty:
        return None
    heat = m.upsampled(labels.shape)
    if float(heat.max()) <= 0:
        return None
    return energy_in_mask(heat, labels == m.segment.index)


def base_row(result: ImageResult) -> SegmentRow:
    """The columns every row of this image shares (or its one error row, or its no-class row)."""
    row = first_columns(result, SegmentRow)
    if result.status == "ok":
        row.segments = len(result.segments or [])
    return row


def write_segmentation_image(result: ImageResult, out: Path, settings: ExplainSettings) -> list[SegmentRow]:
    """Write one image's files; return its rows (one per class x method x layer, or one row saying
    it has no class to explain, or one error row)."""
    base = base_row(result)
    if result.status != "ok":
        return [base]
    s = settings
    if s.save_mask:
        rel = mask_rel(result.item.rel)
        try:
            atomic_write(inside(out, rel), encode_label_mask(result.label_grid.at((result.height, result.width))))
            base.mask = rel
        except (OSError, ValueError) as e:
            base.status, base.error = "error", f"cannot write the mask: {e}"
    if not result.maps:
        return [base]
    ext = OVERLAY_FORMATS[s.overlay_format]
    bgr = s.overlay_format != "png"
    backdrop, _scale = fit_side(result.image, s.overlay_max_side)
    measured = result.label_grid.at(measure_size(result.height, result.width))
    outlines: dict[int, list] = {}  # class -> its outline on the backdrop, traced once for all its maps
    rows = []
    for m in result.maps:
        seg = m.segment
        named = class_part(seg.index, seg.label)
        row = replace(base, method=m.method, layer=display_name(m.layer),
                      output=overlay_rel(result.item.rel, m.method, m.layer, ext, named), empty_map=m.empty,
                      warning=m.warning or None, seg_rank=seg.rank, seg_index=seg.index, seg_label=seg.label,
                      pixel_share=seg.pixel_share, mean_probability=seg.probability, region=seg.region,
                      energy_in_mask=energy_in_own_mask(m, measured))
        rows.append(row)
        try:
            picture = overlay_strips(backdrop, m.row_reader(backdrop.shape[:2]), s.colormap, s.alpha, bgr=bgr)
            if seg.index not in outlines:
                outlines[seg.index] = result.label_grid.outline(seg.index, backdrop.shape[:2])
            share = f"{seg.label}: {100 * seg.pixel_share:.0f}% of image"  # a share of the image, not a confidence
            draw_mask_outline(picture, outlines[seg.index], share, inplace=True)
            atomic_write(inside(out, row.output), picture_pieces(picture, s.overlay_format, s.overlay_quality,
                                                                 bgr=bgr))
        except (OSError, ValueError) as e:
            row.status, row.error, row.output = "error", f"cannot write outputs: {e}", None
        if s.save_heatmap:
            write_heatmap(row, m, out, result.item.rel, s, named)
    return rows
