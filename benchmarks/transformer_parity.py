"""Full-size transformers against pytorch-grad-cam: per-image Pearson r of the layer-resolution maps.

vit_b_16 and vit_b_32 at the last block's ``ln_1`` with the peer's documented ViT
``reshape_transform``; swin_t at a block inside ``features`` with a permute (the peer's own
Swin helper assumes (N, L, C), torchvision's blocks output (N, H, W, C)). Seeded random
weights (ViT's all-zero head gets seeded random values), the sample images at 224 px. The
small configurations of the same classes are in tests/test_transformers.py.

    python benchmarks/transformer_parity.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import torchvision

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pytorch_grad_cam import GradCAM, GradCAMElementWise, GradCAMPlusPlus, HiResCAM, LayerCAM, XGradCAM  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

from camcli.engine.explainer import Explainer  # noqa: E402
from camcli.engine.images import decode, resize_for_model  # noqa: E402
from camcli.engine.methods import get_method  # noqa: E402
from camcli.engine.methods.cam import linear_head  # noqa: E402

PEERS = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "xgradcam": XGradCAM, "hirescam": HiResCAM,
         "gradcam-elementwise": GradCAMElementWise, "layercam": LayerCAM}
CASES = [("vit_b_16", "encoder.layers.encoder_layer_11.ln_1", 14),
         ("vit_b_32", "encoder.layers.encoder_layer_11.ln_1", 7),
         ("swin_t", "features.7.1.norm1", None),
         ("swin_t", "features.7.1", None)]


def images() -> torch.Tensor:
    paths = sorted((ROOT / "sample_images" / "single").glob("*.jpg"))[:4]
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    xs = [(torch.from_numpy(resize_for_model(decode(str(p))[0], (224, 224))).permute(2, 0, 1).float() / 255 - mean)
          / std for p in paths]
    return torch.stack(xs)


def main() -> None:
    x = images()
    print("| model | layer | method | r per image (min) | min r vs the formula |\n|---|---|---|---|---|")
    for arch, layer, grid in CASES:
        torch.manual_seed(0)
        model = torchvision.models.get_model(arch).eval()
        head = linear_head(model)[1]
        if not head.weight.detach().any():
            torch.nn.init.normal_(head.weight, std=0.01)
        if grid:
            def reshape(t, g=grid):
                return t[:, 1:].reshape(t.size(0), g, g, t.size(2)).permute(0, 3, 1, 2)
        else:
            def reshape(t):
                return t.permute(0, 3, 1, 2)
        ours = Explainer(model, [layer], [get_method(m) for m in PEERS])(x)
        for method, peer in PEERS.items():
            cam = peer(model=model, target_layers=[model.get_submodule(layer)], reshape_transform=reshape)
            cam.get_target_width_height = lambda _x: None
            theirs = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in ours.targets])
            cam.activations_and_grads.release()
            mine = ours.maps[(method, layer)].maps.numpy()
            rs = [pearson(mine[i], theirs[i]) for i in range(len(x))]
            line = f"| {arch} | `{layer}` | {method} | {', '.join(f'{r:.4f}' for r in rs)} ({min(rs):.4f}) |"
            if method == "gradcam++":  # signed LayerNorm outputs: the peer's epsilon decides; check the formula
                want = plus_plus_formula(Explainer(model, [layer], [get_method("gradcam")]).forward(x, None), layer)
                line += f" formula: {min(pearson(mine[i], want[i]) for i in range(len(x))):.4f} |"
            print(line, flush=True)


def pearson(a, b) -> float:
    """Pearson r; two constant maps (both empty) agree."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.std() == 0 or b.std() == 0:
        return 1.0 if np.allclose(a, b, atol=1e-6) else 0.0
    return float(np.corrcoef(a, b)[0, 1])


def plus_plus_formula(fp, layer) -> list[np.ndarray]:
    """Grad-CAM++ (Chattopadhyay et al., eq. 19 and 10) in float64, no epsilon."""
    a, g = fp.activations[layer].double().numpy(), fp.gradients[layer].double().numpy()
    g2, g3 = g ** 2, g ** 3
    denom = 2 * g2 + a.sum((2, 3), keepdims=True) * g3
    alpha = np.where(g != 0, g2 / np.where(denom != 0, denom, 1), 0.0)
    cams = np.maximum(((alpha * np.maximum(g, 0)).sum((2, 3), keepdims=True) * a).sum(1), 0)
    return [(c - c.min()) / (c.max() - c.min()) if c.max() > c.min() else c * 0 for c in cams]


if __name__ == "__main__":
    main()
