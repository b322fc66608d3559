"""Train camcli's demo model and write the sample images (not run by CI).

    python scripts/train_demo.py            # about 14 minutes on 2 CPU cores

Writes ``demo/shapes_resnet18.safetensors`` (fp16 state dict of a torchvision resnet18 whose
``fc`` has 6 outputs), ``demo/labels.txt``, ``demo/model.json`` (how it was made and what it
scored) and ``sample_images/`` with ``boxes.csv``. Everything is seeded; retrain only when the
model must change, because every retrain adds a 23 MB blob to the repository's history.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo_scenes import CLASSES, make_scene  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
INPUT = 192


def random_size(rng: np.random.Generator) -> tuple[int, int]:
    return int(rng.integers(200, 420)), int(rng.integers(200, 420))


def build_set(seed: int, n: int, pair_share: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Scenes squashed to INPUT x INPUT (as camcli feeds them) and soft class targets."""
    rng = np.random.default_rng(seed)
    images = torch.empty(n, INPUT, INPUT, 3, dtype=torch.uint8)
    targets = torch.zeros(n, len(CLASSES))
    for i in range(n):
        k = 2 if rng.random() < pair_share else 1
        img, objects = make_scene(rng, random_size(rng), k)
        images[i] = torch.from_numpy(cv2.resize(img, (INPUT, INPUT), interpolation=cv2.INTER_AREA))
        for o in objects:
            targets[i, CLASSES.index(o.label)] = 1.0 / k
    return images, targets


def to_input(batch: torch.Tensor, size: int) -> torch.Tensor:
    x = batch.permute(0, 3, 1, 2).float() / 255.0
    if size != INPUT:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return (x - MEAN) / STD


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", type=int, default=12000, help="training scenes")
    ap.add_argument("--steps-small", type=int, default=420, help="steps at 128 px")
    ap.add_argument("--steps-full", type=int, default=190, help="steps at 192 px")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--heldout", type=int, default=600)
    args = ap.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(2)
    t0 = time.time()
    x_train, y_train = build_set(seed=1, n=args.train, pair_share=0.25)
    print(f"generated {args.train} training scenes in {time.time() - t0:.0f}s", flush=True)

    model = torchvision.models.resnet18(weights=None, num_classes=len(CLASSES))
    total = args.steps_small + args.steps_full
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=total, pct_start=0.15)
    gen = torch.Generator().manual_seed(0)
    model.train()
    t1 = time.time()
    for step in range(total):
        size = 128 if step < args.steps_small else INPUT
        idx = torch.randint(0, args.train, (args.batch,), generator=gen)
        x = to_input(x_train[idx], size)
        if step % 2:
            x = x.flip(3)
        logp = F.log_softmax(model(x), 1)
        loss = -(y_train[idx] * logp).sum(1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0 or step == total - 1:
            print(f"step {step:4d}/{total} size {size} loss {loss.item():.3f} "
                  f"{(step + 1) * args.batch / (time.time() - t1):.1f} img/s", flush=True)
    train_s = time.time() - t1

    model.eval()
    x_val, y_val = build_set(seed=2, n=args.heldout, pair_share=0.0)
    with torch.inference_mode():
        pred = torch.cat([model(to_input(x_val[i:i + 100], INPUT)).argmax(1) for i in range(0, args.heldout, 100)])
    acc = (pred == y_val.argmax(1)).float().mean().item()
    print(f"held-out accuracy on {args.heldout} fresh scenes: {acc:.4f}", flush=True)

    demo = ROOT / "demo"
    demo.mkdir(exist_ok=True)
    state = {k: v.detach().half().contiguous() if v.is_floating_point() else v.contiguous()
             for k, v in model.state_dict().items()}
    save_file(state, str(demo / "shapes_resnet18.safetensors"))
    (demo / "labels.txt").write_text("\n".join(CLASSES) + "\n")
    (demo / "model.json").write_text(json.dumps({
        "architecture": "resnet18", "num_classes": len(CLASSES), "input_size": INPUT,
        "mean": MEAN.flatten().tolist(), "std": STD.flatten().tolist(), "weights_dtype": "float16",
        "train_scenes": args.train, "steps": {"128px": args.steps_small, f"{INPUT}px": args.steps_full},
        "batch": args.batch, "train_seconds": round(train_s), "heldout_scenes": args.heldout,
        "heldout_accuracy": round(acc, 4), "torch": torch.__version__,
    }, indent=2) + "\n")
    write_samples(ROOT / "sample_images")
    print(f"done in {time.time() - t0:.0f}s", flush=True)


def write_samples(folder: Path, n_single: int = 16, n_pairs: int = 8) -> None:
    """Sample scenes at their own sizes (not squashed), JPEG singles and PNG pairs, with boxes."""
    rng = np.random.default_rng(3)
    rows = []
    for sub, count, k, ext in (("single", n_single, 1, ".jpg"), ("pairs", n_pairs, 2, ".png")):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            img, objects = make_scene(rng, random_size(rng), k)
            name = f"{sub}/{'_'.join(o.label for o in objects)}_{i:02d}{ext}"
            params = [cv2.IMWRITE_JPEG_QUALITY, 92] if ext == ".jpg" else []
            cv2.imwrite(str(folder / name), img[..., ::-1], params)
            rows += [[name, *o.box, o.label] for o in objects]
    with open(folder / "boxes.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "x0", "y0", "x1", "y1", "label"])
        w.writerows(rows)


if __name__ == "__main__":
    main()
