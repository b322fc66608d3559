"""Classifiers (and heads read as one: binary, multi-label, regression, embeddings): a score per
class per image, each map explaining one class's score. The task every other model falls back to.
"""

from __future__ import annotations

import html
from pathlib import Path

from camcli.output.rows import PredictionRow
from camcli.tasks.task import TASK_SETTINGS, Built, Task

#: the settings of a segmenter or a detector, which a classification run refuses
_OTHERS = ("min_area", "background", "region", "save_mask", "score_threshold", "max_detections", "detection_maps")


class Classification(Task):
    name = "classification"
    description = "a classifier: a score per class per image; each map explains one class's score"
    model_in_words = "a classifier: it scores each image"
    row_type = PredictionRow
    csv_stem = "predictions"
    takes = frozenset(TASK_SETTINGS) - frozenset(_OTHERS)
    tagged_in_listings = False  # the usual case: only the others' models are marked

    def claims(self, loaded) -> bool:
        return True  # asked last: any model no other task claims is read as a classifier

    def known_models(self) -> list[str]:
        from camcli.models import classification_models

        return classification_models()

    refusal_reason = "`task` segmentation makes a model of your own class a segmenter"

    def layer_defaults(self, loaded, infos):
        from camcli.engine.methods.cam import cam_capable_layers
        from camcli.errors import UsageError
        from camcli.models.layer_search import default_layer

        try:
            chosen = default_layer(loaded.model, loaded.input_size, infos=infos)
        except UsageError:  # no layer reads as a map: the listing says so by marking none
            chosen = None
        return chosen, cam_capable_layers(loaded.model, loaded.input_size)

    def open(self, settings, device, loaded, methods) -> Built:
        """BatchNorm folded and channels-last (both only outside the target layers), the target
        checked on a dummy batch, the layers checked to give maps."""
        from camcli.engine.channels_last import to_channels_last
        from camcli.engine.explainer import Explainer
        from camcli.engine.layer_names import display_name, resolve_layer
        from camcli.engine.layouts import NotAMap
        from camcli.errors import UsageError
        from camcli.models.batchnorm_folding import fold_batchnorm
        from camcli.models.layer_search import default_layer

        layers = ([resolve_layer(loaded.model, spec) for spec in settings.layer] if settings.layer
                  else [default_layer(loaded.model, loaded.input_size, device)])
        # BatchNorm folded into its convolution (not at the target layers): ~10% faster inference
        fold_batchnorm(loaded.model, keep=layers)
        kept_nchw = None
        if device.type in ("cpu", "cuda"):
            # NHWC convolutions: 1.2-1.4x faster inference on 2 CPU cores (benchmarks/), and the
            # layout tensor cores want; results differ from NCHW only in float rounding
            kept_nchw = to_channels_last(loaded.model, loaded.input_size, device)
        target = build_target(settings, loaded, device)
        explainer = Explainer(loaded.model, layers, methods, precision=settings.precision,
                              strict=settings.strict, layer_layout=settings.layer_layout,
                              aug_smooth=settings.aug_smooth, fuse=settings.fuse, target=target)
        try:
            explainer.validate(loaded.input_size, device)
        except NotAMap as e:
            suggestion = display_name(default_layer(loaded.model, loaded.input_size, device))
            raise UsageError(f"{e}; `layer` {suggestion} gives a map (see `camcli layers {settings.model}`)") from None
        return Built(loaded, layers, methods, explainer, target.fixed[0] if len(target.fixed) == 1 else None,
                     notes=[kept_nchw] if kept_nchw else [])

    def explained(self, session) -> str:
        return session.explainer.target.describe()

    def empty_cause(self, session) -> str | None:
        """A classifier whose weights are all zero scores every class the same for every image."""
        from camcli.engine.layer_names import display_name
        from camcli.engine.methods.cam import linear_head

        head = linear_head(session.loaded.model)
        if head is not None and not head[1].weight.detach().any():
            return (f"the model's classifier ({display_name(head[0])}) has all-zero weights, so every class scores "
                    "the same whatever the image and no layer can show evidence; torchvision initialises ViT heads "
                    "to zero: with `weights` none, load trained weights (`checkpoint`)")
        return None

    def results(self, session, items, skip, plan):
        from camcli.engine.stream import iter_results

        s = session.settings
        return iter_results(session.loaded, session.explainer, items, batch_size=s.batch_size,
                            workers=plan.workers if plan else s.workers, device=session.device,
                            target=session.target, topk=s.topk, max_pixels=s.max_pixels, skip=skip,
                            batches=plan.batches if plan else None, prefetch=plan.prefetch if plan else 2,
                            resize=s.resize, seed=s.seed)

    def header(self, settings, session) -> list[str]:
        """Top-k columns for the classes there are (a 6-class model's `topk` 1000 makes 6, not 1000);
        a ``targets`` column where an image may get several explained classes."""
        from camcli.engine.stream import labels_of
        from camcli.output.rows import columns

        topk = min(settings.topk, len(labels_of(session.explainer, session.loaded))) or settings.topk
        return columns(topk, settings.boxes, settings.box_rotated, settings.box_mode == "all",
                       targets=session.explainer.target.several)

    def write(self, result, out: Path, settings):
        from camcli.output.image_writer import write_image

        return write_image(result, out, settings)

    def json_entries(self, rows) -> dict:
        first = rows[0]
        maps = []
        for r in rows:
            entry = {"method": r.method, "layer": r.layer,
                     "target": {"index": r.target_index, "label": r.target_label, "score": r.target_score},
                     "overlay": r.output, "heatmap": r.heatmap, "empty_map": r.empty_map, "warning": r.warning}
            if r.box_status:
                entry["box"] = list(r.box) if r.box_status == "ok" else None
            maps.append(entry)
        return {"width": first.width, "height": first.height, "note": first.note or None,
                "prediction": {"index": first.pred_index, "label": first.pred_label, "score": first.score},
                "target": {"index": first.target_index, "label": first.target_label, "score": first.target_score},
                "topk": [{"index": i, "label": lab, "score": p} for i, lab, p in first.topk],
                "maps": maps, "panel": first.panel}

    def gallery_card(self, rows):
        """A run that explains several classes per image names the class on each map's button."""
        first = rows[0]
        maps = [(f"{r.method}@{r.layer}" + (f": {r.target_label}" if r.targets is not None else ""), r.output)
                for r in rows if r.output]
        pred = f"{html.escape(str(first.pred_label))} {first.score:.3f}" if first.score is not None else "-"
        return maps, first.score, pred


def build_target(s, loaded, device):
    """What the settings ask to explain (:class:`~camcli.engine.targets.Target`), checked against
    the model's output on a dummy batch."""
    from camcli.engine.heads import binary_labels, checked_kind, probe, read_embedding, reference_embedding
    from camcli.engine.targets import THRESHOLD, Target, resolve_classes
    from camcli.errors import UsageError

    score = "probability" if s.score == "softmax" else s.score
    if s.target_image or s.target_embedding:
        if s.target_image:
            reference = reference_embedding(loaded.model, s.target_image, loaded.input_size, loaded.mean, loaded.std,
                                            s.resize, loaded.crop_fraction, device, s.output, s.max_pixels)
        else:
            reference = read_embedding(s.target_embedding)
        if score != "logit":
            raise UsageError("`score` probability needs a classifier's head; a similarity is explained as it is")
        name = Path(s.target_image or s.target_embedding).name
        return Target("similarity", output=s.output, labels=[f"similarity to {name}"], reference=reference,
                      reference_name=name)
    facts = probe(loaded.model, loaded.input_size, device, s.output)
    kind, squashed = checked_kind(s.head, facts)
    if s.threshold is not None and kind != "sigmoid":
        raise UsageError(f"`threshold` applies to the sigmoid head, and this model's is {kind} (`head` {s.head}); "
                         "say `head` sigmoid if its outputs are independent labels")
    labels = binary_labels(loaded.labels) if kind == "binary" else list(loaded.labels)
    if kind == "regression":
        if score != "logit":
            raise UsageError("`score` probability needs a classifier's head; a regression output is explained as it is")
        if s.explain_topk is not None:
            raise UsageError("`explain_topk` ranks classes; a regression head has outputs, named with `target`")
        if facts.width > 1 and not s.target:
            raise UsageError(f"the regression head has {facts.width} outputs: name the one to explain with `target`")
        if facts.width < 1:
            raise UsageError(f"the regression head reads (N, outputs) values, but the model's output has {facts.dims} "
                             "dimensions; pick another part of it with `output`")
    fixed = resolve_classes(s.target, labels) or ((0,) if kind == "regression" else ())
    return Target(kind, score=score, squashed=squashed, output=s.output, labels=labels, fixed=fixed,
                  threshold=THRESHOLD if s.threshold is None else s.threshold, explain_topk=s.explain_topk,
                  direction=-1.0 if s.direction == "lower" else 1.0)


def resolve_target(spec: str | None, labels: list[str]) -> int | None:
    """The ``target`` setting as one class index (or ``None``): an index or a label name."""
    from camcli.engine.targets import resolve_classes

    found = resolve_classes(spec, labels)
    return found[0] if found else None


TASK = Classification()
