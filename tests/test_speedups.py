"""What camcli does for speed (BatchNorm folding, channels-last, fast PNG settings) changes no result.

The reference is the plain torchvision model, unmodified and in NCHW, run by hand.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

import camcli
from camcli.engine.explainer import Explainer
from camcli.engine.images import decode, resize_for_model
from camcli.engine.methods import get_method
from camcli.output.render import encode_png, overlay

METHODS = ("gradcam", "hirescam")  # HiResCAM: an affine change of the layer output shows in its map


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """ResNet-18 with seeded weights and BatchNorm statistics far from the identity, so a wrong
    fold would show."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=7).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.3, 3.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    path = tmp_path_factory.mktemp("ck") / "r18.pth"
    torch.save(model.state_dict(), path)
    return path, model


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (90 + 10 * i, 120, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def _by_hand(model, layer, folder, size=96, dtype=torch.float32):
    xs = []
    for p in sorted(folder.glob("*.png")):
        rgb, _ = decode(str(p))
        x = torch.from_numpy(resize_for_model(rgb, (size, size))).permute(2, 0, 1).to(dtype) / 255
        mean = torch.tensor([0.485, 0.456, 0.406], dtype=dtype).view(3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225], dtype=dtype).view(3, 1, 1)
        xs.append((x - mean) / std)
    return Explainer(model.to(dtype), [layer], [get_method(m) for m in METHODS])(torch.stack(xs))


@pytest.mark.parametrize("layer", ["layer4.1", "layer4.1.conv2", "layer4.1.bn2", "layer3.0.bn1"])
def test_scores_and_maps_equal_the_unmodified_model(checkpoint, images, layer):
    """Also at layers inside a conv + BatchNorm pair: a target layer's own output is never folded."""
    path, model = checkpoint
    results = list(camcli.explain(images, "resnet18", checkpoint=str(path), num_classes=7, input_size=96,
                                  layer=layer, method=list(METHODS), workers=0, device="cpu", topk=7))
    want = _by_hand(model, layer, images)
    # Maps are also compared with the unmodified model in float64: inside a block a unit near its
    # ReLU threshold can flip between two float32 computations (seen at layer3.0.bn1, 2.6e-3),
    # so camcli must be as close to the exact map as the unmodified float32 model is, or closer.
    exact = _by_hand(copy.deepcopy(model), layer, images, dtype=torch.float64)
    for i, r in enumerate(results):
        assert r.status == "ok"
        got = dict((c, p) for c, _label, p in r.topk)
        for c in range(7):
            assert got[c] == pytest.approx(float(want.probs[i, c]), abs=1e-5)
        for m in r.maps:
            truth = exact.maps[(m.method, layer)].maps[i].double().numpy()
            plain = np.abs(want.maps[(m.method, layer)].maps[i].double().numpy() - truth).max()
            assert np.abs(m.layer_map - truth).max() <= max(1e-4, 2 * plain), m.method


@pytest.mark.parametrize("shape, dtype", [((37, 53, 3), np.uint8), ((1, 1, 3), np.uint8), ((20, 7), np.uint8),
                                          ((9, 11), np.uint16)])
@pytest.mark.parametrize("deflate", ["default", "stdlib zlib"])
def test_png_writer_is_lossless_and_readable_by_two_decoders(tmp_path, shape, dtype, deflate):
    """camcli's own PNG writer, with zlib-ng and with the stdlib fallback, read back by Pillow
    (which checks every chunk's CRC) and by OpenCV."""
    import zlib

    import cv2

    from camcli.output import pngfile
    rng = np.random.default_rng(2)
    pixels = rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype, endpoint=True)
    path = tmp_path / "p.png"
    path.write_bytes(pngfile.encode(pixels, zlib if deflate == "stdlib zlib" else None))
    assert np.array_equal(np.asarray(Image.open(path)), pixels)
    back = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(back[..., ::-1] if back.ndim == 3 else back, pixels)


def test_png_writer_refuses_what_it_cannot_write():
    from camcli.output import pngfile
    with pytest.raises(ValueError):
        pngfile.encode(np.zeros((4, 4, 4), np.uint8))
    with pytest.raises(ValueError):
        pngfile.encode(np.zeros((0, 4, 3), np.uint8))


def test_overlay_is_the_published_blend(tmp_path):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (37, 53, 3), dtype=np.uint8)
    heat = rng.random((37, 53), dtype=np.float32)
    picture = overlay(image, heat, "turbo", 0.4)
    path = tmp_path / "o.png"
    path.write_bytes(encode_png(picture))
    assert np.array_equal(np.asarray(Image.open(path)), picture)
    # the blend is the published one, alpha * colour + (1 - alpha) * image, within one grey level
    from camcli.output.render import colormap_lut
    colour = colormap_lut("turbo")[np.clip(heat * 255 + 0.5, 0, 255).astype(np.uint8)].astype(np.float64)
    want = 0.4 * colour + 0.6 * image
    assert np.abs(picture - want).max() <= 1.0


def test_overlays_rendered_in_strips_are_the_same_pictures():
    """Photos are rendered a strip of rows at a time (and in BGR for OpenCV's encoders): the
    pixels are those of the one-piece blend, and the strip-wise map is the upsampled one."""
    from camcli.engine.framing import Frame
    from camcli.engine.stream import MapResult
    from camcli.output.render import STRIP_ROWS, overlay_strips, to_uint8
    rng = np.random.default_rng(2)
    h, w = 2 * STRIP_ROWS + 37, 301
    image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    heat = rng.random((h, w), dtype=np.float32)
    whole = overlay(image, heat, "jet", 0.5)
    assert np.array_equal(overlay_strips(image, lambda t, b: heat[t:b], "jet", 0.5), whole)
    assert np.array_equal(overlay_strips(image, lambda t, b: heat[t:b], "jet", 0.5, bgr=True), whole[..., ::-1])
    small = rng.random((7, 5), dtype=np.float32)
    for frame, size in ((None, None), (Frame(10, -4, 150, 230), (224, 160))):
        m = MapResult("gradcam", "layer4", small, False, (h, w), frame=frame, input_size=size)
        read = m.row_reader()
        strips = np.concatenate([read(t, min(h, t + STRIP_ROWS)) for t in range(0, h, STRIP_ROWS)])
        assert np.abs(strips - m.upsampled()).max() < 1e-5
        rendered = overlay_strips(image, read, "jet", 0.5)
        assert np.abs(rendered.astype(int) - overlay(image, to_uint8(m.upsampled()), "jet", 0.5)).max() <= 1


@pytest.mark.skipif(__import__("platform").libc_ver()[0] != "glibc", reason="glibc only")
def test_allocator_tuning_leaves_users_own_settings_alone():
    """The CLI raises glibc's mmap threshold, unless the user tuned malloc or preloaded another allocator."""
    import os
    import subprocess
    import sys

    probe = "from camcli.cli.allocator import keep_freed_memory; print(keep_freed_memory())"
    base = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD" and not k.startswith("MALLOC_")}
    for extra, expected in (({}, "True"), ({"MALLOC_MMAP_THRESHOLD_": "65536"}, "False"),
                            ({"LD_PRELOAD": "/nonexistent/libjemalloc.so"}, "False")):
        r = subprocess.run([sys.executable, "-c", probe], env={**base, **extra}, capture_output=True, text=True,
                           timeout=60)
        assert r.stdout.strip() == expected, (extra, r.stdout, r.stderr)
