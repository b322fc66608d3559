"""Orchestrating ``camcli explain``: settings in; overlays, predictions.csv and run.json out.

The stream from :mod:`camcli.pipeline` feeds a small thread pool that colours, blends,
encodes and writes PNGs while the next batch is computed (OpenCV's encoder releases the GIL).
Futures are drained in submission order, so CSV rows appear in input order whatever the
timing, and at most ``2 x batch size`` images are in flight.
"""

from __future__ import annotations

import io
import os
import platform
import time
from collections import deque
from collections.abc import Generator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision

from camcli import __version__
from camcli.devices import describe, pick_device
from camcli.boxes import boxes_from_heatmap
from camcli.errors import UsageError, unknown
from camcli.explainer import Explainer
from camcli.images import discover
from camcli.layers import default_layer, display_name, resolve_layer
from camcli.methods import get_method
from camcli.figures import ContactSheets, panel
from camcli.models import LoadedModel, load_model
from camcli.outputs import (PredictionsCSV, atomic_write, csv_columns, heatmap_rel, inside, overlay_rel, panel_rel,
                            prepare_out_dir, write_json)
from camcli.pipeline import ImageResult, iter_results
from camcli.gallery import Gallery
from camcli.render import colormap_lut, draw_boxes, draw_caption, encode_png, encode_png16, overlay
from camcli.settings import ExplainSettings


@dataclass
class RunSummary:
    images: int
    ok: int
    failed: int
    empty_maps: int
    seconds: float
    out: Path
    interrupted: bool = False


def resolve_target(spec: str | None, labels: list[str]) -> int | None:
    """``--target``: a class index or a label name (case-insensitive), with suggestions."""
    if spec is None or str(spec).strip() == "":
        return None
    text = str(spec).strip()
    if text.lstrip("-").isdigit():
        index = int(text)
        if not 0 <= index < len(labels):
            raise UsageError(f"--target {index} is out of range: the model has {len(labels)} classes (0..{len(labels) - 1})")
        return index
    lowered = [label.lower() for label in labels]
    if text.lower() in lowered:
        return lowered.index(text.lower())
    raise unknown("--target label", text, labels)


def prepare(settings: ExplainSettings, log=None) -> tuple[LoadedModel, Explainer, list[str], torch.device]:
    """Load the model, resolve layers and methods, and check them on a dummy batch."""
    device = pick_device(settings.device)
    methods = [get_method(m, cam_batch_size=settings.cam_batch_size, max_n=settings.max_n)
               for m in dict.fromkeys(settings.method)]
    loaded = load_model(settings.model, weights=settings.weights, checkpoint=settings.checkpoint,
                        num_classes=settings.num_classes, labels=settings.labels,
                        input_size=settings.input_size, device=device)
    layers = ([resolve_layer(loaded.model, spec) for spec in settings.layer] if settings.layer
              else [default_layer(loaded.model, loaded.input_size, device)])
    explainer = Explainer(loaded.model, layers, methods, score=settings.score)
    explainer.validate(loaded.input_size, device)
    colormap_lut(settings.colormap)  # fail early on an unknown colour map
    return loaded, explainer, layers, device


def _encode_heatmap(m, fmt: str, size: str) -> bytes:
    data = m.heatmap if size == "image" else m.layer_map
    if fmt == "npy":
        buf = io.BytesIO()
        np.save(buf, data.astype(np.float32))
        return buf.getvalue()
    return encode_png16(data)


def _box_fields(row: dict, m, result: ImageResult, settings: ExplainSettings) -> list:
    """Fill the box columns of ``row`` from the map; return the boxes found."""
    min_area = settings.box_min_area * result.width * result.height
    found = boxes_from_heatmap(m.heatmap, settings.box_threshold, settings.box_mode, min_area)
    if not found:
        row["box_status"] = "no box: empty map" if m.empty else "no box: no region above the threshold"
        return []
    b = found[0].box
    row.update(box_status="ok", box_x0=int(b.x0), box_y0=int(b.y0), box_x1=int(b.x1), box_y1=int(b.y1))
    if settings.box_rotated:
        row["box_rotated"] = " ".join(f"{x:.1f},{y:.1f}" for x, y in found[0].corners)
    if settings.box_mode == "all":
        row["boxes_all"] = ";".join(f"{int(f.box.x0)},{int(f.box.y0)},{int(f.box.x1)},{int(f.box.y1)}" for f in found)
    return found


def _render_and_write(result: ImageResult, out: Path, settings: ExplainSettings) -> tuple[list[dict], list]:
    """Write one image's files; return its CSV rows (one per method x layer, or one error row)
    and the (thumbnail source, caption) pairs for the contact sheet."""
    base = {"path": result.item.rel, "status": result.status, "error": result.error, "note": result.note}
    if result.status != "ok":
        return [base], []
    base.update(width=result.width, height=result.height, pred_index=result.pred_index,
                pred_label=result.pred_label, score=result.score, target_index=result.target_index,
                target_label=result.target_label, target_score=result.target_score)
    for k, (idx, label, prob) in enumerate(result.topk[:settings.topk], start=1):
        base.update({f"top{k}_index": idx, f"top{k}_label": label, f"top{k}_score": prob})
    rows, titled, thumbs = [], [], []
    for m in result.maps:
        rel = overlay_rel(result.item.rel, m.method, m.layer)
        row = dict(base, method=m.method, layer=display_name(m.layer), output=rel, empty_map=m.empty)
        found = _box_fields(row, m, result, settings) if settings.boxes else []
        try:
            picture = overlay(result.image, m.heatmap, settings.colormap, settings.alpha)
            if settings.draw_boxes and found:
                picture = draw_boxes(picture, found, rotated=settings.box_rotated)
            if settings.caption:
                text = f"{result.pred_label} {result.score:.2f}"
                if result.target_index != result.pred_index:
                    text += f" | explained: {result.target_label} {result.target_score:.2f}"
                picture = draw_caption(picture, text)
            atomic_write(inside(out, rel), encode_png(picture))
            if settings.save_heatmap:
                hrel = heatmap_rel(result.item.rel, m.method, m.layer, settings.save_heatmap)
                atomic_write(inside(out, hrel), _encode_heatmap(m, settings.save_heatmap, settings.heatmap_size))
                row["heatmap"] = hrel
        except (OSError, ValueError) as e:
            row.update(status="error", error=f"cannot write outputs: {e}", output="")
            picture = None
        if picture is not None:
            title = f"{m.method} @ {display_name(m.layer)}"
            titled.append((title, picture))
            thumbs.append((picture, f"{result.item.rel} | {title} | {result.target_label}"))
        rows.append(row)
    if settings.panel and titled:
        prel = panel_rel(result.item.rel)
        heading = f"{result.pred_label} {result.score:.2f}"
        try:
            atomic_write(inside(out, prel), encode_png(panel(result.image, titled, title=heading)))
            for row in rows:
                row["panel"] = prel
        except (OSError, ValueError) as e:
            for row in rows:
                row.update(status="error", error=f"cannot write panel: {e}")
    return rows, thumbs if settings.grid else []


def stream_run(settings: ExplainSettings, inputs: list[str], log=None, progress=None
               ) -> Generator[tuple[ImageResult, list[dict]], None, RunSummary]:
    """Run a whole folder, yielding ``(result, csv_rows)`` per image in input order as it is written.

    The generator's return value is the :class:`RunSummary`; ``log(msg)`` receives status lines
    and ``progress(done, total)`` updates.
    """
    log = log or (lambda msg: None)
    started = time.perf_counter()
    items = discover(inputs)
    out = prepare_out_dir(Path(settings.out))
    loaded, explainer, layers, device = prepare(settings, log)
    target = resolve_target(settings.target, loaded.labels)
    log(f"model {loaded.architecture} ({loaded.weights or loaded.checkpoint or 'random weights'}), "
        f"{loaded.num_classes} classes, input {loaded.input_size[0]}x{loaded.input_size[1]}; "
        f"layer {', '.join(display_name(l) for l in layers)}; method {', '.join(m.name for m in explainer.methods)}; "
        f"device {describe(device)}; {len(items)} image(s)")

    csv_file = PredictionsCSV(out / "predictions.csv", csv_columns(settings.topk, settings.boxes, settings.box_rotated,
                                                                   settings.box_mode == "all"))
    counts = {"ok": 0, "failed": 0, "empty": 0}
    interrupted = False
    pending: deque[tuple[ImageResult, Future]] = deque()
    sheets = ContactSheets() if settings.grid else None
    sheet_count = 0
    gallery = Gallery(out) if settings.html else None

    def finish_one() -> tuple[ImageResult, list[dict]]:
        nonlocal sheet_count
        result, future = pending.popleft()
        rows, thumbs = future.result()
        for row in rows:
            csv_file.write(row)
        for picture, text in thumbs:
            sheet = sheets.add(picture, text)
            if sheet is not None:
                sheet_count += 1
                atomic_write(out / "grid" / f"sheet_{sheet_count:03d}.png", encode_png(sheet))
        if gallery is not None:
            gallery.add(rows)
        failed = any(r["status"] != "ok" for r in rows)
        counts["failed" if failed else "ok"] += 1
        counts["empty"] += sum(1 for r in rows if r.get("empty_map") is True)
        if progress:
            progress(counts["ok"] + counts["failed"], len(items))
        return result, rows

    try:
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="camcli-write") as pool:
            try:
                for result in iter_results(loaded, explainer, items, batch_size=settings.batch_size,
                                           workers=settings.workers, device=device, target=target,
                                           topk=settings.topk):
                    pending.append((result, pool.submit(_render_and_write, result, out, settings)))
                    while len(pending) > 2 * settings.batch_size:
                        yield finish_one()
            except KeyboardInterrupt:
                interrupted = True
            while pending:  # finish what is in flight, also after Ctrl-C
                yield finish_one()
        if sheets is not None:
            sheet = sheets.flush()
            if sheet is not None:
                sheet_count += 1
                atomic_write(out / "grid" / f"sheet_{sheet_count:03d}.png", encode_png(sheet))
    finally:
        csv_file.close()
        if gallery is not None:
            gallery.close()

    seconds = time.perf_counter() - started
    summary = RunSummary(len(items), counts["ok"], counts["failed"], counts["empty"], seconds, out, interrupted)
    write_json(out / "run.json", {
        "camcli": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
        "python": platform.python_version(), "platform": platform.platform(),
        "model": loaded.describe(), "layers": [display_name(l) for l in layers],
        "methods": [m.name for m in explainer.methods], "device": describe(device),
        "contact_sheets": sheet_count, "target": target, "inputs": [os.path.abspath(i) for i in inputs],
        "settings": {k: v for k, v in vars(settings).items() if k != "sources"},
        "counts": {"images": summary.images, "ok": summary.ok, "failed": summary.failed,
                   "empty_maps": summary.empty_maps}, "interrupted": interrupted,
        "seconds": round(seconds, 3),
    })
    return summary


def run_explain(settings: ExplainSettings, inputs: list[str], log=None, progress=None) -> RunSummary:
    """Run a whole folder and return its summary (what the CLI does without ``--json``)."""
    stream = stream_run(settings, inputs, log, progress)
    while True:
        try:
            next(stream)
        except StopIteration as stop:
            return stop.value
