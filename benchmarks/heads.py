"""What a multi-label head costs: the demo model on the same scenes read as softmax (one class per
image) and as sigmoid (every label over 0.5), each run in its own child process, interleaved.

    python benchmarks/heads.py            # about a minute on 2 cores

Each extra explained class is one more partial backward of its batch (from the forward the first
class ran; methods with hooks of their own run the batch again); this prints images/s,
maps/s and the maps per image of both readings, and their ratio, side by side.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(head: str, images: Path, out: Path) -> tuple[float, int, int]:
    args = [sys.executable, "-m", "camcli", "explain", str(images), "--config", str(ROOT / "configs" / "demo.toml"),
            "--head", head, "--workers", "0", "--out", str(out), "--quiet", "--overwrite"]
    started = time.perf_counter()
    subprocess.run(args, check=True)
    seconds = time.perf_counter() - started
    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return seconds, len({r["path"] for r in rows}), len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=Path, default=ROOT / "sample_images")
    a = parser.parse_args()
    times: dict[str, list[float]] = {"softmax": [], "sigmoid": []}
    counts = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(a.rounds):
            for head in times:
                seconds, images, maps = run(head, a.images, Path(tmp) / head)
                times[head].append(seconds)
                counts[head] = (images, maps)
    for head, ts in times.items():
        best = min(ts)
        images, maps = counts[head]
        print(f"{head:8s} {images} images, {maps} maps ({maps / images:.2f} per image): best of {len(ts)} "
              f"{best:.2f} s (process start included), {images / best:.2f} images/s, {maps / best:.2f} maps/s")
    ratio = min(times["sigmoid"]) / min(times["softmax"])
    print(f"sigmoid / softmax wall time: {ratio:.2f}x for "
          f"{counts['sigmoid'][1] / counts['softmax'][1]:.2f}x the maps")


if __name__ == "__main__":
    main()
