"""Where Grad-CAM++ and XGrad-CAM are fragile: camcli against pytorch-grad-cam at signed and rectified layers.

    python benchmarks/fragile_layers.py        # ~1 minute on 2 cores

Seeded random weights, two 224 px noise images per model. For each method it prints the
per-image Pearson r between camcli's map and pytorch-grad-cam's at layer resolution, the
figure camcli's assumption check measures (negative share of the activation mass; for Eigen-CAM
the second / first singular value) and whether camcli warns. Where the formula divides by a near-zero activation sum, the two tools' maps
part ways; that is where camcli warns. Not part of the test suite.
"""

from __future__ import annotations

import numpy as np
import torch
import torchvision
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, XGradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

import camcli
from camcli.engine.layer_names import resolve_layer

CASES = [("efficientnet_b0", "features[8]"), ("convnext_tiny", "features[7][2]"), ("resnet18", "layer4[1]"),
         ("resnet18", "layer4[1].bn2")]
PEERS = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "xgradcam": XGradCAM, "eigencam": None}


def peer_maps(cls, model, layer, x, targets) -> np.ndarray:
    """pytorch-grad-cam's maps at layer resolution (its get_cam_image, before upsampling)."""
    with cls(model=model, target_layers=[model.get_submodule(layer)]) as cam:
        outputs = cam.activations_and_grads(x)
        wanted = [ClassifierOutputTarget(c) for c in targets]
        model.zero_grad()
        sum(t(o) for t, o in zip(wanted, outputs)).backward()
        acts = cam.activations_and_grads.activations[0].cpu().numpy()
        grads = cam.activations_and_grads.gradients[0].cpu().numpy()
        return np.maximum(cam.get_cam_image(x, layer, wanted, acts, grads, False), 0)


def main() -> None:
    print("| model, layer | method | r vs pytorch-grad-cam (per image) | figure checked | camcli warns |")
    print("|---|---|---|---|---|")
    for arch, layer in CASES:
        torch.manual_seed(0)
        model = torchvision.models.get_model(arch, num_classes=1000).eval()
        name = resolve_layer(model, layer)
        x = torch.randn(2, 3, 224, 224)
        result = camcli.Explainer(model, [name], [camcli.get_method(m) for m in PEERS])(x)
        for method, cls in PEERS.items():
            ours = result.maps[(method, name)].maps.numpy()
            rs = "-"
            if cls is not None:  # pytorch-grad-cam's Eigen-CAM leaves the component's sign to LAPACK
                theirs = peer_maps(cls, model, name, x, result.targets.tolist())
                rs = ", ".join(f"{np.corrcoef(a.ravel(), b.ravel())[0, 1]:.2f}" for a, b in zip(ours, theirs))
            checks = result.checks.get((method, name))
            unit = "{:.0%}" if method != "eigencam" else "{:.2f}"
            share = ", ".join(unit.format(v) for v in checks[0].values.tolist()) if checks else "no assumption"
            warns = "yes" if checks and bool(checks[0].failed.any()) else "no"
            print(f"| {arch} `{layer}` | {method} | {rs} | {share} | {warns} |", flush=True)


if __name__ == "__main__":
    main()
