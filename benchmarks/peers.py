"""The scripts camcli is measured against, run as child processes by bench.py.

    python peers.py floor|floor-nhwc|pgc|torchcam|pgc-scorecam IMAGES CHECKPOINT ARCH OUT [--maps DIR]
    python peers.py pgc:CLASS|pgc-guided|torchcam:CLASS IMAGES CHECKPOINT ARCH OUT [--samples N] [--std S]

``floor`` decodes, resizes and runs plain inference (no explanation, nothing written): the
lower bound. ``floor-nhwc`` is the same with the model and batches in channels-last memory
format, as camcli runs them (about 1.4x faster convolutions on this CPU): the strict floor. ``pgc`` and ``torchcam`` do camcli's job the way each library's README shows:
Grad-CAM at the last block, an overlay PNG at the original size and a CSV row per image.
All use the same decoding (Pillow, EXIF, RGB), a 224x224 resize, batches of 16 and 2 loader
workers, so only the explanation and writing differ.
"""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
import torchvision
from PIL import Image, ImageOps

SIZE, BATCH, WORKERS = 224, 16, 2
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


class Images(torch.utils.data.Dataset):
    def __init__(self, files):
        self.files = files

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        with Image.open(self.files[i]) as im:
            rgb = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
        small = cv2.resize(rgb, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
        return torch.from_numpy(small).permute(2, 0, 1), rgb, self.files[i]


def batches(folder):
    files = sorted(str(p) for p in Path(folder).rglob("*.jpg"))
    loader = torch.utils.data.DataLoader(Images(files), batch_size=BATCH, num_workers=WORKERS,
                                         collate_fn=lambda b: (torch.stack([x[0] for x in b]), [x[1] for x in b],
                                                               [x[2] for x in b]))
    for pixels, originals, names in loader:
        yield (pixels.float() / 255 - MEAN) / STD, originals, names


def load(arch, checkpoint):
    model = torchvision.models.get_model(arch, num_classes=1000)
    model.load_state_dict(torch.load(checkpoint, weights_only=True))
    return model.eval()


def main():
    tool, folder, checkpoint, arch, out = sys.argv[1:6]
    maps_dir = sys.argv[sys.argv.index("--maps") + 1] if "--maps" in sys.argv else None
    torch.set_num_threads(2)
    model = load(arch, checkpoint)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if tool in ("floor", "floor-nhwc"):
        n = 0
        fmt = torch.channels_last if tool == "floor-nhwc" else torch.contiguous_format
        model = model.to(memory_format=fmt)
        with torch.inference_mode():
            for x, _, _ in batches(folder):
                n += int(model(x.contiguous(memory_format=fmt)).argmax(1).numel())
        print(n)
        return
    rows = open(out / "predictions.csv", "w", newline="")
    writer = csv.writer(rows)
    writer.writerow(["path", "pred_index"])
    if tool in ("pgc", "pgc-scorecam"):
        from pytorch_grad_cam import GradCAM, ScoreCAM
        from pytorch_grad_cam.utils.image import show_cam_on_image
        cls = GradCAM if tool == "pgc" else ScoreCAM
        with cls(model=model, target_layers=[model.layer4[-1]]) as cam:
            if maps_dir:
                cam.get_target_width_height = lambda _x: None
            for x, originals, names in batches(folder):
                grayscale = cam(input_tensor=x, targets=None)
                preds = cam.outputs.argmax(1).tolist()
                for g, rgb, name, pred in zip(grayscale, originals, names, preds):
                    if maps_dir:
                        np.save(Path(maps_dir) / (Path(name).stem + ".npy"), g)
                        g = cv2.resize(g, (SIZE, SIZE))
                    heat = cv2.resize(g, (rgb.shape[1], rgb.shape[0]))
                    vis = show_cam_on_image(rgb.astype(np.float32) / 255, heat, use_rgb=True)
                    cv2.imwrite(str(out / (Path(name).stem + ".png")), vis[..., ::-1])
                    writer.writerow([name, pred])
    elif tool == "torchcam":
        from torchcam.methods import GradCAM
        from torchcam.utils import overlay_mask
        from torchvision.transforms.functional import to_pil_image
        with GradCAM(model, target_layer="layer4") as extractor:
            for x, originals, names in batches(folder):
                scores = model(x)
                preds = scores.argmax(1).tolist()
                maps = extractor(preds, scores)[0]
                for m, rgb, name, pred in zip(maps, originals, names, preds):
                    if maps_dir:
                        np.save(Path(maps_dir) / (Path(name).stem + ".npy"), m.detach().numpy())
                    result = overlay_mask(Image.fromarray(rgb), to_pil_image(m.detach(), mode="F"), alpha=0.5)
                    result.save(out / (Path(name).stem + ".png"))
                    writer.writerow([name, pred])
    elif ":" in tool or tool == "pgc-guided":
        family(tool, model, folder, out, writer)
    else:
        raise SystemExit(f"unknown tool {tool}")
    rows.close()


def option(name, default):
    return type(default)(sys.argv[sys.argv.index(name) + 1]) if name in sys.argv else default


def overlay_png(out, name, rgb, heat):
    from pytorch_grad_cam.utils.image import show_cam_on_image
    heat = cv2.resize(heat.astype(np.float32), (rgb.shape[1], rgb.shape[0]))
    vis = show_cam_on_image(rgb.astype(np.float32) / 255, heat, use_rgb=True)
    cv2.imwrite(str(out / (Path(name).stem + ".png")), vis[..., ::-1])


def family(tool, model, folder, out, writer):
    """The methods benchmarks/family.py times: ``pgc:CLASS`` (FinerCAM, ShapleyCAM, FullGrad),
    ``pgc-guided`` (GuidedBackpropReLUModel, one image at a time, as the library allows) and
    ``torchcam:CLASS`` (SSCAM, ISCAM, SmoothGradCAMpp, LeGrad), each as its README shows, with
    ``--samples N`` and ``--std S`` for the noisy ones; an overlay PNG and a CSV row per image."""
    samples, std = option("--samples", 0), option("--std", 0.0)
    noisy = {**({"num_samples": samples} if samples else {}), **({"std": std} if std else {})}
    last = {}
    model.register_forward_hook(lambda _m, _i, o: last.__setitem__("out", o))
    library, _, name = tool.partition(":")
    if tool == "pgc-guided":
        from pytorch_grad_cam import GuidedBackpropReLUModel
        guided = GuidedBackpropReLUModel(model, device="cpu")
        for x, originals, names in batches(folder):
            for i in range(x.shape[0]):
                gb = guided(x[i:i + 1], target_category=None)  # (H, W, 3): batch size 1 only
                pred = int(last["out"].argmax(1)[0])
                overlay_png(out, names[i], originals[i], np.abs(gb).max(-1) / (np.abs(gb).max() + 1e-7))
                writer.writerow([names[i], pred])
    elif library == "pgc":
        import pytorch_grad_cam
        cam = getattr(pytorch_grad_cam, name)(model, [model.layer4[-1]])
        for x, originals, names in batches(folder):
            grayscale = cam(input_tensor=x, targets=None)
            preds = last["out"].argmax(1).tolist()
            for g, rgb, file, pred in zip(grayscale, originals, names, preds):
                overlay_png(out, file, rgb, g)
                writer.writerow([file, pred])
    elif library == "torchcam":
        import torchcam.methods
        cls = getattr(torchcam.methods, name)
        if name == "LeGrad":
            blocks = [f"encoder.layers.{n}" for n, _ in model.encoder.layers.named_children()][-2:]  # the authors'
            extractor = cls(model, blocks)
        else:
            extractor = cls(model, target_layer="layer4", input_shape=(3, SIZE, SIZE), **noisy)
        gradients = name in ("SmoothGradCAMpp", "LeGrad")
        with extractor:
            for x, originals, names in batches(folder):
                with torch.set_grad_enabled(gradients):
                    scores = model(x)
                preds = scores.argmax(1).tolist()
                maps = extractor(preds, scores)[0]
                for m, rgb, file, pred in zip(maps, originals, names, preds):
                    overlay_png(out, file, rgb, m.detach().numpy())
                    writer.writerow([file, pred])
    else:
        raise SystemExit(f"unknown tool {tool}")


if __name__ == "__main__":
    main()
