"""Orchestrating ``camcli explain``: settings in; overlays, predictions.csv and run.json out.

The stream from :mod:`camcli.pipeline` feeds a small thread pool that colours, blends,
encodes and writes PNGs while the next batch is computed (OpenCV's encoder releases the GIL).
Futures are drained in submission order, so CSV rows appear in input order whatever the
timing, and at most ``2 x batch size`` images are in flight.
"""

from __future__ import annotations

import platform
import signal
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision

from camcli import __version__
from camcli.devices import describe, pick_device
from camcli.errors import UsageError, unknown
from camcli.explainer import Explainer
from camcli.images import discover
from camcli.layers import default_layer, display_name, resolve_layer
from camcli.methods import get_method
from camcli.models import LoadedModel, load_model
from camcli.outputs import PredictionsCSV, atomic_write, csv_columns, inside, overlay_rel, prepare_out_dir, write_json
from camcli.pipeline import ImageResult, iter_results
from camcli.render import colormap_lut, encode_png, overlay
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
    methods = [get_method(m) for m in dict.fromkeys(settings.method)]
    loaded = load_model(settings.model, weights=settings.weights, checkpoint=settings.checkpoint,
                        num_classes=settings.num_classes, labels=settings.labels,
                        input_size=settings.input_size, device=device)
    layers = ([resolve_layer(loaded.model, spec) for spec in settings.layer] if settings.layer
              else [default_layer(loaded.model, loaded.input_size, device)])
    explainer = Explainer(loaded.model, layers, methods, score=settings.score)
    explainer.validate(loaded.input_size, device)
    colormap_lut(settings.colormap)  # fail early on an unknown colour map
    return loaded, explainer, layers, device


def _render_and_write(result: ImageResult, out: Path, settings: ExplainSettings) -> list[dict]:
    """Write one image's overlays; return its CSV rows (one per method x layer, or one error row)."""
    base = {"path": result.item.rel, "status": result.status, "error": result.error, "note": result.note}
    if result.status != "ok":
        return [base]
    base.update(width=result.width, height=result.height, pred_index=result.pred_index,
                pred_label=result.pred_label, score=result.score, target_index=result.target_index,
                target_label=result.target_label, target_score=result.target_score)
    for k, (idx, label, prob) in enumerate(result.topk[:settings.topk], start=1):
        base.update({f"top{k}_index": idx, f"top{k}_label": label, f"top{k}_score": prob})
    rows = []
    for m in result.maps:
        rel = overlay_rel(result.item.rel, m.method, m.layer)
        row = dict(base, method=m.method, layer=display_name(m.layer), output=rel, empty_map=m.empty)
        try:
            atomic_write(inside(out, rel), encode_png(overlay(result.image, m.heatmap, settings.colormap, settings.alpha)))
        except (OSError, ValueError) as e:
            row.update(status="error", error=f"cannot write {rel}: {e}", output="")
        rows.append(row)
    return rows


def run_explain(settings: ExplainSettings, inputs: list[str], log=None, progress=None) -> RunSummary:
    """Run a whole folder; ``log(msg)`` receives status lines, ``progress(done, total)`` updates."""
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

    csv_file = PredictionsCSV(out / "predictions.csv", csv_columns(settings.topk))
    counts = {"ok": 0, "failed": 0, "empty": 0}
    interrupted = False
    pending: deque[Future] = deque()

    def drain(limit: int) -> None:
        while len(pending) > limit:
            rows = pending.popleft().result()
            for row in rows:
                csv_file.write(row)
            failed = any(r["status"] != "ok" for r in rows)
            counts["failed" if failed else "ok"] += 1
            counts["empty"] += sum(1 for r in rows if r.get("empty_map") is True)
            if progress:
                progress(counts["ok"] + counts["failed"], len(items))

    previous = signal.getsignal(signal.SIGINT)
    try:
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="camcli-write") as pool:
            try:
                for result in iter_results(loaded, explainer, items, batch_size=settings.batch_size,
                                           workers=settings.workers, device=device, target=target,
                                           topk=settings.topk):
                    pending.append(pool.submit(_render_and_write, result, out, settings))
                    drain(2 * settings.batch_size)
            except KeyboardInterrupt:
                interrupted = True
            drain(0)  # finish what is in flight, also after Ctrl-C
    finally:
        csv_file.close()
        signal.signal(signal.SIGINT, previous)

    seconds = time.perf_counter() - started
    summary = RunSummary(len(items), counts["ok"], counts["failed"], counts["empty"], seconds, out, interrupted)
    write_json(out / "run.json", {
        "camcli": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
        "python": platform.python_version(), "platform": platform.platform(),
        "model": loaded.describe(), "layers": [display_name(l) for l in layers],
        "methods": [m.name for m in explainer.methods], "device": describe(device),
        "target": target, "inputs": [str(i) for i in inputs],
        "settings": {k: v for k, v in vars(settings).items() if k != "sources"},
        "counts": {"images": summary.images, "ok": summary.ok, "failed": summary.failed,
                   "empty_maps": summary.empty_maps}, "interrupted": interrupted,
        "seconds": round(seconds, 3),
    })
    return summary
