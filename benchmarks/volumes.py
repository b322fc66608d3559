"""A folder of 3D scans explained: camcli against MONAI's per-volume loop, on the same model, layer and
scans, each run in a child process of this one (wall time and peak resident memory, os.wait4).

    python benchmarks/volumes.py                      # about 5 minutes on 2 cores
    python benchmarks/volumes.py --scans 16 --side 96 # quicker

The scans are NIfTI files of ``--side`` x ``--side`` x ``side / 2`` voxels, stored LPS (as DICOM
converters store them), drawn by scripts/heldout_volumes.py and resampled up. The model is the demo
volume classifier (32^3 input) with its weights; the layer ``block3``; the method Grad-CAM.

- **camcli**: ``camcli explain FOLDER --config configs/demo-volume.toml --method gradcam``: reads
  every scan into RAS, scales it by percentiles, resamples it, explains a batch at a time, and
  writes each map as NIfTI on the scan's own grid plus the planes picture, and the CSV.
- **MONAI**: the loop MONAI's documentation and tutorials show for ``GradCAM``: per scan,
  ``LoadImage`` + ``EnsureChannelFirst`` + ``Orientation("RAS")`` + ``ScaleIntensityRangePercentiles``
  + ``Resize``, one ``GradCAM`` call (its map at the model input's size), the map resized back to the
  scan (``Resize``, trilinear) and saved with ``SaveImage`` (NIfTI with the oriented scan's affine).
  No picture: MONAI writes none, so its side does less.
- **floor**: the same reading and transforms plus one plain forward per scan, nothing explained
  or written: what any tool must spend.

Run twice, at ``--scans`` and twice as many, for the memory's growth with the folder's size.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

MONAI_LOOP = r'''
import sys, glob, os, torch, importlib.util
from safetensors.torch import load_file
from monai.transforms import (Compose, LoadImage, EnsureChannelFirst, Orientation, ScaleIntensityRangePercentiles,
                              Resize, SaveImage)
from monai.visualize import GradCAM
folder, out, mode = sys.argv[1], sys.argv[2], sys.argv[3]
spec = importlib.util.spec_from_file_location("net", os.path.join(sys.argv[4], "demo", "shapes_volume_net.py"))
net = importlib.util.module_from_spec(spec); spec.loader.exec_module(net)
model = net.build().eval(); model.load_state_dict(load_file(os.path.join(sys.argv[4], "demo", "shapes_volume.safetensors")))
load = Compose([LoadImage(image_only=True), EnsureChannelFirst(), Orientation(axcodes="RAS")])
prep = Compose([ScaleIntensityRangePercentiles(0.5, 99.5, 0.0, 1.0, clip=True), Resize((32, 32, 32))])
cam = GradCAM(model, target_layers="block3")
save = SaveImage(output_dir=out, output_postfix="gradcam", separate_folder=False, print_log=False)
for path in sorted(glob.glob(os.path.join(folder, "*.nii.gz"))):
    image = load(path)
    x = prep(image)[None]
    if mode == "floor":
        with torch.no_grad():
            model(x.as_tensor())
        continue
    heat = 1 - cam(x)[0]  # MONAI's normaliser maps (min, max) to (1, 0)
    heat = Resize(image.shape[1:], mode="trilinear")(heat)
    heat.meta = image.meta
    save(heat)
'''


def timed(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, peak resident MB) of a child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr.read().decode()[-2000:]}")
    return wall, usage.ru_maxrss / 1024


def make_scans(folder: Path, count: int, side: int) -> None:
    import nibabel as nib
    import numpy as np
    import torch
    import torch.nn.functional as F

    sys.path.insert(0, str(ROOT / "scripts"))
    from heldout_volumes import heldout_batch

    folder.mkdir(parents=True, exist_ok=True)
    volumes, _labels, _masks, spacings = heldout_batch(5, count)
    for i, (v, s) in enumerate(zip(volumes, spacings)):
        big = F.interpolate(torch.from_numpy(v)[None, None], size=(side, side, side // 2), mode="trilinear")[0, 0]
        data = big.numpy()[::-1, ::-1, :].copy()
        step = s * np.array([32 / side, 32 / side, 64 / side])
        affine = np.diag([-step[0], -step[1], step[2], 1.0])
        nib.save(nib.Nifti1Image(data.astype(np.float32), affine), str(folder / f"scan{i:03d}.nii.gz"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scans", type=int, default=24)
    ap.add_argument("--side", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        script = tmp / "monai_loop.py"
        script.write_text(MONAI_LOOP)
        print(f"| scans | run | wall s (best of {args.rounds}) | s/scan | peak RSS MB | x floor |")
        print("|---|---|---|---|---|---|")
        for count in (args.scans, 2 * args.scans):
            folder = tmp / f"scans{count}"
            make_scans(folder, count, args.side)
            runs = {
                "floor (read, transform, forward)": [sys.executable, str(script), str(folder), str(tmp / "f"),
                                                     "floor", str(ROOT)],
                "MONAI GradCAM loop": [sys.executable, str(script), str(folder), str(tmp / "m"), "cam", str(ROOT)],
                "camcli explain": [sys.executable, "-m", "camcli", "explain", str(folder), "--config",
                                   str(ROOT / "configs" / "demo-volume.toml"), "--method", "gradcam", "--quiet",
                                   "--overwrite", "--out", str(tmp / "c")],
            }
            best: dict[str, tuple[float, float]] = {}
            for _ in range(args.rounds):  # interleaved rounds: drift hits every run alike
                for name, cmd in runs.items():
                    wall, rss = timed(cmd)
                    if name not in best or wall < best[name][0]:
                        best[name] = (wall, rss)
            floor = best["floor (read, transform, forward)"][0]
            for name, (wall, rss) in best.items():
                print(f"| {count} | {name} | {wall:.1f} | {wall / count:.3f} | {rss:.0f} | {wall / floor:.2f} |",
                      flush=True)
        print(f"\n{args.side}x{args.side}x{args.side // 2} voxels per scan, demo volume classifier, Grad-CAM at "
              f"block3; {os.cpu_count()} CPU(s), torch {__import__('torch').__version__}")


if __name__ == "__main__":
    main()
