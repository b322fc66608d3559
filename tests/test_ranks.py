"""Several classes per image: each class's maps are what a run explaining that class alone gives.

The further classes of an image share the batch's forward pass (a backward of their own each),
so their maps must be those of a run that explains the class alone, method by method.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

import camcli

#: methods that read the shared pass (gradients, activations, the classifier) or run passes of their own from it
SHARED = ["gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "cam", "eigengradcam", "scorecam", "ablationcam",
          "smoothgradcam++"]
#: methods that watch the forward with hooks of their own or take second derivatives
WATCHING = ["gradcam", "fullgrad", "finercam", "shapleycam"]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=4).eval()


def _images() -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [rng.integers(0, 256, (48, 40, 3), dtype=np.uint8) for _ in range(3)]


def _maps(model, target, methods, **options) -> list[dict]:
    results = list(camcli.explain(_images(), model=model, layer="layer4", method=methods, target=target,
                                  input_size=48, workers=0, **options))
    assert all(r.status == "ok" for r in results), [r.error for r in results]
    return [{(m.method, m.layer, m.target_index): m.layer_map for m in r.maps} for r in results]


@pytest.mark.parametrize("methods,options", [
    (SHARED, {"noise_samples": 2, "max_n": 16}),
    (WATCHING, {}),
    (["gradcam", "gradcam++", "scorecam", "layercam"], {"aug_smooth": True, "max_n": 8}),
    (["gradcam", "hirescam"], {"head": "sigmoid"}),
], ids=["shared-pass", "own-hooks", "aug-smooth", "sigmoid"])
def test_each_class_of_several_gets_the_maps_of_a_run_explaining_it_alone(model, methods, options):
    together = _maps(model, [3, 1], methods, **options)
    alone = [_maps(model, [3], methods, **options), _maps(model, [1], methods, **options)]
    for i, maps in enumerate(together):
        expected = {**alone[0][i], **alone[1][i]}
        assert maps.keys() == expected.keys()
        for key, value in maps.items():
            np.testing.assert_allclose(value, expected[key], atol=2e-5, err_msg=str(key))
