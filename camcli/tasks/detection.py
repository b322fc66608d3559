"""Detectors (torchvision's R-CNNs, RetinaNet, FCOS, SSD; Ultralytics YOLO): boxes per image,
each box's maps explaining its class score plus its IoU with itself (pytorch-grad-cam's box score).
"""

from __future__ import annotations

import html
from pathlib import Path

from camcli.output.rows import DETECTION_COLUMNS, DetectionRow
from camcli.tasks.task import Built, Task, entries_by_rank

#: a box's gradient is local: LayerCAM keeps it where it falls, Grad-CAM averages it away; on the demo
#: detector's held-out scenes its map peaks inside the box far more often (docs/detection.md)
DEFAULT_METHOD = ("layercam", "LayerCAM is a detection run's default: it keeps each box's gradient where it falls, so "
                  "its map peaks inside its own box far more often than Grad-CAM's (held-out demo scenes: 61.9% "
                  "against 17.7% at `backbone`, 99.6% against 21.2% at the finest FPN level; docs/detection.md); "
                  "name another with `method`")


class Detection(Task):
    name = "detection"
    description = "a detector: boxes per image; each box's maps explain its class score and its IoU with itself"
    model_in_words = "a detector: it returns boxes"
    row_type = DetectionRow
    evaluated_per = "box"
    csv_stem = "detections"
    takes = frozenset({"score_threshold", "max_detections", "detection_maps"})
    evaluated_from_runs_only = ("a detector is evaluated from a finished detection run: `camcli explain` it with "
                                "`save_heatmap` npy, then `camcli evaluate RUN --truth ...` (faithfulness and sanity "
                                "checks are not offered for detectors yet)")

    def claims(self, loaded) -> bool:
        from camcli.models.kinds import is_detector  # torchvision is imported only if the model is its

        return is_detector(loaded.model)  # torchvision's detector classes (subclasses too), a YOLO

    def not_stated_of(self, found, loaded) -> str:
        if found.name == "classification":  # a detector's outputs are read only where they are known
            return (f"`task` detection, but {loaded.architecture} is no detector camcli knows: camcli explains "
                    "torchvision's detector classes (Faster/Mask/Keypoint R-CNN, RetinaNet, FCOS, SSD) and "
                    "Ultralytics YOLO, whose outputs it can read for certain")
        return super().not_stated_of(found, loaded)


    def known_models(self) -> list[str]:
        from camcli.models.detectors import detection_models

        return detection_models()

    refusal_reason = "each box is explained by its own score; the detector sizes images itself"

    def default_method(self, loaded) -> tuple[str, str] | None:
        own = getattr(loaded.model, "default_method", None)  # YOLO: its own default (Eigen-CAM), with its reason
        if own:
            return own, getattr(loaded.model, "default_method_reason", f"{own} is this detector's default")
        return DEFAULT_METHOD

    def layer_defaults(self, loaded, infos):
        """A detector's default is its backbone (FPN levels read as one map); it has no CAM head."""
        from camcli.models.detectors import default_detector_layer

        return default_detector_layer(loaded.model), set()

    def open(self, settings, device, loaded, methods) -> Built:
        """The detector as it is (no folding: its own frozen norms), its backbone as the default
        layer, checked on a dummy image."""
        from camcli.engine.detection import DetectionExplainer
        from camcli.engine.layer_names import resolve_layer
        from camcli.errors import UsageError
        from camcli.models.detectors import default_detector_layer

        model = loaded.model
        default = default_detector_layer(model)
        if settings.layer:
            layers = [resolve_layer(model, spec) for spec in settings.layer]
        elif default is not None:
            layers = [default]
        else:
            raise UsageError(f"{loaded.architecture} has no `backbone`: name the layer to explain with `layer` (see "
                             f"`camcli layers`)")
        explainer = DetectionExplainer(model, layers, methods, loaded.labels, settings.score_threshold,
                                       settings.max_detections, strict=settings.strict)
        explainer.validate(loaded.input_size[0], device)
        return Built(loaded, layers, methods, explainer)

    def input_in_words(self, loaded) -> str:
        return ""  # the detector sizes images itself

    def explained(self, session) -> str:
        e = session.explainer
        return (f"detector: each box scoring {e.score_threshold:g} or more (at most {e.max_detections} per image), "
                "explained by its class score plus its IoU with itself (pytorch-grad-cam's box score)")

    def results(self, session, items, skip, plan):
        from camcli.engine.detection_stream import iter_detections

        s = session.settings
        return iter_detections(session.loaded, session.explainer, items, batch_size=s.batch_size,
                               workers=plan.workers if plan else s.workers, device=session.device,
                               max_pixels=s.max_pixels, skip=skip, batches=plan.batches if plan else None,
                               prefetch=plan.prefetch if plan else 2, seed=s.seed)

    def header(self, settings, session) -> list[str]:
        return list(DETECTION_COLUMNS)

    def write(self, result, out: Path, settings):
        from camcli.output.detection_writer import write_detection_image

        return write_detection_image(result, out, settings)

    def json_entries(self, rows) -> dict:
        """One object per box, with its maps (method x layer)."""
        first = rows[0]
        boxes = entries_by_rank(rows, lambda r: r.det_rank, lambda r: {
            "rank": r.det_rank, "index": r.det_index, "label": r.det_label, "score": r.det_score,
            "box": list(r.det_box) if r.det_box else None}, lambda r: {"energy_in_box": r.energy_in_box})
        return {"width": first.width, "height": first.height, "note": first.note or None, "detections": boxes}

    def gallery_card(self, rows):
        """A map per box, or one per method x layer with all boxes (`detection_maps` combined)."""
        first = rows[0]
        shared = len({r.output for r in rows}) < len(rows)
        maps = list(dict.fromkeys((f"{r.method}@{r.layer}" + ("" if shared else f": box {r.det_rank} {r.det_label}"),
                                   r.output) for r in rows if r.output))
        pred = (f"{first.detections} box(es); best: {html.escape(str(first.det_label))} {first.det_score:.3f}"
                if first.detections else html.escape(first.note or "no box"))
        return maps, first.det_score, pred

    def evaluate_run(self, folder, truth, normalized, tolerance, gates):
        from camcli.errors import UsageError
        from camcli.evaluation.detections import check_detection_gates, score_detection_run, write_detection_csv
        from camcli.evaluation.evaluate import Report
        from camcli.evaluation.scoring import Evaluation
        from camcli.evaluation.truth import read_truth
        from camcli.output.csvfile import read_rows

        _header, rows = read_rows(folder / "detections.csv")
        sizes = {r.path: (r.width, r.height) for r in rows if r.explained}
        scored = score_detection_run(folder, read_truth(truth, normalized=normalized, sizes=sizes), tolerance)
        if not scored.detector.images:
            raise UsageError("nothing to score: no image of the run has ground truth (check the paths in --truth)")
        write_detection_csv(folder / "evaluation.csv", scored)
        evaluation = Evaluation([], scored.summaries, scored.without_truth, scored.truth_without_image)
        asked = {k: v for k, v in gates.items() if v is not None}
        return Report(evaluation, folder, check_detection_gates(scored, **asked), gates=asked,
                      detector=scored.detector, task=self.name, figures_name="detector")

    def print_report(self, report, console, fmt) -> bool:
        """The detector's figures, then each method x layer's over the boxes it found right."""
        from camcli.evaluation.metrics import maps_only, summary_table, table_rows

        d = report.detector
        console.print(f"detector: {d.matched} of {d.truth_boxes} truth boxes found in {d.images} image(s) (recall "
                      f"{fmt(d.recall, True)}), {d.matched} of {d.detections} detections right (precision "
                      f"{fmt(d.precision, True)}) at IoU 0.5; matched boxes' mean IoU {fmt(d.mean_iou)}", markup=False)
        console.print(summary_table("maps of the boxes found right",
                                    *table_rows(report.summaries, fmt, "boxes", maps_only(report.summaries))))
        return True


TASK = Detection()
