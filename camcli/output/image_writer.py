"""Writing one explained image: its overlays, raw heatmaps and panel, and its rows.

:func:`write_image` runs in the run's writer threads (OpenCV and zlib release the GIL) while
the next batch is computed. A file that cannot be written turns its row into an error row;
it never stops the run.
"""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from camcli.engine.stream import ImageResult
from camcli.geometry import boxes_from_heatmap
from camcli.engine.layer_names import display_name
from camcli.output.figures import panel
from camcli.output.paths import atomic_write, class_part, heatmap_rel, inside, overlay_rel, panel_rel
from camcli.output.render import (OVERLAY_FORMATS, draw_boxes, draw_caption, encode_png, encode_png16, fit_side,
                                  overlay_strips, picture_pieces)
from camcli.output.rows import PredictionRow, Row
from camcli.settings import ExplainSettings


def first_columns(result: ImageResult, row_type: type[Row] = PredictionRow) -> Row:
    """The columns every task's rows of this image share: where it is, its status and size (as a
    ``row_type``: the task's row)."""
    row = row_type(result.item.index, result.item.rel, status=result.status, error=result.error, note=result.note)
    if result.status == "ok":
        row.width, row.height = result.width, result.height
    return row


def image_row(result: ImageResult) -> PredictionRow:
    """The columns every row of this image shares (or its one error row)."""
    row = first_columns(result)
    if result.status == "ok":
        row.pred_index, row.pred_label, row.score = result.pred_index, result.pred_label, result.score
        row.target_index, row.target_label = result.target_index, result.target_label
        row.target_score = result.target_score
        row.topk = tuple(result.topk)
        if result.per_class:
            row.targets = result.explained
    return row


def write_image(result: ImageResult, out: Path, settings: ExplainSettings) -> list[PredictionRow]:
    """Write one image's files; return its CSV rows (one per method x layer, or one error row).

    Full-size maps are made here, one at a time, and let go once the image's files are written;
    with ``overlay_max_side`` the overlay is blended at the reduced size directly.
    """
    base = image_row(result)
    if result.status != "ok":
        return [base]
    s = settings
    backdrop, scale = fit_side(result.image, s.overlay_max_side)
    # the full-size float map (4 bytes a pixel) is kept only while something needs it as floats
    keep_full = s.boxes or (s.save_heatmap and s.heatmap_size == "image")
    rows, titled = [], []
    for m in result.maps:
        named = class_part(m.target_index, m.target_label) if result.per_class else ""
        rel = overlay_rel(result.item.rel, m.method, m.layer, OVERLAY_FORMATS[s.overlay_format], named)
        row = replace(base, method=m.method, layer=display_name(m.layer), output=rel, empty_map=m.empty,
                      warning=m.warning or None)
        if m.target_index is not None:
            row.target_index, row.target_label, row.target_score = m.target_index, m.target_label, m.target_score
        full = m.upsampled() if keep_full else None
        found = _find_boxes(row, full, m.empty, result, s) if s.boxes else []
        try:
            # rendered a strip of rows at a time (render.overlay_strips); in OpenCV's channel order
            # for its JPEG and WebP encoders, so that no full-size copy is made on the way
            read_rows = (lambda top, bottom, f=full: f[top:bottom]) if full is not None and scale == 1.0 \
                else m.row_reader(backdrop.shape[:2])
            bgr = s.overlay_format != "png"
            picture = overlay_strips(backdrop, read_rows, s.colormap, s.alpha, bgr=bgr)
            if s.draw_boxes and found:
                picture = draw_boxes(picture, found, rotated=s.box_rotated, scale=scale, inplace=True)
            if s.caption:
                text = f"{result.pred_label} {result.score:.2f}"
                if row.target_index != result.pred_index:
                    text += f" | explained: {row.target_label} {row.target_score:.2f}"
                picture = draw_caption(picture, text, inplace=True)
            atomic_write(inside(out, rel), picture_pieces(picture, s.overlay_format, s.overlay_quality, bgr=bgr))
            if not s.panel:
                picture = None  # kept only for the panel: at 50 MP each picture is 150 MB
            elif bgr:  # the panel shows RGB
                picture = cv2.cvtColor(picture, cv2.COLOR_BGR2RGB, dst=picture)
            if s.save_heatmap:
                hrel = heatmap_rel(result.item.rel, m.method, m.layer, s.save_heatmap, named)
                data = full if s.heatmap_size == "image" else m.layer_map
                atomic_write(inside(out, hrel), encode_heatmap(data, s.save_heatmap))
                row.heatmap = hrel
        except (OSError, ValueError) as e:
            row.status, row.error, row.output = "error", f"cannot write outputs: {e}", None
            picture = None
        del full
        if picture is not None:
            titled.append((f"{m.method} @ {display_name(m.layer)}" + (f": {m.target_label}" if named else ""),
                           picture))
        rows.append(row)
    if s.panel and titled:
        prel = panel_rel(result.item.rel)
        try:
            atomic_write(inside(out, prel), encode_png(panel(backdrop, titled,
                                                             title=f"{result.pred_label} {result.score:.2f}")))
            for row in rows:
                row.panel = prel
        except (OSError, ValueError) as e:
            for row in rows:
                row.status, row.error = "error", f"cannot write panel: {e}"
    return rows


def write_heatmap(row: PredictionRow, m, out: Path, image_rel: str, settings: ExplainSettings, part: str) -> None:
    """``save_heatmap``: write map ``m`` raw (at the image's size or the layer's) and name it in
    ``row``; a file that cannot be written becomes the row's error (the detection and
    segmentation writers, one map per row)."""
    s = settings
    rel = heatmap_rel(image_rel, m.method, m.layer, s.save_heatmap, part)
    data = m.upsampled() if s.heatmap_size == "image" else m.layer_map
    try:
        atomic_write(inside(out, rel), encode_heatmap(data, s.save_heatmap))
        row.heatmap = rel
    except (OSError, ValueError) as e:
        row.status, row.error = "error", f"cannot write heatmap: {e}"


def encode_heatmap(data: np.ndarray, fmt: str) -> bytes:
    if fmt == "npy":
        buf = io.BytesIO()
        np.save(buf, data.astype(np.float32))
        return buf.getvalue()
    return encode_png16(data)


def _find_boxes(row: PredictionRow, heat: np.ndarray, empty: bool, result: ImageResult,
                settings: ExplainSettings) -> list:
    """Fill the box fields of ``row`` from the full-size map; return the boxes found."""
    min_area = settings.box_min_area * result.width * result.height
    found = boxes_from_heatmap(heat, settings.box_threshold, settings.box_mode, min_area)
    if not found:
        row.box_status = "no box: empty map" if empty else "no box: no region above the threshold"
        return []
    b = found[0].box
    row.box_status, row.box = "ok", (int(b.x0), int(b.y0), int(b.x1), int(b.y1))
    if settings.box_rotated:
        row.box_rotated = tuple((float(x), float(y)) for x, y in found[0].corners)
    if settings.box_mode == "all":
        row.boxes_all = tuple((int(f.box.x0), int(f.box.y0), int(f.box.x1), int(f.box.y1)) for f in found)
    return found
