"""3D segmenters (a U-Net or SegResNet of MONAI's, a network of one's own): a class per voxel of a
scan; each class found gets maps explaining the sum of its scores over its predicted voxels
(pytorch-grad-cam's SemanticSegmentationTarget in three dimensions), and the predicted labels are
written as NIfTI over the scan.

Scans are read, fed and written as the volume task's (:mod:`camcli.tasks.volume`); classes are
found and explained as the 2D segmenter's (:mod:`camcli.engine.segmentation`, whose explainer
takes per-voxel scores): a class is found when it covers ``min_area`` of the scan, the background
only with ``background``, or the classes named with ``target``.
"""

from __future__ import annotations

import html
from dataclasses import replace

from camcli.output.rows import VOLUME_SEGMENT_COLUMNS, VolumeSegmentRow
from camcli.tasks.task import Built, entries_by_rank
from camcli.tasks.volume import Volume, default_volume_layer, scores_per_voxel


class VolumeSegmentation(Volume):
    name = "volume-segmentation"
    description = ("a 3D segmenter: a class per voxel of each scan; each class found gets maps explaining its scores "
                   "summed over its voxels, and the labels are written as NIfTI over the scan")
    model_in_words = "a volume segmenter: it scores every voxel"
    row_type = VolumeSegmentRow
    csv_stem = "volume_segments"
    folders = ("masks",)
    #: a scan fed as the volume task feeds it, then the segmenter's settings (as the 2D segmenter,
    #: no smoothing or fusion)
    takes = (Volume.takes - {"aug_smooth", "fuse"}) | {"target", "output", "min_area", "background"}
    records_labels = True  # the label volumes hold class indices: their names go with them
    evaluated_per = "class"
    refusal_reason = "each class found is explained by the sum of its scores over its voxels"
    evaluated_from_runs_only = ("a 3D segmenter is evaluated from a finished run: `camcli explain` the scans, then "
                                "`camcli evaluate RUN --truth LABELS/` (label volumes of the model's class indices on "
                                "the scans' grids; faithfulness and sanity checks are not offered for volumes yet)")

    def claims(self, loaded) -> bool:
        from camcli.models.modules import volume_channels

        return volume_channels(loaded.model) is not None and scores_per_voxel(loaded)

    def layer_defaults(self, loaded, infos):
        return default_volume_layer(loaded.model, loaded.input_size, loaded.input_channels, "cpu",
                                    classes=len(loaded.labels)), set()

    def open(self, settings, device, loaded, methods) -> Built:
        """The last 3D map before the score maps as the default layer; the head read (a binary
        segmenter's one channel made two classes), the classes named with ``target`` or found in
        each scan, every method and layer checked on a dummy volume."""
        from camcli.engine.heads import binary_labels, probe
        from camcli.engine.layer_names import display_name, resolve_layer
        from camcli.engine.layouts import NotAMap
        from camcli.engine.segmentation import SegmentationExplainer, SegmentationHead
        from camcli.engine.targets import resolve_classes
        from camcli.errors import UsageError
        from camcli.models.segmenters import background_index, redraws_output

        model, size, channels = loaded.model, loaded.input_size, loaded.input_channels
        squashed = probe(model, size, device, settings.output, channels).squashed_by is not None
        head = SegmentationHead.read(model, size, device, settings.output, squashed, channels)
        labels = list(loaded.labels)
        if head.binary:  # one logit per voxel: its two sides are the classes, the negative the background
            if len(labels) > 2:
                raise UsageError(f"the segmenter scores 1 class per voxel but has {len(labels)} labels")
            labels = binary_labels(labels) if labels != ["class_0"] else ["background", "foreground"]
        if settings.layer:
            layers = [resolve_layer(model, spec) for spec in settings.layer]
        else:
            layers = [default_volume_layer(model, size, channels, device, classes=int(head.binary) or len(labels))]
        explainer = SegmentationExplainer(model, layers, methods, labels, settings.min_area, settings.background,
                                          classes=resolve_classes(settings.target, labels),
                                          background_index=0 if head.binary else background_index(labels),
                                          strict=settings.strict, layer_layout=settings.layer_layout, head=head)
        try:
            explainer.validate(size, device, channels)
        except NotAMap as e:
            raise UsageError(f"{e}; name a layer with a 3D feature map with `layer` (see `camcli layers`)") from None
        notes = []
        for layer in layers:  # a wrong map without a warning is the worst thing camcli can write
            if redraws_output(model, layer, size, device, head.scores, channels):
                notes.append(f"warning: the map at {display_name(layer)} redraws the model's own scores (that layer "
                             "outputs the score volume itself): it shows the predicted labels, not what made them; "
                             "explain a layer before the scores with `layer` (see `camcli layers`)")
        return Built(replace(loaded, labels=labels), layers, methods, explainer, notes=notes)

    def explained(self, session) -> str:
        e, s = session.explainer, session.settings
        which = (", ".join(e.labels[c] for c in e.classes) if e.classes else
                 f"each class covering {100 * e.min_area:g}% of the scan or more"
                 + (", the background included" if e.background else ""))
        values = f"CT window {s.window}" if s.window else f"values scaled per scan ({s.scaling})"
        return f"3D segmenter: {which}, explained by the sum of its scores over its predicted voxels; {values}"

    def header(self, settings, session) -> list[str]:
        return list(VOLUME_SEGMENT_COLUMNS)

    def json_entries(self, rows) -> dict:
        first = rows[0]
        classes = entries_by_rank(rows, lambda r: r.seg_rank, lambda r: {
            "rank": r.seg_rank, "index": r.seg_index, "label": r.seg_label, "voxel_share": r.voxel_share,
            "mean_probability": r.mean_probability}, lambda r: {
            "nifti": r.heatmap, "peak_voxel": [r.peak_i, r.peak_j, r.peak_k] if r.peak_i is not None else None,
            "peak_mm": [r.peak_x, r.peak_y, r.peak_z] if r.peak_x is not None else None})
        return {"shape": first.shape, "spacing": first.spacing, "orientation": first.orientation,
                "note": first.note or None, "mask": first.mask, "segments": classes}

    def gallery_card(self, rows):
        first = rows[0]
        maps = [(f"{r.method}@{r.layer}: {r.seg_label}", r.output) for r in rows if r.output]
        pred = (f"{first.segments} class(es); largest: {html.escape(str(first.seg_label))}, "
                f"{100 * first.voxel_share:.1f}% of the scan" if first.segments
                else html.escape(first.note or "no class"))
        return maps, first.voxel_share, pred

    def evaluate_run(self, folder, truth, normalized, tolerance, gates):
        """The segmenter's IoU per class from its label volumes, and each class's maps' peak voxel
        and mass against that class in the truth (camcli.evaluation.volumes)."""
        from pathlib import Path

        from camcli.errors import UsageError
        from camcli.evaluation.evaluate import Report
        from camcli.evaluation.scoring import Evaluation
        from camcli.evaluation.segments import check_segmentation_gates
        from camcli.evaluation.volumes import score_volume_run, write_volume_csv

        if normalized:
            raise UsageError("`normalized` is for box coordinates; a 3D segmenter's run is scored against label "
                             "volumes")
        asked = {k: v for k, v in gates.items() if v is not None}
        if set(asked) - {"min_pointing", "min_iou"}:
            raise UsageError(f"{', '.join(f'`{k}`' for k in sorted(set(asked) - {'min_pointing', 'min_iou'}))}: a 3D "
                             "segmenter's run is gated by `min_iou` (its mIoU) and `min_pointing`")
        scored = score_volume_run(folder, Path(truth), f"{self.csv_stem}.csv")
        if not scored.segmenter.images:
            raise UsageError("nothing to score: no scan of the run has a label volume (check the names in --truth)")
        write_volume_csv(folder / "evaluation.csv", scored)
        evaluation = Evaluation([], scored.summaries, scored.without_truth, scored.truth_without_image)
        return Report(evaluation, folder, check_segmentation_gates(scored, **asked), gates=asked,
                      detector=scored.segmenter, task=self.name, figures_name="segmenter")

    def print_report(self, report, console, fmt) -> bool:
        """The segmenter's IoU per class, then each method x layer's pointing into the classes' voxels."""
        from camcli.evaluation.metrics import print_segmenter, summary_table, table_rows

        print_segmenter(report.detector, console, fmt, "scan", voxels=True)
        console.print(summary_table("maps of the explained classes the truth holds",
                                    *table_rows(report.summaries, fmt, "classes")))
        return True


TASK = VolumeSegmentation()
