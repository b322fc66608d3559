"""The maps ``camcli evaluate`` scores: read from a finished run, or explained now.

A finished run gives its saved heatmaps (``--save-heatmap``) or, without them, the boxes in its
CSV (``--boxes``). Explaining images now goes through the same :class:`~camcli.run.Run` as
``camcli explain``, in memory; with ``faithfulness`` each map is also scored by rerunning the
model on masked images (:mod:`.faithfulness`) and on imputed ones (:mod:`.road`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from camcli.engine.tensors import upsample
from camcli.errors import UsageError
from camcli.geometry import Box
from camcli.evaluation.scoring import MapToScore
from camcli.engine.layer_names import display_name
from camcli import tasks
from camcli.output.csvfile import read_rows
from camcli.output.pictures import run_csv
from camcli.output.render import decode_heatmap


def maps_from_output(out_dir: Path) -> Iterator[MapToScore]:
    """Maps recorded by a finished ``explain`` run: saved heatmaps, else boxes in the CSV."""
    if tasks.of_folder(out_dir) is None:
        raise UsageError(f"{out_dir} has no predictions.csv: is it a `camcli explain` output folder?")
    header, rows = read_rows(run_csv(out_dir))
    ok = [r for r in rows if r.ok]
    has_heat = any(r.heatmap for r in ok)
    has_box = "box_status" in header
    if ok and not has_heat and not has_box:
        raise UsageError(f"{out_dir} holds neither heatmaps nor boxes: run explain with `save_heatmap` npy "
                         "(all metrics) or `boxes` (IoU only), or pass images and a model to evaluate directly")
    for r in ok:
        item = MapToScore(r.path, r.method, r.layer, r.width, r.height, r.pred_label, r.target_label)
        if r.heatmap:
            item.heat = read_heatmap(out_dir / r.heatmap, r.width, r.height)
        elif has_box:
            item.box_known = True
            if r.box is not None:
                item.box = Box(*map(float, r.box))
        yield item


def read_heatmap(path: Path, width: int, height: int) -> np.ndarray:
    heat = decode_heatmap(path)
    if heat.shape != (height, width):
        heat = upsample(torch.from_numpy(heat), (height, width)).numpy()
    return heat


def maps_from_images(settings, inputs: list[str], with_faithfulness: bool = False, steps: int = 16,
                     log=None, progress=None, module=None) -> Iterator[MapToScore]:
    """Explain ``inputs`` with ``settings`` in memory (nothing written) and yield the maps;
    ``progress(done, total)`` after each image."""
    from camcli.engine.stream import image_seed
    from camcli.evaluation.faithfulness import faithfulness
    from camcli.evaluation.road import road
    from camcli.run import Run
    from camcli.settings import cam_batch_size_for

    run = Run(settings, inputs, write=False, log=log, module=module)
    mean = std = None
    done = 0
    for result in run:
        if done == 0 and run.session.task.evaluated_from_runs_only:  # its own scorer, from a finished run
            raise UsageError(run.session.task.evaluated_from_runs_only)
        done += 1
        if progress:
            progress(done, run.total)
        if with_faithfulness and done == 1 and log:
            log(f"faithfulness: {1 + 2 * (steps + 1)} forward passes (deletion and insertion at `steps` {steps}) "
                f"and ROAD's 18 imputed images per map, {len(result.maps)} map(s) an image; a smaller `steps` "
                "cuts the first")
        if result.status != "ok":
            if log:
                log(f"skipped {result.item.rel}: {result.error}")
            continue
        lm, device = run.session.loaded, run.session.device
        if with_faithfulness and mean is None:
            mean = torch.tensor(lm.mean, device=device).view(1, 3, 1, 1)
            std = torch.tensor(lm.std, device=device).view(1, 3, 1, 1)
        for m in result.maps:
            explained = result.target_index if m.target_index is None else m.target_index
            item = MapToScore(result.item.rel, m.method, display_name(m.layer), result.width, result.height,
                              result.pred_label, m.target_label or result.target_label, heat=m.heatmap)
            if with_faithfulness:
                pixels = result.pixels.to(device).float() / 255.0
                heat = upsample(torch.from_numpy(m.layer_map), tuple(pixels.shape[1:]))
                batch_size = cam_batch_size_for(settings, device)
                reads = run.session.explainer.target.probabilities_of  # the head's probabilities
                item.faith = faithfulness(lm.model, pixels, heat, explained, mean, std, steps=steps,
                                          batch_size=batch_size, reads=reads)
                noise = torch.Generator().manual_seed(image_seed(settings.seed, f"road\0{result.item.rel}"))
                item.road = road(lm.model, ((pixels[None] - mean) / std)[0], heat, explained,
                                 generator=noise, batch_size=batch_size, reads=reads)
            yield item


def gather_maps(sources: list[Path], given: dict, config: Path | None = None, faithfulness_steps: int | None = None,
                out: Path | None = None, log=None, rerun: bool = False,
                progress=None, module=None) -> tuple[list[MapToScore], Path, object]:
    """The maps to score, the folder ``evaluation.csv`` goes to, and the settings of the model.

    ``sources``: one finished output folder, or images to explain now with the settings ``given``
    (values of the settings ``camcli evaluate`` takes; ``None``: not given) over ``config``. A
    finished folder is scored as it is; with ``faithfulness_steps`` or ``rerun`` (the sanity
    checks) its model is rerun on its images, from the settings saved in its ``run.json``
    (``given`` and ``config`` on top), once it is checked to be the same model. The settings are
    ``None`` when nothing is rerun.
    """
    folder = sources[0] if len(sources) == 1 else None
    is_output = folder is not None and folder.is_dir() and tasks.of_folder(folder) is not None
    asked = {k: v for k, v in given.items() if v is not None}
    if is_output and faithfulness_steps is None and not rerun:
        if asked or config:
            raise UsageError("model options apply when explaining images; an output folder is scored as it is "
                             "(add `faithfulness` or `sanity` to rerun its model)")
        return list(maps_from_output(folder)), folder, None
    settings, inputs, eval_dir = model_settings(sources, given, config, out)
    if is_output and faithfulness_steps is None:
        return list(maps_from_output(folder)), folder, (settings, inputs)
    with_faith = faithfulness_steps is not None
    maps = list(maps_from_images(settings, inputs, with_faith, faithfulness_steps or 16, log=log, progress=progress,
                                 module=module))
    from camcli.output.folder import prepare_out_dir

    return maps, prepare_out_dir(eval_dir), (settings, inputs)  # not before: a refused evaluation leaves no folder


def model_settings(sources: list[Path], given: dict, config: Path | None, out: Path | None):
    """(settings, inputs, evaluation folder) to rerun a finished run's model, or to explain images."""
    from camcli.run.manifest import MANIFEST_FILE, read_manifest
    from camcli.settings import EVALUATE_KEYS, resolve

    folder = sources[0] if len(sources) == 1 else None
    if folder is not None and folder.is_dir() and tasks.of_folder(folder) is not None:
        manifest = read_manifest(folder)
        saved = {k: v for k, v in manifest["settings"].items() if k in EVALUATE_KEYS}
        saved = data_only(saved, given, folder / MANIFEST_FILE)
        settings = resolve(given, config, saved=saved, saved_origin=str(folder / MANIFEST_FILE))
        check_same_model(manifest, settings.checkpoint, folder / MANIFEST_FILE)
        return settings, [str(i) for i in manifest["inputs"]], folder
    settings = resolve(given, config)
    eval_dir = out or Path("camcli-eval")
    if eval_dir.exists() and not eval_dir.is_dir():
        raise UsageError(f"`out` {eval_dir} exists and is not a folder")
    return settings, [str(s) for s in sources], eval_dir  # made once there is something to write


def data_only(saved: dict, given: dict, origin: Path) -> dict:
    """A finished run's saved settings, refused where they would run code the user did not name.

    A run folder is data (it travels as a CI artifact, anyone may edit its ``run.json``): a model
    built by a factory (``file.py:function``, ``package.module:function``: any installed callable,
    ``shutil:rmtree`` too) is imported and called only with ``trust_checkpoint`` given now, or
    replaced by a ``model`` given now; a ``trust_checkpoint`` recorded in the file (unpickling, a
    HuggingFace folder's own code) never counts by itself.
    """
    from camcli.settings.code import PYTHON_OBJECT, is_factory

    saved = {k: v for k, v in saved.items() if k != "trust_checkpoint"}
    model = saved.get("model")
    if given.get("model") is None and isinstance(model, str) and is_factory(model) \
            and not model.startswith(PYTHON_OBJECT) and not given.get("trust_checkpoint"):
        args = saved.get("model_arg") or []
        raise UsageError(f"{origin} names code to build its model: {model}"
                         + (f" called with {', '.join(map(str, args))}" if args else "")
                         + ". A run folder is data and runs no code by itself: pass `trust_checkpoint` if you trust "
                         "that code, or give the model with `model` (and `checkpoint`)")
    return saved


def sanity_of(settings, inputs: list[str], progress=None, log=None, module=None):
    """The randomisation tests (:mod:`.sanity`) for ``settings``' model and methods on ``inputs``."""
    from camcli.engine.images import discover
    from camcli.engine.stream import image_seed
    from camcli.evaluation.sanity import run_sanity
    from camcli.session import ExplainSession

    session = ExplainSession.open(settings, module=module)
    if session.task.evaluated_from_runs_only:
        raise UsageError(session.task.evaluated_from_runs_only)
    kept = []
    for r in session.results(discover(inputs, hidden=settings.hidden)):
        if r.status == "ok":
            kept.append((r.item.rel, r.pixels, r.target_index))
        elif log:
            log(f"skipped {r.item.rel}: {r.error}")
    if not kept:
        raise UsageError("no image could be explained for the sanity checks")
    paths, pixels, targets = zip(*kept)
    lm = session.loaded
    return run_sanity(session.explainer, lm.model, pixels, targets, [image_seed(settings.seed, p) for p in paths],
                      paths, lm.mean, lm.std, session.device, seed=settings.seed, batch_size=settings.batch_size,
                      progress=progress, log=log)


def check_same_model(manifest: dict, checkpoint: str | None, origin: Path) -> None:
    """Refuse to rerun a finished run's model when its checkpoint is gone or has changed.

    Faithfulness and sanity scores computed with other weights than the run's would be reported
    as the run's; ``--checkpoint`` may point to the file's new place, whose checksum must match.
    """
    from camcli.models.checkpoints import file_sha256

    recorded = (manifest.get("model") or {}).get("checkpoint_sha256")
    if not recorded:
        return
    if not checkpoint or not Path(checkpoint).is_file():
        raise UsageError(f"the run's checkpoint {checkpoint} is missing (moved or deleted); pass --checkpoint with "
                         f"its new path (its checksum must match {origin}) or rerun explain")
    if file_sha256(checkpoint) != recorded:
        raise UsageError(f"checkpoint {checkpoint} has changed since the run (its sha256 differs from {origin}); "
                         "rerun explain with it to score the new model")
