"""The demo model on sample_images/: predictions are right and heatmaps land on the objects."""

import json

import cv2
import numpy as np
import pytest

from camcli.geometry import Box, pointing_hit
from camcli.engine.images import discover
from camcli.session import ExplainSession
from camcli.tasks.classification import resolve_target
from camcli.engine.stream import iter_results
from camcli.settings import resolve
from conftest import DEMO_CONFIG, SAMPLES, read_boxes, read_csv


def hit(heatmap: np.ndarray, box) -> bool:
    """The pointing game as published (Zhang et al., 2016): the maximum within 15 px of the box."""
    return pointing_hit(heatmap, [Box(*box)], tolerance=15)


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory):
    from typer.testing import CliRunner

    from camcli.cli import app
    out = tmp_path_factory.mktemp("demo") / "run"
    r = CliRunner().invoke(app, ["explain", str(SAMPLES), "--config", str(DEMO_CONFIG), "--out", str(out),
                                 "--method", "gradcam,cam", "--workers", "0"], catch_exceptions=False)
    assert r.exit_code == 0, r.stderr
    return out


@pytest.fixture(scope="module")
def demo():
    settings = resolve({"workers": 0}, DEMO_CONFIG)
    settings.method = ["gradcam", "cam"]
    session = ExplainSession.open(settings)
    loaded, explainer, device = session.loaded, session.explainer, session.device
    return loaded, explainer, device


def test_every_sample_gets_rows_and_full_size_overlays(demo_out):
    boxes = read_boxes()
    rows = read_csv(demo_out / "predictions.csv")
    assert sorted({r["path"] for r in rows}) == sorted(boxes)
    assert len(rows) == 2 * len(boxes)  # gradcam and cam
    for row in rows:
        assert row["status"] == "ok"
        png = cv2.imread(str(demo_out / row["output"]))
        src = cv2.imread(str(SAMPLES / row["path"]))
        assert png.shape == src.shape
    manifest = json.loads((demo_out / "run.json").read_text())
    assert manifest["model"]["architecture"] == "resnet18" and manifest["model"]["input_size"] == [224, 224]


def test_predicted_labels_match_ground_truth(demo_out):
    boxes = read_boxes()
    rows = [r for r in read_csv(demo_out / "predictions.csv") if r["method"] == "gradcam"]
    right = sum(r["pred_label"] in {label for label, _ in boxes[r["path"]]} for r in rows)
    assert right / len(rows) >= 0.9, f"{right}/{len(rows)} predictions match boxes.csv"


def test_heatmap_maximum_lies_on_the_object(demo):
    """Pointing game on single-object scenes, for Grad-CAM and CAM: >= 90% hits each."""
    loaded, explainer, device = demo
    boxes = read_boxes()
    items = [i for i in discover([SAMPLES]) if len(boxes[i.rel]) == 1]
    hits = {"gradcam": 0, "cam": 0}
    for result in iter_results(loaded, explainer, items, batch_size=8, device=device):
        (_, box), = boxes[result.item.rel]
        for m in result.maps:
            hits[m.method] += hit(m.heatmap, box)
    for method, n in hits.items():
        assert n / len(items) >= 0.9, f"{method}: {n}/{len(items)} maxima inside the box"


def test_target_moves_the_heatmap_to_that_object(demo):
    """On two-object scenes, explaining each object's class puts the maximum on that object."""
    loaded, explainer, device = demo
    boxes = read_boxes()
    items = [i for i in discover([SAMPLES]) if len(boxes[i.rel]) == 2]
    assert items
    cases = {"gradcam": [], "cam": []}
    for which in (0, 1):
        for item in items:
            label, box = boxes[item.rel][which]
            target = resolve_target(label, loaded.labels)
            (result,) = list(iter_results(loaded, explainer, [item], device=device, target=target))
            for m in result.maps:
                cases[m.method].append(hit(m.heatmap, box))
    for method, hits in cases.items():
        assert sum(hits) / len(hits) >= 0.9, f"{method}: {sum(hits)}/{len(hits)} targeted maxima on the object"


DISCRIMINATIVE = ["cam", "gradcam", "gradcam++", "xgradcam", "hirescam", "gradcam-elementwise", "layercam",
                  "scorecam", "ablationcam"]  # eigencam is class-agnostic and exempt


@pytest.mark.slow
def test_every_class_discriminative_method_follows_the_target():
    """Per-method hit rates on the 8 two-object scenes x both classes (16 cases).

    Measured with the shipped model: 15/16 for every method but Ablation-CAM (14/16); the
    floor, 85%, fails as soon as a method misses a third case (13/16 = 81%)."""
    settings = resolve({"workers": 0, "cam_batch_size": 256}, DEMO_CONFIG)
    settings.method = DISCRIMINATIVE
    session = ExplainSession.open(settings)
    loaded, explainer, device = session.loaded, session.explainer, session.device
    boxes = read_boxes()
    items = [i for i in discover([SAMPLES]) if len(boxes[i.rel]) == 2]
    cases = {m: [] for m in DISCRIMINATIVE}
    for which in (0, 1):
        for item in items:
            label, box = boxes[item.rel][which]
            (result,) = list(iter_results(loaded, explainer, [item], device=device,
                                          target=resolve_target(label, loaded.labels)))
            for m in result.maps:
                cases[m.method].append(hit(m.heatmap, box))
    rates = {m: sum(h) / len(h) for m, h in cases.items()}
    print("two-object --target hit rates:", rates)
    assert all(rate >= 0.85 for rate in rates.values()), rates
