"""`camcli evaluate` on the demo: localisation figures, the CI gate's exit codes, and the
per-image CSV."""

import json

import pytest

import camcli

from conftest import DEMO_CONFIG, SAMPLES, read_csv

# Measured on sample_images/ with the shipped demo model (see README): Grad-CAM's mean IoU is
# 0.409 at the default half-maximum threshold (0.422 on the single-object scenes alone). The
# floor leaves room for numerical noise across platforms but fails when boxes stop covering
# the objects: boxes of the whole blob (threshold 0.2) score 0.20, a box on the wrong object 0.
IOU_FLOOR = 0.35


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    from typer.testing import CliRunner

    from camcli.cli import app
    out = tmp_path_factory.mktemp("eval") / "run"
    r = CliRunner().invoke(app, ["explain", str(SAMPLES), "--config", str(DEMO_CONFIG), "--out", str(out),
                                 "--method", "gradcam,cam", "--save-heatmap", "npy", "--boxes", "--workers", "0",
                                 "--quiet"], catch_exceptions=False)
    assert r.exit_code == 0, r.stderr
    return out


def summary_of(result, method):
    data = json.loads(result.stdout)
    return next(s for s in data["summaries"] if s["method"] == method), data


def test_demo_localisation_figures(cli, demo_run):
    r = cli("evaluate", demo_run, "--truth", SAMPLES / "boxes.csv", "--json")
    assert r.exit_code == 0, r.stderr
    grad, data = summary_of(r, "gradcam")
    assert grad["images"] == 24 and grad["pointing"] >= 0.9
    assert grad["mean_iou"] >= IOU_FLOOR and grad["accuracy"] >= 0.9
    assert data["passed"] and data["images_without_truth"] == [] and data["truth_without_image"] == []
    rows = read_csv(demo_run / "evaluation.csv")
    assert len(rows) == 48 and {r["method"] for r in rows} == {"gradcam", "cam"}
    assert all(0.0 <= float(r["iou"]) <= 1.0 for r in rows)
    assert "mean IoU" in r.stderr  # under --json stdout holds the JSON alone, and the table goes to stderr
    plain = cli("evaluate", demo_run, "--truth", SAMPLES / "boxes.csv")  # `> results.txt` keeps the table
    assert plain.exit_code == 0 and "mean IoU" in plain.stdout and "mean IoU" not in plain.stderr
    assert "per-image values" in plain.stderr and "per-image values" not in plain.stdout  # where files went: a log


def test_gate_fails_above_and_passes_below_the_measured_value(cli, demo_run):
    r = cli("evaluate", demo_run, "--truth", SAMPLES / "boxes.csv", "--json")
    grad, _ = summary_of(r, "gradcam")
    cam, _ = summary_of(r, "cam")
    lowest_iou = min(grad["mean_iou"], cam["mean_iou"])
    ok = cli("evaluate", demo_run, "--truth", SAMPLES / "boxes.csv", "--min-iou", f"{lowest_iou - 0.01:.3f}",
             "--min-pointing", "0.5")
    assert ok.exit_code == 0, ok.stderr
    bad = cli("evaluate", demo_run, "--truth", SAMPLES / "boxes.csv", "--min-iou", f"{grad['mean_iou'] + 0.01:.3f}")
    assert bad.exit_code == 1 and "gate failed: gradcam" in bad.stderr and "mean IoU" in bad.stderr
    bad = cli("evaluate", demo_run, "--truth", SAMPLES / "boxes.csv", "--min-accuracy", "1.01")
    assert bad.exit_code == 1 and "accuracy" in bad.stderr


def test_boxes_only_output_scores_iou(cli, tmp_path):
    from typer.testing import CliRunner

    from camcli.cli import app
    out = tmp_path / "boxes"
    r = CliRunner().invoke(app, ["explain", str(SAMPLES / "single"), "--config", str(DEMO_CONFIG), "--out", str(out),
                                 "--boxes", "--workers", "0", "--quiet"], catch_exceptions=False)
    assert r.exit_code == 0
    r = cli("evaluate", out, "--truth", SAMPLES / "boxes.csv", "--json")
    grad, data = summary_of(r, "gradcam")
    assert grad["images"] == 16 and grad["mean_iou"] >= IOU_FLOOR and grad["pointing"] is None
    assert len(data["truth_without_image"]) == 8  # the pair scenes were not explained: reported, not dropped


def test_output_without_maps_or_boxes_is_a_usage_error(cli, tmp_path):
    from typer.testing import CliRunner

    from camcli.cli import app
    out = tmp_path / "plain"
    CliRunner().invoke(app, ["explain", str(SAMPLES / "pairs"), "--config", str(DEMO_CONFIG), "--out", str(out),
                             "--workers", "0", "--quiet"], catch_exceptions=False)
    r = cli("evaluate", out, "--truth", SAMPLES / "boxes.csv")
    assert r.exit_code == 2 and "--save-heatmap" in r.stderr


def test_a_refused_evaluation_of_images_leaves_no_folder_behind(cli, tmp_path, monkeypatch):
    """Images to explain now with a model camcli refuses: exit 2, and no empty camcli-eval/ (the
    folder is made once there is something to write)."""
    monkeypatch.chdir(tmp_path)
    r = cli("evaluate", SAMPLES / "pairs", "--config", DEMO_CONFIG, "--layer", "nonexistent", "--truth",
            SAMPLES / "boxes.csv", "--workers", "0")
    assert r.exit_code == 2, r.output
    assert not (tmp_path / "camcli-eval").exists()


@pytest.mark.slow
def test_evaluate_images_directly_with_faithfulness(cli, tmp_path):
    import shutil
    pairs = tmp_path / "pairs"  # three two-object scenes: ROAD solves 18 imputations per map
    pairs.mkdir()
    for p in sorted((SAMPLES / "pairs").iterdir())[:3]:
        shutil.copy(p, pairs / p.name)
    r = cli("evaluate", pairs, "--config", DEMO_CONFIG, "--truth", SAMPLES / "boxes.csv",
            "--method", "gradcam", "--faithfulness", "--steps", "8", "--workers", "0", "--json", "--out", tmp_path / "e")
    assert r.exit_code == 0, r.stderr
    grad, _ = summary_of(r, "gradcam")
    assert grad["images"] == 3
    assert 0 <= grad["average_drop"] <= 1 and 0 <= grad["deletion_auc"] <= 1
    assert grad["insertion_auc"] > grad["deletion_auc"]  # a faithful map: inserting its pixels helps more
    road = grad["road"]  # ROAD: removing the map's most relevant pixels costs more than its least relevant
    assert road["percentiles"] == [10, 20, 30, 40, 50, 60, 70, 80, 90]
    assert len(road["morf"]) == len(road["lerf"]) == 9 and road["morf_mean"] < road["lerf_mean"]
    assert road["combined"] == pytest.approx((road["lerf_mean"] - road["morf_mean"]) / 2)
    rows = read_csv(tmp_path / "e" / "evaluation.csv")
    assert len(rows) == 3 and all(r["deletion_auc"] and r["road_combined"] for r in rows)
    assert "ROAD" in r.stderr


@pytest.mark.slow
def test_rerunning_a_run_whose_checkpoint_moved_or_changed_is_refused(cli, tmp_path):
    """--faithfulness and --sanity rerun the run's model: a changed checkpoint would score other
    weights than the maps were made with, so it is refused in one line; a moved one may be pointed to."""
    import shutil

    from camcli.settings import resolve
    demo = resolve({}, DEMO_CONFIG)
    ckpt = tmp_path / "model.safetensors"
    shutil.copy(demo.checkpoint, ckpt)
    out = tmp_path / "run"
    image = sorted((SAMPLES / "single").iterdir())[0]
    r = cli("explain", image, "--config", DEMO_CONFIG, "--checkpoint", ckpt,
            "--save-heatmap", "npy", "--workers", "0", "--quiet", "--out", out)
    assert r.exit_code == 0, r.stderr
    moved = tmp_path / "moved.safetensors"
    ckpt.rename(moved)
    r = cli("evaluate", out, "--truth", SAMPLES / "boxes.csv", "--sanity")
    assert r.exit_code == 2 and "missing" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = cli("evaluate", out, "--truth", SAMPLES / "boxes.csv", "--faithfulness", "--steps", "2", "--checkpoint", moved,
            "--json")
    assert r.exit_code == 0, r.stderr
    data = moved.read_bytes()
    moved.write_bytes(data[:-2] + bytes([data[-2] ^ 1]) + data[-1:])  # one bit of one weight
    for option in ("--faithfulness", "--sanity"):
        r = cli("evaluate", out, "--truth", SAMPLES / "boxes.csv", option, "--checkpoint", moved)
        assert r.exit_code == 2 and "has changed" in r.stderr
    r = cli("evaluate", out, "--truth", SAMPLES / "boxes.csv")  # scoring the saved maps needs no model
    assert r.exit_code == 0, r.stderr


def test_python_api_is_the_command_line(cli, demo_run):
    import camcli
    report = camcli.evaluate(demo_run, truth=SAMPLES / "boxes.csv", min_pointing=1.01)
    r = cli("evaluate", demo_run, "--truth", SAMPLES / "boxes.csv", "--json", "--min-pointing", "1.01")
    assert r.exit_code == 1 and not report.passed
    assert json.loads(r.stdout) == json.loads(json.dumps(report.as_dict()))
    with pytest.raises(TypeError, match="colour"):
        camcli.evaluate(demo_run, truth=SAMPLES / "boxes.csv", colour="red")


def test_the_python_report_shows_as_one_readable_line(demo_run):
    report = camcli.evaluate(demo_run, truth=SAMPLES / "boxes.csv")
    shown = repr(report)
    assert len(shown) < 400 and "gradcam @ layer4[1]: pointing" in shown and "passed" in shown
    assert "array" not in shown
