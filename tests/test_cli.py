"""The command line as a user meets it: outputs, CSV, exit codes, errors and configuration."""

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from conftest import read_csv


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Two folders with the same file name, an odd-sized PNG and a file that is not an image."""
    d = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for sub, (h, w) in (("a", (90, 130)), ("b", (200, 120))):
        (d / sub).mkdir()
        cv2.imwrite(str(d / sub / "cat.jpg"), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    cv2.imwrite(str(d / "b" / "tiny.png"), rng.integers(0, 256, (17, 23, 3), dtype=np.uint8))
    return d


def model_args(small_model):
    return ["--model", "resnet18", "--checkpoint", small_model / "r18.pth", "--labels", small_model / "labels.txt",
            "--input-size", "64", "--workers", "0", "--device", "cpu"]


def test_run_writes_overlays_csv_and_manifest(cli, small_model, images, tmp_path):
    out = tmp_path / "out"
    r = cli("explain", images, *model_args(small_model), "--out", out, "--topk", "2", "--method", "gradcam,cam")
    assert r.exit_code == 0, r.stderr
    assert r.stdout == ""  # data only on request; logs go to stderr
    rows = read_csv(out / "predictions.csv")
    assert [(row["path"], row["method"]) for row in rows] == [
        ("a/cat.jpg", "gradcam"), ("a/cat.jpg", "cam"), ("b/cat.jpg", "gradcam"), ("b/cat.jpg", "cam"),
        ("b/tiny.png", "gradcam"), ("b/tiny.png", "cam")]
    for row in rows:
        assert row["status"] == "ok" and row["layer"] == "layer4[1]"
        assert row["pred_label"] in ("apple", "banana", "cherry") and row["top2_label"] in ("apple", "banana", "cherry")
        assert 0 < float(row["score"]) <= 1 and row["pred_index"] == row["target_index"] == row["top1_index"]
        png = cv2.imread(str(out / row["output"]))
        src = cv2.imread(str(images / row["path"]))
        assert png.shape == src.shape and (png.shape[1], png.shape[0]) == (int(row["width"]), int(row["height"]))
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["counts"] == {"images": 3, "ok": 3, "failed": 0, "empty_maps": 0, "resumed": 0}
    assert manifest["model"]["checkpoint_sha256"] and manifest["layers"] == ["layer4[1]"]
    assert manifest["methods"] == ["gradcam", "cam"] and manifest["device"] == "cpu"
    assert {"torch", "torchvision", "camcli", "seconds", "settings"} <= manifest.keys()


def test_bad_file_is_a_row_and_exit_1(cli, small_model, images, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "good.png").write_bytes(cv2.imencode(".png", np.full((40, 50, 3), 99, np.uint8))[1].tobytes())
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    r = cli("explain", folder, *model_args(small_model), "--out", tmp_path / "out")
    assert r.exit_code == 1
    rows = {row["path"]: row for row in read_csv(tmp_path / "out" / "predictions.csv")}
    assert rows["good.png"]["status"] == "ok"
    assert rows["broken.jpg"]["status"] == "error" and rows["broken.jpg"]["error"]
    assert "Traceback" not in r.stderr


def test_target_by_label_and_by_index(cli, small_model, images, tmp_path):
    for spec, index in (("cherry", "2"), ("BANANA", "1"), ("0", "0")):
        out = tmp_path / spec
        assert cli("explain", images / "a", *model_args(small_model), "--out", out, "--target", spec).exit_code == 0
        rows = read_csv(out / "predictions.csv")
        assert {row["target_index"] for row in rows} == {index}


@pytest.mark.parametrize("args, needle", [
    (["--model", "resnet81"], "resnet18"),
    (["--layer", "layer5[1]"], "layer4[1]"),
    (["--method", "gradkam"], "gradcam"),
    (["--target", "chery"], "cherry"),
    (["--target", "7"], "out of range"),
    (["--colormap", "jett"], "jet"),
    (["--method", "cam", "--layer", "layer3"], "gradcam"),
    (["--num-classes", "5"], "fc.weight"),
    (["--device", "cuda:7"], "cuda"),
    (["--alpha", "1.5"], "alpha"),
])
def test_usage_errors_exit_2_with_one_clear_line(cli, small_model, images, tmp_path, args, needle):
    base = model_args(small_model)
    if "--model" in args:
        base = base[2:]
    r = cli("explain", images, *base, *args, "--out", tmp_path / "out")
    assert r.exit_code == 2, r.stderr
    assert needle in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) <= 2


def test_missing_path_and_empty_folder_exit_2(cli, small_model, tmp_path):
    r = cli("explain", tmp_path / "nope", *model_args(small_model), "--out", tmp_path / "o1")
    assert r.exit_code == 2 and "does not exist" in r.stderr
    (tmp_path / "empty").mkdir()
    r = cli("explain", tmp_path / "empty", *model_args(small_model), "--out", tmp_path / "o2")
    assert r.exit_code == 2 and "no images found" in r.stderr


def test_config_supplies_defaults_and_flags_win(cli, small_model, images, tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text(f'model = "resnet18"\ncheckpoint = "{small_model / "r18.pth"}"\ninput_size = 64\n'
                   f'topk = 3\nworkers = 0\nlabels = "{small_model / "labels.txt"}"\n')
    r = cli("explain", images / "a", "--config", cfg, "--out", tmp_path / "o1")
    assert r.exit_code == 0, r.stderr
    assert "top3_label" in read_csv(tmp_path / "o1" / "predictions.csv")[0]
    r = cli("explain", images / "a", "--config", cfg, "--topk", "1", "--out", tmp_path / "o2")
    assert "top2_label" not in read_csv(tmp_path / "o2" / "predictions.csv")[0]
    cfg.write_text(cfg.read_text() + "batchsize = 4\n")
    r = cli("explain", images / "a", "--config", cfg, "--out", tmp_path / "o3")
    assert r.exit_code == 2 and "batchsize" in r.stderr and str(cfg) in r.stderr and "batch_size" in r.stderr


def test_environment_sits_between_config_and_flags(cli, small_model, images, tmp_path, monkeypatch):
    monkeypatch.setenv("CAMCLI_TOPK", "2")
    r = cli("explain", images / "a", *model_args(small_model), "--out", tmp_path / "o1")
    assert r.exit_code == 0 and "top2_label" in read_csv(tmp_path / "o1" / "predictions.csv")[0]
    r = cli("explain", images / "a", *model_args(small_model), "--topk", "1", "--out", tmp_path / "o2")
    assert "top2_label" not in read_csv(tmp_path / "o2" / "predictions.csv")[0]


def test_methods_models_layers_and_help(cli):
    r = cli("methods")
    assert r.exit_code == 0 and r.stdout.startswith("cam ") and "\ngradcam " in r.stdout
    r = cli("models", "resnet1")
    assert r.exit_code == 0 and "resnet18" in r.stdout and "IMAGENET1K_V1" in r.stdout
    r = cli("layers", "resnet18", "--input-size", "64")
    assert r.exit_code == 0
    rows = {line.split()[-3]: line for line in r.stdout.splitlines() if len(line.split()) >= 3}
    assert rows["layer4[1]"].startswith("*cam") and rows["layer4[1]"].endswith("512x2x2")
    assert rows["layer4"].startswith(" cam") and rows["layer3[1]"].startswith("    ")  # cam applies / does not
    r = cli("explain", "--help")
    assert r.exit_code == 0
    for option in ("--method", "--layer", "--checkpoint", "--target", "--config", "Exit codes"):
        assert option in r.stdout


@pytest.mark.slow
def test_python_dash_m_and_version():
    r = subprocess.run([sys.executable, "-m", "camcli", "--version"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.startswith("camcli ") and "torch" in r.stdout


def test_short_flags_and_a_version_that_does_not_load_torch(cli):
    """-h and -V as elsewhere; the version comes from the packages' metadata, so it never waits for
    torch to import (4 s here); the top-level help names every task camcli explains."""
    probe = ("import sys\nfrom typer.testing import CliRunner\nfrom camcli.cli import app\n"
             "r = CliRunner().invoke(app, ['-V'])\nprint(r.exit_code, r.stdout.strip(), 'torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    code, *words, loaded = r.stdout.split()
    assert code == "0" and words[0] == "camcli" and "torch" in " ".join(words) and loaded == "False", r.stdout
    top = cli("-h")
    assert top.exit_code == 0 and all(f"{task}:" in top.stdout for task in ("classification", "detection",
                                                                            "segmentation"))
    assert cli("explain", "-h").exit_code == 0 and "--method" in cli("explain", "-h").stdout

def test_help_fits_and_help_all_has_every_option_with_choices_and_completion(cli):
    """`explain --help` shows the options most runs use in a few words (it was 631 lines at 80
    columns); --help-all shows every option with its whole text; fixed choices read as choices; the
    shell completes option values, a named model's layers included."""
    from typer.testing import CliRunner

    from camcli.cli import app

    short = CliRunner().invoke(app, ["explain", "--help"], env={"COLUMNS": "80"})
    assert short.exit_code == 0 and len(short.stdout.splitlines()) <= 120, len(short.stdout.splitlines())
    assert "--method" in short.stdout and "--max-n" not in short.stdout and "--help-all" in short.stdout
    full = CliRunner().invoke(app, ["explain", "--help-all"], env={"COLUMNS": "80"})
    text = " ".join(full.stdout.replace("\u2502", " ").split())
    assert full.exit_code == 0 and "--max-n" in text and "--progress-every" in text and "--box-rotated" in text
    assert "[choices: stretch, letterbox, crop]" in text and "[choices: fp32, bf16, fp16]" in text
    assert "Shown: the options most runs use" not in text
    assert "Shown: the options most runs use" in " ".join(cli("evaluate", "--help").stdout.split())

    def complete(words: str) -> list[str]:
        r = CliRunner().invoke(app, [], prog_name="camcli", env={
            "_CAMCLI_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(len(words.split()) - 1)})
        return r.stdout.split()

    assert complete("camcli explain --method gradcam,sc") == ["gradcam,scorecam"]
    assert complete("camcli explain --resize le") == ["letterbox"]
    assert complete("camcli explain --head bi") == ["binary"]
    assert "cuda:0" in complete("camcli explain --device cu")
    assert "viridis" in complete("camcli explain --colormap v")
    assert "resnet18" in complete("camcli explain --model resnet1")
    assert "layer4[1]" in complete("camcli explain --model resnet18 --layer layer4")


def test_a_file_name_keeps_the_class_apart_from_the_layer(cli, tmp_path):
    """`...gradcam@layer4.1.3-star.png` read like a layer `layer4.1.3`; the class now follows `--`."""
    import re

    from conftest import DEMO_CONFIG, SAMPLES, read_csv

    image = SAMPLES / "single" / "star_05.jpg"
    r = cli("explain", image, "--config", DEMO_CONFIG, "--input-size", "64", "--workers", "0", "--explain-topk", "2",
            "--out", tmp_path / "o")
    assert r.exit_code == 0, r.stderr
    rows = read_csv(tmp_path / "o" / "predictions.csv")
    assert len(rows) == 2
    for row in rows:
        assert re.fullmatch(rf"overlays/star_05\.jpg\.gradcam@layer4\.1--class{row['target_index']}-"
                            rf"{row['target_label']}\.png", row["output"]), row["output"]
        assert (tmp_path / "o" / row["output"]).is_file()


def test_completing_layers_of_a_factory_runs_none_of_its_code(tmp_path, monkeypatch):
    """<Tab> after --layer builds a named architecture, never a file.py:function (the code would run)."""
    from typer.testing import CliRunner

    from camcli.cli import app

    marker = tmp_path / "ran"
    (tmp_path / "net.py").write_text(f"open({str(marker)!r}, 'w').close()\ndef build():\n    raise SystemExit\n")
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, [], prog_name="camcli", env={
        "_CAMCLI_COMPLETE": "complete_bash", "COMP_WORDS": "camcli explain --model net.py:build --layer la",
        "COMP_CWORD": "5"})
    assert r.stdout.split() == [] and not marker.exists()
