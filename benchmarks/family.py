"""The methods of issue 14, and Ablation-CAM, against the peer that has each, in one process tree, on the same images.

    python benchmarks/family.py                    # about 25 minutes on 2 cores
    python benchmarks/family.py --methods fullgrad,guidedbackprop --images 8

For each method: ``camcli explain`` and the peer's script (benchmarks/peers.py: same decoding,
batch 16, 2 loader workers, an overlay PNG and a CSV row per image) run as child processes on
N and on 2N generated JPEGs, interleaved. The table gives the whole-process wall time on 2N
images and the time per image once each tool has started ((t(2N) - t(N)) / N), and the ratio
peer / camcli of both. Seeded random weights (no downloads); resnet18 at 224 px, LeGrad on
vit_b_16. The noisy and integrated Score-CAMs forward once per channel and sample, so they run
with fewer samples than their defaults (the same for both tools) on fewer images.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from datetime import date
from pathlib import Path

import torch
import torchvision

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench import make_images, peer_cmd, timed  # noqa: E402

#: method -> (peer tool, architecture, images N, camcli options, peer options)
CASES = {
    "finercam": ("pgc:FinerCAM", "resnet18", 16, [], []),
    "shapleycam": ("pgc:ShapleyCAM", "resnet18", 16, [], []),
    "fullgrad": ("pgc:FullGrad", "resnet18", 16, [], []),
    "guidedbackprop": ("pgc-guided", "resnet18", 16, [], []),
    "smoothgradcam++": ("torchcam:SmoothGradCAMpp", "resnet18", 16, ["--noise-samples", "4", "--noise-std", "0.3"],
                        ["--samples", "4", "--std", "0.3"]),
    "sscam": ("torchcam:SSCAM", "resnet18", 1, ["--noise-samples", "2", "--noise-std", "2"],
              ["--samples", "2", "--std", "2.0"]),
    "iscam": ("torchcam:ISCAM", "resnet18", 1, ["--noise-samples", "3"], ["--samples", "3"]),
    "legrad": ("torchcam:LeGrad", "vit_b_16", 16, [], []),
    "ablationcam": ("pgc:AblationCAM", "resnet18", 2, [], []),
}
#: LeGrad aggregates from the layer's block on: the last two blocks, the authors' default
LAYER = {"resnet18": "layer4[-1]", "vit_b_16": "encoder.layers.encoder_layer_10"}


def camcli(images, ck, arch, out, method, extra):
    return [sys.executable, "-m", "camcli", "explain", str(images), "--model", arch, "--checkpoint", str(ck),
            "--input-size", "224", "--method", method, "--layer", LAYER[arch], "--batch-size", "16",
            "--workers", "2", "--device", "cpu", "--quiet", "--overwrite", "--out", str(out), *extra]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default=",".join(CASES))
    ap.add_argument("--images", type=int, default=None, help="N for every method (default: per method)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="camcli-family-"))
    print(f"# {date.today()}  {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
          f"{torch.__version__}; JPEGs 240-640 px, 224 px input, batch 16, 2 workers", flush=True)
    print("| method | peer | images | camcli (s) | peer (s) | peer / camcli | camcli per image (s) | "
          "peer per image (s) | peer / camcli per image |")
    print("|---|---|---|---|---|---|---|---|---|", flush=True)
    checkpoints = {}
    for method in args.methods.split(","):
        tool, arch, n, ours_extra, peer_extra = CASES[method]
        n = args.images or n
        if arch not in checkpoints:
            torch.manual_seed(0)
            checkpoints[arch] = tmp / f"{arch}.pth"
            torch.save(torchvision.models.get_model(arch, num_classes=1000).state_dict(), checkpoints[arch])
        ck = checkpoints[arch]
        small = make_images(tmp / f"{method}-n", n, seed=5)
        large = make_images(tmp / f"{method}-2n", 2 * n, seed=5)
        t = {}
        for folder, count in ((small, n), (large, 2 * n)):
            t[("camcli", count)] = timed(camcli(folder, ck, arch, tmp / "o-camcli", method, ours_extra))[0]
            t[("peer", count)] = timed(peer_cmd(tool, folder, ck, arch, tmp / "o-peer") + peer_extra)[0]
        per = {k: (t[(k, 2 * n)] - t[(k, n)]) / n for k in ("camcli", "peer")}
        print(f"| {method} | {tool} | {2 * n} | {t[('camcli', 2 * n)]:.1f} | {t[('peer', 2 * n)]:.1f} | "
              f"{t[('peer', 2 * n)] / t[('camcli', 2 * n)]:.2f}x | {per['camcli']:.2f} | {per['peer']:.2f} | "
              f"{per['peer'] / per['camcli']:.2f}x |", flush=True)
    print(f"\n(work files in {tmp})")


if __name__ == "__main__":
    main()
