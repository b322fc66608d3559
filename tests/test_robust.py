"""Real folders are messy and runs get killed: nothing crashes, nothing finished is lost."""

import csv
import hashlib
import io
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from conftest import DEMO_CONFIG, SAMPLES, read_csv, small_args


@pytest.fixture(scope="module")
def model(small_model):
    return small_model / "r18.pth"


margs = small_args


def _png(arr) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def make_messy_folder(root: Path) -> dict[str, tuple[str, tuple[int, int] | None]]:
    """Every kind of input; returns rel path -> (expected status, expected (w, h) when ok)."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    expect = {}

    def put(rel, data, status, size=None):
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        expect[rel] = (status, size)

    jpeg = cv2.imencode(".jpg", rgb)[1].tobytes()
    png = _png(rgb)
    put("bad/truncated.jpg", jpeg[: len(jpeg) // 2], "error")
    put("bad/truncated.png", png[: len(png) // 2], "error")
    put("bad/empty.png", b"", "error")
    put("bad/text.jpg", b"this is just text\n", "error")
    put("ok/gray.png", _png(rgb[..., 0]), "ok", (60, 40))
    for mode, rel in (("LA", "ok/gray_alpha.png"), ("RGBA", "ok/rgba.png"), ("P", "ok/palette.png")):
        buf = io.BytesIO()
        Image.fromarray(rgb).convert(mode).save(buf, "PNG")
        put(rel, buf.getvalue(), "ok", (60, 40))
    buf = io.BytesIO()
    Image.fromarray((rgb[..., 0].astype(np.uint16) * 257)).save(buf, "PNG")
    assert Image.open(io.BytesIO(buf.getvalue())).mode.startswith("I")
    put("ok/sixteen_bit.png", buf.getvalue(), "ok", (60, 40))
    buf = io.BytesIO()
    Image.fromarray(rgb).convert("CMYK").save(buf, "JPEG")
    put("ok/cmyk.jpg", buf.getvalue(), "ok", (60, 40))
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(rgb).save(buf, "JPEG", exif=exif)
    put("ok/exif_rotated.jpg", buf.getvalue(), "ok", (40, 60))  # upright size is transposed
    for ext in ("gif", "webp"):
        buf = io.BytesIO()
        frames = [Image.fromarray(np.roll(rgb, k, axis=1)) for k in range(3)]
        frames[0].save(buf, ext.upper(), save_all=True, append_images=frames[1:], duration=50, loop=0)
        put(f"ok/animated.{ext}", buf.getvalue(), "ok", (60, 40))
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "TIFF")
    put("ok/image.tif", buf.getvalue(), "ok", (60, 40))
    put("ok/tiny.png", _png(rgb[:3, :2]), "ok", (2, 3))
    put("names/with space é ü.png", png, "ok", (60, 40))
    put("names/-leading-dash.png", png, "ok", (60, 40))
    put("a/same.png", png, "ok", (60, 40))
    put("b/same.png", png, "ok", (60, 40))
    put("huge/big.png", _png(np.zeros((1200, 1100, 3), np.uint8)), "error")  # over --max-pixels 1e6 below
    put(".hidden/secret.png", png, None)  # skipped: hidden folder
    put("ok/.hidden.png", png, None)  # skipped: hidden file
    (root / "dir.png").mkdir()  # a folder named like an image is a folder: walked, empty
    os.symlink(root, root / "names" / "loop")  # a symlink loop, followed once
    os.symlink(root / "nowhere.png", root / "bad" / "dangling.png")
    expect["bad/dangling.png"] = ("error", None)
    return {k: v for k, v in expect.items() if v[0] is not None}


@pytest.mark.slow
def test_every_kind_of_bad_and_odd_input(cli, model, tmp_path):
    expect = make_messy_folder(tmp_path / "in")
    out = tmp_path / "out"
    r = cli("explain", tmp_path / "in", *margs(model), "--out", out, "--max-pixels", "1000000")
    assert r.exit_code == 1 and "Traceback" not in r.stderr
    rows = {row["path"]: row for row in read_csv(out / "predictions.csv")}
    assert sorted(rows) == sorted(expect)
    for rel, (status, size) in expect.items():
        row = rows[rel]
        assert row["status"] == status, (rel, row["error"])
        if status == "error":
            assert row["error"] and "\n" not in row["error"]
        else:
            assert (int(row["width"]), int(row["height"])) == size, rel
            png = cv2.imread(str(out / row["output"]))
            assert (png.shape[1], png.shape[0]) == size, rel
    assert "max-pixels" in rows["huge/big.png"]["error"]
    assert rows["ok/animated.gif"]["note"] == "first of 3 frames" == rows["ok/animated.webp"]["note"]
    r = cli("explain", tmp_path / "in" / "huge", *margs(model), "--out", tmp_path / "big", "--max-pixels", "2000000")
    assert r.exit_code == 0
    r = cli("explain", tmp_path / "in", *margs(model), "--out", tmp_path / "h", "--hidden", "--max-pixels", "2000000")
    assert {".hidden/secret.png", "ok/.hidden.png"} <= {row["path"] for row in read_csv(tmp_path / "h" / "predictions.csv")}


def test_fail_fast_stops_at_the_first_failure(cli, model, tmp_path):
    make_messy_folder(tmp_path / "in")
    r = cli("explain", tmp_path / "in" / "bad", *margs(model), "--out", tmp_path / "o", "--fail-fast")
    assert r.exit_code == 1
    rows = read_csv(tmp_path / "o" / "predictions.csv")
    assert len(rows) == 1 and rows[0]["status"] == "error"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_file_is_a_row(cli, model, tmp_path):
    p = tmp_path / "in" / "locked.png"
    p.parent.mkdir()
    p.write_bytes(_png(np.zeros((8, 8, 3), np.uint8)))
    p.chmod(0)
    r = cli("explain", tmp_path / "in", *margs(model), "--out", tmp_path / "o")
    assert r.exit_code == 1 and read_csv(tmp_path / "o" / "predictions.csv")[0]["status"] == "error"


def test_fuzzed_bytes_always_give_one_row_per_file(cli, model, tmp_path):
    rng = random.Random(1234)
    folder = tmp_path / "fuzz"
    folder.mkdir()
    seeds = [_png(np.full((9, 7, 3), 5, np.uint8)), cv2.imencode(".jpg", np.zeros((9, 7, 3), np.uint8))[1].tobytes()]
    for i in range(40):
        if i % 2:
            data = bytearray(rng.choice(seeds))  # a valid file with random bytes flipped
            for _ in range(rng.randint(1, 20)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            data = bytes(data)
        else:
            data = bytes(rng.randrange(256) for _ in range(rng.randint(0, 3000)))
        (folder / f"f{i:02d}{rng.choice(['.png', '.jpg', '.gif', '.webp', '.tif', '.bmp'])}").write_bytes(data)
    r = cli("explain", folder, *margs(model), "--out", tmp_path / "o")
    assert r.exit_code in (0, 1) and "Traceback" not in r.stderr
    rows = read_csv(tmp_path / "o" / "predictions.csv")
    assert len(rows) == 40 and all(row["status"] in ("ok", "error") for row in rows)


def test_inputs_from_globs_and_a_vanishing_file(model, tmp_path):
    from camcli.run import Run
    from camcli.settings import resolve
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(4):
        (folder / f"{i}.png").write_bytes(_png(np.full((10, 10, 3), i * 40, np.uint8)))
    settings = resolve({"model": "resnet18", "checkpoint": str(model), "input_size": 64, "workers": 0,
                        "batch_size": 1, "out": str(tmp_path / "o")})
    stream = Run(settings, [str(folder / "*.png")]).outcomes()
    first, _ = next(stream)
    (folder / "3.png").unlink()  # vanishes after discovery, before it is read
    rest = list(stream)
    statuses = [first.status] + [r.status for r, _ in rest]
    assert statuses == ["ok", "ok", "ok", "error"]
    assert "No such file" in rest[-1][0].error or "cannot decode" in rest[-1][0].error


def test_outputs_never_escape_the_output_folder(cli, model, tmp_path):
    inside, elsewhere = tmp_path / "data" / "deep", tmp_path / "elsewhere"
    inside.mkdir(parents=True)
    elsewhere.mkdir()
    (elsewhere / "x.png").write_bytes(_png(np.zeros((8, 8, 3), np.uint8)))
    os.symlink(elsewhere / "x.png", inside / "link.png")
    (inside / "y.png").write_bytes(_png(np.zeros((8, 8, 3), np.uint8)))
    out = tmp_path / "out"
    before = {p for p in tmp_path.rglob("*")}
    r = cli("explain", f"{inside}/../deep/y.png", str(elsewhere / "x.png"), inside / "link.png", *margs(model),
            "--out", out)
    assert r.exit_code == 0, r.stderr
    new = {p for p in tmp_path.rglob("*")} - before
    assert new and all(p == out or out in p.parents for p in new)
    assert all(".." not in row["output"] and not row["output"].startswith("/")
               for row in read_csv(out / "predictions.csv"))


@pytest.mark.slow
def test_existing_output_needs_resume_or_overwrite(cli, model, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.png").write_bytes(_png(np.zeros((8, 8, 3), np.uint8)))
    out = tmp_path / "o"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    r = cli("explain", folder, *margs(model), "--out", out)
    assert r.exit_code == 2 and "--resume" in r.stderr and "--overwrite" in r.stderr
    assert cli("explain", folder, *margs(model), "--out", out, "--overwrite").exit_code == 0
    assert (out / "notes.txt").read_text() == "mine"  # only camcli's own outputs are replaced
    r = cli("explain", folder, *margs(model), "--out", out, "--resume", "--topk", "2")
    assert r.exit_code == 2 and "topk" in r.stderr  # what the CSV holds is the run's identity
    r = cli("explain", folder, *margs(model), "--out", out, "--resume", "--colormap", "viridis")
    assert r.exit_code == 0, r.stderr  # how it looks is not (tests/test_signals.py checks the log line)


def _digest_run(out: Path) -> tuple[set, dict]:
    with open(out / "predictions.csv", newline="") as f:
        rows = {tuple(r.items()) for r in csv.DictReader(f)}
    pngs = {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in out.rglob("*.png")}
    return rows, pngs


def _camcli(*args, quiet: bool = True) -> list[str]:
    return [sys.executable, "-m", "camcli", "explain", str(SAMPLES), "--config", str(DEMO_CONFIG),
            "--workers", "0", "--batch-size", "2", *(["--quiet"] if quiet else []), *map(str, args)]


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_result(tmp_path):
    whole = tmp_path / "whole"
    assert subprocess.run(_camcli("--out", whole), timeout=300).returncode == 0
    expected = _digest_run(whole)
    rng = random.Random(7)
    for attempt in range(2):
        out = tmp_path / f"killed{attempt}"
        proc = subprocess.Popen(_camcli("--out", out))
        wait_rows = rng.randint(2, 18)
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            csv_path = out / "predictions.csv"
            if csv_path.exists() and csv_path.read_text().count("\n") > wait_rows:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        r = subprocess.run(_camcli("--out", out, "--resume"), timeout=300, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert _digest_run(out) == expected


@pytest.mark.slow
def test_resumed_scorecam_run_is_byte_identical(cli, tmp_path):
    """A Score-CAM run cut short after 3 of 5 images (batches of 4: the cut falls inside the
    first batch, whose finished images skip their masked passes on resume) resumes to exactly
    the whole run's CSV and PNGs."""
    folder = tmp_path / "in"
    folder.mkdir()
    for p in sorted((SAMPLES / "single").glob("*.jpg"))[:5]:
        (folder / p.name).write_bytes(p.read_bytes())
    args = ["--config", DEMO_CONFIG, "--method", "scorecam", "--batch-size", "4", "--workers", "0",
            "--cam-batch-size", "128", "--input-size", "96", "--quiet"]
    whole = tmp_path / "whole"
    assert cli("explain", folder, *args, "--out", whole).exit_code == 0
    expected = _digest_run(whole)
    cut = tmp_path / "cut"
    assert cli("explain", folder, *args, "--out", cut).exit_code == 0
    lines = (cut / "predictions.csv").read_text().splitlines(keepends=True)
    (cut / "predictions.csv").write_text("".join(lines[:4]))  # header + 3 finished images
    for row in read_csv(whole / "predictions.csv")[3:]:
        (cut / row["output"]).unlink()
    (cut / "run.json").unlink()
    r = cli("explain", folder, *args, "--out", cut, "--resume")
    assert r.exit_code == 0, r.stderr
    assert _digest_run(cut) == expected


@pytest.mark.slow
def test_per_image_methods_skip_images_that_are_not_wanted(tmp_path):
    """Explainer(..., wanted=...) runs Score-CAM's and Ablation-CAM's per-image passes only for
    the wanted images, and their maps are the same as without ``wanted``. Passes are counted as
    rows through the classifier: Ablation-CAM runs only the model's tail after layer4[1]."""
    import camcli
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=3).eval()
    seen = []
    net.fc.register_forward_pre_hook(lambda _m, inputs: seen.append(inputs[0].shape[0]))
    x = torch.randn(3, 3, 64, 64)
    for name in ("scorecam", "ablationcam"):
        explainer = camcli.Explainer(net, ["layer4.1"], [camcli.get_method(name, cam_batch_size=64)])
        seen.clear()
        full = explainer(x).maps[(name, "layer4.1")]
        passes_all = sum(seen) - 3  # after the shared forward of the batch
        per_image = []
        for i in range(3):
            seen.clear()
            part = explainer(x, wanted=[j == i for j in range(3)]).maps[(name, "layer4.1")]
            per_image.append(sum(seen) - 3)
            assert torch.equal(part.maps[i], full.maps[i]), name
            assert all(bool(part.empty[j]) for j in range(3) if j != i), name
        # each call's passes are image i's alone: together those of the whole batch, give or take
        # Ablation-CAM's check of its cut, four rows a call (the whole model and its tail on two images)
        assert min(per_image) > 0 and 0 <= sum(per_image) - passes_all <= 8, (name, per_image, passes_all)


@pytest.mark.slow
def test_ctrl_c_finishes_in_flight_work_and_exits_130(tmp_path):
    out = tmp_path / "o"
    proc = subprocess.Popen(_camcli("--out", out, "--method", "gradcam,scorecam", quiet=False),
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline:
        p = out / "predictions.csv"
        if p.exists() and p.read_text().count("\n") >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 130, err
    assert "explained" in err  # the summary is printed
    text = (out / "predictions.csv").read_text()
    assert text.endswith("\n")
    rows = read_csv(out / "predictions.csv")
    assert 0 < len(rows) < 48 and all(row["status"] == "ok" for row in rows)
    assert (out / "run.json").is_file()


class Evil:
    """Unpickling this creates a file: what a malicious checkpoint could do."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_pickled_code_never_runs_without_trust(cli, tmp_path):
    marker = tmp_path / "pwned"
    ck = tmp_path / "evil.pth"
    torch.save({"fc.weight": torch.zeros(2, 512), "payload": Evil(str(marker))}, ck)
    img = tmp_path / "x.png"
    img.write_bytes(_png(np.zeros((8, 8, 3), np.uint8)))
    r = cli("explain", img, "--model", "resnet18", "--checkpoint", ck, "--out", tmp_path / "o")
    assert r.exit_code == 2 and "arbitrary code" in r.stderr and "--trust-checkpoint" in r.stderr
    assert not marker.exists()


def test_whole_model_and_torchscript_load_only_with_trust(cli, tmp_path):
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=4).eval()
    torch.save(net, tmp_path / "whole.pt")
    torch.jit.save(torch.jit.trace(net, torch.zeros(1, 3, 64, 64)), tmp_path / "scripted.pt")
    img = tmp_path / "x.png"
    img.write_bytes(_png(np.zeros((30, 30, 3), np.uint8)))
    for name in ("whole.pt", "scripted.pt"):
        args = ["explain", img, "--model", "resnet18", "--checkpoint", tmp_path / name, "--input-size", "64",
                "--workers", "0", "--layer", "layer4[1]"]
        r = cli(*args, "--out", tmp_path / f"no-{name}")
        assert r.exit_code == 2 and "--trust-checkpoint" in r.stderr, name
        r = cli(*args, "--out", tmp_path / f"yes-{name}", "--trust-checkpoint")
        assert r.exit_code == 0, r.stderr
        assert read_csv(tmp_path / f"yes-{name}" / "predictions.csv")[0]["pred_index"] in "0123"
    # TorchScript takes no hooks: its weights go into --model's architecture, giving the same run
    whole, scripted = (read_csv(tmp_path / f"yes-{n}" / "predictions.csv")[0] for n in ("whole.pt", "scripted.pt"))
    assert (whole["pred_index"], whole["score"]) == (scripted["pred_index"], scripted["score"])
    r = cli("explain", img, "--model", "resnet34", "--checkpoint", tmp_path / "scripted.pt", "--trust-checkpoint",
            "--out", tmp_path / "wrong-arch")
    assert r.exit_code == 2 and "does not fit the architecture" in r.stderr


@pytest.mark.slow
def test_torchrun_shards_merge_to_the_single_process_result(tmp_path):
    single = tmp_path / "single"
    assert subprocess.run(_camcli("--out", single, "--method", "gradcam,cam"), timeout=300).returncode == 0
    multi = tmp_path / "multi"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29517",
           "-m", "camcli", *_camcli("--out", multi, "--method", "gradcam,cam")[3:]]
    r = subprocess.run(cmd, timeout=600, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = read_csv(single / "predictions.csv"), read_csv(multi / "predictions.csv")
    assert [(x["path"], x["method"]) for x in a] == [(x["path"], x["method"]) for x in b]
    for x, y in zip(a, b):
        assert {k: v for k, v in x.items() if "score" not in k} == {k: v for k, v in y.items() if "score" not in k}
        assert all(abs(float(x[k]) - float(y[k])) < 1e-4 for k in x if "score" in k and x[k])
    assert len(list(multi.glob("predictions.part-*.csv"))) == 2


def test_a_stop_that_lands_while_an_image_is_decoded_is_no_image_failure(tmp_path, monkeypatch):
    """The signal handler raises StopRequested into the computing run wherever it is; with
    workers 0 that may be inside the decoding of an image, whose failures become error rows. The
    stop must end the run as interrupted with every written row ok, never as a failed image (seen
    once in CI: a row `StopRequested:` with status error)."""
    import camcli.engine.images as images
    from camcli.run import Run
    from camcli.run.run import StopRequested
    from camcli.settings import resolve

    real = images.decode
    seen = []

    def decode(path, max_pixels=images.DEFAULT_MAX_PIXELS):
        seen.append(path)
        if len(seen) == 5:  # as a Ctrl-C would, in the middle of the third batch's decoding
            run.request_stop()
            raise StopRequested()
        return real(path, max_pixels)

    monkeypatch.setattr(images, "decode", decode)
    settings = resolve({"out": str(tmp_path / "o"), "workers": 0, "batch_size": 2}, DEMO_CONFIG)
    run = Run(settings, [str(SAMPLES)])
    summary = run.execute()
    assert summary.interrupted and summary.failed == 0
    rows = read_csv(tmp_path / "o" / "predictions.csv")
    assert 0 < len(rows) < 24 and all(r["status"] == "ok" for r in rows), [r["error"] for r in rows]
