"""Semantic segmenters (torchvision's, HuggingFace's, a U-Net of one's own with ``task``
segmentation): a class per pixel; each class found in an image gets maps explaining the sum of its
scores over its predicted mask (pytorch-grad-cam's SemanticSegmentationTarget) or over a region.
"""

from __future__ import annotations

import html
from dataclasses import replace
from pathlib import Path

from camcli.output.rows import SEGMENTATION_COLUMNS, SegmentRow
from camcli.tasks.task import Built, Task, entries_by_rank


class Segmentation(Task):
    name = "segmentation"
    description = ("a segmenter: a class per pixel; each class found gets maps explaining its scores summed over "
                   "its mask")
    model_in_words = "a segmenter: it scores every pixel"
    row_type = SegmentRow
    evaluated_per = "class"
    csv_stem = "segments"
    folders = ("masks",)
    #: a segmenter is fed as a classifier is: the classes to explain, the part of the output, the
    #: input's size, framing and normalisation; then its own settings
    takes = frozenset({"target", "output", "resize", "input_size", "mean", "std",
                       "min_area", "background", "region", "save_mask"})
    stated_from = ("classification",)  # camcli cannot tell a segmenter of one's own class: `task` says so
    records_labels = True  # saved masks hold class indices: their names go with them
    evaluated_from_runs_only = ("a segmenter is evaluated from a finished segmentation run: `camcli explain` it "
                                "with `save_mask` and `save_heatmap` npy, then `camcli evaluate RUN --truth MASKS` "
                                "(faithfulness and sanity are not offered for segmenters yet)")

    def claims(self, loaded) -> bool:
        from camcli.models.kinds import is_segmenter

        return is_segmenter(loaded.model)  # torchvision's segmenter classes, HuggingFace's semantic segmenters

    def known_models(self) -> list[str]:
        from camcli.models.segmenters import segmentation_models

        return segmentation_models()

    refusal_reason = "each class found is explained by the sum of its scores over its mask"

    def refuse_settings(self, settings) -> None:
        from camcli.errors import UsageError

        super().refuse_settings(settings)
        if settings.resize == "crop":
            raise UsageError("`resize` crop cuts parts of the image away, which a segmentation run would leave "
                             "unsegmented: use stretch or letterbox")

    def layer_defaults(self, loaded, infos):
        """The backbone's last block, or the decoder's fused features; no CAM head."""
        from camcli.models.segmenters import default_segmenter_layer

        return default_segmenter_layer(loaded.model), set()

    def open(self, settings, device, loaded, methods) -> Built:
        """The segmenter fed as a classifier is (BatchNorm folded, channels-last), its backbone's last
        block (or its decoder's fused features) as the default layer, the classes named with
        `target` or found in each image, checked on a dummy image."""
        from camcli.engine.channels_last import to_channels_last
        from camcli.engine.heads import binary_labels, probe
        from camcli.engine.layer_names import display_name, resolve_layer
        from camcli.engine.layouts import NotAMap
        from camcli.engine.segmentation import SegmentationExplainer, SegmentationHead
        from camcli.engine.segmentation_stream import Regions
        from camcli.engine.targets import resolve_classes
        from camcli.errors import UsageError
        from camcli.models.batchnorm_folding import fold_batchnorm
        from camcli.models.segmenters import (background_index, default_segmenter_layer, own_segmenter_layer,
                                              redraws_output)
        from camcli.settings.checks import region_spec

        model = loaded.model
        if settings.layer:
            layers = [resolve_layer(model, spec) for spec in settings.layer]
        else:
            layers = [default_segmenter_layer(model)
                      or own_segmenter_layer(model, loaded.input_size, device, len(loaded.labels))]
        squashed = probe(model, loaded.input_size, device, settings.output).squashed_by is not None
        fold_batchnorm(model, keep=layers)
        notes = [to_channels_last(model, loaded.input_size, device)] if device.type in ("cpu", "cuda") else []
        head = SegmentationHead.read(model, loaded.input_size, device, settings.output, squashed)
        labels = list(loaded.labels)
        if head.binary:  # one logit per pixel: its two sides are the classes, the negative the background
            if len(labels) > 2:
                raise UsageError(f"the segmenter scores 1 classes per pixel but has {len(labels)} labels")
            labels = binary_labels(labels) if labels != ["class_0"] else ["background", "foreground"]
        explainer = SegmentationExplainer(model, layers, methods, labels, settings.min_area, settings.background,
                                          classes=resolve_classes(settings.target, labels),
                                          background_index=0 if head.binary else background_index(labels),
                                          strict=settings.strict, layer_layout=settings.layer_layout, head=head)
        try:
            explainer.validate(loaded.input_size, device)
        except NotAMap as e:
            raise UsageError(f"{e}; name a layer whose output is a map with `layer` (see `camcli layers`)") from None
        regions = Regions(region_spec(settings.region)) if settings.region else None
        for layer in layers:  # a wrong map without a warning is the worst thing camcli can write
            if redraws_output(model, layer, loaded.input_size, device, explainer.head.scores):
                notes.append(f"warning: the map at {display_name(layer)} redraws the model's own scores (that layer "
                             "outputs the score map itself, resized at most): it shows the predicted mask, not what "
                             "made it; explain a layer before the scores with `layer` (see `camcli layers`)")
        return Built(replace(loaded, labels=labels), layers, methods, explainer, notes=[n for n in notes if n],
                     context=regions)

    def explained(self, session) -> str:
        e, regions = session.explainer, session.context
        which = (", ".join(e.labels[c] for c in e.classes) if e.classes else
                 f"each class covering {100 * e.min_area:g}% of the image or more"
                 + (", the background included" if e.background else ""))
        over = f"its scores summed over the {regions.name}" if regions else "the sum of its scores over its predicted mask"
        return f"segmenter: {which}, explained by {over} (pytorch-grad-cam's SemanticSegmentationTarget)"

    def results(self, session, items, skip, plan):
        from camcli.engine.segmentation_stream import iter_segments

        s = session.settings
        return iter_segments(session.loaded, session.explainer, items, batch_size=s.batch_size,
                             workers=plan.workers if plan else s.workers, device=session.device,
                             max_pixels=s.max_pixels, skip=skip, batches=plan.batches if plan else None,
                             prefetch=plan.prefetch if plan else 2, resize=s.resize, seed=s.seed,
                             regions=session.context)

    def header(self, settings, session) -> list[str]:
        return list(SEGMENTATION_COLUMNS)

    def write(self, result, out: Path, settings):
        from camcli.output.segmentation_writer import write_segmentation_image

        return write_segmentation_image(result, out, settings)

    def json_entries(self, rows) -> dict:
        """One object per class found, with its maps (method x layer)."""
        first = rows[0]
        classes = entries_by_rank(rows, lambda r: r.seg_rank, lambda r: {
            "rank": r.seg_rank, "index": r.seg_index, "label": r.seg_label, "pixel_share": r.pixel_share,
            "mean_probability": r.mean_probability, "region": r.region}, lambda r: {"energy_in_mask": r.energy_in_mask})
        return {"width": first.width, "height": first.height, "note": first.note or None, "mask": first.mask,
                "segments": classes}

    def gallery_card(self, rows):
        """A map per class found x method x layer, and the mask."""
        first = rows[0]
        maps = [(f"{r.method}@{r.layer}: {r.seg_label}", r.output) for r in rows if r.output]
        pred = (f"{first.segments} class(es); largest: {html.escape(str(first.seg_label))}, "
                f"{100 * first.pixel_share:.0f}% of the image" if first.segments else html.escape(first.note or "no class"))
        if first.mask:
            maps.append(("mask", first.mask))
        return maps, first.pixel_share, pred

    def evaluate_run(self, folder, truth, normalized, tolerance, gates):
        from camcli.errors import UsageError
        from camcli.evaluation.evaluate import Report
        from camcli.evaluation.scoring import Evaluation
        from camcli.evaluation.segments import check_segmentation_gates, score_segmentation_run, write_segmentation_csv

        if normalized:
            raise UsageError("`normalized` is for box coordinates; a segmentation run is scored against label masks")
        if gates.get("min_recall") is not None:
            raise UsageError("`min_recall` gates a detector's recall; a segmentation run's mask is gated by `min_iou` "
                             "(its mIoU)")
        scored = score_segmentation_run(folder, Path(truth), tolerance)
        if not scored.segmenter.images:
            raise UsageError("nothing to score: no image of the run has a truth mask (check the paths in --truth)")
        write_segmentation_csv(folder / "evaluation.csv", scored)
        evaluation = Evaluation([], scored.summaries, scored.without_truth, scored.truth_without_image)
        asked = {k: v for k, v in gates.items() if v is not None}
        return Report(evaluation, folder, check_segmentation_gates(scored, **asked), gates=asked,
                      detector=scored.segmenter, task=self.name, figures_name="segmenter")

    def print_report(self, report, console, fmt) -> bool:
        """The segmenter's IoU per class, then each method x layer's pointing into the truth masks
        of the classes it explained."""
        from camcli.evaluation.metrics import maps_only, print_segmenter, summary_table, table_rows

        print_segmenter(report.detector, console, fmt, "image")
        console.print(summary_table("maps of the explained classes the truth holds",
                                    *table_rows(report.summaries, fmt, "classes", maps_only(report.summaries))))
        return True


TASK = Segmentation()
