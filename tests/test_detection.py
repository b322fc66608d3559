"""Detectors: torchvision's detection models explained box by box, where a user sees it (the
detections CSV, overlays, NDJSON, exit codes, resume) and against pytorch-grad-cam's Faster R-CNN
recipe on the same model, layer and box.

The models are small configurations built with torchvision's own classes and seeded weights; the
box classifier's bias is set so that the untrained detector keeps boxes of one class (a
detector with random weights finds nothing above 0.5). Full-size models are in benchmarks/.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from conftest import SAMPLES, read_boxes, read_csv

ARCH = "fasterrcnn_mobilenet_v3_large_320_fpn"
REQUIRED = ("path", "det_label", "det_score", "det_x0", "det_y0", "det_x1", "det_y1", "method", "layer", "heatmap",
            "energy_in_box")


def tiny_detector() -> torch.nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.get_model(ARCH, weights=None, weights_backbone=None, num_classes=3)
    with torch.no_grad():  # every proposal scores class 1 highly: the detector keeps boxes
        model.roi_heads.box_predictor.cls_score.bias[:] = torch.tensor([0.0, 4.0, 0.0])
    return model.eval()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("detector") / "detector.pt"
    torch.save(tiny_detector().state_dict(), path)
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scenes")
    for name in ("circle_07.jpg", "ring_00.jpg", "star_05.jpg"):
        shutil.copy(SAMPLES / "single" / name, folder / name)
    return folder


def explain(cli, images, checkpoint, out, *args):
    return cli("explain", images, "-m", ARCH, "--checkpoint", checkpoint, "-o", out, "--workers", "0", *args)


def test_a_detection_run_writes_a_row_and_an_overlay_for_every_box(cli, images, checkpoint, tmp_path):
    out = tmp_path / "run"
    result = explain(cli, images, checkpoint, out, "--method", "gradcam,eigencam", "--max-detections", "2",
                     "--save-heatmap", "npy")
    assert result.exit_code == 0, result.output
    assert not (out / "predictions.csv").exists()
    rows = read_csv(out / "detections.csv")
    assert set(REQUIRED) <= set(rows[0])
    by_image: dict[str, list] = {}
    for r in rows:
        by_image.setdefault(r["path"], []).append(r)
    assert sorted(by_image) == ["circle_07.jpg", "ring_00.jpg", "star_05.jpg"]
    for path, group in by_image.items():
        w, h = Image.open(images / path).size
        boxes = int(group[0]["detections"])
        assert 1 <= boxes <= 2
        assert len(group) == boxes * 2  # every box x method x layer
        assert {(r["det_rank"], r["method"]) for r in group} == {(str(k), m) for k in range(1, boxes + 1)
                                                                   for m in ("gradcam", "eigencam")}
        for r in group:
            x0, y0, x1, y1 = (float(r[c]) for c in ("det_x0", "det_y0", "det_x1", "det_y1"))
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h  # original pixels
            assert r["det_label"] == "class_1" and float(r["det_score"]) >= 0.5
            assert r["layer"] == "backbone" and r["status"] == "ok"
            if r["empty_map"] == "true":  # no evidence: no share to measure
                assert r["energy_in_box"] == ""
            elif r["energy_in_box"]:
                assert 0.0 <= float(r["energy_in_box"]) <= 1.0
            overlay = Image.open(out / r["output"])
            assert overlay.size == (w, h)
            assert f"--box{r['det_rank']}-class_1." in r["output"]
            heat = np.load(out / r["heatmap"])
            assert heat.shape == (h, w) and 0 <= heat.min() and heat.max() <= 1
    # one file per box: no two rows share an overlay
    assert len({r["output"] for r in rows}) == len(rows)
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["task"] == "detection" and "box" in manifest["head"]


def test_energy_in_box_is_the_share_of_the_saved_map_inside_the_box(cli, images, checkpoint, tmp_path):
    out = tmp_path / "run"
    assert explain(cli, images, checkpoint, out, "--max-detections", "3", "--save-heatmap", "npy").exit_code == 0
    # (a map whose evidence lies only in the detector's padding has none over the image: no share)
    rows = [r for r in read_csv(out / "detections.csv") if r["energy_in_box"]]
    assert len(rows) >= 3
    for r in rows:
        heat = np.load(out / r["heatmap"]).astype(np.float64)
        x0, y0, x1, y1 = (float(r[c]) for c in ("det_x0", "det_y0", "det_x1", "det_y1"))
        inside = heat[int(np.floor(y0)):int(np.ceil(y1)), int(np.floor(x0)):int(np.ceil(x1))].sum() / heat.sum()
        assert abs(inside - float(r["energy_in_box"])) < 0.05, r


def test_an_image_without_a_box_gets_a_row_that_says_so(cli, images, checkpoint, tmp_path):
    out = tmp_path / "run"
    result = explain(cli, images, checkpoint, out, "--score-threshold", "0.99", "--json")
    assert result.exit_code == 0, result.output
    rows = read_csv(out / "detections.csv")
    assert len(rows) == 3
    for r in rows:
        assert r["detections"] == "0" and r["status"] == "ok" and not r["output"]
        assert "no detection scores 0.99 or more" in r["note"]
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["detections"] for r in records if r["type"] == "image"] == [[], [], []]
    # resumed: the no-box images count as done
    again = explain(cli, images, checkpoint, out, "--score-threshold", "0.99", "--resume")
    assert again.exit_code == 0 and "3 already done" in again.output


def test_combined_maps_draw_every_box_on_one_overlay_per_method(cli, images, checkpoint, tmp_path):
    each, combined = tmp_path / "each", tmp_path / "combined"
    assert explain(cli, images, checkpoint, each, "--max-detections", "3").exit_code == 0
    result = explain(cli, images, checkpoint, combined, "--max-detections", "3", "--detection-maps", "combined",
                     "--json")
    assert result.exit_code == 0, result.output
    rows = read_csv(combined / "detections.csv")
    assert [(r["path"], r["det_rank"]) for r in rows] == [(r["path"], r["det_rank"])
                                                          for r in read_csv(each / "detections.csv")]
    for path in {r["path"] for r in rows}:
        outputs = {r["output"] for r in rows if r["path"] == path}
        assert outputs == {f"overlays/{path}.layercam@backbone.png"}
        assert (combined / outputs.pop()).is_file()
    records = [json.loads(line) for line in result.stdout.splitlines() if '"image"' in line]
    assert all(len(rec["detections"]) == int(next(r["detections"] for r in rows if r["path"] == rec["path"]))
               for rec in records)
    assert all(d["maps"][0]["overlay"].endswith("layercam@backbone.png") for rec in records for d in rec["detections"])


def test_a_resumed_detection_run_redoes_only_what_is_missing(cli, images, checkpoint, tmp_path):
    out = tmp_path / "run"
    assert explain(cli, images, checkpoint, out, "--max-detections", "2").exit_code == 0
    before = (out / "detections.csv").read_bytes()
    first = read_csv(out / "detections.csv")[0]["output"]
    picture = (out / first).read_bytes()
    (out / first).unlink()
    result = explain(cli, images, checkpoint, out, "--max-detections", "2", "--resume")
    assert result.exit_code == 0, result.output
    assert "2 already done" in result.output
    assert (out / "detections.csv").read_bytes() == before
    assert (out / first).read_bytes() == picture
    changed = explain(cli, images, checkpoint, out, "--max-detections", "3", "--resume")
    assert changed.exit_code == 2 and "max_detections" in changed.output.replace("-", "_")


def test_settings_a_detector_does_not_take_are_refused(cli, images, checkpoint, tmp_path):
    refused = explain(cli, images, checkpoint, tmp_path / "a", "--method", "scorecam")
    assert refused.exit_code == 2 and "scorecam cannot explain a detector's boxes" in refused.output
    assert "gradcam" in refused.output  # says which can
    target = explain(cli, images, checkpoint, tmp_path / "b", "--target", "1")
    assert target.exit_code == 2 and "--target" in target.output and "detection run" in target.output
    task = explain(cli, images, checkpoint, tmp_path / "c", "--task", "classification")
    assert task.exit_code == 2 and "is a detector" in task.output
    not_one = cli("explain", images, "-m", "resnet18", "--weights", "none", "--task", "detection", "-o",
                  tmp_path / "d")
    assert not_one.exit_code == 2 and "no detector camcli knows" in not_one.output
    bad = explain(cli, images, checkpoint, tmp_path / "e", "--detection-maps", "all")
    assert bad.exit_code == 2 and "--detection-maps" in bad.output


def test_layers_lists_the_backbone_as_a_detectors_default(cli, checkpoint):
    result = cli("layers", ARCH, "--checkpoint", checkpoint, "--json")
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert [layer["name"] for layer in found if layer["default"]] == ["backbone"]
    assert not any(layer["cam"] for layer in found)


def test_the_python_api_explains_a_detector_handed_over(tmp_path):
    import camcli

    run = camcli.explain(sorted((SAMPLES / "single").glob("*.jpg"))[:2], model=tiny_detector(), max_detections=2,
                         workers=0)
    results = list(run)
    assert all(r.detections and len(r.maps) == len(r.detections) for r in results)
    m = results[0].maps[0]
    assert m.detection.rank == 1 and m.heatmap.shape == (results[0].height, results[0].width)
    assert run.session.task.name == "detection"


# ---------------------------------------------------------------- parity with pytorch-grad-cam

def test_box_maps_equal_pytorch_grad_cams_faster_rcnn_recipe():
    """Grad-CAM at a tensor layer with FasterRCNNBoxScoreTarget for one box, and Eigen-CAM at the
    backbone with fasterrcnn_reshape_transform: the maps pytorch-grad-cam's tutorial makes."""
    from pytorch_grad_cam import EigenCAM, GradCAM
    from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget
    from pytorch_grad_cam.utils.reshape_transforms import fasterrcnn_reshape_transform

    from camcli.engine.detection import DetectionExplainer
    from camcli.engine.methods import get_method
    from camcli.engine.tensors import upsample

    model = tiny_detector()
    image = torch.from_numpy(np.asarray(Image.open(SAMPLES / "single" / "star_05.jpg").convert("RGB").resize(
        (320, 320)))).permute(2, 0, 1).float() / 255  # 320 px: the detector's own size, no padding
    checked = 0
    for layer, name, peer, reshape in (("backbone.fpn.layer_blocks.0", "gradcam", GradCAM, None),
                                       ("backbone.body.13", "gradcam", GradCAM, None),
                                       ("backbone", "eigencam", EigenCAM, fasterrcnn_reshape_transform)):
        explainer = DetectionExplainer(model, [layer], [get_method(name)], ["bg", "a", "b"], max_detections=3)
        found = explainer([image])[0]
        assert len(found.detections) == 3
        for det, maps in zip(found.detections, found.maps):
            ours = upsample(maps[(name, layer)][0], (320, 320)).numpy()
            target = [FasterRCNNBoxScoreTarget([det.index], [np.array(det.box)])]
            theirs = peer(model, [model.get_submodule(layer)], reshape_transform=reshape)(image[None],
                                                                                          targets=target)[0]
            assert ours.std() > 0.01
            assert np.corrcoef(ours.ravel(), theirs.ravel())[0, 1] >= 0.99, (layer, det.rank)
            checked += 1
    assert checked == 9


def test_box_targets_differ_from_the_whole_images_and_follow_each_box():
    """Each box's map is its own (LayerCAM: the gradients where they fall): the two objects of a
    pair scene get different maps, each with more of its energy on its own object, and an image's
    maps in a batch are those of the image alone (one backward per rank for the whole batch; the
    padding a larger image adds is cut off, and changes the detector's own features only a little)."""
    from camcli.engine.detection import DetectionExplainer
    from camcli.engine.framing import Frame, map_to_image
    from camcli.engine.methods import get_method

    model = demo_detector()
    layer = "backbone.fpn.layer_blocks.0"
    pair = scene("pairs/star_ring_03.png")
    explainer = DetectionExplainer(model, [layer], [get_method("layercam")], ["bg", *"abcdef"], max_detections=2)
    batched = explainer([scene("single/ring_00.jpg"), pair])
    alone = explainer([pair])[0]
    key = ("layercam", layer)
    assert len(alone.detections) == 2 and alone.detections[0].index != alone.detections[1].index
    for det, a, b in zip(alone.detections, alone.maps, batched[1].maps):
        assert a[key][0].shape == b[key][0].shape and a[key][3] == b[key][3]  # the same cells, the same extent
        assert np.corrcoef(a[key][0].ravel(), b[key][0].ravel())[0, 1] > 0.99, det.rank
    h, w = pair.shape[-2:]
    (extent, inset) = alone.maps[0][key][3]  # the input region the map's cells cover, and the image's corner in it
    frame = Frame(inset[1], inset[0], inset[1] + alone.valid[1], inset[0] + alone.valid[0])
    heats = [map_to_image(m[key][0], frame, m[key][3][0], (h, w)).numpy() for m in alone.maps]
    for own, other, det, rival in ((0, 1, alone.detections[0], alone.detections[1]),
                                   (1, 0, alone.detections[1], alone.detections[0])):
        def energy(heat, box):
            x0, y0, x1, y1 = (int(round(v)) for v in box)
            return heat[y0:y1, x0:x1].sum() / heat.sum()
        assert energy(heats[own], det.box) > energy(heats[own], rival.box), det.label
    assert np.abs(heats[0] - heats[1]).max() > 0.2


@pytest.mark.slow
@pytest.mark.parametrize("arch,args", [
    ("retinanet_resnet50_fpn", ["min_size=160", "max_size=160", "score_thresh=0.0"]),
    ("fcos_resnet50_fpn", ["min_size=160", "max_size=160", "score_thresh=0.0"]),
    ("ssdlite320_mobilenet_v3_large", ["score_thresh=0.0"]),
    ("maskrcnn_resnet50_fpn", ["min_size=160", "max_size=160", "box_score_thresh=0.0"]),
])
def test_every_detector_family_loads_by_name_and_explains_its_boxes(cli, images, tmp_path, arch, args):
    out = tmp_path / "run"
    flags = [f for a in args for f in ("--model-arg", a)]
    result = cli("explain", images / "ring_00.jpg", "-m", arch, "--weights", "none", "--num-classes", "4", *flags,
                 "--score-threshold", "0", "--max-detections", "2", "--method", "gradcam,eigencam", "-o", out,
                 "--workers", "0")
    assert result.exit_code == 0, result.output
    rows = read_csv(out / "detections.csv")
    assert len(rows) == 4 and all(r["status"] == "ok" and (out / r["output"]).is_file() for r in rows)
    assert {r["det_rank"] for r in rows} == {"1", "2"}


# ---------------------------------------------------------------- camcli evaluate on a detection run

def write_truth(path, rows, shift=0.0, labelled=True):
    """A truth CSV made of the run's own boxes (``shift``: moved right by that share of their width)."""
    with open(path, "w", encoding="utf-8") as f:
        f.write("path,x0,y0,x1,y1" + (",label\n" if labelled else "\n"))
        for r in {(r["path"], r["det_rank"]): r for r in rows if r["det_rank"]}.values():
            x0, y0, x1, y1 = (float(r[c]) for c in ("det_x0", "det_y0", "det_x1", "det_y1"))
            dx = shift * (x1 - x0)
            f.write(f"{r['path']},{x0 + dx:.1f},{y0:.1f},{x1 + dx:.1f},{y1:.1f}" +
                    (f",{r['det_label']}\n" if labelled else "\n"))


def test_evaluate_scores_the_detector_and_each_found_boxs_maps(cli, images, checkpoint, tmp_path):
    out = tmp_path / "run"
    assert explain(cli, images, checkpoint, out, "--max-detections", "2", "--method", "gradcam,eigencam",
                   "--save-heatmap", "npy").exit_code == 0
    rows = read_csv(out / "detections.csv")
    boxes = len({(r["path"], r["det_rank"]) for r in rows})
    truth = tmp_path / "truth.csv"
    write_truth(truth, rows)
    result = cli("evaluate", out, "--truth", truth, "--json", "--min-recall", "0.99", "--min-pointing", "0")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["detector"]["recall"] == 1.0 and report["detector"]["precision"] == 1.0
    assert report["detector"]["matched"] == boxes and report["detector"]["mean_iou"] > 0.99
    assert {(s["method"], s["images"]) for s in report["summaries"]} == {("gradcam", boxes), ("eigencam", boxes)}
    scored = read_csv(out / "evaluation.csv")
    assert len(scored) == len(rows) and all(r["matched"] == "true" for r in scored)
    # the energy inside the truth box is the run's own energy_in_box when the truth is the box
    own = {(r["path"], r["det_rank"], r["method"]): r["energy_in_box"] for r in rows}
    for r in scored:
        if r["energy"] and own[(r["path"], r["det_rank"], r["method"])]:
            assert abs(float(r["energy"]) - float(own[(r["path"], r["det_rank"], r["method"])])) < 0.05

    moved = tmp_path / "moved.csv"
    write_truth(moved, rows, shift=2.0)  # every truth box beside its detection: nothing found right
    failed = cli("evaluate", out, "--truth", moved, "--min-recall", "0.5")
    assert failed.exit_code == 1 and "recall 0.000 < --min-recall 0.5" in failed.output


def test_evaluate_matches_within_the_class_unless_the_truth_has_no_labels(cli, images, checkpoint, tmp_path):
    out = tmp_path / "run"
    assert explain(cli, images, checkpoint, out, "--max-detections", "1").exit_code == 0
    rows = read_csv(out / "detections.csv")
    wrong = tmp_path / "wrong.csv"
    write_truth(wrong, [dict(r, det_label="class_2") for r in rows])  # right place, another class
    report = json.loads(cli("evaluate", out, "--truth", wrong, "--json").stdout)
    assert report["detector"]["matched"] == 0
    plain = tmp_path / "plain.csv"
    write_truth(plain, rows, labelled=False)
    report = json.loads(cli("evaluate", out, "--truth", plain, "--json").stdout)
    assert report["detector"]["recall"] == 1.0
    # no heatmaps saved: the detector is scored, a pointing gate is a usage error
    gate = cli("evaluate", out, "--truth", plain, "--min-pointing", "0.5")
    assert gate.exit_code == 2 and "save-heatmap" in gate.output
    refused = cli("evaluate", out, "--truth", plain, "--faithfulness")
    assert refused.exit_code == 2 and "detection run" in refused.output


def test_models_lists_the_detectors_with_their_task(cli):
    result = cli("models", "detection", "--json")
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    names = {m["name"] for m in found}
    assert {"fasterrcnn_resnet50_fpn", "retinanet_resnet50_fpn_v2", "fcos_resnet50_fpn", "ssd300_vgg16",
            "ssdlite320_mobilenet_v3_large", "maskrcnn_resnet50_fpn"} <= names
    assert all(m["task"] == "detection" and m["weights"] for m in found)
    every = json.loads(cli("models", "--json").stdout)
    assert {m["task"] for m in every} == {"classification", "detection", "segmentation", "video"}


# ---------------------------------------------------------------- Ultralytics YOLO (optional extra)

def test_yolo_from_its_yaml_is_explained_box_by_box_with_eigencam_by_default(cli, images, tmp_path):
    pytest.importorskip("ultralytics", reason="the yolo extra (Ultralytics) is not installed")
    out = tmp_path / "run"
    result = cli("explain", images, "-m", "yolov8n.yaml", "--num-classes", "3", "--model-arg", "imgsz=320",
                 "--score-threshold", "0", "--max-detections", "2", "-o", out, "--workers", "0", "--json")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]  # stdout holds data only
    assert [r["type"] for r in records] == ["image"] * 3 + ["summary"]
    rows = read_csv(out / "detections.csv")
    assert len(rows) == 6 and {r["method"] for r in rows} == {"eigencam"} and {r["layer"] for r in rows} == {"levels"}
    for r in rows:
        w, h = Image.open(images / r["path"]).size
        assert 0 <= float(r["det_x0"]) < float(r["det_x1"]) <= w and 0 <= float(r["det_y0"]) < float(r["det_y1"]) <= h
        assert r["det_label"].startswith("class_") and (out / r["output"]).is_file()
    grads = cli("explain", images / "ring_00.jpg", "-m", "yolov8n.yaml", "--num-classes", "3", "--model-arg",
                "imgsz=320", "--score-threshold", "0", "--max-detections", "2", "--method", "gradcam", "-o",
                tmp_path / "grads", "--workers", "0")
    assert grads.exit_code == 0, grads.output


def test_an_ultralytics_pt_is_a_pickle_and_loads_only_when_trusted(cli, images, tmp_path):
    pytest.importorskip("ultralytics", reason="the yolo extra (Ultralytics) is not installed")
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    model = DetectionModel("yolov8n.yaml", nc=2, verbose=False)
    model.names = {0: "apple", 1: "pear"}
    path = tmp_path / "best.pt"
    torch.save({"model": model.half(), "epoch": 3}, path)  # how Ultralytics saves its checkpoints
    refused = cli("explain", images, "--checkpoint", path, "-o", tmp_path / "a", "--workers", "0")
    assert refused.exit_code == 2 and "trust" in refused.output
    result = cli("explain", images / "ring_00.jpg", "--checkpoint", path, "--trust-checkpoint", "--model-arg",
                 "imgsz=320", "--score-threshold", "0", "--max-detections", "1", "-o", tmp_path / "b", "--workers", "0")
    assert result.exit_code == 0, result.output
    rows = read_csv(tmp_path / "b" / "detections.csv")
    assert rows[0]["det_label"] in ("apple", "pear") and rows[0]["method"] == "eigencam"
    listed = json.loads(cli("layers", "yolov8n.yaml", "--json").stdout)
    assert [layer["name"] for layer in listed if layer["default"]] == ["levels"]


def demo_detector() -> torch.nn.Module:
    """The shipped demo detector (FCOS on the shape scenes, trained: its outputs follow the image)."""
    import importlib.util

    from safetensors.torch import load_file

    spec = importlib.util.spec_from_file_location("shapes_detector", SAMPLES.parent / "demo" / "shapes_detector.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.build()
    model.load_state_dict({k: v.float() for k, v in load_file(SAMPLES.parent / "demo" / "shapes_fcos.safetensors").items()})
    return model.eval()


def scene(name: str) -> torch.Tensor:
    return torch.from_numpy(np.asarray(Image.open(SAMPLES / name).convert("RGB"))).permute(2, 0, 1).float() / 255


def test_ablation_cam_weighs_each_channel_by_the_drop_of_each_boxs_score():
    """Ablation-CAM's definition (Desai & Ramaswamy, 2020) for a box, computed here channel by
    channel with a hook of the test's own: zero channel k, run the detector, read the matched
    box's score y_k; w_k = (y - y_k) / y and the map is ReLU(sum_k w_k A_k)."""
    from camcli.engine.detection import DetectionExplainer, box_score
    from camcli.engine.methods import get_method

    model = demo_detector()
    layer = "backbone.body.layer1.0.conv1"  # 64 channels
    image = scene("pairs/circle_square_07.png")
    explainer = DetectionExplainer(model, [layer], [get_method("ablationcam", cam_batch_size=24)],
                                   ["bg", *"abcdef"], max_detections=2)
    found = explainer([image])[0]
    assert len(found.detections) == 2
    module = model.get_submodule(layer)
    with torch.no_grad():
        kept = {}
        handle = module.register_forward_hook(lambda _m, _i, out: kept.setdefault("acts", out.clone()))
        output = model([image])[0]
        handle.remove()
        acts = kept["acts"][0]
        for det, maps in zip(found.detections, found.maps):
            box = torch.tensor(det.box)
            y = float(box_score(output, det.index, box))
            weights = []
            for k in range(acts.shape[0]):
                def zero(_m, _i, out, k=k):
                    out = out.clone()
                    out[:, k] = 0
                    return out
                handle = module.register_forward_hook(zero)
                weights.append((y - float(box_score(model([image])[0], det.index, box))) / y)
                handle.remove()
            assert max(abs(w) for w in weights) > 1e-3  # the test can tell channels apart
            ours = maps[("ablationcam", layer)][0]
            rows, cols = ours.shape  # the cells that cover the image (the padding to the stride cut off)
            assert acts.shape[1] - rows <= 1 and acts.shape[2] - cols <= 2
            raw = (torch.tensor(weights)[:, None, None] * acts[:, :rows, :cols]).sum(0).clamp_min(0)
            expected = (raw - raw.min()) / (raw.max() - raw.min())
            assert torch.allclose(ours, expected, atol=1e-3), det.rank


# ---------------------------------------------------------------- the demo detector (trained; shipped)

DETECT_CONFIG = SAMPLES.parent / "configs" / "demo-detect.toml"


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    from typer.testing import CliRunner

    from camcli.cli import app

    out = tmp_path_factory.mktemp("demo-detect") / "run"
    r = CliRunner().invoke(app, ["explain", str(SAMPLES), "--config", str(DETECT_CONFIG), "--save-heatmap", "npy",
                                 "--out", str(out), "--workers", "0"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return out


def test_the_demo_detector_finds_the_sample_objects_and_its_maps_land_on_them(cli, demo_run):
    """sample_images/boxes.csv is the truth: the demo detector must find the objects, and the
    Grad-CAM map of each box it found right must peak on its object."""
    result = cli("evaluate", demo_run, "--truth", SAMPLES / "boxes.csv", "--json", "--min-recall", "0.95",
                 "--min-pointing", "0.95")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["detector"]["images"] == 24
    assert report["detector"]["precision"] >= 0.95
    manifest = json.loads((demo_run / "run.json").read_text())
    assert manifest["task"] == "detection" and manifest["model"]["source"]["kind"] == "factory"


def test_a_boxs_map_is_about_its_box_not_the_whole_scene(demo_run):
    """On the two-object scenes, each box's Grad-CAM map has more of its energy in its own box than
    in the other object's box."""
    rows = [r for r in read_csv(demo_run / "detections.csv") if r["path"].startswith("pairs/") and r["det_rank"]]
    truth = {p: b for p, b in read_boxes().items() if p.startswith("pairs/")}
    own_more, compared = 0, 0
    for r in rows:
        if not r["energy_in_box"]:
            continue
        heat = np.load(demo_run / r["heatmap"]).astype(np.float64)
        box = tuple(float(r[c]) for c in ("det_x0", "det_y0", "det_x1", "det_y1"))
        others = [b for _label, b in truth[r["path"]] if _iou(b, box) < 0.3]
        if not others:
            continue
        x0, y0, x1, y1 = (int(v) for v in others[0])
        other = heat[y0:y1, x0:x1].sum() / heat.sum()
        compared += 1
        own_more += float(r["energy_in_box"]) > other
    assert compared >= 8
    assert own_more / compared >= 0.9


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def test_a_detection_run_without_a_method_takes_layercam_says_why_and_its_maps_land_on_the_boxes(cli, tmp_path):
    """The default serves the user: without `--method` a detection run explains each box with
    LayerCAM (Grad-CAM's channel averages point at their box far less often, docs/detection.md),
    the log says which default was taken and why, and the maps peak on their objects."""
    demo = SAMPLES.parent / "demo"
    out = tmp_path / "run"
    r = cli("explain", SAMPLES / "single", "-m", f"{demo / 'shapes_detector.py'}:build", "--checkpoint",
            demo / "shapes_fcos.safetensors", "--labels", demo / "detector_labels.txt", "--layer",
            "backbone.fpn.layer_blocks.0", "--max-detections", "5", "--save-heatmap", "npy", "--workers", "0",
            "-o", out)
    assert r.exit_code == 0, r.output
    assert "LayerCAM is a detection run's default" in r.stderr and "--method" in r.stderr
    assert {row["method"] for row in read_csv(out / "detections.csv")} == {"layercam"}
    result = cli("evaluate", out, "--truth", SAMPLES / "boxes.csv", "--json", "--min-pointing", "0.9")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["summaries"][0]["method"] == "layercam"
