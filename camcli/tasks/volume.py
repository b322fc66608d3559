"""3D scans: a network whose convolutions are three-dimensional, explained on NIfTI, NumPy and
DICOM scans; each map explains the scan's top class in three dimensions.

A scan is read into RAS+ order with its geometry (:mod:`camcli.engine.scans`), windowed (CT) or
scaled per volume, resampled to the model's input cube, and explained by the same explainer as
images, its layers read as (N, C, d, h, w) maps. Each map is written as NIfTI on the scan file's
own grid and affine (it opens over the scan in 3D Slicer, ITK-SNAP or FSLeyes), with a picture of
the three planes through its peak; the row says where the peak lies, as the file's voxel and in
scanner millimetres.
"""

from __future__ import annotations

import html
import weakref
from pathlib import Path

from camcli.output.rows import VOLUME_COLUMNS, VolumeRow
from camcli.tasks.task import Built, Task


class Volume(Task):
    name = "volume"
    description = ("a 3D classifier: one class per scan (NIfTI, NumPy, DICOM series); each map explains its "
                   "score in three dimensions, written as NIfTI over the scan")
    model_in_words = "a volume classifier: its convolutions are three-dimensional"
    row_type = VolumeRow
    csv_stem = "volumes"
    inputs = "scan"
    takes = frozenset({"window", "scaling", "input_size", "aug_smooth", "fuse"})
    refusal_reason = "each scan's top class is explained, fed as --window or --scaling say"
    evaluated_per = "scan"
    evaluated_from_runs_only = ("a volume run is evaluated from a finished run: `camcli explain` the scans, then "
                                "`camcli evaluate RUN --truth LABELS/` (label volumes on the scans' grids, or a CSV of "
                                "boxes in the scan files' voxels: path,i0,j0,k0,i1,j1,k1; "
                                "faithfulness and sanity checks are not offered for volumes yet)")

    def claims(self, loaded) -> bool:
        """A 3D network that scores each scan (one that scores every voxel is a segmenter's)."""
        from camcli.models.modules import volume_channels

        return volume_channels(loaded.model) is not None and not scores_per_voxel(loaded)

    def layer_defaults(self, loaded, infos):
        return default_volume_layer(loaded.model, loaded.input_size, loaded.input_channels, "cpu"), set()

    def open(self, settings, device, loaded, methods) -> Built:
        """The last 3D feature map before pooling as the default layer; every method checked on a
        dummy volume (those defined on flat images only are refused there)."""
        from camcli.engine.explainer import Explainer
        from camcli.engine.layer_names import resolve_layer
        from camcli.engine.layouts import NotAMap
        from camcli.errors import UsageError

        model = loaded.model
        if settings.layer:
            layers = [resolve_layer(model, spec) for spec in settings.layer]
        else:
            layers = [default_volume_layer(model, loaded.input_size, loaded.input_channels, device)]
        explainer = Explainer(model, layers, methods, strict=settings.strict, layer_layout=settings.layer_layout,
                              aug_smooth=settings.aug_smooth, fuse=settings.fuse)
        try:
            explainer.validate(loaded.input_size, device, channels=loaded.input_channels)
        except NotAMap as e:
            raise UsageError(f"{e}; name a layer with a 3D feature map with `layer` (see `camcli layers`)") from None
        return Built(loaded, explainer.layers, methods, explainer)

    def earlier_layer(self, loaded, layer, device) -> str | None:
        return None  # the layer search traces images; the empty-map warning names no layer for a volume model

    def input_in_words(self, loaded) -> str:
        s = loaded.input_size
        return f"input {'x'.join(map(str, s))} voxels, {loaded.input_channels} channel(s); "

    def explained(self, session) -> str:
        s = session.settings
        values = f"CT window {s.window}" if s.window else f"values scaled per scan ({s.scaling})"
        return f"volume classifier: each scan's top class, {values}"

    def results(self, session, items, skip, plan):
        from camcli.engine.volume_stream import iter_volumes

        s = session.settings
        return iter_volumes(session.loaded, session.explainer, items, batches=plan.batches if plan else None,
                            batch_size=session.batch_size, workers=plan.workers if plan else s.workers,
                            prefetch=plan.prefetch if plan else 2, device=session.device, window=s.window,
                            scaling=s.scaling, skip=skip, seed=s.seed)

    def header(self, settings, session) -> list[str]:
        return list(VOLUME_COLUMNS)

    def write(self, result, out: Path, settings):
        from camcli.output.volume_writer import write_volume

        return write_volume(result, out, settings)

    def json_entries(self, rows) -> dict:
        first = rows[0]
        return {"shape": first.shape, "spacing": first.spacing, "orientation": first.orientation,
                "note": first.note or None,
                "prediction": {"index": first.pred_index, "label": first.pred_label, "score": first.score},
                "maps": [{"method": r.method, "layer": r.layer, "overlay": r.output, "nifti": r.heatmap,
                          "peak_voxel": [r.peak_i, r.peak_j, r.peak_k] if r.peak_i is not None else None,
                          "peak_mm": [r.peak_x, r.peak_y, r.peak_z] if r.peak_x is not None else None,
                          "empty_map": r.empty_map, "warning": r.warning} for r in rows if r.method]}

    def gallery_card(self, rows):
        first = rows[0]
        maps = [(f"{r.method}@{r.layer}", r.output) for r in rows if r.output]
        pred = f"{html.escape(str(first.pred_label))} {first.score:.3f}" if first.score is not None else "-"
        return maps, first.score, pred

    def gallery_more(self, rows, out) -> str:
        """A slider per plane (axial, coronal, sagittal) through the scan, showing the card's map:
        each slides along the strip of frames written beside the planes picture (by a run with
        ``html``; none for a scan whose strips a run without it left out)."""
        from camcli.output.paths import SLICE_PLANES, slices_rel
        from camcli.output.volume_figures import SLIDER_FRAMES

        shown = [r.output for r in rows if r.output]
        if not shown or not all((out / slices_rel(o, p)).is_file() for o in shown for p in SLICE_PLANES):
            return ""
        middle = SLIDER_FRAMES // 2
        return '<div class="slices">' + "".join(
            f'<div class="plane"><div class="slice" data-plane="{plane}" data-frames="{SLIDER_FRAMES}"></div>'
            f'<input type="range" min="0" max="{SLIDER_FRAMES - 1}" value="{middle}" aria-label="{plane} slice">'
            f'{plane}</div>' for plane in SLICE_PLANES) + "</div>"

    def evaluate_run(self, folder, truth, normalized, tolerance, gates):
        """Each map's peak voxel and mass against label volumes or voxel boxes (camcli.evaluation.volumes)."""
        from camcli.errors import UsageError
        from camcli.evaluation.evaluate import Report
        from camcli.evaluation.scoring import Evaluation, check_gates
        from camcli.evaluation.volumes import score_volume_run, write_volume_csv

        if normalized:
            raise UsageError("`normalized` is for box coordinates; a volume run is scored against label volumes")
        asked = {k: v for k, v in gates.items() if v is not None}
        if set(asked) - {"min_pointing"}:
            raise UsageError(f"{', '.join(f'`{k}`' for k in sorted(set(asked) - {'min_pointing'}))}: a volume run is "
                             "gated by `min_pointing` (the map's peak voxel inside the labelled structure)")
        scored = score_volume_run(folder, Path(truth))
        if not scored.rows:
            raise UsageError("nothing to score: no scan of the run has a label volume or a box (check the names in "
                             "--truth)")
        write_volume_csv(folder / "evaluation.csv", scored)
        evaluation = Evaluation([], scored.summaries, scored.without_truth, scored.truth_without_image)
        return Report(evaluation, folder, check_gates(scored.summaries, **asked), gates=asked, task=self.name)

    def print_report(self, report, console, fmt) -> bool:
        """Each method x layer's pointing and energy over the scans whose labels hold the structure."""
        from camcli.evaluation.metrics import summary_table, table_rows

        scans = max((s.images for s in report.summaries), default=0)
        console.print(summary_table(f"camcli evaluate: maps of {scans} labelled scan(s)",
                                    *table_rows(report.summaries, fmt, "scans")))
        return True


def default_volume_layer(model, size, channels: int, device, classes: int | None = None) -> str:
    """The last layer, in the order the forward calls them, whose output is a 3D map of more than
    one voxel: the feature map before the global pooling. For a segmenter (``classes``: the
    scores per voxel), the last before the score maps at the end (a 1x1x1 convolution to the
    classes, its activation): their maps would only redraw the predicted labels."""
    import torch

    from camcli.engine.capture import removed_after
    from camcli.errors import UsageError

    seen: list[tuple[str, int]] = []

    def hook_for(name: str):
        def hook(_m, _i, out):
            if isinstance(out, torch.Tensor) and out.dim() == 5 and out.shape[2:].numel() > 1:
                seen.append((name, int(out.shape[1])))
        return hook

    with removed_after([m.register_forward_hook(hook_for(n)) for n, m in model.named_modules() if n]), \
            torch.inference_mode():
        model(torch.zeros(1, channels, *size, device=device))
    if classes is not None:
        while seen and seen[-1][1] in (classes, 1):
            seen.pop()
    if not seen:
        raise UsageError("no layer of the model outputs a 3D feature map"
                         + (" before its scores" if classes is not None else "") + "; name the layer with `layer`")
    return seen[-1][0]


#: model -> {(input size, channels): whether it scores every voxel}: the volume tasks both ask
_PER_VOXEL: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def scores_per_voxel(loaded) -> bool:
    """Whether a 3D network's output is a score per class per voxel, (N, K, d, h, w): a segmenter's
    (its dict's ``out``, else the output camcli reads by default). One forward on zeros per model
    and input, however many tasks ask."""
    key = (tuple(loaded.input_size), loaded.input_channels)
    known = _PER_VOXEL.setdefault(loaded.model, {})
    if key not in known:
        known[key] = _scores_per_voxel(loaded)
    return known[key]


def _scores_per_voxel(loaded) -> bool:
    import torch

    from camcli.engine.targets import select_output
    from camcli.errors import UsageError

    device = next((p.device for p in loaded.model.parameters()), torch.device("cpu"))
    with torch.inference_mode():
        out = loaded.model(torch.zeros(1, loaded.input_channels, *loaded.input_size, device=device))
    try:
        scores = out["out"] if isinstance(out, dict) and "out" in out else select_output(out, None)
    except UsageError:
        return False
    return scores.dim() == 5


TASK = Volume()
