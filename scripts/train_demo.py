"""Train camcli's demo model and write the sample images (not run by CI).

    python scripts/train_demo.py            # 63 minutes on 2 CPU cores (57 of them training)
    python scripts/evaluate_demo.py --write # the held-out figures, added to demo/model.json

Writes ``demo/shapes_resnet18.safetensors`` (fp16 state dict of a torchvision resnet18 whose
``fc`` has 6 outputs), ``demo/labels.txt`` and ``demo/model.json`` (how it was made). Everything
is seeded; retrain only when the model must change, because every retrain adds a 22 MB blob to
the repository's history. ``sample_images/`` is a fixed set of 24 scenes with ``boxes.csv``,
drawn by the first demo generator and kept as they are: the README's pictures and CI gate, and
the tests' figures, are measured on them.

Recipe. Scenes come from ``demo_scenes.py`` at their own sizes and aspect ratios (up to 4:1)
and are squeezed to the 224 px input exactly as camcli squeezes them (``resize_for_model``), so
the model sees what it will be shown; 224 px gives 7x7 maps at ``layer4[1]``. An ImageNet-style
resnet18 learns shapes from scratch slowly, and changing the objects' pixel size between phases
undoes what was learnt, so phase 1 trains on 112 px crops that contain one whole object at the
final pixel scale (a quarter of the cost), and phase 2 on whole scenes, two-object scenes
included (soft 0.5/0.5 targets, so both objects carry evidence). Flips and quarter turns are
free augmentations: every class is symmetric under them. ``channels_last`` trains 1.4x faster
on this CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo_scenes import CLASSES, make_scene, scene_size  # noqa: E402

from camcli.engine.framing import resize_for_model  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
INPUT = 224
CROP = 112
CHUNK = 500


def _chunk(args: tuple[int, int, int, float]):
    """Scenes ``start`` to ``start + n`` of the set, squeezed to INPUT x INPUT, with soft targets."""
    seed, start, n, pair_share = args
    rng = np.random.default_rng([seed, start])
    images = np.empty((n, INPUT, INPUT, 3), np.uint8)
    targets = np.zeros((n, len(CLASSES)), np.float32)
    boxes = np.zeros((n, 4), np.int64)
    single = np.zeros(n, bool)
    for i in range(n):
        k = 2 if rng.random() < pair_share else 1
        w, h = scene_size(rng)
        img, objects = make_scene(rng, (w, h), k)
        images[i] = resize_for_model(img, (INPUT, INPUT))
        for o in objects:
            targets[i, CLASSES.index(o.label)] = 1.0 / k
        x0, y0, x1, y1 = objects[0].box
        boxes[i] = [x0 * INPUT // w, y0 * INPUT // h, -(-x1 * INPUT // w), -(-y1 * INPUT // h)]
        single[i] = k == 1
    return images, targets, boxes, single


def build_set(seed: int, n: int, pair_share: float):
    """The training set, made in chunks by two processes (the same scenes whatever the count)."""
    jobs = [(seed, start, min(CHUNK, n - start), pair_share) for start in range(0, n, CHUNK)]
    with Pool(2) as pool:
        parts = pool.map(_chunk, jobs)
    return tuple(torch.from_numpy(np.concatenate(p)) for p in zip(*parts))


def normalise(x: torch.Tensor) -> torch.Tensor:
    x = x.permute(0, 3, 1, 2).float() / 255.0
    return ((x - MEAN) / STD).contiguous(memory_format=torch.channels_last)


def object_crops(images, boxes, idx, gen) -> torch.Tensor:
    """CROP x CROP windows that contain the whole first object."""
    out = torch.empty(len(idx), CROP, CROP, 3, dtype=torch.uint8)
    for j, i in enumerate(idx.tolist()):
        x0, y0, x1, y1 = boxes[i].tolist()
        lo_x, hi_x = max(0, x1 - CROP), min(x0, INPUT - CROP)
        lo_y, hi_y = max(0, y1 - CROP), min(y0, INPUT - CROP)
        cx = int(torch.randint(lo_x, hi_x + 1, (1,), generator=gen))
        cy = int(torch.randint(lo_y, hi_y + 1, (1,), generator=gen))
        out[j] = images[i, cy:cy + CROP, cx:cx + CROP]
    return out


def turn(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One of the eight flips and quarter turns, for the whole batch."""
    k = int(torch.randint(0, 8, (1,), generator=gen))
    x = x.flip(3) if k & 1 else x
    x = x.flip(2) if k & 2 else x
    return x.transpose(2, 3) if k & 4 else x


def accuracy(model, images: torch.Tensor, targets: torch.Tensor) -> float:
    with torch.inference_mode():
        pred = torch.cat([model(normalise(images[i:i + 100])).argmax(1) for i in range(0, len(images), 100)])
    return (pred == targets.argmax(1)).float().mean().item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", type=int, default=36000, help="training scenes")
    ap.add_argument("--crop-steps", type=int, default=1600, help="phase 1: steps on object crops")
    ap.add_argument("--scene-steps", type=int, default=1100, help="phase 2: steps on whole scenes")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--check", type=int, default=500, help="fresh scenes from the training generator to check on")
    args = ap.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(2)
    t0 = time.time()
    x_train, y_train, b_train, single = build_set(seed=1, n=args.train, pair_share=0.3)
    fits = single & ((b_train[:, 2] - b_train[:, 0]) <= CROP) & ((b_train[:, 3] - b_train[:, 1]) <= CROP)
    croppable = fits.nonzero().squeeze(1)
    x_check, y_check, _, _ = build_set(seed=2, n=args.check, pair_share=0.0)
    print(f"generated {args.train} training scenes ({len(croppable)} with an object that fits a crop) "
          f"in {time.time() - t0:.0f}s", flush=True)

    model = torchvision.models.resnet18(weights=None, num_classes=len(CLASSES)).to(memory_format=torch.channels_last)
    total = args.crop_steps + args.scene_steps
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=total, pct_start=0.05,
                                                div_factor=10, final_div_factor=20)
    gen = torch.Generator().manual_seed(0)
    model.train()
    t1 = time.time()
    for step in range(total):
        if step < args.crop_steps:
            idx = croppable[torch.randint(0, len(croppable), (args.batch,), generator=gen)]
            x = normalise(object_crops(x_train, b_train, idx, gen))
        else:
            idx = torch.randint(0, args.train, (args.batch,), generator=gen)
            x = normalise(x_train[idx])
        logp = F.log_softmax(model(turn(x, gen)), 1)
        loss = -(y_train[idx] * logp).sum(1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0 or step == total - 1:
            print(f"step {step:4d}/{total} {'crops' if step < args.crop_steps else 'scenes'} loss {loss.item():.3f} "
                  f"{(step + 1) * args.batch / (time.time() - t1):.1f} img/s", flush=True)
        if step + 1 in (args.crop_steps, total):
            model.eval()
            print(f"  accuracy on {args.check} fresh training-generator scenes: "
                  f"{accuracy(model, x_check, y_check):.4f}", flush=True)
            model.train()
    train_s = time.time() - t1

    model.eval()
    check = accuracy(model, x_check, y_check)
    demo = ROOT / "demo"
    demo.mkdir(exist_ok=True)
    model = model.to(memory_format=torch.contiguous_format)
    state = {k: v.detach().half().contiguous() if v.is_floating_point() else v.contiguous()
             for k, v in model.state_dict().items()}
    save_file(state, str(demo / "shapes_resnet18.safetensors"))
    (demo / "labels.txt").write_text("\n".join(CLASSES) + "\n")
    (demo / "model.json").write_text(json.dumps({
        "architecture": "resnet18", "num_classes": len(CLASSES), "classes": list(CLASSES), "input_size": INPUT,
        "mean": MEAN.flatten().tolist(), "std": STD.flatten().tolist(), "weights_dtype": "float16",
        "train_scenes": args.train, "pair_share": 0.3, "crop_steps": args.crop_steps, "crop_size": CROP,
        "scene_steps": args.scene_steps, "batch": args.batch, "train_seconds": round(train_s),
        "train_cpu_cores": torch.get_num_threads(), "training_generator_check": {
            "scenes": args.check, "single_object_accuracy": round(check, 4)},
        "torch": torch.__version__,
    }, indent=2) + "\n")
    print(f"done in {time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
