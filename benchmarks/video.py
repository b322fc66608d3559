"""Video: camcli against a per-clip pytorch-grad-cam loop on a folder of clips, the plain-inference
floor beside them, and camcli's memory on a long 1080p video.

    python benchmarks/video.py speed  [--clips 24]       # a folder of 2 s 320x240 clips
    python benchmarks/video.py memory [--minutes 10]     # one long 1920x1080 video, 1 minute and N

Every contender is a child process (wall time and peak resident memory from os.wait4), on the same
files, with the same model (torchvision's r3d_18, seeded random weights: nothing is downloaded)
and the same clip (the middle 16 frames at 15 fps, resized 128x171 and cropped 112 as the
weights' transforms do), and writes what a user wants of it: an overlay video per clip at the
source's rate and a row with the prediction.

- ``camcli``: ``camcli explain FOLDER --model r3d_18 --weights none``.
- ``pytorch-grad-cam loop``: the script people write: per clip, read the frames with OpenCV,
  apply the weights' transforms, ``GradCAM(model, [model.layer4])`` on the clip (its 5-D path,
  which zooms the map to the clip with SciPy), blend each frame, write the overlay with OpenCV.
- ``floor``: per clip, read and transform the frames and run the model forward, nothing else.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from volumes import timed  # noqa: E402  (wall seconds and peak resident MB of a child process)

CLIP_LEN, STEP = 16, 2  # 15 fps from 30 fps sources


def write_clip(path: Path, frames: int, size: tuple[int, int], seed: int) -> None:
    """A moving disc and a still square on a noisy background, 30 fps, MPEG-4."""
    import cv2

    rng = np.random.default_rng(seed)
    w, h = size
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, (w, h))
    background = cv2.resize(rng.integers(40, 120, (h // 16, w // 16, 3), dtype=np.uint8), (w, h))
    x, y, vx, vy = w * 0.2, h * 0.5, w / 150, h / 400
    for k in range(frames):
        f = background.copy()
        cv2.rectangle(f, (w // 2, h // 6), (w // 2 + w // 10, h // 6 + h // 8), (200, 200, 60), -1)
        cv2.circle(f, (int(x + vx * k) % w, int(y + vy * k) % h), max(4, h // 10), (40, 40, 230), -1)
        out.write(f)
    out.release()


def model():
    import torch
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.get_model("r3d_18", weights=None).eval()


def middle(frames: int) -> list[int]:
    span = (CLIP_LEN - 1) * STEP + 1
    start = (frames - span) // 2 if frames >= span else 0
    return [min(frames - 1, start + k * STEP) for k in range(CLIP_LEN)]


def peer_loop(folder: Path, out: Path, explain: bool) -> None:
    """The per-clip script (``explain``: with pytorch-grad-cam and overlays; else the floor)."""
    import cv2
    import torch
    import torchvision
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    net = model()
    transforms = torchvision.models.video.R3D_18_Weights.KINETICS400_V1.transforms()
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    cam = GradCAM(model=net, target_layers=[net.layer4]) if explain else None
    for path in sorted(folder.glob("*.mp4")):
        capture = cv2.VideoCapture(str(path))
        fps = capture.get(cv2.CAP_PROP_FPS)
        frames = []
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        picked = middle(len(frames))
        clip = torch.from_numpy(np.stack([frames[k] for k in picked])).permute(0, 3, 1, 2)
        x = transforms(clip)[None]
        if not explain:
            with torch.inference_mode():
                pred = int(net(x).argmax())
            rows.append((path.name, pred))
            continue
        with torch.no_grad():
            pred = int(net(x).argmax())
        heat = cam(input_tensor=x, targets=[ClassifierOutputTarget(pred)])[0]  # (16, 112, 112)
        h, w = frames[0].shape[:2]
        writer = cv2.VideoWriter(str(out / f"{path.name}.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
        for k in range(picked[0], picked[-1] + 1):
            t = min(CLIP_LEN - 1, (k - picked[0]) // STEP)
            m = cv2.resize(heat[t], (w, h))
            colour = cv2.applyColorMap(np.uint8(255 * m), cv2.COLORMAP_JET)
            writer.write(cv2.addWeighted(cv2.cvtColor(frames[k], cv2.COLOR_RGB2BGR), 0.5, colour, 0.5, 0))
        writer.release()
        rows.append((path.name, pred))
    with open(out / "predictions.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)


def speed(count: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="camcli-video-bench-"))
    folder = work / "clips"
    folder.mkdir()
    for k in range(count):
        write_clip(folder / f"clip{k:03d}.mp4", 60, (320, 240), k)
    me = str(Path(__file__).resolve())
    runs = {
        "floor (decode, transform, forward)": [sys.executable, me, "peer", str(folder), str(work / "floor"), "--floor"],
        "pytorch-grad-cam loop": [sys.executable, me, "peer", str(folder), str(work / "peer")],
        "camcli explain": [sys.executable, "-m", "camcli", "explain", str(folder), "--model", "r3d_18", "--weights",
                           "none", "--out", str(work / "camcli"), "--quiet"],
    }
    results = {name: timed(cmd) for name, cmd in runs.items()}
    peer = results["pytorch-grad-cam loop"][0]
    print(f"{count} clips of 2 s, 320x240, 30 fps; r3d_18 (random weights), Grad-CAM at layer4, overlay video per clip")
    for name, (wall, rss) in results.items():
        print(f"  {name:38s} {wall:7.1f} s  {count / wall:5.2f} clips/s  peak {rss:6.0f} MB  "
              f"x{peer / wall:.2f} against the loop")


def memory(minutes: list[float]) -> None:
    work = Path(tempfile.mkdtemp(prefix="camcli-video-memory-"))
    print("camcli explain on one 1920x1080 30 fps video, --clips all (every frame in a window, an overlay video "
          "per window at 480 px), r3d_18")
    for m in minutes:
        path = work / f"long_{m:g}min.mp4"
        started = time.perf_counter()
        write_clip(path, int(m * 60 * 30), (1920, 1080), 0)
        made = time.perf_counter() - started
        wall, rss = timed([sys.executable, "-m", "camcli", "explain", str(path), "--model", "r3d_18", "--weights",
                           "none", "--clips", "all", "--overlay-max-side", "480", "--out", str(work / f"run{m:g}"),
                           "--quiet"])
        with open(work / f"run{m:g}" / "clips.csv", newline="") as f:
            windows = sum(1 for _ in csv.DictReader(f))
        print(f"  {m:g} min ({os.path.getsize(path) / 1e6:.0f} MB file, written in {made:.0f} s): {windows} windows, "
              f"{wall:.0f} s, peak {rss:.0f} MB")
        path.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--clips", type=int, default=24)
    m = sub.add_parser("memory")
    m.add_argument("--minutes", type=float, nargs="+", default=[1, 10])
    p = sub.add_parser("peer", help="the per-clip loop itself (run by `speed`)")
    p.add_argument("folder", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--floor", action="store_true")
    args = parser.parse_args()
    if args.what == "speed":
        speed(args.clips)
    elif args.what == "memory":
        memory(args.minutes)
    else:
        peer_loop(args.folder, args.out, explain=not args.floor)


if __name__ == "__main__":
    main()
