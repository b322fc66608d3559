"""Train camcli's demo detector (not run by CI).

    python scripts/train_detector.py     # about 35 minutes on 2 CPU cores

Writes ``demo/shapes_fcos.safetensors`` (fp16 state dict of ``demo/shapes_detector.py:build()``),
``demo/detector_labels.txt`` and ``demo/detector.json`` (how it was made). Seeded; retrain only
when the model must change (each retrain adds a ~9 MB blob to the history).

Recipe. Scenes of one to three objects of distinct classes among distractors come from
``demo_scenes.py`` at their own sizes (the training generator; the held-out figures come from
``heldout_scenes.py``). The trunk starts from the demo classifier's ResNet-18 (conv1 to layer3),
which already tells these shapes apart; the pyramid and FCOS's head start from torchvision's
initialisation. AdamW with a linear warm-up and a cosine decay; horizontal flips (every class is
symmetric under them).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "demo"))
from demo_scenes import make_scene, scene_size  # noqa: E402
from shapes_detector import CLASSES, build  # noqa: E402


def batch(rng: np.random.Generator, n: int):
    images, targets = [], []
    for _ in range(n):
        img, objects = make_scene(rng, scene_size(rng), n_objects=int(rng.choice([1, 2, 2, 3])))
        boxes = torch.tensor([o.box for o in objects], dtype=torch.float32)
        x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255)
        if rng.random() < 0.5:
            x = x.flip(-1)
            w = x.shape[-1]
            boxes = torch.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], 1)
        images.append(x)
        targets.append({"boxes": boxes, "labels": torch.tensor([CLASSES.index(o.label) for o in objects])})
    return images, targets


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=6)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    model = build()
    trunk = {k: v.float() for k, v in load_file(str(ROOT / "demo" / "shapes_resnet18.safetensors")).items()
             if not k.startswith(("fc.", "layer4."))}
    missing, _unexpected = model.backbone.body.load_state_dict(trunk, strict=False)
    assert not missing, missing
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    warm = 50

    def lr_at(step: int) -> float:
        if step < warm:
            return args.lr * (step + 1) / warm
        return args.lr * 0.5 * (1 + np.cos(np.pi * (step - warm) / max(1, args.steps - warm)))

    started = time.time()
    running = None
    for step in range(args.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        images, targets = batch(rng, args.batch)
        losses = model(images, targets)
        loss = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        value = float(loss.detach())
        running = value if running is None else 0.95 * running + 0.05 * value
        if step % 50 == 0 or step == args.steps - 1:
            parts = ", ".join(f"{k} {float(v.detach()):.3f}" for k, v in losses.items())
            print(f"step {step}/{args.steps} loss {running:.3f} ({parts}) lr {lr_at(step):.2e} "
                  f"{time.time() - started:.0f} s", flush=True)
    seconds = time.time() - started
    model.eval()
    state = {k: v.detach().half().contiguous() if v.is_floating_point() else v.contiguous()
             for k, v in model.state_dict().items()}
    save_file(state, str(ROOT / "demo" / "shapes_fcos.safetensors"))
    (ROOT / "demo" / "detector_labels.txt").write_text("\n".join(CLASSES) + "\n", encoding="utf-8")
    info = {"factory": "demo/shapes_detector.py:build", "architecture": "FCOS, ResNet-18 trunk to layer3, FPN 128",
            "classes": list(CLASSES), "weights_dtype": "float16", "steps": args.steps, "batch": args.batch,
            "lr": args.lr, "seed": args.seed, "train_seconds": round(seconds), "train_cpu_cores": torch.get_num_threads(),
            "final_loss": round(running, 4), "torch": torch.__version__}
    (ROOT / "demo" / "detector.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    print(f"wrote demo/shapes_fcos.safetensors in {seconds:.0f} s")


if __name__ == "__main__":
    main()
