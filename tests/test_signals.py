"""Runs end the way CI, clusters and containers end them: SIGKILL, SIGTERM, a dead run's lock,
output read by a pipe. Real processes and real signals; nothing may be left behind."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import DEMO_CONFIG, SAMPLES, read_csv

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc for child processes")


def _camcli(out: Path, *args, quiet: bool = True) -> list[str]:
    """The demo run with two decoding processes, in batches of 2 (12 batches for the 24 samples)."""
    return [sys.executable, "-m", "camcli", "explain", str(SAMPLES), "--config", str(DEMO_CONFIG), "--workers", "2",
            "--batch-size", "2", "--device", "cpu", "--out", str(out), *(["--quiet"] if quiet else []),
            *map(str, args)]


def _digest(out: Path) -> tuple[str, dict[str, str]]:
    """The CSV's bytes and every overlay's, as hashes."""
    files = {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted(out.rglob("*")) if p.is_file() and p.parts[len(out.parts)] in ("overlays", "heatmaps")}
    return hashlib.sha256((out / "predictions.csv").read_bytes()).hexdigest(), files


def _children(pid: int) -> set[int]:
    """Every process whose parent is ``pid`` (from /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                text = (entry / "stat").read_text()
            except OSError:
                continue
            if int(text[text.rfind(")") + 2:].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return text[text.rfind(")") + 2] != "Z"  # a zombie has ended


def _wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _rows(out: Path) -> int:
    p = out / "predictions.csv"
    return max(0, p.read_text().count("\n") - 1) if p.exists() else 0


def _leftovers(out: Path) -> list[str]:
    """Temporary files a run may leave only while it writes."""
    return [p.name for p in out.rglob("*") if p.name.endswith(".tmp")]


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "o"
    assert subprocess.run(_camcli(out), timeout=300).returncode == 0
    return _digest(out)


# "decoding": the workers are up and no row is written yet; "writing": rows are being written
@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
@pytest.mark.parametrize("point", ["decoding", "writing"])
def test_stopped_run_leaves_nothing_behind_and_resumes_to_the_same_bytes(tmp_path, whole, signum, point):
    out = tmp_path / "o"
    proc = subprocess.Popen(_camcli(out, quiet=False), stderr=subprocess.PIPE, text=True)
    workers: set[int] = set()

    def ready() -> bool:
        workers.update(_children(proc.pid))
        if proc.poll() is not None:
            return True
        return len(workers) >= 2 and (_rows(out) >= 5 if point == "writing" else True)

    _wait_for(ready, 240, f"the run to reach {point}")
    assert proc.poll() is None, "the run ended before it could be stopped"
    written_before = _rows(out)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    if signum == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
    else:
        assert proc.returncode == 143, err
        assert "explained" in err and "SIGTERM" in err  # the summary, and what stopped it
        assert (out / "run.json").is_file() and json.loads((out / "run.json").read_text())["interrupted"]
        rows = read_csv(out / "predictions.csv")
        assert len(rows) >= written_before and all(r["status"] == "ok" for r in rows)
    assert workers, "no decoding process was seen"
    _wait_for(lambda: not any(_alive(p) for p in workers), 10, f"decoding processes {sorted(workers)} to end")
    if signum == signal.SIGTERM:
        assert not _leftovers(out)
    r = subprocess.run(_camcli(out, "--resume", quiet=False), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "in use by another camcli run" not in r.stderr
    assert _digest(out) == whole
    assert not _leftovers(out)


@pytest.mark.slow
def test_lock_held_by_the_leftovers_of_a_dead_run_is_taken_over(tmp_path, whole):
    """A lock file naming a run that has ended, still locked by a process it left behind (what an
    older camcli's orphaned decoding processes did), is taken over with a log line."""
    out = tmp_path / "o"
    assert subprocess.run(_camcli(out), timeout=300).returncode == 0
    (out / "predictions.csv").write_text("".join((out / "predictions.csv").read_text().splitlines(True)[:6]))
    gone = subprocess.Popen(["true"])
    gone.wait()
    lock = out / ".camcli-lock"
    lock.write_text(f"pid {gone.pid} on {os.uname().nodename}, since 2026-01-01 00:00:00")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(lock)!r}, os.O_RDWR)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
        "print('locked', flush=True)\n"
        "sys.stdin.read()\n")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        r = subprocess.run(_camcli(out, "--resume", quiet=False), capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        assert "taking over the lock of a run that has ended" in r.stderr and str(gone.pid) in r.stderr
        assert _digest(out) == whole
    finally:
        holder.communicate("", timeout=30)


@pytest.mark.slow
def test_a_live_runs_lock_is_never_taken(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    lock = out / ".camcli-lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, f"pid {os.getpid()} on {os.uname().nodename}, since 2026-01-01 00:00:00".encode())
    try:
        r = subprocess.run(_camcli(out, "--resume"), capture_output=True, text=True, timeout=300)
        assert r.returncode == 2 and f"pid {os.getpid()}" in r.stderr and "in use" in r.stderr
    finally:
        os.close(fd)


@pytest.mark.slow
def test_json_stdout_holds_only_data_while_weights_download(tmp_path):
    """torch.hub prints 'Downloading: ...' on stdout when weights download; with --json, stdout
    must still be NDJSON alone. The weights come from a local file URL into an empty hub cache."""
    import torch
    import torchvision

    torch.manual_seed(0)
    weights_file = tmp_path / "mobilenet_small_weights.pth"
    torch.save(torchvision.models.mobilenet_v3_small().state_dict(), weights_file)
    hub = tmp_path / "torch_home"
    probe = ("import sys, torchvision\n"
             "w = torchvision.models.MobileNet_V3_Small_Weights.IMAGENET1K_V1\n"
             f"w.value.url = {weights_file.as_uri()!r}\n"
             "from camcli.cli import main\n"
             "sys.argv = ['camcli', *sys.argv[1:]]\n"
             "main()\n")
    image = sorted((SAMPLES / "single").glob("*.jpg"))[0]
    r = subprocess.run([sys.executable, "-c", probe, "explain", str(image), "--model", "mobilenet_v3_small",
                        "--weights", "IMAGENET1K_V1", "--workers", "0", "--device", "cpu", "--json",
                        "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "TORCH_HOME": str(hub)})
    assert r.returncode == 0, r.stderr
    assert "Downloading" in r.stderr  # it did download, and said so where logs go
    records = [json.loads(line) for line in r.stdout.splitlines()]
    assert [rec["type"] for rec in records] == ["image", "summary"]
    assert any(hub.rglob("*.pth"))


def test_progress_lines_off_a_terminal_and_the_cost_of_many_passes(cli, tmp_path):
    args = ["explain", *sorted((SAMPLES / "single").glob("*.jpg"))[:4], "--config", DEMO_CONFIG, "--workers", "0",
            "--method", "gradcam,scorecam", "--input-size", "64", "--cam-batch-size", "512"]
    r = cli(*args, "--out", tmp_path / "a", "--progress-every", "0.0001")
    assert r.exit_code == 0, r.stderr
    lines = [l for l in r.stderr.splitlines() if l.startswith("explaining: ")]
    assert lines and all("/4 images" in l for l in lines), r.stderr
    # a line as soon as the first image is done, with a rate and an ETA for the three to come
    first = next(l for l in lines if not l.startswith("explaining: 0/"))
    assert first.startswith("explaining: 1/4 images (25%)") and ("s/image" in first or "images/s" in first), r.stderr
    assert "eta" in first, r.stderr
    cost = [l for l in r.stderr.splitlines() if l.startswith("scorecam runs up to")]
    assert len(cost) == 1 and "512 forward passes per image" in cost[0] and "--max-n" in cost[0], r.stderr
    # a many-pass method explains one image after another unless --batch-size says otherwise
    assert "4 batch(es)" in r.stderr, r.stderr
    r = cli(*args, "--out", tmp_path / "b", "--progress-every", "0", "--max-n", "8")
    assert r.exit_code == 0 and "explaining: " not in r.stderr
    assert "forward passes per image" not in r.stderr  # 8 passes an image is not worth a warning
    assert "1 batch(es)" in r.stderr, r.stderr
    r = cli(*args, "--out", tmp_path / "c", "--progress-every", "0", "--batch-size", "4")
    assert r.exit_code == 0 and "1 batch(es)" in r.stderr, r.stderr


def _seconds(text: str) -> float:
    """``1 min 05 s`` -> 65.0."""
    words, total = text.split(), 0.0
    for value, unit in zip(words[::2], words[1::2]):
        total += float(value) * {"h": 3600, "min": 60, "s": 1}[unit]
    return total


def test_score_cam_into_a_pipe_reports_progress_at_the_promised_interval(tmp_path):
    """A Score-CAM run piped into another program: a line within seconds of explaining starting, then at
    least every --progress-every seconds, also while one image's masked passes run; the first ETA is
    close to the time the run then takes."""
    every = 1.0
    images = sorted((SAMPLES / "single").glob("*.jpg"))[:4]
    proc = subprocess.Popen([sys.executable, "-m", "camcli", "explain", *map(str, images), "--config", str(DEMO_CONFIG),
                             "--workers", "0", "--method", "scorecam", "--input-size", "96", "--cam-batch-size", "16",
                             "--progress-every", str(every), "--out", str(tmp_path / "o")],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    heard = [(time.monotonic(), line.rstrip("\n")) for line in proc.stderr]
    assert proc.wait(timeout=300) == 0, heard
    started = next(t for t, line in heard if line.startswith("model resnet18"))
    ended = next(t for t, line in heard if line.startswith("explained 4 of 4 image(s)"))
    progress = [(t, line) for t, line in heard if line.startswith("explaining: ")]
    assert len(progress) >= 3, heard
    # no silence longer than the interval (with room for a busy machine) while explaining
    times = [started] + [t for t, _ in progress]
    assert max(b - a for a, b in zip(times, times[1:])) <= every + 1.5, heard
    assert any("passes into the" in line for _, line in progress), heard  # inside an image, not only between
    said, first = next((t, line) for t, line in progress if "eta " in line)
    eta = _seconds(first.split("eta ", 1)[1].split(";")[0])
    actual = ended - said
    assert actual / 3 - 2 <= eta <= 3 * actual + 2, (first, actual, heard)


#: runs camcli's command line, then says whether torch was imported and the exit code
TORCH_PROBE = ("import sys\n"
               "from camcli.cli import main\n"
               "sys.argv = ['camcli', *sys.argv[1:]]\n"
               "try:\n    main()\n"
               "except SystemExit as e:\n    code = e.code\n"
               "print('torch loaded' if 'torch' in sys.modules else 'torch not loaded', code, file=sys.stderr)\n")


@pytest.mark.parametrize("args,message", [
    (["/no/such/folder"], "does not exist"),
    (["{samples}", "--out", "{full}"], "is not empty"),
    (["{samples}", "--method", "gradcamm"], "unknown method"),
    (["{samples}", "--batch-size", "0"], "--batch-size must be at least 1"),
])
def test_usage_errors_answer_before_torch_loads(tmp_path, args, message):
    full = tmp_path / "full"
    full.mkdir()
    (full / "mine.txt").write_text("x")
    args = [a.format(samples=SAMPLES, full=full) for a in args]
    r = subprocess.run([sys.executable, "-c", TORCH_PROBE, "explain", *args, *([] if "--out" in args else
                        ["--out", str(tmp_path / "o")])], capture_output=True, text=True, timeout=120)
    assert message in r.stderr and "torch not loaded 2" in r.stderr, r.stderr


def test_every_mistake_is_reported_at_once_before_torch_loads(tmp_path):
    """Seven mistakes, one line each, in one run that loads neither torch nor the model; an unknown
    label comes with the closest labels, or the labels there are when none is close."""
    full = tmp_path / "full"
    full.mkdir()
    (full / "mine.txt").write_text("x")
    r = subprocess.run([sys.executable, "-c", TORCH_PROBE, "explain", str(SAMPLES), str(tmp_path / "no-such-folder"),
                        "--out", str(full), "--colormap", "jett", "--method", "gradcamm", "--checkpoint",
                        str(tmp_path / "missing.pth"), "--labels", str(DEMO_CONFIG.parent.parent / "demo" / "labels.txt"),
                        "--target", "squar,blob"], capture_output=True, text=True, timeout=120)
    errors = [l for l in r.stderr.splitlines() if l.startswith("camcli: error: ")]
    expected = ["unknown --colormap 'jett'; did you mean 'jet'?", "unknown method 'gradcamm'",
                "missing.pth does not exist", "unknown --target label 'squar'; did you mean 'square'",
                "unknown --target label 'blob'; the 6 labels are 'circle', 'square', 'triangle', 'star', 'cross', 'ring'",
                "no-such-folder' does not exist", "is not empty"]
    assert len(errors) == len(expected), r.stderr
    for text in expected:
        assert any(text in line for line in errors), (text, r.stderr)
    assert "torch not loaded 2" in r.stderr, r.stderr


def test_the_same_command_twice_numbers_a_new_folder_and_resume_continues_the_latest(cli, tmp_path, monkeypatch):
    photos = tmp_path / "photos"
    photos.mkdir()
    for image in sorted((SAMPLES / "single").glob("*.jpg"))[:2]:
        (photos / image.name).write_bytes(image.read_bytes())
    monkeypatch.chdir(tmp_path)
    args = ["explain", ".", "--config", DEMO_CONFIG, "--workers", "0", "--input-size", "64"]
    for folder in ("explain", "explain2"):
        r = cli(*args)
        assert r.exit_code == 0 and f"-> runs/{folder}" in r.stderr, r.stderr
        # the first run's overlays, under the folder explained, are not taken as input
        assert [row["path"] for row in read_csv(tmp_path / "runs" / folder / "predictions.csv")] == [
            "photos/circle_07.jpg", "photos/cross_12.jpg"]
    (photos / "later.jpg").write_bytes((SAMPLES / "single" / "ring_00.jpg").read_bytes())
    r = cli(*args, "--resume")
    assert r.exit_code == 0 and "-> runs/explain2" in r.stderr and "2 image(s) were already done" in r.stderr, r.stderr
    assert len(read_csv(tmp_path / "runs" / "explain2" / "predictions.csv")) == 3
    r = cli(*args, "--out", "runs/explain")  # a folder the user names is refused when full
    assert r.exit_code == 2 and "--resume" in r.stderr and "--overwrite" in r.stderr, r.stderr
    r = cli(*args, "--shard", "0/2")  # shards share one folder: it must be named
    assert r.exit_code == 2 and "name it with --out" in r.stderr, r.stderr


def test_presentation_does_not_block_resume_and_gallery_rebuilds(cli, tmp_path):
    images = sorted((SAMPLES / "single").glob("*.jpg"))[:3]
    base = ["explain", *images, "--config", DEMO_CONFIG, "--workers", "0", "--input-size", "64", "--out", tmp_path / "o"]
    assert cli(*base).exit_code == 0
    assert not (tmp_path / "o" / "index.html").exists()
    r = cli(*base, "--resume", "--html", "--alpha", "0.8", "--colormap", "viridis")
    assert r.exit_code == 0, r.stderr
    assert "presentation settings differ" in r.stderr and "alpha (0.5 -> 0.8)" in r.stderr
    page = (tmp_path / "o" / "index.html").read_text()
    assert page.count('class="card"') == 3
    r = cli(*base, "--resume", "--method", "cam")
    assert r.exit_code == 2 and "method" in r.stderr  # what the maps are is still the run's identity
    (tmp_path / "o" / "index.html").unlink()
    r = cli("gallery", tmp_path / "o")
    assert r.exit_code == 0 and (tmp_path / "o" / "index.html").read_text().count('class="card"') == 3
    r = cli("gallery", tmp_path / "nothing")
    assert r.exit_code == 2 and "not a folder" in r.stderr


def test_evaluate_prints_progress_lines_per_phase_off_a_terminal(cli, tmp_path):
    images = tmp_path / "imgs"
    images.mkdir()
    for p in sorted((SAMPLES / "single").glob("*.jpg"))[:3]:
        (images / p.name).write_bytes(p.read_bytes())
    truth = tmp_path / "truth.csv"
    rows = [line for line in (SAMPLES / "boxes.csv").read_text().splitlines()[1:]
            if line.split(",")[0].split("/")[-1] in {p.name for p in images.iterdir()}]
    truth.write_text("path,x0,y0,x1,y1,label\n" + "".join(r.split("/", 1)[1] + "\n" for r in rows))
    r = cli("evaluate", images, "--config", DEMO_CONFIG, "--truth", truth, "--workers", "0", "--device", "cpu",
            "--out", tmp_path / "e", "--progress-every", "0.0001")
    assert r.exit_code == 0, r.stderr
    lines = [l for l in r.stderr.splitlines() if l.startswith("explaining: ")]
    assert lines and lines[-1].startswith("explaining: 3/3 images (100%)"), r.stderr
    r = cli("evaluate", images, "--config", DEMO_CONFIG, "--truth", truth, "--workers", "0", "--device", "cpu",
            "--out", tmp_path / "e2", "--progress-every", "0")
    assert r.exit_code == 0 and "explaining: " not in r.stderr


def test_gallery_grid_redraws_the_contact_sheets(cli, tmp_path):
    images = sorted((SAMPLES / "single").glob("*.jpg"))[:2]
    out = tmp_path / "o"
    assert cli("explain", *images, "--config", DEMO_CONFIG, "--workers", "0", "--input-size", "64",
               "--out", out).exit_code == 0
    assert not (out / "grid").exists()
    r = cli("gallery", out, "--grid")
    assert r.exit_code == 0, r.stderr
    assert (out / "index.html").is_file() and [p.name for p in (out / "grid").iterdir()] == ["sheet_001.png"]


@pytest.mark.slow
def test_a_program_that_leaves_a_run_unfinished_still_exits(tmp_path):
    """A script that takes one result of a run with decoding workers and ends: the workers ignore
    SIGTERM (the run decides how to stop), so multiprocessing's exit handler, which SIGTERMs daemon
    children and waits for them, must not be left to wait for ever (what a stop that interrupted
    the loader mid-batch hit in CI: the run never exited)."""
    script = ("import camcli, sys\n"
              f"run = iter(camcli.explain({str(SAMPLES)!r}, out={str(tmp_path / 'o')!r}, config={str(DEMO_CONFIG)!r}, "
              "workers=2, batch_size=2, device='cpu'))\n"
              "next(run)\n"
              "print('one result', flush=True)\n")  # ends here with the run, its loader and workers alive
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "one result" in r.stdout, r.stderr
