"""Models as people bring them (issue 36): flattening with ``view``, one input channel, their own
segmenters, torchvision's own checkpoint files, natural Python values and images in memory.
Each model is built here the way the real one is; no real weights."""

import inspect
import json

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

import camcli
from camcli.errors import UsageError
from conftest import CIRCLE, read_csv


class ViewNet(nn.Module):
    """MNIST's classic CNN: one input channel, flattened with ``x.view(N, -1)``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16 * 7 * 7, 10)

    def forward(self, x):
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        return self.fc(x.view(x.size(0), -1))


# the same class as a factory file of one's own (`--model mnist.py:build`)
FACTORY = ("import torch\nfrom torch import nn\n\n\n" + inspect.getsource(ViewNet)
           + "\n\ndef build():\n    torch.manual_seed(0)\n    return ViewNet()\n")


def _grey_digit() -> np.ndarray:
    """A 28x28 grey picture (all three channels equal: its luminance is the channel itself)."""
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (28, 28), dtype=np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def _expected_probs(net: nn.Module, picture: np.ndarray) -> torch.Tensor:
    x = (torch.from_numpy(picture[..., 0]).float()[None, None] / 255 - 0.449) / 0.226
    with torch.no_grad():
        return net.eval()(x).softmax(1)[0]


def test_a_one_channel_model_that_flattens_with_view_runs_through_a_factory(cli, tmp_path):
    """Items 3 and 4: the factory route feeds it the luminance, and keeps it channels-first (with the reason)."""
    (tmp_path / "mnist.py").write_text(FACTORY)
    picture = _grey_digit()
    Image.fromarray(picture).save(tmp_path / "digit.png")
    out = tmp_path / "out"
    r = cli("explain", tmp_path / "digit.png", "--model", f"{tmp_path / 'mnist.py'}:build", "--input-size", "28",
            "--layer", "conv2", "--method", "gradcam,scorecam", "--workers", "0", "--out", out)
    assert r.exit_code == 0, r.stderr
    assert "channels-first" in r.stderr and "view size is not compatible" in r.stderr
    rows = read_csv(out / "predictions.csv")
    assert [row["status"] for row in rows] == ["ok", "ok"]
    assert json.loads((out / "run.json").read_text())["model"]["input_channels"] == 1
    torch.manual_seed(0)
    probs = _expected_probs(ViewNet(), picture)
    assert int(rows[0]["pred_index"]) == int(probs.argmax())
    assert float(rows[0]["score"]) == pytest.approx(float(probs.max()), abs=1e-4)


def test_a_one_channel_module_handed_over_is_fed_its_luminance_and_left_as_it_was():
    torch.manual_seed(0)
    net = ViewNet().eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    picture = _grey_digit()
    (result,) = list(camcli.explain(picture, model=net, input_size=28, layer="conv2", workers=0))
    probs = _expected_probs(net, picture)
    assert result.status == "ok" and result.pred_index == int(probs.argmax())
    assert result.score == pytest.approx(float(probs.max()), abs=1e-4)
    assert net.conv1.in_channels == 1 and all(torch.equal(before[k], v) for k, v in net.state_dict().items())


class OwnSegmenter(nn.Module):
    """A user's segmenter: features, 1x1 scores, then an upsampling of the scores as its last module."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(),
                                      nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU())
        self.classifier = nn.Conv2d(32, classes, 1)
        self.up = nn.Upsample(scale_factor=4, mode="bilinear", align_corners=False)

    def forward(self, x):
        return self.up(self.classifier(self.features(x)))


def test_an_own_segmenters_default_layer_lies_before_its_scores_and_the_score_map_warns(tmp_path):
    """Item 5: the default was `classifier` (the scores: its Grad-CAM redrew the mask, r = 1.000)."""
    torch.manual_seed(0)
    net = OwnSegmenter()
    logs: list[str] = []
    run = camcli.explain([CIRCLE], model=net, task="segmentation", input_size=64, workers=0)
    run.log = logs.append
    results = list(run)
    assert results and run.session.layers == ["features"]
    assert not any("redraws" in line for line in logs)
    logs.clear()
    run = camcli.explain([CIRCLE], model=net, task="segmentation", input_size=64, workers=0, layer="classifier")
    run.log = logs.append
    list(run)
    assert any("warning: the map at classifier redraws the model's own scores" in line for line in logs), logs


def test_python_values_of_natural_types(small_model):
    """Item 6: ints, lists and tuples where the command line takes text; anything else a UsageError."""
    common = dict(model="resnet18", checkpoint=str(small_model / "r18.pth"), workers=0)
    (one,) = list(camcli.explain(CIRCLE, target=2, input_size=(64, 64), mean=[0.485, 0.456, 0.406], **common))
    assert one.target_index == 2 and one.status == "ok"
    (two,) = list(camcli.explain(CIRCLE, target=[2, 0], input_size=64, **common))
    assert [m.target_index for m in two.maps] == [2, 0]
    for bad, says in (({"alpha": "0.5x"}, "alpha"), ({"input_size": (32, 40)}, "square"),
                      ({"target": [None]}, "target"), ({"seed": "x"}, "seed")):
        with pytest.raises(UsageError, match=says):
            camcli.explain(CIRCLE, **common, **bad)


def test_the_explainer_takes_the_layer_spellings_of_the_command_line():
    """Item 7: one path, one error type."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3).eval()
    x = torch.rand(2, 3, 64, 64)
    explainer = camcli.Explainer(model, ["layer4[-1]"], [camcli.get_method("gradcam")])
    assert list(explainer(x).maps) == [("gradcam", "layer4.1")]
    with pytest.raises(UsageError, match="unknown layer 'layer9'"):
        camcli.Explainer(model, ["layer9"], [camcli.get_method("gradcam")])

    class ConvHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
            self.head = nn.Conv2d(8, 4, 1)

        def forward(self, x):
            return self.head(self.body(x)).mean((2, 3))

    explainer = camcli.Explainer(ConvHead().eval(), ["body"], [camcli.get_method("cam")])
    with pytest.raises(UsageError, match="method 'cam' needs"):
        explainer(x)


def test_torchvisions_own_checkpoint_file_is_named_by_its_categories(cli, tmp_path):
    """Item 9: torchvision's ImageNet file as --checkpoint gave labels class_N."""
    torch.manual_seed(0)
    torch.save(torchvision.models.mobilenet_v2().state_dict(), tmp_path / "mobilenet_v2.pth")
    r = cli("explain", CIRCLE, "--model", "mobilenet_v2", "--checkpoint", tmp_path / "mobilenet_v2.pth",
            "--input-size", "64", "--workers", "0", "--out", tmp_path / "out")
    assert r.exit_code == 0, r.stderr
    categories = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"]
    row = read_csv(tmp_path / "out" / "predictions.csv")[0]
    assert row["pred_label"] == categories[int(row["pred_index"])]
    assert "labels of MobileNet_V2_Weights.IMAGENET1K_V1" in r.stderr
    r = cli("explain", CIRCLE, "--model", "mobilenet_v2", "--checkpoint", tmp_path / "mobilenet_v2.pth",
            "--input-size", "64", "--workers", "0", "--labels", tmp_path / "l.txt", "--out", tmp_path / "o2")
    assert r.exit_code == 2  # a labels file that is not there is still an error, not replaced


def test_images_in_memory_pil_numpy_and_tensors(small_model, tmp_path):
    """Item 10: PIL images, arrays and tensors, one or a list, as the peers take them; the same result as the file."""
    common = dict(model="resnet18", checkpoint=str(small_model / "r18.pth"), input_size=64, workers=0)
    (from_file,) = list(camcli.explain(CIRCLE, **common))
    with Image.open(CIRCLE) as im:
        pil = im.convert("RGB")
    array = np.asarray(pil)
    tensor = torch.from_numpy(array).permute(2, 0, 1)
    for given in (pil, array, tensor, tensor.float() / 255):
        (result,) = list(camcli.explain(given, **common))
        assert result.item.rel == "image-0000.png" and result.pred_index == from_file.pred_index
        assert result.score == pytest.approx(from_file.score, abs=1e-3)
    mixed = list(camcli.explain([pil, str(CIRCLE), tensor[None].repeat(2, 1, 1, 1)], **common,
                                out=tmp_path / "out"))
    assert [r.item.rel for r in mixed] == ["image-0000.png", CIRCLE.name, "image-0002.png", "image-0003.png"]
    assert len(read_csv(tmp_path / "out" / "predictions.csv")) == 4
    for bad, says in ((array.transpose(2, 0, 1), "channels first"), (tensor.permute(1, 2, 0), "C x H x W"),
                      (tensor.float(), "outside \\[0, 1\\]")):
        with pytest.raises(UsageError, match=says):
            list(camcli.explain(bad, **common))


# --- Ultralytics YOLO (the optional yolo extra): items 1, 2 and 8 ----------------------------------------------

def _scene(path) -> None:
    import cv2

    rng = np.random.default_rng(0)
    img = np.full((200, 300, 3), 90, np.uint8)
    for _ in range(6):
        centre = (int(rng.integers(20, 280)), int(rng.integers(20, 180)))
        cv2.circle(img, centre, int(rng.integers(8, 30)), tuple(int(v) for v in rng.integers(0, 256, 3)), -1)
    Image.fromarray(img).save(path)


def _yolo(kind: str, path, classes: int = 3):
    """An untrained Ultralytics model saved as Ultralytics saves its checkpoints (a pickle holding ``model``),
    its class biases spread so that scores differ."""
    tasks = pytest.importorskip("ultralytics.nn.tasks", reason="the yolo extra (Ultralytics) is not installed")
    torch.manual_seed(0)
    model = getattr(tasks, kind)({"DetectionModel": "yolov8n.yaml", "SegmentationModel": "yolov8n-seg.yaml",
                                  "PoseModel": "yolov8n-pose.yaml", "OBBModel": "yolov8n-obb.yaml"}[kind],
                                 nc=classes, verbose=False)
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and m.bias is not None and m.out_channels == classes:
            nn.init.normal_(m.bias, 0, 3)
    model.names = {i: f"thing{i}" for i in range(classes)}
    torch.save({"model": model}, path)
    return path


def _yolo_run(path, image, **options):
    return list(camcli.explain([image], checkpoint=str(path), trust_checkpoint=True, workers=0,
                               model_arg=["imgsz=320"], **options))


@pytest.mark.parametrize("kind", ["SegmentationModel", "PoseModel"])
def test_yolo_segment_and_pose_heads_are_explained_box_by_box(tmp_path, kind):
    """Item 1: a Segment head's mask coefficients follow its class scores (read by position: IndexError)."""
    path = _yolo(kind, tmp_path / "m.pt")
    _scene(tmp_path / "scene.png")
    (result,) = _yolo_run(path, tmp_path / "scene.png", score_threshold=0.3, max_detections=3)
    assert result.status == "ok" and len(result.detections) == 3
    assert all(d.label.startswith("thing") for d in result.detections) and len(result.maps) == 3


def test_yolo_obb_heads_are_refused_with_the_reason(tmp_path):
    path = _yolo("OBBModel", tmp_path / "m.pt")
    _scene(tmp_path / "scene.png")
    with pytest.raises(UsageError, match="rotated boxes"):
        _yolo_run(path, tmp_path / "scene.png")


def test_yolo_gradient_methods_work_on_square_images(tmp_path):
    """Item 2: the dummy validation cached the head's anchors as inference tensors for square inputs."""
    path = _yolo("DetectionModel", tmp_path / "m.pt")
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(tmp_path / "sq.png")
    (result,) = _yolo_run(path, tmp_path / "sq.png", method="gradcam", score_threshold=0.3, max_detections=2)
    assert result.status == "ok", result.error  # was: "Inference tensors cannot be saved for backward"
    assert len(result.maps) == 2 and {m.method for m in result.maps} == {"gradcam"}


def test_yolo_boxes_and_scores_equal_ultralytics_predict(tmp_path):
    """Item 8: camcli padded right and bottom; Ultralytics centres its letterbox (boxes were 5 px off here)."""
    path = _yolo("DetectionModel", tmp_path / "m.pt")
    _scene(tmp_path / "scene.png")
    from ultralytics import YOLO

    theirs = YOLO(str(path)).predict(str(tmp_path / "scene.png"), imgsz=320, conf=0.3, iou=0.7, verbose=False,
                                     device="cpu")[0].boxes
    (result,) = _yolo_run(path, tmp_path / "scene.png", score_threshold=0.3, max_detections=10_000)
    assert len(result.detections) == len(theirs) > 10
    pairs = list(zip(theirs.conf.tolist(), theirs.xyxy.tolist()))
    for d in result.detections:
        worst = min(max(abs(d.score - c), *(abs(a - b) for a, b in zip(d.box, box))) for c, box in pairs)
        assert worst < 0.05, (d.score, d.box)
