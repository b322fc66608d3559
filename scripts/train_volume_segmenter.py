"""Train camcli's demo 3D segmenter (not run by CI).

    python scripts/train_volume_segmenter.py          # about 15 minutes on 2 CPU cores
    python scripts/evaluate_volume_segmenter.py --write # held-out figures, added to demo/volume_segmenter.json

Writes ``demo/shapes_volume_segmenter.safetensors`` (the state dict of
``demo/shapes_volume_segnet.py:build()``, float32), ``demo/volume_segment_labels.txt`` and
``demo/volume_segmenter.json`` (how it was made). Seeded. Scans and their masks come from
``scripts/volume_scenes.py`` (the classifier's training generator: one sphere, cube or torus per
scan), labelled 0 outside the shape and 1 + its class inside, and scaled per volume as camcli
scales a scan without a CT window. Axis flips and permutations are free augmentations (applied
to scan and labels alike).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
from camcli.engine.intensity import scaled  # noqa: E402
from volume_scenes import CLASSES, make_batch  # noqa: E402

LABELS = ["background", *CLASSES]


def load_net():
    spec = importlib.util.spec_from_file_location("shapes_volume_segnet", ROOT / "demo" / "shapes_volume_segnet.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build()


def chunk(args):
    seed, count = args
    volumes, labels, masks, _spacing = make_batch(seed, count)
    target = np.where(masks, labels[:, None, None, None] + 1, 0).astype(np.int64)
    return np.stack([scaled(v, "percentiles") for v in volumes]).astype(np.float16), target.astype(np.uint8)


def data(seed: int, count: int, workers: int = 2):
    parts = [(seed * 1000 + i, 50) for i in range(count // 50)]
    with Pool(workers) as pool:
        got = pool.map(chunk, parts)
    return (torch.from_numpy(np.concatenate([v for v, _ in got]))[:, None],
            torch.from_numpy(np.concatenate([t for _, t in got])).long())


def augment(x: torch.Tensor, y: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    perm = torch.randperm(3, generator=g).tolist()
    x, y = x.permute(0, 1, *(2 + p for p in perm)), y.permute(0, *(1 + p for p in perm))
    flips = [a for a in range(3) if torch.rand(1, generator=g).item() < 0.5]
    if flips:
        x, y = x.flip([2 + a for a in flips]), y.flip([1 + a for a in flips])
    return x, y


def mean_iou(pred: torch.Tensor, truth: torch.Tensor, classes: int) -> float:
    ious = []
    for c in range(1, classes):
        union = ((pred == c) | (truth == c)).sum()
        if union:
            ious.append(float(((pred == c) & (truth == c)).sum()) / float(union))
    return float(np.mean(ious)) if ious else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", type=int, default=1800)
    ap.add_argument("--val", type=int, default=150)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    torch.manual_seed(0)
    started = time.time()
    x_train, y_train = data(11, args.train)
    x_val, y_val = data(12, args.val)
    print(f"data: {len(x_train)} + {len(x_val)} scans in {time.time() - started:.0f} s", flush=True)
    model = load_net()
    # the shapes are a few percent of each scan: the background's weight is lowered so they count
    weight = torch.tensor([0.2, 1.0, 1.0, 1.0])
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    steps = args.epochs * (len(x_train) // args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    g = torch.Generator().manual_seed(0)
    history = []
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(x_train), generator=g)
        total = 0.0
        for s in range(0, len(order) - args.batch + 1, args.batch):
            idx = order[s:s + args.batch]
            xb, yb = augment(x_train[idx].float(), y_train[idx], g)
            loss = F.cross_entropy(model(xb), yb, weight=weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        model.eval()
        with torch.no_grad():
            pred = torch.cat([model(x_val[s:s + 16].float()).argmax(1) for s in range(0, len(x_val), 16)])
        miou = mean_iou(pred, y_val, len(LABELS))
        history.append({"epoch": epoch + 1, "loss": round(total / len(x_train), 4), "val_miou": round(miou, 4)})
        print(f"epoch {epoch + 1}: loss {total / len(x_train):.4f}, validation mIoU {miou:.3f} "
              f"({time.time() - started:.0f} s)", flush=True)
    demo = ROOT / "demo"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(demo / "shapes_volume_segmenter.safetensors"))
    (demo / "volume_segment_labels.txt").write_text("\n".join(LABELS) + "\n")
    record = {"model": "demo/shapes_volume_segnet.py:build", "weights": "demo/shapes_volume_segmenter.safetensors",
              "labels": LABELS, "input": "1 x 32 x 32 x 32, scaled per volume by percentiles (0.5, 99.5)",
              "data": f"scripts/volume_scenes.py, seeds 11 (train, {len(x_train)}) and 12 (validation, {len(x_val)})",
              "training": {"epochs": args.epochs, "batch": args.batch, "optimizer": "AdamW, one-cycle, max lr 3e-3",
                           "loss": "cross-entropy, background weighted 0.2",
                           "augmentation": "axis permutations and flips", "history": history,
                           "seconds": round(time.time() - started)}}
    path = demo / "volume_segmenter.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**old, **record}, indent=2) + "\n")
    print(f"wrote {demo / 'shapes_volume_segmenter.safetensors'} in {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
