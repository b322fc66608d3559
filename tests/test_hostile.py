"""camcli attacked as a hostile user would: data never runs code, nothing is written outside
``--out``, nothing finished is lost, absurd options are refused, and every failure is one line.

Each test here failed on the code before issue 34's fixes.
"""

import csv
import fcntl
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

import camcli
from camcli import errors
from camcli.errors import UsageError
from conftest import read_csv, small_args


@pytest.fixture(scope="module")
def model(small_model):
    return small_model / "r18.pth"


margs = small_args


def _image(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(path, "PNG")
    return path


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# --- 1. data never runs code ---------------------------------------------------------------------

def test_a_run_folder_never_runs_the_code_its_run_json_names(cli, model, tmp_path):
    """Edit run.json to name shutil:rmtree: evaluate --sanity refuses, names the code, deletes nothing."""
    _image(tmp_path / "in" / "a.png")
    out = tmp_path / "run"
    assert cli("explain", tmp_path / "in", *margs(model), "--save-heatmap", "npy", "--out", out).exit_code == 0
    victim = tmp_path / "victim"
    (victim / "keep").mkdir(parents=True)
    manifest = json.loads((out / "run.json").read_text())
    manifest["settings"].update(model="shutil:rmtree", model_arg=[f"path={str(victim)!r}"], checkpoint=None)
    manifest["model"].pop("checkpoint_sha256", None)
    (out / "run.json").write_text(json.dumps(manifest))
    truth = tmp_path / "truth.csv"
    truth.write_text("path,x0,y0,x1,y1,label\na.png,0,0,10,10,class_0\n")
    r = cli("evaluate", out, "--truth", truth, "--sanity")
    assert r.exit_code == 2
    assert "shutil:rmtree" in r.stderr and "--trust-checkpoint" in r.stderr and "--model" in r.stderr
    assert (victim / "keep").is_dir()
    # a trust flag recorded in the file does not count either
    manifest["settings"]["trust_checkpoint"] = True
    (out / "run.json").write_text(json.dumps(manifest))
    assert cli("evaluate", out, "--truth", truth, "--sanity").exit_code == 2 and (victim / "keep").is_dir()


def test_dry_run_shows_the_code_a_run_would_import_without_importing_it(cli, tmp_path):
    marker = tmp_path / "imported"
    factory = tmp_path / "net.py"
    factory.write_text(f"open({str(marker)!r}, 'w').close()\ndef build(classes=3):\n    raise SystemExit\n")
    _image(tmp_path / "in" / "a.png")
    r = cli("explain", tmp_path / "in", "--model", f"{factory}:build", "--model-arg", "classes=4", "--dry-run")
    assert r.exit_code == 0
    assert f"imports the file {factory} and calls build(classes=4)" in r.stdout
    assert not marker.exists()
    r = cli("explain", tmp_path / "in", "--dry-run", "--json", env={"CAMCLI_MODEL": "os:system"})
    assert json.loads(r.stdout)["code"] == [
        "imports the module os and calls system() to build the model (model, from environment)"]
    r = cli("explain", tmp_path / "in", "--model", "resnet18", "--dry-run")
    assert "code run: none" in r.stdout


# --- 2. nothing outside --out ------------------------------------------------------------------------

def test_a_planted_lock_link_is_refused_and_its_target_untouched(cli, model, tmp_path):
    _image(tmp_path / "in" / "a.png")
    target = tmp_path / "precious.txt"
    target.write_text("do not truncate me")
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(target, out / ".camcli-lock")
    r = cli("explain", tmp_path / "in", *margs(model), "--out", out)
    assert r.exit_code == 2 and "symbolic link" in r.stderr and "Traceback" not in r.stderr
    assert target.read_text() == "do not truncate me"
    (out / ".camcli-lock").unlink()
    os.mkfifo(out / ".camcli-lock")  # not a plain file: refused without blocking
    r = cli("explain", tmp_path / "in", *margs(model), "--out", out)
    assert r.exit_code == 2 and "not a plain file" in r.stderr


def test_a_folder_holding_only_hidden_files_is_not_empty(cli, model, tmp_path):
    _image(tmp_path / "in" / "a.png")
    out = tmp_path / "out"
    (out / ".git").mkdir(parents=True)
    r = cli("explain", tmp_path / "in", *margs(model), "--out", out)
    assert r.exit_code == 2 and "not empty" in r.stderr
    assert cli("explain", tmp_path / "in", *margs(model), "--out", out, "--overwrite").exit_code == 0
    assert (out / ".git").is_dir()  # only camcli's own outputs are replaced


def test_overwrite_with_a_link_named_like_an_output_removes_the_link_only(cli, model, tmp_path):
    _image(tmp_path / "in" / "a.png")
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "mine.png").parent.mkdir()
    (elsewhere / "mine.png").write_bytes(b"mine")
    out = tmp_path / "out"
    assert cli("explain", tmp_path / "in", *margs(model), "--out", out).exit_code == 0
    shutil.rmtree(out / "overlays")
    os.symlink(elsewhere, out / "overlays")
    r = cli("explain", tmp_path / "in", *margs(model), "--out", out, "--overwrite")
    assert r.exit_code == 0, r.stderr
    assert (elsewhere / "mine.png").read_bytes() == b"mine" and sorted(os.listdir(elsewhere)) == ["mine.png"]
    assert not (out / "overlays").is_symlink() and any((out / "overlays").iterdir())


# --- 3. a live shard is respected ----------------------------------------------------------------------

def test_overwrite_is_refused_while_a_shard_is_writing(cli, model, tmp_path):
    for k in range(2):
        _image(tmp_path / "in" / f"{k}.png", k)
    out = tmp_path / "out"
    r = cli("explain", tmp_path / "in", *margs(model), "--out", out, "--shard", "0/2")
    assert r.exit_code == 0, r.stderr
    part = out / "predictions.part-000-of-002.csv"
    # shard 1 is still writing: it holds its lock (here, this process does, as a live run would)
    fd = os.open(out / ".camcli-lock.part-001-of-002", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, f"pid {os.getpid()} on {os.uname().nodename}, since now".encode())
        for extra in (["--overwrite"], ["--shard", "0/2", "--overwrite"], ["--resume"]):
            r = cli("explain", tmp_path / "in", *margs(model), "--out", out, *extra)
            assert r.exit_code == 2 and "in use" in r.stderr, (extra, r.stderr)
            assert part.is_file()
        # a shard resuming beside its live sibling is what shards do
        r = cli("explain", tmp_path / "in", *margs(model), "--out", out, "--shard", "0/2", "--resume")
        assert r.exit_code == 0, r.stderr
    finally:
        os.close(fd)
    r = cli("explain", tmp_path / "in", *margs(model), "--out", out, "--overwrite")
    assert r.exit_code == 0 and not part.exists()  # once it has ended, overwrite may clear its part


# --- 4, 5. odd names: one row per record, no collisions, no formulas ---------------------------------------------

ODD_NAMES = ["line\nbreak.png", "carriage\rreturn.png", "line\u2028separator.png", "next\x85line.png",
             "=HYPERLINK(1).png", "+plus.png", "@at.png", "'quote.png", "-minus.png", "plain.png"]


def test_odd_names_survive_resume_and_merge_and_never_become_formulas(cli, model, tmp_path):
    for k, name in enumerate(ODD_NAMES):
        _image(tmp_path / "in" / name, k)
    out = tmp_path / "out"
    assert cli("explain", tmp_path / "in", *margs(model), "--out", out).exit_code == 0
    rows = _rows(out / "predictions.csv")
    assert len(rows) == len(ODD_NAMES)
    assert all(not row["path"].startswith(("=", "+", "@", "-")) for row in rows)  # no spreadsheet formula
    r = cli("explain", tmp_path / "in", *margs(model), "--out", out, "--resume", "--json")
    assert r.exit_code == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["resumed"] == len(ODD_NAMES)  # every name read back as the image it is
    assert len(_rows(out / "predictions.csv")) == len(ODD_NAMES)
    # shards and merge read the same way
    shards = tmp_path / "shards"
    for i in range(2):
        assert cli("explain", tmp_path / "in", *margs(model), "--out", shards, "--shard", f"{i}/2").exit_code == 0
    assert cli("merge", shards).exit_code == 0
    assert sorted(r["path"] for r in _rows(shards / "predictions.csv")) == sorted(r["path"] for r in rows)
    result = camcli.explain(tmp_path / "in" / "=HYPERLINK(1).png", model="resnet18", checkpoint=str(model),
                            input_size=64, workers=0)
    assert [r.item.rel for r in result] == ["=HYPERLINK(1).png"]


def test_a_backslash_in_a_name_is_its_own_file(cli, model, tmp_path):
    _image(tmp_path / "in" / "a" / "b.png", 1)
    _image(tmp_path / "in" / "a\\b.png", 2)
    out = tmp_path / "out"
    assert cli("explain", tmp_path / "in", *margs(model), "--out", out).exit_code == 0
    rows = _rows(out / "predictions.csv")
    assert sorted(r["path"] for r in rows) == ["a/b.png", "a\\b.png"]
    outputs = [r["output"] for r in rows]
    assert len(set(outputs)) == 2 and all((out / o).is_file() for o in outputs)


# --- 6. files that are not files ---------------------------------------------------------------------

@pytest.mark.slow
def test_a_fifo_named_like_an_image_is_a_row_and_never_opened(model, tmp_path):
    folder = tmp_path / "in"
    _image(folder / "a.png")
    os.mkfifo(folder / "x.jpg")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "camcli", "explain", str(folder), str(folder / "x.jpg"), *map(str, margs(model)),
           "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)  # hung for ever before
    assert r.returncode == 1, r.stderr
    rows = {row["path"]: row for row in read_csv(out / "predictions.csv")}
    assert rows["a.png"]["status"] == "ok"
    assert rows["x.jpg"]["status"] == "error" and "FIFO" in rows["x.jpg"]["error"]


# --- 7. bounded options; non-finite outputs are errors ----------------------------------------------------------

ABSURD = [("--topk", "100000"), ("--workers", "100000000"), ("--input-size", "1000000"),
          ("--num-classes", "1000000000000"), ("--batch-size", "10000000"), ("--mean", "nan"), ("--mean", "inf"),
          ("--mean", "1e308"), ("--std", "nan"), ("--std", "inf"), ("--std", "0"), ("--alpha", "nan"),
          ("--explain-topk", "100000"), ("--max-detections", "1000000000"), ("--noise-samples", "1000000000"),
          ("--method", "scorecam"), ("--threshold", "nan")]


@pytest.mark.parametrize("flag,value", ABSURD, ids=[f"{f}={v}" for f, v in ABSURD])
def test_absurd_numbers_are_refused_before_anything_loads(cli, model, tmp_path, flag, value):
    _image(tmp_path / "in" / "a.png")
    extra = [flag, value] if flag != "--method" else ["--method", "scorecam", "--cam-batch-size", "1000000000"]
    if flag == "--noise-samples":
        extra += ["--method", "sscam"]
    r = cli("explain", tmp_path / "in", *margs(model), *extra, "--out", tmp_path / "out")
    assert r.exit_code == 2 and r.stderr.startswith("camcli: error:") and len(r.stderr.splitlines()) == 1, r.stderr
    assert not (tmp_path / "out").exists()


def test_the_same_bounds_hold_through_configs_variables_and_the_api(cli, tmp_path):
    _image(tmp_path / "in" / "a.png")
    config = tmp_path / "c.toml"
    config.write_text("workers = 100000000\n")
    r = cli("explain", tmp_path / "in", "--config", config, "--out", tmp_path / "o")
    assert r.exit_code == 2 and "--workers must be at most 256" in r.stderr
    r = cli("explain", tmp_path / "in", "--out", tmp_path / "o", env={"CAMCLI_TOPK": "100000"})
    assert r.exit_code == 2 and "--topk must be at most 1000" in r.stderr
    r = cli("explain", tmp_path / "in", "--out", tmp_path / "o", env={"CAMCLI_STD": "nan"})
    assert r.exit_code == 2 and "--std" in r.stderr
    for bad in ({"workers": 10 ** 20}, {"input_size": 10 ** 6}, {"std": "inf"}, {"mean": "nan"},
                {"batch_size": "sixteen"}, {"alpha": float("nan")}):
        with pytest.raises(UsageError):
            camcli.explain(tmp_path / "in", model="resnet18", weights="none", **bad)


def test_topk_writes_columns_for_the_classes_there_are(cli, model, tmp_path):
    _image(tmp_path / "in" / "a.png")
    assert cli("explain", tmp_path / "in", *margs(model), "--topk", "1000", "--out", tmp_path / "out").exit_code == 0
    row = read_csv(tmp_path / "out" / "predictions.csv")[0]
    assert sorted(k for k in row if k.endswith("_index") and k.startswith("top")) == [f"top{k}_index" for k in (1, 2, 3)]
    assert all(row[f"top{k}_label"] for k in (1, 2, 3))


def test_a_model_that_outputs_nan_gives_error_rows_not_ok(cli, tmp_path):
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=3)
    with torch.no_grad():
        net.fc.weight.fill_(math.nan)
    torch.save(net.state_dict(), tmp_path / "nan.pth")
    _image(tmp_path / "in" / "a.png")
    r = cli("explain", tmp_path / "in", *margs(tmp_path / "nan.pth"), "--out", tmp_path / "out")
    assert r.exit_code == 1
    row = read_csv(tmp_path / "out" / "predictions.csv")[0]
    assert row["status"] == "error" and "not finite" in row["error"]


@pytest.mark.parametrize("dtype", [torch.complex64, torch.int8])
def test_tensors_of_another_kind_are_refused_not_cast(cli, tmp_path, dtype):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    state = torchvision.models.resnet18(num_classes=3).state_dict()
    state["fc.weight"] = state["fc.weight"].to(dtype)
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "odd.safetensors")
    _image(tmp_path / "in" / "a.png")
    r = cli("explain", tmp_path / "in", *margs(tmp_path / "odd.safetensors"), "--out", tmp_path / "out")
    assert r.exit_code == 2 and "fc.weight" in r.stderr and str(dtype) in r.stderr


# --- 8. the output folder deleted mid-run -----------------------------------------------------------------------

def test_a_run_whose_output_folder_vanishes_says_so(model, tmp_path):
    for k in range(4):
        _image(tmp_path / "in" / f"{k}.png", k)
    out = tmp_path / "out"
    run = camcli.explain(tmp_path / "in", model="resnet18", checkpoint=str(model), input_size=64, workers=0,
                         batch_size=1, out=str(out))
    results = iter(run)
    next(results)
    out.rename(tmp_path / "moved")  # gone at once (rmtree races with the writer threads' files)
    with pytest.raises(errors.OutputError, match="removed while the run wrote it"):
        list(results)


@pytest.mark.slow
def test_the_command_line_exits_1_when_the_output_folder_vanishes(model, tmp_path):
    for k in range(3):
        _image(tmp_path / "in" / f"{k}.png", k)
    out = tmp_path / "out"
    script = (f"import shutil, camcli.output.csvfile as c\n"
              f"write = c.PredictionsCSV.write\n"
              f"def gone(self, row):\n    shutil.rmtree({str(out)!r}, ignore_errors=True)\n    write(self, row)\n"
              f"c.PredictionsCSV.write = gone\n"
              f"import sys; from camcli.cli import main; sys.argv = ['camcli'] + sys.argv[1:]; main()\n")
    cmd = [sys.executable, "-c", script, "explain", str(tmp_path / "in"), *map(str, margs(model)), "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "was removed while the run wrote it" in r.stderr and "Traceback" not in r.stderr


# --- 9. resume compares the labels by content -------------------------------------------------------------------

def test_resume_refuses_a_labels_file_changed_in_place(cli, model, tmp_path):
    _image(tmp_path / "in" / "a.png")
    labels = tmp_path / "labels.txt"
    labels.write_text("apple\nbanana\ncherry\n")
    out = tmp_path / "out"
    assert cli("explain", tmp_path / "in", *margs(model), "--labels", labels, "--out", out).exit_code == 0
    _image(tmp_path / "in" / "b.png", 1)
    labels.write_text("cat\ndog\nbird\n")
    r = cli("explain", tmp_path / "in", *margs(model), "--labels", labels, "--out", out, "--resume")
    assert r.exit_code == 2 and "labels_sha256" in r.stderr
    labels.write_text("apple\nbanana\ncherry\n")
    assert cli("explain", tmp_path / "in", *margs(model), "--labels", labels, "--out", out, "--resume").exit_code == 0


# --- 10. one line, not a traceback ---------------------------------------------------------------------------

def test_broken_output_folders_give_one_line(cli, model, tmp_path):
    _image(tmp_path / "in" / "a.png")
    out = tmp_path / "out"
    (out / ".camcli-lock").mkdir(parents=True)
    r = cli("explain", tmp_path / "in", *margs(model), "--out", out)
    assert r.exit_code == 2 and len(r.stderr.splitlines()) == 1 and "not a plain file" in r.stderr
    shutil.rmtree(out)
    assert cli("explain", tmp_path / "in", *margs(model), "--out", out).exit_code == 0
    (out / "predictions.csv").unlink()
    (out / "predictions.csv").mkdir()
    r = cli("explain", tmp_path / "in", *margs(model), "--out", out, "--resume")
    assert r.exit_code == 2 and len(r.stderr.splitlines()) == 1 and "not a file" in r.stderr


def test_evaluate_html_survives_a_damaged_run_json_and_moved_images(cli, model, tmp_path):
    images = tmp_path / "in"
    for k in range(2):
        _image(images / f"{k}.png", k)
    out = tmp_path / "out"
    assert cli("explain", images, *margs(model), "--save-heatmap", "npy", "--out", out).exit_code == 0
    truth = tmp_path / "truth.csv"
    truth.write_text("path,x0,y0,x1,y1,label\n0.png,0,0,10,10,class_0\n1.png,5,5,20,20,class_1\n")
    shutil.rmtree(images)  # the images moved since the run: the saved maps and overlays suffice
    r = cli("evaluate", out, "--truth", truth, "--html")
    assert r.exit_code == 0, r.stderr
    page = (out / "report.html").read_text()
    assert "data:image/png;base64," in page and "(image not found)" not in page
    (out / "run.json").write_text("{ damaged")
    r = cli("evaluate", out, "--truth", truth, "--html")
    assert r.exit_code == 0, r.stderr


# --- small items -------------------------------------------------------------------------------------------

def test_an_output_folder_inside_the_input_folder_is_never_explained(cli, model, tmp_path):
    images = tmp_path / "in"
    _image(images / "a.png")
    out = images / "runs" / "one"
    assert cli("explain", images, *margs(model), "--out", out).exit_code == 0
    r = cli("explain", images, *margs(model), "--out", out, "--resume")
    assert r.exit_code == 0, r.stderr
    assert [row["path"] for row in read_csv(out / "predictions.csv")] == ["a.png"]


@pytest.mark.slow
def test_a_killed_run_leaves_no_multiprocessing_folder_for_good(model, tmp_path):
    """The workers' socket folder of a SIGKILLed run (multiprocessing's pymp-*) is removed by the next run."""
    import signal
    import time

    import tempfile

    temp = Path(tempfile.mkdtemp(dir="/tmp"))  # short: a socket's path must fit in 107 bytes
    for k in range(8):
        _image(tmp_path / "in" / f"{k}.png", k)
    env = dict(os.environ, TMPDIR=str(temp))
    base = [sys.executable, "-m", "camcli", "explain", str(tmp_path / "in"), "--model", "resnet18", "--checkpoint",
            str(model), "--input-size", "64", "--workers", "2", "--quiet"]
    run = subprocess.Popen([*base, "--batch-size", "1", "--method", "scorecam", "--out", str(tmp_path / "a")], env=env)
    deadline = time.monotonic() + 120
    while not [p for p in temp.iterdir() if p.name.startswith(("camcli-", "pymp-"))]:
        assert run.poll() is None and time.monotonic() < deadline, "the workers never started"
        time.sleep(0.1)
    run.send_signal(signal.SIGKILL)
    run.wait()
    left = [p.name for p in temp.iterdir() if p.name.startswith(("camcli-", "pymp-"))]
    assert left and all(name.startswith("camcli-") for name in left)
    subprocess.run([*base, "--out", str(tmp_path / "b")], env=env, check=True, timeout=300)
    assert not [p for p in temp.iterdir() if p.name.startswith(("camcli-", "pymp-"))]
    shutil.rmtree(temp)


@pytest.mark.slow
def test_workers_run_under_a_long_tmpdir(model, tmp_path):
    """A TMPDIR too long for a Unix socket's path made the decoding workers fail and the run wait for ever."""
    temp = tmp_path / ("t" * 60)
    temp.mkdir()
    for k in range(4):
        _image(tmp_path / "in" / f"{k}.png", k)
    env = dict(os.environ, TMPDIR=str(temp))
    r = subprocess.run([sys.executable, "-m", "camcli", "explain", str(tmp_path / "in"), *map(str, margs(model)[:-3]),
                        "--workers", "2", "--quiet", "--out", str(tmp_path / "out")], env=env, timeout=180,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert len(read_csv(tmp_path / "out" / "predictions.csv")) == 4


def _tiny_vit(folder: Path, labels: int) -> None:
    transformers = pytest.importorskip("transformers", reason="the hf extra is not installed")
    config = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1,
                                    num_attention_heads=2, intermediate_size=37, num_labels=labels)
    torch.manual_seed(0)
    transformers.ViTForImageClassification(config).save_pretrained(folder)


def test_a_huggingface_folder_with_pickled_weights_is_one_line_and_runs_nothing(cli, tmp_path):
    folder = tmp_path / "vit"
    _tiny_vit(folder, 3)
    from safetensors.torch import load_file

    state = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    torch.save({"trap": print, **state}, folder / "pytorch_model.bin")  # a pickle naming a callable
    _image(tmp_path / "in" / "a.png")
    r = cli("explain", tmp_path / "in", "--model", folder, "--workers", "0", "-q", "--out", tmp_path / "out")
    assert r.exit_code == 2 and len(r.stderr.splitlines()) == 1, r.stderr
    assert "pickled Python objects" in r.stderr and "Weights only load failed" not in r.stderr


def test_a_huggingface_folder_of_the_wrong_shape_is_one_line_under_quiet(cli, tmp_path):
    folder = tmp_path / "vit"
    _tiny_vit(folder, 5)
    config = json.loads((folder / "config.json").read_text())
    config["id2label"] = {str(k): f"c{k}" for k in range(3)}
    config["label2id"] = {f"c{k}": k for k in range(3)}
    (folder / "config.json").write_text(json.dumps(config))
    _image(tmp_path / "in" / "a.png")
    r = subprocess.run([sys.executable, "-m", "camcli", "explain", str(tmp_path / "in"), "--model", str(folder),
                        "--workers", "0", "-q", "--out", str(tmp_path / "out")], capture_output=True, text=True,
                       timeout=300)  # transformers logs to the process's own stderr
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stderr
    assert "do not fit its config.json" in r.stderr and "ignore-mismatched-sizes" not in r.stderr
