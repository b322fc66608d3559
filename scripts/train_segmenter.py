"""Train camcli's demo segmenter (not run by CI).

    python scripts/train_segmenter.py     # about 21 minutes on 2 CPU cores

Writes ``demo/shapes_lraspp.safetensors`` (fp16 state dict of ``demo/shapes_segmenter.py:build()``),
``demo/segmenter_labels.txt`` and ``demo/segmenter.json`` (how it was made). Seeded; retrain only
when the model must change (each retrain adds a ~6 MB blob to the history).

Recipe. Scenes of one to three objects of distinct classes among distractors come from
``demo_scenes.py`` (the training generator; the held-out figures come from ``heldout_scenes.py``),
squeezed to the 224 px input as camcli squeezes them; their label masks come from the generator
(each object's own pixels; distractors are background). The trunk starts from the demo
classifier's ResNet-18 (conv1 to layer3); the head from torchvision's initialisation. Cross-entropy
over pixels, AdamW with a linear warm-up and a cosine decay, horizontal flips.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "demo"))
sys.path.insert(0, str(ROOT))
from demo_scenes import make_scene, scene_size  # noqa: E402
from shapes_segmenter import CLASSES, build  # noqa: E402

from camcli.engine.framing import resize_for_model  # noqa: E402

INPUT = 224
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def label_mask(shape: tuple[int, int], objects) -> np.ndarray:
    """(h, w) uint8 class indices of a scene: 0 background, else the object's class."""
    out = np.zeros(shape, np.uint8)
    for o in objects:
        out[o.mask] = CLASSES.index(o.label)
    return out


def batch(rng: np.random.Generator, n: int):
    images, masks = [], []
    for _ in range(n):
        img, objects = make_scene(rng, scene_size(rng), n_objects=int(rng.choice([1, 2, 2, 3])))
        mask = label_mask(img.shape[:2], objects)
        images.append(resize_for_model(img, (INPUT, INPUT)))
        masks.append(cv2.resize(mask, (INPUT, INPUT), interpolation=cv2.INTER_NEAREST))
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255)
    y = torch.from_numpy(np.stack(masks)).long()
    flip = torch.from_numpy(rng.random(n) < 0.5)
    x[flip], y[flip] = x[flip].flip(-1), y[flip].flip(-1)
    return ((x - MEAN) / STD).contiguous(memory_format=torch.channels_last), y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    model = build()
    trunk = {k: v.float() for k, v in load_file(str(ROOT / "demo" / "shapes_resnet18.safetensors")).items()
             if not k.startswith(("fc.", "layer4."))}
    missing, _unexpected = model.backbone.load_state_dict(trunk, strict=False)
    assert not missing, missing
    model.train().to(memory_format=torch.channels_last)
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
        x, y = batch(rng, args.batch)
        loss = F.cross_entropy(model(x)["out"], y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        value = float(loss.detach())
        running = value if running is None else 0.95 * running + 0.05 * value
        if step % 50 == 0 or step == args.steps - 1:
            print(f"step {step}/{args.steps} loss {running:.4f} lr {lr_at(step):.2e} {time.time() - started:.0f} s",
                  flush=True)
    seconds = time.time() - started
    model.eval()
    state = {k: v.detach().half().contiguous() if v.is_floating_point() else v.contiguous()
             for k, v in model.state_dict().items()}
    save_file(state, str(ROOT / "demo" / "shapes_lraspp.safetensors"))
    (ROOT / "demo" / "segmenter_labels.txt").write_text("\n".join(CLASSES) + "\n", encoding="utf-8")
    info = {"factory": "demo/shapes_segmenter.py:build",
            "architecture": "LR-ASPP, ResNet-18 trunk to layer3 (low: layer2)", "classes": list(CLASSES),
            "input": INPUT, "weights_dtype": "float16", "steps": args.steps, "batch": args.batch, "lr": args.lr,
            "seed": args.seed, "train_seconds": round(seconds), "train_cpu_cores": torch.get_num_threads(),
            "final_loss": round(running, 4), "torch": torch.__version__}
    (ROOT / "demo" / "segmenter.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    print(f"wrote demo/shapes_lraspp.safetensors in {seconds:.0f} s")


if __name__ == "__main__":
    main()
