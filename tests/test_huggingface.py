"""HuggingFace image classifiers from a local folder (``--model FOLDER``): tiny configs saved with
transformers' own ``save_pretrained``, compared with pytorch-grad-cam's HuggingFace recipe (a
wrapper returning ``.logits``, a ``reshape_transform`` for tokens)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import SAMPLES, read_csv

transformers = pytest.importorskip("transformers", reason="the optional hf extra (pip install 'camcli[hf]') is "
                                   "not installed")
pgc = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

IMAGES = sorted((SAMPLES / "single").glob("*.jpg"))[:3]
SIZE = 64
LABELS = {0: "cat", 1: "dog", 2: "fox"}


def _save(model, processor, folder, **kwargs):
    model.eval().save_pretrained(folder, **kwargs)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A ViT, a ConvNeXt and a Swin, a few layers each, with seeded random weights."""
    t = transformers
    root = tmp_path_factory.mktemp("hf")
    labels = dict(id2label=LABELS, label2id={v: k for k, v in LABELS.items()})
    torch.manual_seed(0)
    vit = t.ViTForImageClassification(t.ViTConfig(image_size=SIZE, patch_size=16, hidden_size=32, num_hidden_layers=2,
                                                  num_attention_heads=2, intermediate_size=64, **labels))
    convnext = t.ConvNextForImageClassification(t.ConvNextConfig(hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1],
                                                                 image_size=SIZE, **labels))
    swin = t.SwinForImageClassification(t.SwinConfig(image_size=SIZE, patch_size=4, embed_dim=16, depths=[1, 1],
                                                     num_heads=[1, 2], window_size=4, **labels))
    square = t.ViTImageProcessor(size={"height": SIZE, "width": SIZE})
    return {"vit": _save(vit, square, root / "vit"),
            "convnext": _save(convnext, t.ConvNextImageProcessor(size={"shortest_edge": SIZE}, crop_pct=0.875,
                                                                 image_mean=[0.485, 0.456, 0.406],
                                                                 image_std=[0.229, 0.224, 0.225]),
                              root / "convnext"),
            "swin": _save(swin, square, root / "swin"),
            "vit-bin": _as_bin(_save(vit, square, root / "vit-bin"), vit)}


def _as_bin(folder, model):
    """The same folder with its weights in the older pytorch_model.bin instead of safetensors."""
    (folder / "model.safetensors").unlink()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    return folder


class Logits(torch.nn.Module):
    """pytorch-grad-cam's HuggingFace recipe: a wrapper that returns the output object's logits."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x).logits


def _tokens_to_map(prefix: int, grid: int):
    def reshape(t):
        t = t[:, prefix:, :]
        return t.reshape(t.size(0), grid, grid, t.size(2)).permute(0, 3, 1, 2)
    return reshape


RECIPES = {  # the layer pytorch-grad-cam's tutorial targets, and its reshape
    "vit": (lambda m: m.vit.layers[-1].layernorm_before, _tokens_to_map(1, SIZE // 16)),
    "convnext": (lambda m: m.convnext.encoder.stages[-1].layers[-1], None),
    "swin": (lambda m: m.swin.layernorm, _tokens_to_map(0, SIZE // 8)),
}


def _peer(folder, family, image, target, mean, std):
    from camcli.engine.images import decode, resize_for_model
    model = transformers.AutoModelForImageClassification.from_pretrained(str(folder), local_files_only=True).eval()
    rgb, _ = decode(str(image))
    x = torch.from_numpy(resize_for_model(rgb, (SIZE, SIZE))).permute(2, 0, 1).float() / 255
    x = ((x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1))[None]
    layer, reshape = RECIPES[family]
    cam = pgc.GradCAM(model=Logits(model), target_layers=[layer(model)], reshape_transform=reshape)
    cam.get_target_width_height = lambda _x: None  # at the layer's resolution, as ours below
    try:
        return cam(input_tensor=x, targets=[ClassifierOutputTarget(target)])[0]
    finally:
        cam.activations_and_grads.release()


@pytest.mark.parametrize("family,layer", [("vit", "vit.layers[1].layernorm_before"),
                                          ("convnext", "convnext.encoder.stages[3].layers[0]"),
                                          ("swin", "swin.layernorm")])
def test_folder_explains_like_pytorch_grad_cams_recipe(cli, folders, tmp_path, family, layer):
    out = tmp_path / "o"
    r = cli("explain", *IMAGES, "--model", folders[family], "--save-heatmap", "npy", "--heatmap-size", "layer",
            "--workers", "0", "--device", "cpu", "--out", out)
    assert r.exit_code == 0, r.stderr
    rows = read_csv(out / "predictions.csv")
    assert len(rows) == 3 and {row["layer"] for row in rows} == {layer}  # the family's default layer
    assert all(row["pred_label"] in LABELS.values() for row in rows)  # id2label
    model = json.loads((out / "run.json").read_text())["model"]
    assert model["source"]["kind"] == "huggingface" and model["input_size"] == [SIZE, SIZE]
    for row in rows:
        ours = np.load(out / row["heatmap"])
        theirs = _peer(folders[family], family, IMAGES[0].parent / row["path"], int(row["target_index"]),
                       model["mean"], model["std"])
        assert ours.shape == theirs.shape
        r_ = float(np.corrcoef(ours.ravel().astype(np.float64), theirs.ravel().astype(np.float64))[0, 1])
        assert r_ >= 0.99, (family, row["path"], r_)


def test_preprocessing_comes_from_the_image_processor(folders):
    import camcli
    lm = camcli.load_model(str(folders["convnext"]))
    assert lm.input_size == (SIZE, SIZE) and lm.crop_fraction == 0.875
    assert lm.mean == (0.485, 0.456, 0.406) and lm.labels == ["cat", "dog", "fox"]
    assert camcli.load_model(str(folders["vit"])).mean == (0.5, 0.5, 0.5)


def test_pytorch_model_bin_loads_and_equals_safetensors(folders):
    import camcli
    x = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    a, b = (camcli.load_model(str(folders[k])).model for k in ("vit", "vit-bin"))
    assert not list(folders["vit-bin"].glob("*.safetensors"))
    with torch.inference_mode():
        assert torch.equal(a(x).logits, b(x).logits)


def test_layers_lists_a_folder(cli, folders):
    r = cli("layers", folders["vit"], "--json")
    assert r.exit_code == 0, r.stderr
    default = [layer for layer in json.loads(r.stdout) if layer["default"]]
    assert [d["display"] for d in default] == ["vit.layers[1].layernorm_before"]
    assert default[0]["map"] == {"layout": "tokens", "grid": [4, 4], "prefix": 1}


def test_a_folder_that_asks_for_its_own_code_is_refused(cli, folders, tmp_path):
    import shutil
    folder = tmp_path / "remote"
    shutil.copytree(folders["vit"], folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForImageClassification": "modeling_evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    r = cli("explain", IMAGES[0], "--model", folder, "--workers", "0", "--out", tmp_path / "o")
    assert r.exit_code == 2 and "--trust-checkpoint" in r.stderr and "auto_map" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    (folder / "model.safetensors").unlink()
    config.pop("auto_map")
    (folder / "config.json").write_text(json.dumps(config))
    r = cli("explain", IMAGES[0], "--model", folder, "--workers", "0", "--out", tmp_path / "o2")
    assert r.exit_code == 2 and "no weights" in r.stderr
