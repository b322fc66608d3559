"""Train camcli's demo volume classifier (not run by CI).

    python scripts/train_volume.py            # about 12 minutes on 2 CPU cores
    python scripts/evaluate_volume.py --write # held-out figures, added to demo/volume.json

Writes ``demo/shapes_volume.safetensors`` (the state dict of ``demo/shapes_volume_net.py:build()``,
float32, well under 1 MB), ``demo/volume_labels.txt`` and ``demo/volume.json`` (how it was made).
Seeded. Scans come from ``scripts/volume_scenes.py`` (32^3 voxels) and are scaled per volume
exactly as camcli scales a scan without a CT window (``percentiles``: 0.5th to 99.5th to [0, 1]),
so the model sees what camcli will show it. Axis flips and permutations are free augmentations
(every class is symmetric under them); they also keep the model from leaning on the orientation.
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


def load_net():
    spec = importlib.util.spec_from_file_location("shapes_volume_net", ROOT / "demo" / "shapes_volume_net.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build()


def chunk(args):
    seed, count = args
    volumes, labels, _masks, _spacing = make_batch(seed, count)
    return np.stack([scaled(v, "percentiles") for v in volumes]).astype(np.float16), labels


def data(seed: int, count: int, workers: int = 2):
    parts = [(seed * 1000 + i, 50) for i in range(count // 50)]
    with Pool(workers) as pool:
        got = pool.map(chunk, parts)
    return (torch.from_numpy(np.concatenate([v for v, _ in got]))[:, None],
            torch.from_numpy(np.concatenate([l for _, l in got])).long())


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    perm = torch.randperm(3, generator=g).tolist()
    x = x.permute(0, 1, *(2 + p for p in perm))
    flips = [2 + a for a in range(3) if torch.rand(1, generator=g).item() < 0.5]
    return x.flip(flips) if flips else x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", type=int, default=2400)
    ap.add_argument("--val", type=int, default=300)
    ap.add_argument("--epochs", type=int, default=14)
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()
    torch.manual_seed(0)
    started = time.time()
    x_train, y_train = data(1, args.train)
    x_val, y_val = data(2, args.val)
    print(f"data: {len(x_train)} + {len(x_val)} scans in {time.time() - started:.0f} s", flush=True)
    model = load_net()
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
            xb = augment(x_train[idx].float(), g)
            loss = F.cross_entropy(model(xb), y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        model.eval()
        with torch.no_grad():
            pred = torch.cat([model(x_val[s:s + 32].float()).argmax(1) for s in range(0, len(x_val), 32)])
        acc = float((pred == y_val).float().mean())
        history.append({"epoch": epoch + 1, "loss": round(total / len(x_train), 4), "val_accuracy": round(acc, 4)})
        print(f"epoch {epoch + 1}: loss {total / len(x_train):.4f}, validation accuracy {acc:.3f} "
              f"({time.time() - started:.0f} s)", flush=True)
    demo = ROOT / "demo"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(demo / "shapes_volume.safetensors"))
    (demo / "volume_labels.txt").write_text("\n".join(CLASSES) + "\n")
    record = {"model": "demo/shapes_volume_net.py:build", "weights": "demo/shapes_volume.safetensors",
              "labels": CLASSES, "input": "1 x 32 x 32 x 32, scaled per volume by percentiles (0.5, 99.5)",
              "data": f"scripts/volume_scenes.py, seeds 1 (train, {len(x_train)}) and 2 (validation, {len(x_val)})",
              "training": {"epochs": args.epochs, "batch": args.batch, "optimizer": "AdamW, one-cycle, max lr 3e-3",
                           "augmentation": "axis permutations and flips", "history": history,
                           "seconds": round(time.time() - started)}}
    path = demo / "volume.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**old, **record}, indent=2) + "\n")
    print(f"wrote {demo / 'shapes_volume.safetensors'} in {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
