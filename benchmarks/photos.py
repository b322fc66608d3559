"""Photos as people take them: camcli on multi-megapixel JPEGs against the floor and pytorch-grad-cam.

    python benchmarks/photos.py                          # 16 photos of 6000x4000 (24 MP); ~6 min on 2 cores
    python benchmarks/photos.py --size 8660x5773 --images 8   # 50 MP

Generates seeded JPEG photos (shape scenes drawn small, upscaled, with sensor-like noise, so
they compress like photos), saves seeded random resnet50 weights, then runs each tool in its own
child process on the same files: the decode + plain-inference floor (benchmarks/peers.py),
``camcli explain`` at default settings with each overlay format, and the pytorch-grad-cam
script. For each it reports wall time, the peak memory of the whole process tree (the sum of
every descendant's resident set, sampled every 20 ms: DataLoader workers are processes of their
own; proportional set sizes, so pages they share are counted once) and the bytes written. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torchvision

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "scripts"))
from demo_scenes import make_scene  # noqa: E402


def make_photos(folder: Path, n: int, size: tuple[int, int], seed: int = 11) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w, h = size
    for i in range(n):
        small, _ = make_scene(rng, (h // 8, w // 8), 1)
        big = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC).astype(np.int16)
        big += rng.normal(0, 6, (h, w, 1)).astype(np.int16)  # sensor noise: photos do not compress to nothing
        cv2.imwrite(str(folder / f"photo_{i:03d}.jpg"), np.clip(big, 0, 255).astype(np.uint8)[..., ::-1],
                    [cv2.IMWRITE_JPEG_QUALITY, 92])


def _tree(root: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += parents.get(pid, [])
    return found


def _pss(pid: int) -> int:
    """Proportional set size: shared pages (torch's libraries, forked workers) counted once across the tree."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def timed(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, peak resident memory of the whole process tree in MB)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    peak = [0]

    def sample():
        while proc.poll() is None:
            peak[0] = max(peak[0], sum(_pss(p) for p in _tree(proc.pid)))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    code = proc.wait()
    wall = time.perf_counter() - start
    sampler.join()
    if code != 0:
        raise SystemExit(f"failed ({code}): {' '.join(cmd)}")
    return wall, peak[0] / 2**20


def written(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--size", default="6000x4000")
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--tools", default="floor,png,jpg,webp,pgc")
    ap.add_argument("--camcli-args", default="", help="extra options for every camcli run")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    tmp = Path(tempfile.mkdtemp(prefix="camcli-photos-"))
    photos = tmp / "photos"
    make_photos(photos, args.images, (w, h))
    torch.manual_seed(0)
    ck = tmp / f"{args.arch}.pth"
    torch.save(torchvision.models.get_model(args.arch, num_classes=1000).state_dict(), ck)
    mb = sum(p.stat().st_size for p in photos.iterdir()) / 2**20
    print(f"# {args.images} JPEGs of {w}x{h} ({w * h / 1e6:.0f} MP, {mb:.0f} MB), {args.arch}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}", flush=True)
    peers = HERE / "peers.py"
    tools = {
        "floor": [sys.executable, str(peers), "floor", str(photos), str(ck), args.arch, str(tmp / "o-floor")],
        "pgc": [sys.executable, str(peers), "pgc", str(photos), str(ck), args.arch, str(tmp / "o-pgc")],
    }
    for fmt in ("png", "jpg", "webp"):
        tools[fmt] = [sys.executable, "-m", "camcli", "explain", str(photos), "--model", args.arch, "--checkpoint",
                      str(ck), "--input-size", "224", "--device", "cpu", "--quiet", "--overwrite",
                      *(["--overlay-format", fmt] if fmt != "png" else []), "--out", str(tmp / f"o-{fmt}"),
                      *args.camcli_args.split()]
    names = {"floor": "floor (decode + inference)", "png": "camcli, PNG overlays", "jpg": "camcli, JPEG overlays",
             "webp": "camcli, WebP overlays", "pgc": "pytorch-grad-cam script (PNG)"}
    results = {}
    for key in args.tools.split(","):
        results[key] = timed(tools[key])
        print(f"  {names[key]}: {results[key][0]:.1f} s, {results[key][1]:.0f} MB", flush=True)
    floor = results.get("floor", (None,))[0]
    print("\n| run | wall s | × floor | peak memory (process tree) MB | written MB | per overlay MB |")
    print("|---|---|---|---|---|---|")
    for key, (wall, peak) in results.items():
        out = tmp / f"o-{key}"
        size = written(out) / 2**20
        per = size / args.images if key != "floor" else 0
        ratio = f"{wall / floor:.2f}" if floor else "-"
        print(f"| {names[key]} | {wall:.1f} | {ratio} | {peak:.0f} | {size:.0f} | {per:.2f} |")
    print(f"\n(work files in {tmp})")


if __name__ == "__main__":
    main()
