"""Orchestrating ``camcli explain``: settings in; overlays, predictions.csv and run.json out.

The stream from :mod:`camcli.pipeline` feeds a small thread pool that colours, blends,
encodes and writes PNGs while the next batch is computed (OpenCV and zlib release the GIL).
Futures are drained in submission order, so CSV rows appear in input order whatever the
timing, and at most ``2 x batch size`` images are in flight.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import shutil
import signal
import threading
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
from camcli.outputs import (PredictionsCSV, atomic_write, csv_columns, heatmap_rel, inside, is_camcli_output,
                            overlay_rel, panel_rel, prepare_out_dir, read_complete_rows, sort_csv_by_index, write_json)
from camcli.pipeline import ImageResult, iter_results
from camcli.gallery import Gallery
from camcli.fusion import fold_batchnorm
from camcli.render import colormap_lut, draw_boxes, draw_caption, encode_png, encode_png16, overlay
from camcli.settings import OUTPUT_KEYS, ExplainSettings, cam_batch_size_for, parse_shard


@dataclass
class RunSummary:
    images: int
    ok: int
    failed: int
    empty_maps: int
    seconds: float
    out: Path
    interrupted: bool = False
    stopped: bool = False  # --fail-fast stopped the run
    resumed: int = 0  # images already done by an earlier run
    csv_name: str = "predictions.csv"


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


def prepare(settings: ExplainSettings, log=None, local_rank: int | None = None
            ) -> tuple[LoadedModel, Explainer, list[str], torch.device]:
    """Load the model, resolve layers and methods, and check them on a dummy batch.

    Under a launcher (``local_rank`` set) ``--device auto`` means this rank's own GPU.
    """
    device = pick_device(settings.device)
    if local_rank is not None and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
    methods = [get_method(m, cam_batch_size=cam_batch_size_for(settings, device), max_n=settings.max_n)
               for m in dict.fromkeys(settings.method)]
    loaded = load_model(settings.model, weights=settings.weights, checkpoint=settings.checkpoint,
                        num_classes=settings.num_classes, labels=settings.labels,
                        input_size=settings.input_size, device=device, trust=settings.trust_checkpoint)
    layers = ([resolve_layer(loaded.model, spec) for spec in settings.layer] if settings.layer
              else [default_layer(loaded.model, loaded.input_size, device)])
    # BatchNorm folded into its convolution (not at the target layers): ~10% faster inference
    fold_batchnorm(loaded.model, keep=layers)
    if device.type in ("cpu", "cuda"):
        # NHWC convolutions: 1.2-1.4x faster inference on 2 CPU cores (benchmarks/), and the
        # layout tensor cores want; results differ from NCHW only in float rounding
        loaded.model.to(memory_format=torch.channels_last)
    if settings.precision != "fp32" and device.type != "cuda":
        raise UsageError(f"--precision {settings.precision} is GPU-only (CUDA autocast); on {device.type} camcli "
                         "computes in fp32 (CPU bf16 autocast is slower or unsupported on many CPUs)")
    explainer = Explainer(loaded.model, layers, methods, score=settings.score, precision=settings.precision)
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


def _render_and_write(result: ImageResult, out: Path, settings: ExplainSettings) -> list[dict]:
    """Write one image's files; return its CSV rows (one per method x layer, or one error row)."""
    base = {"index": result.item.index, "path": result.item.rel, "status": result.status, "error": result.error,
            "note": result.note}
    if result.status != "ok":
        return [base]
    base.update(width=result.width, height=result.height, pred_index=result.pred_index,
                pred_label=result.pred_label, score=result.score, target_index=result.target_index,
                target_label=result.target_label, target_score=result.target_score)
    for k, (idx, label, prob) in enumerate(result.topk[:settings.topk], start=1):
        base.update({f"top{k}_index": idx, f"top{k}_label": label, f"top{k}_score": prob})
    rows, titled = [], []
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
            titled.append((f"{m.method} @ {display_name(m.layer)}", picture))
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
    return rows


class _GracefulStop:
    """During a run, the first Ctrl-C asks the stream to stop after the image in hand, so that
    everything in flight is written and the summary printed; a second Ctrl-C interrupts at once."""

    def __init__(self) -> None:
        self.flag = False
        self._previous = None

    def _handler(self, signum, frame):
        if self.flag:
            raise KeyboardInterrupt
        self.flag = True

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


def _shard() -> tuple[int, int, bool]:
    """(rank, world size, launched by torchrun) from the launcher's environment."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    rank = int(os.environ.get("RANK", "0") or 0)
    return rank, world, world > 1 and "MASTER_ADDR" in os.environ


def fingerprint(settings: ExplainSettings, loaded: LoadedModel | None = None) -> dict:
    """The settings that decide what a run writes (compared by --resume)."""
    values = {k: getattr(settings, k) for k in OUTPUT_KEYS}
    if loaded is not None and loaded.checkpoint_sha256:
        values["checkpoint"] = loaded.checkpoint_sha256
    return json.loads(json.dumps(values, default=str))


def _check_out_dir(out: Path, settings: ExplainSettings, part: str) -> None:
    existing = [p for p in out.iterdir() if not p.name.startswith(".")] if out.exists() else []
    if not existing or settings.resume:
        return
    if settings.overwrite:
        for p in existing:
            if is_camcli_output(p.name):
                shutil.rmtree(p) if p.is_dir() else p.unlink()
        return
    if part != "predictions.csv" and not (out / part).exists() and all(
            p.name.startswith(("predictions.part-", "run.part-", "run-settings", "overlays", "heatmaps", "panels"))
            for p in existing):
        return  # another shard of the same run already started here
    raise UsageError(f"output folder {out} is not empty: use --resume to continue the run there, --overwrite to "
                     "replace camcli's outputs in it, or another --out")


def _resume_rows(out: Path, csv_name: str, settings: ExplainSettings, expected: dict, per_image: int) -> list[dict]:
    """Rows of images finished by an earlier run that match these settings; refuse when they differ."""
    saved_path = out / "run-settings.json"
    if not saved_path.is_file():
        if (out / csv_name).exists():
            raise UsageError(f"cannot resume in {out}: run-settings.json is missing (not a camcli output folder?)")
        return []
    saved = json.loads(saved_path.read_text())
    diff = [f"{k} ({saved.get(k)!r} -> {expected.get(k)!r})" for k in expected if saved.get(k) != expected.get(k)]
    if diff:
        raise UsageError(f"cannot resume in {out}: settings differ from the earlier run: {', '.join(diff)}. "
                         "Use the same settings, or --overwrite to start afresh.")
    _header, rows = read_complete_rows(out / csv_name)
    by_path: dict[str, list[dict]] = {}
    for row in rows:
        by_path.setdefault(row["path"], []).append(row)
    keep = []
    for path, group in by_path.items():
        files = [r[k] for r in group for k in ("output", "heatmap", "panel") if r.get(k)]
        if len(group) == per_image and all(r["status"] == "ok" for r in group) and \
                all((out / f).is_file() for f in files):
            keep += group
    return keep


def _whole_batches(items: list, done: set[str], batch_size: int) -> list:
    """The items still to do, padded out to the whole batches they belong to.

    A resumed run puts the finished images that shared a batch with unfinished ones through the
    shared forward again (and then drops them), so every image is computed in the same batch as
    in an uninterrupted run: batched kernels round differently for different batch shapes, and a
    resumed run must write byte for byte what the whole run would have written. Per-image
    passes (Score-CAM's masks, Ablation-CAM's channels) are not repeated for them.
    """
    if not done:
        return list(items)
    size = max(1, batch_size)
    chunks = (items[k:k + size] for k in range(0, len(items), size))
    return [i for chunk in chunks if any(i.rel not in done for i in chunk) for i in chunk]


def stream_run(settings: ExplainSettings, inputs: list[str], log=None, progress=None
               ) -> Generator[tuple[ImageResult, list[dict]], None, RunSummary]:
    """Run a whole folder, yielding ``(result, csv_rows)`` per image in input order as it is written.

    The generator's return value is the :class:`RunSummary`; ``log(msg)`` receives status lines
    and ``progress(done, total)`` updates.
    """
    log = log or (lambda msg: None)
    started = time.perf_counter()
    all_items = discover(inputs, hidden=settings.hidden)
    rank, world, distributed = _shard()
    if settings.shard is not None:
        rank, world = parse_shard(settings.shard)
    items = all_items[rank::world] if world > 1 else all_items
    suffix = f".part-{rank:03d}-of-{world:03d}" if world > 1 else ""
    csv_name, json_name = f"predictions{suffix}.csv", f"run{suffix}.json"
    out = Path(settings.out)
    _check_out_dir(out, settings, csv_name)
    out = prepare_out_dir(out)
    loaded, explainer, layers, device = prepare(settings, log, local_rank=rank if distributed else None)
    target = resolve_target(settings.target, loaded.labels)
    expected = fingerprint(settings, loaded)
    per_image = len(layers) * len(explainer.methods)
    keep = _resume_rows(out, csv_name, settings, expected, per_image) if settings.resume else []
    done = {r["path"] for r in keep}
    if rank == 0 or not (out / "run-settings.json").exists():
        write_json(out / "run-settings.json", expected)
    todo = _whole_batches(items, done, settings.batch_size)
    log(f"model {loaded.architecture} ({loaded.weights or loaded.checkpoint or 'random weights'}), "
        f"{loaded.num_classes} classes, input {loaded.input_size[0]}x{loaded.input_size[1]}; "
        f"layer {', '.join(display_name(l) for l in layers)}; method {', '.join(m.name for m in explainer.methods)}; "
        f"device {describe(device)}; {len(items)} image(s)"
        + (f" (shard {rank}/{world} of {len(all_items)})" if world > 1 else "")
        + (f", {len(done)} already done" if done else ""))

    csv_file = PredictionsCSV(out / csv_name, csv_columns(settings.topk, settings.boxes, settings.box_rotated,
                                                          settings.box_mode == "all"), keep=keep)
    counts = {"ok": len(done), "failed": 0, "empty": sum(1 for r in keep if r.get("empty_map") == "true")}
    interrupted = stopped = False
    pending: deque[tuple[ImageResult, Future]] = deque()

    def finish_one() -> tuple[ImageResult, list[dict]]:
        nonlocal stopped
        result, future = pending.popleft()
        rows = future.result()
        for row in rows:
            csv_file.write(row)
        failed = any(r["status"] != "ok" for r in rows)
        counts["failed" if failed else "ok"] += 1
        counts["empty"] += sum(1 for r in rows if r.get("empty_map") is True)
        if failed and settings.fail_fast:
            stopped = True
        if progress:
            progress(counts["ok"] + counts["failed"], len(items))
        return result, rows

    stop_requested = _GracefulStop()
    try:
        with stop_requested, ThreadPoolExecutor(max_workers=2, thread_name_prefix="camcli-write") as pool:
            try:
                stream = iter_results(loaded, explainer, todo, batch_size=settings.batch_size,
                                      workers=settings.workers, device=device, target=target,
                                      topk=settings.topk, max_pixels=settings.max_pixels, skip=done)
                for result in stream:  # finished images are not yielded (skip=done)
                    pending.append((result, pool.submit(_render_and_write, result, out, settings)))
                    # write rows as soon as they are ready (in order), and never hold more than
                    # two batches of images in flight
                    while pending and (len(pending) > 2 * settings.batch_size or pending[0][1].done()):
                        yield finish_one()
                    if stopped:
                        log(f"stopping at the first failure (--fail-fast): {result.item.rel}")
                        break
                    if stop_requested.flag:
                        interrupted = True
                        break
            except KeyboardInterrupt:
                interrupted = True
            except RuntimeError:
                if not stop_requested.flag:  # a loader worker killed by the same Ctrl-C
                    raise
                interrupted = True
            while pending:  # finish what is in flight, also after Ctrl-C
                yield finish_one()
    finally:
        csv_file.close()
    if settings.resume and keep:
        sort_csv_by_index(out / csv_name)

    merged = False
    if distributed:
        merged = _merge_after_barrier(out, rank, world, log)
    if world == 1 or merged:
        _post_run_pictures(out, settings, log)

    seconds = time.perf_counter() - started
    summary = RunSummary(len(items), counts["ok"], counts["failed"], counts["empty"], seconds, out, interrupted)
    summary.stopped = stopped
    summary.resumed = len(done)
    summary.csv_name = csv_name
    write_json(out / json_name, {
        "camcli": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
        "python": platform.python_version(), "platform": platform.platform(),
        "model": loaded.describe(), "layers": [display_name(l) for l in layers],
        "methods": [m.name for m in explainer.methods], "device": describe(device),
        "target": target, "inputs": [os.path.abspath(i) for i in inputs],
        "shard": {"index": rank, "count": world} if world > 1 else None,
        "settings": {k: v for k, v in vars(settings).items() if k != "sources"},
        "counts": {"images": summary.images, "ok": summary.ok, "failed": summary.failed,
                   "empty_maps": summary.empty_maps, "resumed": len(done)}, "interrupted": interrupted,
        "stopped_at_first_failure": stopped, "seconds": round(seconds, 3),
    })
    return summary


def _merge_after_barrier(out: Path, rank: int, world: int, log) -> bool:
    """Under torchrun: wait for every rank, then rank 0 merges the parts into predictions.csv."""
    import torch.distributed as dist
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    try:
        dist.barrier()
        if rank == 0:
            n = merge_parts(out)
            log(f"merged {world} parts into {out / 'predictions.csv'} ({n} rows)")
        dist.barrier()
    finally:
        dist.destroy_process_group()
    return rank == 0


def merge_parts(out: Path) -> int:
    """Join ``predictions.part-*.csv`` into ``predictions.csv`` in input order; returns the row count."""
    parts = sorted(out.glob("predictions.part-*.csv"))
    if not parts:
        raise UsageError(f"no predictions.part-*.csv files in {out}")
    counts = {p.name.split("-of-")[-1].removesuffix(".csv") for p in parts}
    if len(counts) != 1:
        raise UsageError(f"parts in {out} come from different shard counts: {sorted(counts)}")
    expected = int(counts.pop())
    if len(parts) != expected:
        raise UsageError(f"{out} holds {len(parts)} of {expected} parts; wait for every shard or rerun the missing ones")
    header, rows = None, []
    for p in parts:
        h, r = read_complete_rows(p)
        if header is not None and h != header:
            raise UsageError(f"{p.name} has different columns from {parts[0].name}")
        header = h
        rows += r
    rows.sort(key=lambda r: int(r["index"]))  # stable: an image's rows keep their order
    tmp = out / ".predictions.csv.tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=header)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, out / "predictions.csv")
    return len(rows)


def _post_run_pictures(out: Path, settings: ExplainSettings, log) -> None:
    """The gallery and contact sheets, built from the final CSV (so resumed and merged runs get them too)."""
    if not (settings.html or settings.grid):
        return
    _header, rows = read_complete_rows(out / "predictions.csv")
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["path"], []).append(row)
    if settings.html:
        gallery = Gallery(out)
        try:
            for group in groups.values():
                gallery.add(group)
        finally:
            gallery.close()
    if settings.grid:
        import cv2
        sheets, count = ContactSheets(), 0
        for row in rows:
            if row["status"] != "ok" or not row.get("output"):
                continue
            picture = cv2.imread(str(out / row["output"]), cv2.IMREAD_COLOR)
            if picture is None:
                continue
            sheet = sheets.add(picture[..., ::-1], f"{row['path']} | {row['method']} @ {row['layer']} | {row['target_label']}")
            if sheet is not None:
                count += 1
                atomic_write(out / "grid" / f"sheet_{count:03d}.png", encode_png(sheet))
        sheet = sheets.flush()
        if sheet is not None:
            count += 1
            atomic_write(out / "grid" / f"sheet_{count:03d}.png", encode_png(sheet))


def run_explain(settings: ExplainSettings, inputs: list[str], log=None, progress=None) -> RunSummary:
    """Run a whole folder and return its summary (what the CLI does without ``--json``)."""
    stream = stream_run(settings, inputs, log, progress)
    while True:
        try:
            next(stream)
        except StopIteration as stop:
            return stop.value
