"""camcli against the plain-inference floor and its peers, in one process tree, on the same images.

    python benchmarks/bench.py                       # resnet18, 256 images; about 14 minutes on 2 cores
    python benchmarks/bench.py --arch resnet50 --images 200 --scorecam-images 1 --parts gradcam,scorecam  # ~30 min

Generates JPEGs (240-640 px, seeded), saves seeded random weights, then runs, interleaved and
each in its own child process (wall time and peak RSS from ``os.wait4``): the decode + plain
inference floor (NCHW, as a plain script runs it), the strict floor (the same in channels-last
memory format, as camcli runs its convolutions), ``camcli explain --method gradcam``, a pytorch-grad-cam script and a torchcam
script (benchmarks/peers.py; same decoding, batch 16, 2 loader workers, overlay PNG + CSV per
image). Then checks that the heatmaps agree (Pearson r at layer resolution), times Score-CAM
against pytorch-grad-cam's on N and 2N images (whole process, and per image after start-up),
and compares camcli's peak RSS at 100 and 2,000 images. Peers are the optional dev dependencies; this is not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import cv2
import numpy as np
import torch
import torchvision

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "scripts"))
from demo_scenes import make_scene  # noqa: E402


def make_images(folder: Path, n: int, seed: int, lo: int = 240, hi: int = 640) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        img, _ = make_scene(rng, (int(rng.integers(lo, hi)), int(rng.integers(lo, hi))), 1)
        cv2.imwrite(str(folder / f"img_{i:05d}.jpg"), img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
    return folder


def timed(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) not in (0,):
        raise SystemExit(f"failed: {' '.join(cmd)}")
    return wall, usage.ru_maxrss / 1024


def camcli_cmd(images, ck, arch, out, method="gradcam", extra=()):
    return [sys.executable, "-m", "camcli", "explain", str(images), "--model", arch, "--checkpoint", str(ck),
            "--input-size", "224", "--method", method, "--layer", "layer4[-1]", "--batch-size", "16",
            "--workers", "2", "--device", "cpu", "--quiet", "--overwrite", "--out", str(out), *extra]


def peer_cmd(tool, images, ck, arch, out, maps=None):
    return [sys.executable, str(HERE / "peers.py"), tool, str(images), str(ck), arch, str(out),
            *(["--maps", str(maps)] if maps else [])]


def pearson(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else float(np.allclose(a, b))


def agreement(tmp: Path, images: Path, ck: Path, arch: str, method: str, peers: list[str]) -> dict[str, float]:
    """Lowest per-image r between camcli's layer-resolution maps and each peer's."""
    ours = tmp / f"agree-{method}"
    subprocess.run(camcli_cmd(images, ck, arch, ours, method, ["--save-heatmap", "npy", "--heatmap-size", "layer"]),
                   check=True)
    worst = {}
    for peer in peers:
        maps = tmp / f"maps-{peer}"
        maps.mkdir(exist_ok=True)
        subprocess.run(peer_cmd(peer, images, ck, arch, tmp / f"agree-out-{peer}", maps), check=True,
                       stdout=subprocess.DEVNULL)
        rs = []
        for f in sorted(maps.glob("*.npy")):
            mine = next((ours / "heatmaps").glob(f"{f.stem}.jpg.*.npy"))
            rs.append(pearson(np.load(mine), np.load(f)))
        worst[peer] = min(rs)
    return worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--scorecam-images", type=int, default=2)
    ap.add_argument("--memory-images", type=int, nargs=2, default=[100, 2000])
    ap.add_argument("--parts", default="gradcam,scorecam,memory",
                    help="comma-separated: gradcam (the table and agreement), scorecam, memory")
    args = ap.parse_args()
    parts = set(args.parts.split(","))

    tmp = Path(tempfile.mkdtemp(prefix="camcli-bench-"))
    torch.manual_seed(0)
    ck = tmp / f"{args.arch}.pth"
    torch.save(torchvision.models.get_model(args.arch, num_classes=1000).state_dict(), ck)
    images = make_images(tmp / "images", args.images, seed=1)
    print(f"# {date.today()}  {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
          f"{torch.__version__}; {args.arch}, {args.images} JPEGs 240-640 px, 224 px input, batch 16, 2 workers",
          flush=True)

    if "gradcam" in parts:
        gradcam_table(args, tmp, images, ck)
    if "scorecam" in parts:
        scorecam_run(args, tmp, ck)
    if "memory" in parts:
        memory_run(args, tmp, ck)
    print(f"\n(work files in {tmp})")


def gradcam_table(args, tmp: Path, images: Path, ck: Path) -> None:
    tools = {"floor (decode + inference)": peer_cmd("floor", images, ck, args.arch, tmp / "o-floor"),
             "strict floor (channels-last)": peer_cmd("floor-nhwc", images, ck, args.arch, tmp / "o-floor"),
             "camcli gradcam": camcli_cmd(images, ck, args.arch, tmp / "o-camcli"),
             "pytorch-grad-cam GradCAM": peer_cmd("pgc", images, ck, args.arch, tmp / "o-pgc"),
             "torchcam GradCAM": peer_cmd("torchcam", images, ck, args.arch, tmp / "o-torchcam")}
    results: dict[str, list[tuple[float, float]]] = {k: [] for k in tools}
    for r in range(args.rounds):
        for name, cmd in tools.items():  # interleaved, so drift hits every tool alike
            results[name].append(timed(cmd))
            print(f"  round {r + 1} {name}: {results[name][-1][0]:.1f} s", flush=True)
    wall = {k: statistics.median(w for w, _ in v) for k, v in results.items()}
    rss = {k: max(m for _, m in v) for k, v in results.items()}
    floor = wall["floor (decode + inference)"]
    strict = wall["strict floor (channels-last)"]
    fastest_peer = min(wall["pytorch-grad-cam GradCAM"], wall["torchcam GradCAM"])
    print("\n| run | wall s (median) | images/s | peak RSS MB | × floor | × strict floor | × faster peer |")
    print("|---|---|---|---|---|---|---|")
    for name in tools:
        print(f"| {name} | {wall[name]:.1f} | {args.images / wall[name]:.1f} | {rss[name]:.0f} | "
              f"{wall[name] / floor:.2f} | {wall[name] / strict:.2f} | {wall[name] / fastest_peer:.2f} |")

    sample = make_images(tmp / "agree", 8, seed=2)
    agree = agreement(tmp, sample, ck, args.arch, "gradcam", ["pgc", "torchcam"])
    print(f"\nGrad-CAM agreement (lowest per-image r, 8 images): " +
          ", ".join(f"{k} {v:.4f}" for k, v in agree.items()))


def scorecam_run(args, tmp: Path, ck: Path) -> None:
    """Whole-process times on N and on 2N images; the difference over N is the time per image
    once both tools are loaded (start-up, ~5 s for each, weighs heavily on a few images)."""
    n = args.scorecam_images
    make_images(tmp / "few2", 2 * n, seed=3)
    few = tmp / "few"
    few.mkdir(exist_ok=True)
    for p in sorted((tmp / "few2").iterdir())[:n]:
        (few / p.name).write_bytes(p.read_bytes())
    runs = {}
    for folder, count in ((few, n), (tmp / "few2", 2 * n)):
        runs[("camcli", count)] = timed(camcli_cmd(folder, ck, args.arch, tmp / "o-sc", "scorecam"))
        runs[("pgc", count)] = timed(peer_cmd("pgc-scorecam", folder, ck, args.arch, tmp / "o-pgc-sc"))
    sc_agree = agreement(tmp, few, ck, args.arch, "scorecam", ["pgc-scorecam"])
    per = {t: (runs[(t, 2 * n)][0] - runs[(t, n)][0]) / n for t in ("camcli", "pgc")}
    for count in (n, 2 * n):
        (ours_s, ours_m), (theirs_s, theirs_m) = runs[("camcli", count)], runs[("pgc", count)]
        print(f"\nScore-CAM, {count} images: camcli {ours_s:.1f} s ({ours_m:.0f} MB), "
              f"pytorch-grad-cam {theirs_s:.1f} s ({theirs_m:.0f} MB): {theirs_s / ours_s:.2f}x faster")
    print(f"Score-CAM per image after start-up: camcli {per['camcli']:.1f} s, pytorch-grad-cam {per['pgc']:.1f} s: "
          f"{per['pgc'] / per['camcli']:.2f}x faster; lowest r {sc_agree['pgc-scorecam']:.4f}")


def memory_run(args, tmp: Path, ck: Path) -> None:
    small, large = args.memory_images
    mem = {}
    for n in (small, large):
        folder = make_images(tmp / f"mem{n}", n, seed=4, lo=200, hi=320)
        mem[n] = timed(camcli_cmd(folder, ck, args.arch, tmp / f"o-mem{n}"))
    print(f"\nMemory: camcli peak RSS {mem[small][1]:.0f} MB at {small} images, {mem[large][1]:.0f} MB at "
          f"{large} images: ratio {mem[large][1] / mem[small][1]:.2f} ({large / mem[large][0]:.1f} images/s)")


if __name__ == "__main__":
    main()
