"""A HuggingFace ViT-B/16 against the same architecture from torchvision, and against
pytorch-grad-cam's HuggingFace recipe: start-up and Grad-CAM throughput, one process tree, the
same images.

The HuggingFace model is ``ViTForImageClassification(ViTConfig())`` (ViT-B/16 at 224 px, 1000
classes, seeded random weights: no download) saved with ``save_pretrained`` into a temporary
folder; torchvision's is ``vit_b_16`` with ``--weights none``. Each tool runs as its own process
on 1 image (start-up: imports, model loading, one map) and on all images; throughput is the
difference, (N - 1) / (t_N - t_1). pytorch-grad-cam's recipe is its tutorial's: a wrapper that
returns ``.logits``, ``reshape_transform`` for the tokens, the last block's ``layernorm_before``,
one image at a time, an overlay written with ``show_cam_on_image``.

    python benchmarks/hf_vit.py [--images sample_images]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PEER = r'''
import sys, glob, os
import cv2, numpy as np, torch
from PIL import Image
from transformers import AutoModelForImageClassification
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

folder, out, paths = sys.argv[1], sys.argv[2], sys.argv[3:]
model = AutoModelForImageClassification.from_pretrained(folder, local_files_only=True).eval()

class Logits(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m
    def forward(self, x):
        return self.m(x).logits

def reshape(t, h=14, w=14):
    return t[:, 1:, :].reshape(t.size(0), h, w, t.size(2)).permute(0, 3, 1, 2)

cam = GradCAM(model=Logits(model), target_layers=[model.vit.layers[-1].layernorm_before], reshape_transform=reshape)
for k, p in enumerate(paths):
    rgb = np.asarray(Image.open(p).convert("RGB").resize((224, 224)), dtype=np.float32) / 255
    x = torch.from_numpy((rgb - 0.5) / 0.5).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        target = int(Logits(model)(x).argmax())
    heat = cam(input_tensor=x, targets=[ClassifierOutputTarget(target)])[0]
    cv2.imwrite(os.path.join(out, f"{k}.png"), show_cam_on_image(rgb, heat, use_rgb=False))
'''


def timed(cmd: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", default=str(ROOT / "sample_images"))
    args = parser.parse_args()
    import torch
    import transformers
    images = sorted(p for p in Path(args.images).rglob("*") if p.suffix.lower() in (".jpg", ".png"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        torch.manual_seed(0)
        folder = tmp / "vit-b16"
        transformers.ViTForImageClassification(transformers.ViTConfig(num_labels=1000)).save_pretrained(folder)
        transformers.ViTImageProcessor(size={"height": 224, "width": 224}).save_pretrained(folder)
        one = tmp / "one"
        one.mkdir()
        (one / images[0].name).write_bytes(images[0].read_bytes())
        camcli = [sys.executable, "-m", "camcli", "explain", "--method", "gradcam", "--quiet", "--device", "cpu"]
        runs = {
            "camcli, HuggingFace folder": lambda src, out: camcli + [str(src), "--model", str(folder), "--out", str(out)],
            "camcli, torchvision vit_b_16": lambda src, out: camcli + [str(src), "--model", "vit_b_16", "--weights",
                                                                       "none", "--out", str(out)],
            "pytorch-grad-cam HF recipe": lambda src, out: [sys.executable, "-c", PEER, str(folder), str(out),
                                                            *map(str, images if src == args.images else images[:1])],
        }
        print(f"{len(images)} images, ViT-B/16 at 224 px, 2 CPU cores\n")
        print("| tool | start-up (1 image), s | all images, s | Grad-CAM images/s |")
        print("|---|---|---|---|")
        for k, (name, command) in enumerate(runs.items()):
            outs = [tmp / f"out{k}-{n}" for n in ("one", "all")]
            for o in outs:
                o.mkdir()
            t1 = timed(command(one, outs[0]))
            tn = timed(command(args.images, outs[1]))
            print(f"| {name} | {t1:.1f} | {tn:.1f} | {(len(images) - 1) / (tn - t1):.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
