"""camcli's Grad-CAM against pytorch-grad-cam's 5-D Grad-CAM on full-size torchvision video models
(seeded random weights: nothing is downloaded), on the same clip tensor and layer.

    python benchmarks/video_parity.py [--models r3d_18 mvit_v2_s swin3d_t]

tests/test_video.py does the same on small configurations of the same classes (CI); this is the
full-size check, at each model's own clip size, and its figures are in docs/video.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from video import write_clip  # noqa: E402


def compare(name: str, clip: Path, out: Path) -> tuple[tuple[int, ...], float]:
    import torchvision
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    import camcli
    from camcli.engine.clips import frame_step, framing, probe, read_frames, windows

    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None).eval()
    run = camcli.explain(clip, model, out=out, save_heatmap="npy", heatmap_size="layer", quiet=True,
                         clip_len=None if name.startswith("mvit") else (32 if name.startswith("swin3d") else 16),
                         input_size=None if name.startswith("mvit") else (224 if name.startswith("swin3d") else 112),
                         mean=list(torchvision.models.get_model_weights(name).DEFAULT.transforms().mean),
                         std=list(torchvision.models.get_model_weights(name).DEFAULT.transforms().std))
    results = list(run)
    clip_result = results[0].clips[0]
    mine = clip_result.maps[0].small
    loaded = run.session.loaded
    video = probe(str(clip))
    window = windows(video, loaded.input_size[0], frame_step(video, None), "one")[0]
    fit = framing((video.height, video.width), tuple(loaded.input_size[1:]), loaded.clip.resize)
    frames = {k: fit.fit(rgb) for k, rgb in read_frames(video, window.start, window.stop)}
    x = torch.from_numpy(np.stack([frames[k] for k in window.sampled])).permute(3, 0, 1, 2).float() / 255
    x = ((x - torch.tensor(loaded.mean).view(3, 1, 1, 1)) / torch.tensor(loaded.std).view(3, 1, 1, 1))[None]
    shape = mine.shape
    if name.startswith("mvit"):
        layer = model.blocks[-1].norm1

        def reshape(t):
            return t[:, 1:].reshape(t.shape[0], *shape, t.shape[-1]).permute(0, 4, 1, 2, 3)
    elif name.startswith("swin3d"):
        layer, reshape = model.norm, (lambda t: t.permute(0, 4, 1, 2, 3))
    else:
        layer, reshape = getattr(model, "layer4", None) or model.features, None

    class AtLayer(GradCAM):
        def get_target_width_height(self, input_tensor):
            return tuple(reversed(shape))

    with AtLayer(model=model, target_layers=[layer], reshape_transform=reshape) as cam:
        theirs = cam(input_tensor=x, targets=[ClassifierOutputTarget(clip_result.topk[0][0])])[0]
    return shape, float(np.corrcoef(mine.ravel(), theirs.ravel())[0, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["r3d_18", "mvit_v2_s", "swin3d_t"])
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="camcli-video-parity-"))
    clip = work / "clip.mp4"
    write_clip(clip, 90, (320, 240), 0)
    for name in args.models:
        shape, r = compare(name, clip, work / name)
        print(f"{name:12s} map {'x'.join(map(str, shape)):10s} Pearson r {r:.6f}")


if __name__ == "__main__":
    main()
