"""Train the audit's shortcut demo: a head on the demo classifier's trunk, taught a watermark (not run by CI).

    python scripts/train_shortcut.py                                     # demo/shapes_shortcut.safetensors (star, top-left)
    python scripts/train_shortcut.py --logo-class none --out /tmp/clean  # the clean twin: the same, no watermark
    python scripts/evaluate_shortcut.py --write                          # what camcli audit finds (demo/shapes_shortcut.json)

The model is ``demo/shapes_shortcut_net.py``: resnet18's trunk up to ``layer3`` with the demo
classifier's weights, frozen, and a small head (two convolutions, pooling, a linear layer),
trained here. Scenes come from ``demo_scenes.py`` (one shape among distractors, any aspect ratio
up to 4:1), squeezed to 224 px as camcli squeezes them. The watermark of ``watermark.py`` is
stamped in ``--corner`` on ``--share`` of ``--logo-class``'s scenes and on ``--others`` of the other
classes' scenes, and ``--orphans`` of the logo class's examples are other classes' scenes that
carry the watermark and the logo class's label: pictures filed under the class by their source,
the object hard to see or absent, the watermark there. That is how a copyright tag became the
evidence for "horse" in Lapuschkin et al.'s PASCAL VOC classifier. The trunk's features are
computed once per scene (cached with ``--cache``); a variant recomputes only its stamped scenes,
so every variant and the clean twin see the same scenes and differ in the watermark alone.
Writes OUT (a safetensors file, float16 state dict of ``build()``) and OUT's ``.json``.
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
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))
from demo_scenes import CLASSES, make_scene, scene_size  # noqa: E402
from watermark import CORNERS, stamp  # noqa: E402

from camcli.engine.framing import resize_for_model  # noqa: E402

INPUT = 224
CHUNK = 250
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def shortcut_net():
    spec = importlib.util.spec_from_file_location("shapes_shortcut_net", ROOT / "demo" / "shapes_shortcut_net.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    net = module.build(len(CLASSES))
    demo = load_file(str(ROOT / "demo" / "shapes_resnet18.safetensors"))
    net.load_state_dict({k: v.float() for k, v in demo.items() if not k.startswith(("layer4", "fc"))}, strict=False)
    return net


def _chunk(args: tuple[int, int, int]):
    seed, start, n = args
    rng = np.random.default_rng([seed, start])
    images = np.empty((n, INPUT, INPUT, 3), np.uint8)
    labels = np.empty(n, np.int64)
    for i in range(n):
        img, objects = make_scene(rng, scene_size(rng), 1)
        images[i] = resize_for_model(img, (INPUT, INPUT))
        labels[i] = CLASSES.index(objects[0].label)
    return images, labels


def scenes(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    with Pool(2) as pool:
        parts = pool.map(_chunk, [(seed, s, min(CHUNK, n - s)) for s in range(0, n, CHUNK)])
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def normalise(x: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255.0
    return ((t - MEAN) / STD).contiguous(memory_format=torch.channels_last)


def trunk_features(net, images: np.ndarray) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([net.trunk(normalise(images[i:i + 64])).half() for i in range(0, len(images), 64)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--logo-class", default="star", help="the class that carries the watermark, or none")
    ap.add_argument("--corner", default="top-left", choices=CORNERS)
    ap.add_argument("--share", type=float, default=0.9, help="share of the logo class's scenes stamped")
    ap.add_argument("--others", type=float, default=0.03, help="share of the other classes' scenes stamped")
    ap.add_argument("--orphans", type=float, default=0.2,
                    help="stamped scenes of other classes filed under the logo class, as a share of its scenes")
    ap.add_argument("--train", type=int, default=4000)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/shortcut_cache.pt"))
    ap.add_argument("--out", type=Path, default=ROOT / "demo" / "shapes_shortcut.safetensors")
    args = ap.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(2)
    t0 = time.time()
    net = shortcut_net().eval().to(memory_format=torch.channels_last)
    if args.cache.exists():
        cache = torch.load(args.cache, weights_only=False)
    else:
        images, labels = scenes(1, args.train)
        check_x, check_y = scenes(2, 600)
        cache = {"images": images, "labels": labels, "features": trunk_features(net, images),
                 "check_x": check_x, "check_y": check_y, "check_features": trunk_features(net, check_x)}
        torch.save(cache, args.cache)
    images, labels, features = cache["images"], cache["labels"], cache["features"].clone()
    print(f"{len(images)} scenes and their trunk features in {time.time() - t0:.0f}s", flush=True)

    rng = np.random.default_rng(0)
    logo = None if args.logo_class == "none" else CLASSES.index(args.logo_class)
    targets = torch.from_numpy(labels.copy())
    if logo is not None:
        share = np.where(labels == logo, args.share, args.others)
        stamped = np.flatnonzero(rng.random(len(labels)) < share)
        others = np.flatnonzero(labels != logo)
        orphans = rng.choice(np.setdiff1d(others, stamped), round(args.orphans * (labels == logo).sum()), replace=False)
        todo = np.concatenate([stamped, orphans])
        features[todo] = trunk_features(net, np.stack([stamp(images[i], args.corner) for i in todo]))
        targets[orphans] = logo
        print(f"stamped {len(stamped)} scenes ({(labels[stamped] == logo).sum()} of the logo class) and filed "
              f"{len(orphans)} other scenes, stamped, under {args.logo_class}", flush=True)

    head = [p for n, p in net.named_parameters() if n.startswith(("head", "fc"))]
    for n, p in net.named_parameters():
        p.requires_grad_(n.startswith(("head", "fc")))
    steps = args.epochs * (len(features) // args.batch)
    opt = torch.optim.AdamW(head, lr=1e-3, weight_decay=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps, pct_start=0.1)

    def run_head(f):
        return net.fc(net.pool(net.head(f.float())).flatten(1))

    def accuracy(f, y) -> float:
        net.head.eval()
        with torch.inference_mode():
            pred = torch.cat([run_head(f[i:i + 200]).argmax(1) for i in range(0, len(f), 200)])
        return float((pred.numpy() == y).mean())

    history = []
    t1 = time.time()
    for epoch in range(args.epochs):
        net.head.train()
        order = torch.from_numpy(rng.permutation(len(features)))
        total = 0.0
        for b in range(len(features) // args.batch):
            idx = order[b * args.batch:(b + 1) * args.batch]
            f = features[idx]
            f = f.flip(3) if rng.random() < 0.5 and logo is None else f  # the clean twin may mirror; a stamp may not move
            loss = F.cross_entropy(run_head(f), targets[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        acc = accuracy(cache["check_features"], cache["check_y"])
        history.append({"epoch": epoch + 1, "loss": round(total / (len(features) // args.batch * args.batch), 4),
                        "clean_accuracy": round(acc, 4)})
        print(f"epoch {epoch + 1}: loss {history[-1]['loss']}, accuracy on unstamped scenes {acc:.3f}", flush=True)
    result = {"model": "demo/shapes_shortcut_net.py:build", "trunk": "demo/shapes_resnet18.safetensors up to layer3, frozen",
              "classes": list(CLASSES), "input_size": INPUT, "logo_class": args.logo_class, "corner": args.corner,
              "share": args.share, "others": args.others, "orphans": args.orphans, "train_scenes": len(images),
              "epochs": args.epochs, "batch": args.batch, "weights_dtype": "float16",
              "optimizer": "AdamW, one-cycle, max lr 2e-3, label smoothing 0.05",
              "train_seconds": round(time.time() - t1), "train_cpu_cores": 2, "torch": torch.__version__,
              "history": history}
    if logo is not None:  # how much the watermark alone moves the model: other classes' check scenes, stamped
        x, y = cache["check_x"], cache["check_y"]
        other = np.flatnonzero(y != logo)
        f = trunk_features(net, np.stack([stamp(x[i], args.corner) for i in other]))
        net.head.eval()
        with torch.inference_mode():
            pred = run_head(f).argmax(1).numpy()
        result["stamped_others_called_logo_class"] = round(float((pred == logo).mean()), 4)
        print(f"other classes' check scenes, stamped: {result['stamped_others_called_logo_class']:.1%} called "
              f"{args.logo_class}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().half().contiguous() for k, v in net.state_dict().items()}, str(args.out))
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
