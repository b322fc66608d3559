"""How a run is assembled: one writer per folder, damaged run files, names on disk, the library
leaving process state alone, the engine's independence, and one vocabulary for errors."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

import camcli
from camcli.errors import UsageError
from conftest import CIRCLE, DEMO_CONFIG, read_csv


@pytest.fixture(scope="module")
def folder(small_model, tmp_path_factory):
    d = tmp_path_factory.mktemp("run")
    for name in ("r18.pth", "labels.txt"):
        shutil.copy(small_model / name, d / name)
    rng = np.random.default_rng(3)
    (d / "imgs").mkdir()
    for i in range(5):
        cv2.imwrite(str(d / "imgs" / f"{i}.png"), rng.integers(0, 256, (40, 50, 3), dtype=np.uint8))
    return d


def opts(folder) -> dict:
    return dict(model="resnet18", checkpoint=folder / "r18.pth", input_size=64, workers=0, batch_size=1)


def cli_args(folder) -> list:
    return ["--model", "resnet18", "--checkpoint", folder / "r18.pth", "--input-size", "64", "--workers", "0",
            "--batch-size", "1", "--quiet"]


def test_a_second_run_into_the_same_folder_is_refused_while_the_first_writes(cli, folder, tmp_path):
    out = tmp_path / "o"
    first = iter(camcli.explain(folder / "imgs", out=out, **opts(folder)))
    next(first)  # the first run is under way, paused with rows still to write
    r = cli("explain", folder / "imgs", *cli_args(folder), "--method", "cam", "--out", out)
    assert r.exit_code == 2
    assert f"in use by another camcli run (pid {os.getpid()}" in r.stderr and "--out" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    # --resume skips the "folder not empty" check, so only the lock keeps it from writing too
    r = cli("explain", folder / "imgs", *cli_args(folder), "--out", out, "--resume")
    assert r.exit_code == 2 and "in use by another camcli run" in r.stderr
    rest = list(first)  # the first run finishes undisturbed, with all its rows
    assert len(rest) == 4
    rows = read_csv(out / "predictions.csv")
    assert [row["method"] for row in rows] == ["gradcam"] * 5
    # once it is done, the folder is free again (here: refused only because it is not empty)
    r = cli("explain", folder / "imgs", *cli_args(folder), "--out", out)
    assert r.exit_code == 2 and "not empty" in r.stderr


def test_shards_writing_different_parts_do_not_block_each_other(folder, tmp_path):
    out = tmp_path / "o"
    a = iter(camcli.explain(folder / "imgs", out=out, shard="0/2", **opts(folder)))
    b = iter(camcli.explain(folder / "imgs", out=out, shard="1/2", **opts(folder)))
    next(a), next(b)  # both hold their part's lock at once
    assert len(list(a)) == 2 and len(list(b)) == 1
    assert camcli.run.merge_parts(out) == 5


@pytest.mark.slow
def test_a_lock_left_by_a_killed_run_does_not_block_resume(cli, folder, tmp_path):
    out = tmp_path / "o"
    script = (f"import os, signal, camcli\n"
              f"run = iter(camcli.explain({str(folder / 'imgs')!r}, out={str(out)!r}, model='resnet18', "
              f"checkpoint={str(folder / 'r18.pth')!r}, input_size=64, workers=0, batch_size=1))\n"
              f"next(run)\nos.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", script], timeout=300)
    assert proc.returncode == -signal.SIGKILL
    assert any(p.name.startswith(".camcli-lock") for p in out.iterdir())  # its lock file stays behind
    r = cli("explain", folder / "imgs", *cli_args(folder), "--out", out, "--resume")
    assert r.exit_code == 0, r.stderr
    assert len(read_csv(out / "predictions.csv")) == 5


def test_resume_removes_the_temporary_files_of_a_killed_writer_and_only_those(cli, folder, tmp_path):
    """A run killed while it wrote a PNG leaves that PNG's temporary file; the next run removes
    it, and leaves a live writer's temporary file (another shard's) and the user's own files."""
    out = tmp_path / "o"
    assert cli("explain", folder / "imgs", *cli_args(folder), "--out", out).exit_code == 0
    overlay = sorted((out / "overlays").glob("*.png"))[0]
    make = ("import sys\nfrom pathlib import Path\nfrom camcli.output.tempfiles import temp_path\n"
            "p = temp_path(Path(sys.argv[1]))\np.write_bytes(b'half a png')\nprint(p, flush=True)\n")
    ended = subprocess.run([sys.executable, "-c", make, str(overlay)], capture_output=True, text=True, check=True)
    dead = Path(ended.stdout.strip())
    live_writer = subprocess.Popen([sys.executable, "-c", make + "sys.stdin.read()\n", str(overlay)],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        live = Path(live_writer.stdout.readline().strip())
        mine = out / "overlays" / ".notes.tmp"
        mine.write_text("the user's")
        assert dead.is_file() and live.is_file() and dead.parent == overlay.parent
        r = cli("explain", folder / "imgs", *[a for a in cli_args(folder) if a != "--quiet"], "--out", out, "--resume")
        assert r.exit_code == 0, r.stderr
        assert not dead.exists() and "removed 1 temporary file(s)" in r.stderr
        assert live.is_file() and mine.is_file()
    finally:
        live_writer.communicate("", timeout=30)


@pytest.mark.parametrize("damage", ["run-settings.json", "predictions.csv"])
def test_damaged_run_files_give_one_line_and_exit_2(cli, folder, tmp_path, damage):
    out = tmp_path / "o"
    assert cli("explain", folder / "imgs", *cli_args(folder), "--out", out).exit_code == 0
    (out / damage).write_text('{"model": "resnet18", "settings": [' if damage.endswith(".json")
                              else "index,path,width\nnot-a-number,x,y\n")
    r = cli("explain", folder / "imgs", *cli_args(folder), "--out", out, "--resume")
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1 and damage in r.stderr
    assert "Traceback" not in r.stderr


def test_run_json_says_a_checkpoint_gave_the_weights(cli, folder, tmp_path):
    """A run from a checkpoint records no torchvision weights (it used to say DEFAULT, the
    setting's untouched default), so that its record cannot be read as an ImageNet model's."""
    out = tmp_path / "o"
    assert cli("explain", folder / "imgs", *cli_args(folder), "--out", out).exit_code == 0
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["settings"]["weights"] == "none" and manifest["model"]["weights"] is None
    assert manifest["model"]["checkpoint"] and manifest["model"]["checkpoint_sha256"]


def test_damaged_run_json_gives_one_line_to_evaluate(cli, folder, tmp_path):
    out = tmp_path / "o"
    assert cli("explain", folder / "imgs", *cli_args(folder), "--out", out, "--boxes").exit_code == 0
    truth = tmp_path / "truth.csv"
    truth.write_text("path,x0,y0,x1,y1\n" + "".join(f"{i}.png,0,0,20,20\n" for i in range(5)))
    (out / "run.json").write_text("{ not json")
    r = cli("evaluate", out, "--truth", truth, "--faithfulness", "--steps", "2")
    assert r.exit_code == 2 and "run.json" in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_evaluate_reruns_a_finished_run_with_methods_given_as_on_explain(cli, tmp_path):
    out = tmp_path / "demo"
    one = tmp_path / "in"
    one.mkdir()
    shutil.copy(CIRCLE, one / CIRCLE.name)
    assert cli("explain", one, "--config", DEMO_CONFIG, "--out", out, "--quiet", "--workers", "0",
               "--hidden").exit_code == 0
    truth = tmp_path / "truth.csv"
    truth.write_text(f"path,x0,y0,x1,y1,label\n{CIRCLE.name},0,0,400,400,circle\n")
    r = cli("evaluate", out, "--truth", truth, "--faithfulness", "--steps", "2", "--method", "gradcam,cam",
            "--json", "--quiet")
    assert r.exit_code == 0, r.stderr
    summaries = json.loads(r.stdout)["summaries"]
    assert [s["method"] for s in summaries] == ["gradcam", "cam"]
    assert all(s["average_drop"] is not None for s in summaries)


def test_gradcam_plus_plus_files_are_named_gradcampp(cli, folder, tmp_path):
    out = tmp_path / "o"
    r = cli("explain", folder / "imgs" / "0.png", *cli_args(folder), "--method", "gradcam++", "--save-heatmap",
            "npy", "--out", out)
    assert r.exit_code == 0, r.stderr
    (row,) = read_csv(out / "predictions.csv")
    assert row["method"] == "gradcam++"
    assert row["output"] == "overlays/0.png.gradcampp@layer4.1.png" and (out / row["output"]).is_file()
    assert row["heatmap"] == "heatmaps/0.png.gradcampp@layer4.1.npy" and (out / row["heatmap"]).is_file()


def test_library_use_leaves_process_state_alone(folder, tmp_path):
    handler = signal.getsignal(signal.SIGINT)
    pillow_limit = Image.MAX_IMAGE_PIXELS
    seen = []
    for result in camcli.explain(folder / "imgs", out=tmp_path / "o", max_pixels=10**9, **opts(folder)):
        seen.append(signal.getsignal(signal.SIGINT))  # while the caller holds results
    assert seen and all(h is handler for h in seen)
    assert signal.getsignal(signal.SIGINT) is handler and Image.MAX_IMAGE_PIXELS == pillow_limit


def test_max_pixels_applies_per_image_whatever_pillows_limit(folder, monkeypatch):
    """Pillow refuses images over twice its global limit; camcli's own limit decides instead."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # 40 x 50 = 2,000 pixels: Pillow would refuse
    results = list(camcli.explain(folder / "imgs" / "0.png", max_pixels=5000, **opts(folder)))
    assert results[0].status == "ok", results[0].error
    results = list(camcli.explain(folder / "imgs" / "0.png", max_pixels=1999, **opts(folder)))
    assert results[0].status == "error" and "max-pixels" in results[0].error


def test_the_engine_imports_nothing_from_models_output_or_evaluation():
    probe = ("import sys, pkgutil, importlib, camcli.engine\n"
             "for m in pkgutil.walk_packages(camcli.engine.__path__, 'camcli.engine.'):\n"
             "    importlib.import_module(m.name)\n"
             "print(sorted({n.split('.')[1] for n in sys.modules if n.startswith('camcli.') and n.count('.') >= 1}))\n")
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    layers = set(json.loads(r.stdout.replace("'", '"')))
    assert "engine" in layers and not layers & {"models", "output", "evaluation", "run", "cli", "settings", "session"}, layers


def test_errors_name_keywords_in_the_library_and_flags_on_the_command_line(cli, folder, tmp_path):
    with pytest.raises(UsageError) as e:
        camcli.explain(folder / "imgs", batch_size=0, **{k: v for k, v in opts(folder).items() if k != "batch_size"})
    assert str(e.value) == "batch_size must be at least 1, got 0"
    r = cli("explain", folder / "imgs", *cli_args(folder), "--batch-size", "0", "--out", tmp_path / "o")
    assert r.exit_code == 2 and "--batch-size must be at least 1, got 0" in r.stderr
    with pytest.raises(UsageError) as e:
        list(camcli.explain(folder / "imgs", target="durian", **opts(folder)))
    assert "--" not in str(e.value) and "target label 'durian'" in str(e.value)


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_every_output_file_gets_the_mode_open_would_give(cli, folder, tmp_path, umask):
    """Files written through a temporary name must not keep its private 0600 mode."""
    old = os.umask(umask)
    try:
        out = tmp_path / "o"
        r = cli("explain", folder / "imgs", *cli_args(folder), "--out", out, "--save-heatmap", "npy", "--panel",
                "--grid", "--html")
        assert r.exit_code == 0, r.stderr
    finally:
        os.umask(old)
    files = [p for p in out.rglob("*") if p.is_file()]
    kinds = {p.suffix or p.name for p in files}
    assert {".png", ".npy", ".csv", ".json", ".html", ".camcli-lock"} <= kinds
    for p in files:
        assert p.stat().st_mode & 0o777 == 0o666 & ~umask, (p, oct(p.stat().st_mode & 0o777))


def test_a_run_knows_its_length_and_runs_once(folder):
    """len(run) before it starts (no model loaded); iterating it again is refused in one line
    instead of silently explaining every image a second time."""
    run = camcli.explain(folder / "imgs", **opts(folder))
    assert len(run) == 5 and run.session is None  # counted without loading the model
    assert len(list(run)) == 5
    with pytest.raises(UsageError, match="already run"):
        list(run)
