"""The models people bring: a factory of their own, a module handed over from Python, a whole
pickled model, a model class from an installed package; and every way those go wrong is one
line and exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import camcli
from conftest import CIRCLE, PAIR, read_csv

pgc = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

#: a model class of the user's own: a small CNN whose head applies one ReLU6 module it also
#: uses in its stem (as some pretrained PyPI models do), so the rectified map has no module of its own
NET = textwrap.dedent('''
    import torch
    from torch import nn


    class TinyNet(nn.Module):
        def __init__(self, classes=3, width=16):
            super().__init__()
            self.stem = nn.Conv2d(3, width, 3, stride=2, padding=1)
            self.body = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                                      nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.BatchNorm2d(2 * width))
            self.act = nn.ReLU6()
            self.head = nn.Linear(2 * width, classes)

        def forward(self, x):
            x = self.act(self.stem(x))
            x = self.act(self.body(x))
            return self.head(x.mean((2, 3)))


    def build(classes=3, width=16):
        torch.manual_seed(0)
        return TinyNet(classes, width)


    NET_SIZE = 3
''')


@pytest.fixture
def user_code(tmp_path):
    """The user's file, a state dict of its model with 4 classes, and that model."""
    (tmp_path / "tinynet.py").write_text(NET)
    sys.path.insert(0, str(tmp_path))
    try:
        import importlib
        module = importlib.import_module("tinynet")
        importlib.reload(module)
        net = module.build(classes=4).eval()
        with torch.no_grad():
            for m in net.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.1, 0.1)
                    m.running_var.uniform_(0.5, 1.5)
        torch.save(net.state_dict(), tmp_path / "tiny.pt")
        yield tmp_path, net
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("tinynet", None)


def _peer_map(net, layer, image, size=96):
    """pytorch-grad-cam's Grad-CAM of the top class at ``layer``, at the layer's resolution, on the
    image as camcli feeds it (stretched to ``size``, ImageNet normalisation)."""
    from camcli.engine.images import decode, resize_for_model
    rgb, _ = decode(str(image))
    small = torch.from_numpy(resize_for_model(rgb, (size, size))).permute(2, 0, 1).float() / 255
    x = ((small - torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1))
    x = x[None]
    with torch.no_grad():
        target = int(net(x).argmax())
    cam = pgc.GradCAM(model=net, target_layers=[layer])
    cam.get_target_width_height = lambda _x: None
    try:
        return cam(input_tensor=x, targets=[ClassifierOutputTarget(target)])[0], target
    finally:
        cam.activations_and_grads.release()


def pearson(a, b) -> float:
    return float(np.corrcoef(np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64))[0, 1])


def test_factory_route_gives_pytorch_grad_cams_map_and_records_the_class(cli, user_code):
    folder, net = user_code
    out = folder / "out"
    r = cli("explain", CIRCLE, PAIR, "--model", f"{folder / 'tinynet.py'}:build", "--model-arg", "classes=4",
            "--checkpoint", folder / "tiny.pt", "--input-size", "96", "--layer", "body", "--save-heatmap", "npy",
            "--heatmap-size", "layer", "--workers", "0", "--device", "cpu", "--out", out)
    assert r.exit_code == 0, r.stderr
    rows = read_csv(out / "predictions.csv")
    assert len(rows) == 2 and all(row["status"] == "ok" and (out / row["output"]).is_file() for row in rows)
    for row, image in zip(rows, sorted([CIRCLE, PAIR], key=lambda p: p.name)):
        theirs, target = _peer_map(net, net.body, image)
        assert int(row["target_index"]) == target
        assert pearson(np.load(out / row["heatmap"]), theirs) >= 0.99
    model = json.loads((out / "run.json").read_text())["model"]
    assert model["architecture"] == "tinynet.TinyNet" and model["source"]["class"] == "tinynet.TinyNet"
    assert model["source"]["kind"] == "factory" and len(model["source"]["file_sha256"]) == 64
    # --resume compares the factory's file: an edited file is another model
    (folder / "tinynet.py").write_text(NET + "\n# edited\n")
    r = cli("explain", CIRCLE, PAIR, "--model", f"{folder / 'tinynet.py'}:build", "--model-arg", "classes=4",
            "--checkpoint", folder / "tiny.pt", "--input-size", "96", "--layer", "body", "--save-heatmap", "npy",
            "--heatmap-size", "layer", "--workers", "0", "--device", "cpu", "--out", out, "--resume")
    assert r.exit_code == 2 and "model_file_sha256" in r.stderr


def test_python_api_takes_a_module_and_leaves_it_as_it_was(user_code, tmp_path):
    _folder, net = user_code
    before = {k: v.clone() for k, v in net.state_dict().items()}
    run = camcli.explain([CIRCLE], model=net, layer="body", input_size=96, labels=["a", "b", "c", "d"],
                         workers=0, device="cpu", out=tmp_path / "o")
    (result,) = list(run)
    theirs, target = _peer_map(net, net.body, CIRCLE)
    assert result.pred_label == "abcd"[target] and pearson(result.maps[0].layer_map, theirs) >= 0.99
    after = net.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())  # not folded into the user's module
    manifest = json.loads((tmp_path / "o" / "run.json").read_text())
    assert manifest["model"]["source"]["kind"] == "module" and manifest["model"]["architecture"] == "tinynet.TinyNet"
    with pytest.raises(TypeError, match="nn.Module"):
        camcli.explain([CIRCLE], model=42)


def test_a_model_class_from_an_installed_package_through_its_module_path(cli, small_model, tmp_path):
    """`package.module:function` with keyword arguments equals the named-architecture route."""
    common = [CIRCLE, "--checkpoint", small_model / "r18.pth", "--input-size", "64", "--workers", "0",
              "--device", "cpu"]
    assert cli("explain", *common, "--model", "resnet18", "--out", tmp_path / "named").exit_code == 0
    r = cli("explain", *common, "--model", "torchvision.models:resnet18", "--model-arg", "num_classes=3",
            "--out", tmp_path / "factory")
    assert r.exit_code == 0, r.stderr
    named, factory = (read_csv(tmp_path / d / "predictions.csv")[0] for d in ("named", "factory"))
    assert (named["pred_index"], named["score"], named["layer"]) == (factory["pred_index"], factory["score"],
                                                                     factory["layer"])
    model = json.loads((tmp_path / "factory" / "run.json").read_text())["model"]
    assert model["architecture"] == "torchvision.models.resnet.ResNet"
    # and both routes give pytorch-grad-cam's map on the same module and layer
    import torchvision
    net = torchvision.models.resnet18(num_classes=3)
    net.load_state_dict(torch.load(small_model / "r18.pth", weights_only=True))
    net.eval()
    theirs, target = _peer_map(net, net.layer4[1], CIRCLE, size=64)
    r = cli("explain", *common, "--model", "torchvision.models:resnet18", "--model-arg", "num_classes=3",
            "--save-heatmap", "npy", "--heatmap-size", "layer", "--out", tmp_path / "maps")
    row = read_csv(tmp_path / "maps" / "predictions.csv")[0]
    assert int(row["target_index"]) == target and pearson(np.load(tmp_path / "maps" / row["heatmap"]), theirs) >= 0.99
    (result,) = list(camcli.explain([CIRCLE], model=net, input_size=64, workers=0, device="cpu"))
    assert result.maps[0].layer == "layer4.1" and pearson(result.maps[0].layer_map, theirs) >= 0.99


def _one_line(r) -> str:
    assert r.exit_code == 2, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    return r.stderr


@pytest.mark.parametrize("spec,args,message", [
    ("{f}/broken.py:build", [], "cannot import"),
    ("{f}/tinynet.py:nothing", [], "has no 'nothing'; it defines TinyNet, build"),
    ("{f}/tinynet.py:build", ["--model-arg", "colours=3"], "failed when called with colours=3: TypeError"),
    ("{f}/tinynet.py:build", ["--model-arg", "classes"], "is not key=value"),
    ("{f}/tinynet.py:NET_SIZE", [], "is a int, not a function"),
    ("{f}/missing.py:build", [], "does not exist"),
    ("no_such_package_xyz.models:build", [], "cannot import module no_such_package_xyz.models"),
    ("{f}/tinynet.py:build", ["--checkpoint", "{f}/tiny.pt"], "Check that --model builds the model"),
])
def test_factory_failures_are_one_line(cli, user_code, spec, args, message):
    folder, _net = user_code
    (folder / "broken.py").write_text("def build(:\n")
    args = [a.format(f=folder) for a in args]
    r = cli("explain", CIRCLE, "--model", spec.format(f=folder), *args, "--workers", "0", "--out", folder / "o")
    assert message in _one_line(r)


def test_pickled_models_and_files_that_are_not_checkpoints(cli, user_code, tmp_path):
    folder, net = user_code
    torch.save(net, folder / "whole.pt")
    base = ["explain", CIRCLE, "--input-size", "96", "--workers", "0", "--device", "cpu"]
    # no --model needed; the class is recorded
    r = cli(*base, "--checkpoint", folder / "whole.pt", "--trust-checkpoint", "--out", tmp_path / "a")
    assert r.exit_code == 0, r.stderr
    model = json.loads((tmp_path / "a" / "run.json").read_text())["model"]
    assert model["architecture"] == "tinynet.TinyNet" and model["source"]["kind"] == "pickled"
    assert "resnet50" not in r.stderr
    # a --model that names another architecture is refused
    r = cli(*base, "--checkpoint", folder / "whole.pt", "--trust-checkpoint", "--model", "vgg11",
            "--out", tmp_path / "b")
    assert "leave --model out" in _one_line(r)
    # a random file is not a checkpoint, whatever the trust flag says
    (tmp_path / "noise.pt").write_bytes(np.random.default_rng(0).bytes(300))
    for trust in ([], ["--trust-checkpoint"]):
        r = cli(*base, "--checkpoint", tmp_path / "noise.pt", *trust, "--out", tmp_path / "c")
        text = _one_line(r)
        assert "is not a PyTorch checkpoint" in text and "trust" not in text
    # a state dict of the user's class given to the default architecture points at the factory route
    r = cli(*base, "--checkpoint", folder / "tiny.pt", "--out", tmp_path / "d")
    assert "file.py:function" in _one_line(r)


@pytest.mark.slow
def test_a_pickled_model_whose_code_is_missing_is_one_line(tmp_path, user_code):
    folder, _net = user_code
    code = ("import sys, torch; sys.path.insert(0, sys.argv[1]); import tinynet; "
            "torch.save(tinynet.build(), sys.argv[2])")
    assert subprocess.run([sys.executable, "-c", code, str(folder), str(tmp_path / "whole.pt")]).returncode == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = subprocess.run([sys.executable, "-m", "camcli", "explain", str(CIRCLE), "--checkpoint",
                        str(tmp_path / "whole.pt"), "--trust-checkpoint", "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, cwd=elsewhere, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "tinynet" in r.stderr and "importable" in r.stderr and "file.py:function" in r.stderr


def test_layers_takes_every_model_source(cli, user_code):
    folder, net = user_code
    torch.save(net, folder / "whole.pt")
    factory = cli("layers", f"{folder / 'tinynet.py'}:build", "--model-arg", "classes=4", "--checkpoint",
                  folder / "tiny.pt", "--input-size", "96", "--json")
    assert factory.exit_code == 0, factory.stderr
    pickled = cli("layers", "--checkpoint", folder / "whole.pt", "--trust-checkpoint", "--input-size", "96", "--json")
    assert pickled.exit_code == 0, pickled.stderr
    assert json.loads(factory.stdout) == json.loads(pickled.stdout)
    names = {layer["display"] for layer in json.loads(factory.stdout)}
    assert {"stem", "body", "body[4]", "head"} <= names
    (folder / "tiny.toml").write_text(f'model = "{folder / "tinynet.py"}:build"\nmodel_arg = ["classes=4"]\n'
                                      'input_size = 96\n')
    r = cli("layers", "--config", folder / "tiny.toml", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout) == json.loads(factory.stdout)
    r = cli("layers", "--checkpoint", folder / "whole.pt")
    assert "--trust-checkpoint" in _one_line(r)
    from_python = camcli.layers(net, input_size=96)
    assert [layer["name"] for layer in from_python] == [layer["name"] for layer in json.loads(factory.stdout)]


def test_an_exported_program_is_explained_at_its_own_layers(cli, tmp_path):
    """torch.export's .pt2: unflattened, hooks and gradients work at the eager model's layer names,
    so the maps equal the eager model's; a fixed batch or a missing trust flag is refused."""
    import torchvision
    from torch.export import Dim

    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=3).eval()
    x = torch.zeros(2, 3, 64, 64)
    torch.export.save(torch.export.export(net, (x,), dynamic_shapes=({0: Dim.DYNAMIC},)), tmp_path / "dyn.pt2")
    torch.export.save(torch.export.export(net, (x[:1],)), tmp_path / "fixed.pt2")
    common = ["--layer", "layer4", "--save-heatmap", "npy", "--heatmap-size", "layer", "--workers", "0",
              "--device", "cpu", "--batch-size", "2"]
    r = cli("explain", CIRCLE, PAIR, "--checkpoint", tmp_path / "dyn.pt2", "--trust-checkpoint", *common,
            "--out", tmp_path / "a")
    assert r.exit_code == 0, r.stderr
    eager = {r.item.rel: r for r in camcli.explain([CIRCLE, PAIR], model=net, layer="layer4", input_size=64,
                                                    workers=0, device="cpu", batch_size=2)}
    for row in read_csv(tmp_path / "a" / "predictions.csv"):
        ours = np.load(tmp_path / "a" / row["heatmap"])
        assert row["target_index"] == str(eager[row["path"]].target_index)
        assert pearson(ours, eager[row["path"]].maps[0].layer_map) >= 0.999
    assert json.loads((tmp_path / "a" / "run.json").read_text())["model"]["input_size"] == [64, 64]
    r = cli("explain", CIRCLE, "--checkpoint", tmp_path / "fixed.pt2", "--trust-checkpoint", "--out", tmp_path / "b")
    assert "fixed batch of 1" in _one_line(r) and "Dim.DYNAMIC" in r.stderr
    r = cli("explain", CIRCLE, "--checkpoint", tmp_path / "dyn.pt2", "--out", tmp_path / "c")
    assert "--trust-checkpoint" in _one_line(r)
    r = cli("explain", CIRCLE, "--checkpoint", tmp_path / "dyn.pt2", "--trust-checkpoint", "--input-size", "96",
            "--out", tmp_path / "d")
    assert "64x64 images only" in _one_line(r)


def test_torchscript_that_does_not_fit_says_why_no_layer_can_be_read(cli, tmp_path):
    import torchvision
    net = torchvision.models.resnet18(num_classes=3).eval()
    torch.jit.save(torch.jit.trace(net, torch.zeros(1, 3, 64, 64)), tmp_path / "scripted.pt")
    r = cli("explain", CIRCLE, "--checkpoint", tmp_path / "scripted.pt", "--trust-checkpoint", "--out", tmp_path / "o")
    text = _one_line(r)
    assert "takes no forward hooks" in text and "torch.export" in text


def test_a_shared_activation_is_a_layer_per_call_and_the_default_reads_the_heads_call(cli, user_code):
    """TinyNet applies one ReLU6 module in its stem and in its head: each call is a layer (act#1,
    act#2), and the default is the head's rectified map (act#2), not the signed BatchNorm output
    before it. Its Grad-CAM equals pytorch-grad-cam's on the same model with a ReLU6 of its own there."""
    folder, net = user_code
    r = cli("layers", f"{folder / 'tinynet.py'}:build", "--model-arg", "classes=4", "--checkpoint", folder / "tiny.pt",
            "--input-size", "96", "--json")
    assert r.exit_code == 0, r.stderr
    rows = {layer["display"]: layer for layer in json.loads(r.stdout)}
    assert rows["act#2"]["default"] and rows["act#2"]["shape"] == [32, 24, 24] and rows["act#1"]["shape"] == [16, 48, 48]
    assert rows["act#2"]["cam"] and not rows["act"]["cam"] and rows["act"]["calls"] == 2

    class Unshared(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net, self.head_act = net, torch.nn.ReLU6()

        def forward(self, x):
            n = self.net
            return n.head(self.head_act(n.body(n.act(n.stem(x)))).mean((2, 3)))

    (result,) = list(camcli.explain([CIRCLE], model=net, input_size=96, workers=0, device="cpu"))
    assert result.maps[0].layer == "act#2"
    unshared = Unshared(net).eval()
    theirs, target = _peer_map(unshared, unshared.head_act, CIRCLE)
    assert result.target_index == target and pearson(result.maps[0].layer_map, theirs) >= 0.99
    (cam,) = list(camcli.explain([CIRCLE], model=net, input_size=96, workers=0, device="cpu", method="cam",
                                 layer="act#2"))
    assert cam.status == "ok" and not cam.maps[0].empty


def test_evaluate_reruns_a_run_made_from_a_module_only_with_that_module(user_code, tmp_path):
    from camcli.errors import UsageError
    from conftest import read_boxes
    _folder, net = user_code
    out = tmp_path / "o"
    list(camcli.explain([CIRCLE], model=net, input_size=96, workers=0, device="cpu", save_heatmap="npy", out=out))
    label, box = read_boxes()[f"single/{CIRCLE.name}"][0]
    (tmp_path / "truth.csv").write_text(f"path,x0,y0,x1,y1,label\n{CIRCLE.name},{','.join(map(str, box))},{label}\n")
    report = camcli.evaluate(out, tmp_path / "truth.csv", faithfulness=True, steps=4, model=net)
    assert report.summaries[0].deletion_auc is not None and report.summaries[0].images == 1
    with pytest.raises(UsageError, match="pass the same module"):
        camcli.evaluate(out, tmp_path / "truth.csv", faithfulness=True, steps=4)
