"""Train camcli's demo video classifier (not run by CI).

    python scripts/train_video.py             # about 10 minutes on 2 CPU cores
    python scripts/evaluate_video.py --write  # held-out figures, added to demo/video.json

Writes ``demo/shapes_video.safetensors`` (the state dict of ``demo/shapes_video_net.py:build()``,
float32, under 1 MB), ``demo/video_labels.txt`` and ``demo/video.json`` (how it was made).
Seeded. Clips come from ``scripts/video_scenes.py`` at the model's input size, scaled as
``configs/demo-video.toml`` tells camcli to scale them (RGB / 255, mean 0.5, std 0.25). Mirror
images and clips played backwards are free augmentations: the moving shape stays the one that moves.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from video_scenes import CLASSES, FRAMES, SIZE, make_batch  # noqa: E402

MEAN, STD = 0.5, 0.25


def load_net():
    spec = importlib.util.spec_from_file_location("shapes_video_net", ROOT / "demo" / "shapes_video_net.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build()


def as_input(frames: np.ndarray) -> torch.Tensor:
    """(N, T, H, W, 3) uint8 -> (N, 3, T, H, W), scaled as camcli scales them with the demo's config."""
    return (torch.from_numpy(frames).permute(0, 4, 1, 2, 3).float() / 255 - MEAN) / STD


def accuracy(net, x: np.ndarray, y: np.ndarray) -> float:
    net.eval()
    right = 0
    with torch.inference_mode():
        for k in range(0, len(x), 50):
            right += int((net(as_input(x[k:k + 50])).argmax(1).numpy() == y[k:k + 50]).sum())
    return right / len(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--out", type=Path, default=ROOT / "demo")
    args = parser.parse_args()
    torch.manual_seed(0)
    x, y = make_batch(1, args.train)
    vx, vy = make_batch(2, 300)
    net = load_net()
    steps = args.epochs * (len(x) // 16)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    rng = np.random.default_rng(0)
    history = []
    started = time.time()
    for epoch in range(args.epochs):
        net.train()
        order = rng.permutation(len(x))
        total = 0.0
        for k in range(0, len(order) - 15, 16):
            idx = order[k:k + 16]
            batch = as_input(x[idx])
            if rng.random() < 0.5:
                batch = batch.flip(4)
            if rng.random() < 0.5:
                batch = batch.flip(2)
            loss = F.cross_entropy(net(batch), torch.from_numpy(y[idx]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss) * len(idx)
        history.append({"epoch": epoch + 1, "loss": round(total / len(order), 4), "val_accuracy": round(accuracy(net, vx, vy), 4)})
        print(history[-1], f"{time.time() - started:.0f} s", flush=True)
    net.eval()
    args.out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(args.out / "shapes_video.safetensors"))
    (args.out / "video_labels.txt").write_text("\n".join(CLASSES) + "\n")
    record = {"model": "demo/shapes_video_net.py:build", "weights": "demo/shapes_video.safetensors", "labels": CLASSES,
              "input": f"3 x {FRAMES} x {SIZE} x {SIZE}, RGB / 255, mean {MEAN}, std {STD}",
              "data": f"scripts/video_scenes.py, seeds 1 (train, {args.train}) and 2 (validation, 300)",
              "training": {"epochs": args.epochs, "batch": 16, "optimizer": "AdamW, one-cycle, max lr 3e-3",
                           "augmentation": "mirror images, clips played backwards", "history": history,
                           "seconds": round(time.time() - started)}}
    path = args.out / "video.json"
    if path.exists():  # keep the held-out figures the evaluation script wrote
        record = {**json.loads(path.read_text()), **record}
    path.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
