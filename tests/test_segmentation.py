"""Segmenters: torchvision's, HuggingFace's and one's own, explained class by class, where a user
sees it (segments.csv, overlays, masks, NDJSON, the gallery, exit codes, evaluation) and against
pytorch-grad-cam's semantic-segmentation recipe on the same model, layer and class.

Models are small configurations built with the libraries' own classes and seeded weights, and
the demo segmenter the project trained; full-size models are in benchmarks/segmentation.py.
"""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from conftest import ROOT, SAMPLES, read_boxes, read_csv

DEMO = ROOT / "configs" / "demo-segment.toml"
REQUIRED = ("path", "seg_label", "pixel_share", "method", "layer", "heatmap", "mean_probability", "energy_in_mask")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scenes")
    for name in ("circle_07.jpg", "ring_00.jpg", "star_05.jpg"):
        shutil.copy(SAMPLES / "single" / name, folder / name)
    shutil.copy(SAMPLES / "pairs" / "circle_square_07.png", folder / "pair.png")
    return folder


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """The demo segmenter on every sample image, with its maps, masks and gallery."""
    from typer.testing import CliRunner

    from camcli.cli import app

    out = tmp_path_factory.mktemp("demo") / "run"
    result = CliRunner().invoke(app, ["explain", str(SAMPLES), "--config", str(DEMO), "-o", str(out), "--workers",
                                      "0", "--save-heatmap", "npy", "--save-mask", "--html"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out


def test_the_demo_segmenter_finds_the_sample_objects_and_its_maps_land_on_them(demo_run):
    rows = read_csv(demo_run / "segments.csv")
    assert set(REQUIRED) <= set(rows[0])
    truth = read_boxes()
    found = hit = 0
    for path, objects in truth.items():
        mine = [r for r in rows if r["path"] == path]
        for label, (x0, y0, x1, y1) in objects:
            row = next((r for r in mine if r["seg_label"] == label), None)
            if row is None:
                continue
            found += 1
            heat = np.load(demo_run / row["heatmap"])
            y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
            hit += x0 - 15 <= x < x1 + 15 and y0 - 15 <= y < y1 + 15
    total = sum(len(v) for v in truth.values())
    assert found >= 0.9 * total, f"the segmenter found {found} of {total} sample objects"
    assert hit >= 0.9 * found, f"{hit} of {found} maps peak on their object"
    background = [r for r in rows if r["seg_label"] == "__background__"]
    assert not background, "the background is explained only when asked"


def test_each_class_gets_an_overlay_with_its_mask_outlined_and_the_mask_is_saved(demo_run):
    rows = read_csv(demo_run / "segments.csv")
    row = next(r for r in rows if r["path"].startswith("pairs/") and r["seg_rank"] == "2")
    overlay = np.asarray(Image.open(demo_run / row["output"]).convert("RGB"))
    image = np.asarray(Image.open(SAMPLES / row["path"]).convert("RGB"))
    assert overlay.shape == image.shape
    mask = np.asarray(Image.open(demo_run / row["mask"]))
    assert Image.open(demo_run / row["mask"]).mode == "P" and mask.shape == image.shape[:2]
    own = mask == int(row["seg_index"])
    assert abs(own.mean() - float(row["pixel_share"])) < 0.02
    # the outline is drawn white where the class's mask meets the rest: a white pixel beside every edge pixel
    edge = own ^ np.roll(own, 1, axis=1)
    white = overlay.min(-1) >= 200
    beside = white | np.roll(white, 1, 1) | np.roll(white, -1, 1) | np.roll(white, 2, 1) | np.roll(white, -2, 1)
    inner = own & np.roll(own, 4, 1) & np.roll(own, -4, 1) & np.roll(own, 4, 0) & np.roll(own, -4, 0)
    assert beside[edge].mean() > 0.8 and white[inner].mean() < 0.2
    # energy_in_mask is the share of the saved map on the class's mask
    heat = np.load(demo_run / row["heatmap"])
    assert abs(heat[own].sum() / heat.sum() - float(row["energy_in_mask"])) < 0.03


def test_the_gallery_and_ndjson_name_each_class(demo_run, cli, images, tmp_path):
    page = (demo_run / "index.html").read_text(encoding="utf-8")
    assert "gradcam @ backbone.layer3: circle" in page and "class(es); largest" in page
    result = cli("explain", images, "--config", DEMO, "-o", tmp_path / "j", "--workers", "0", "--json")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    pair = next(r for r in records if r.get("path") == "pair.png")
    assert {s["label"] for s in pair["segments"]} >= {"circle", "square"}
    assert all(s["maps"][0]["overlay"] for s in pair["segments"])


def test_maps_equal_pytorch_grad_cams_semantic_segmentation_recipe(tmp_path):
    """The same model, layer, class and input: camcli's Grad-CAM and LayerCAM against
    pytorch-grad-cam's (SemanticSegmentationTarget on the model's `out`)."""
    pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam import GradCAM, LayerCAM
    from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget

    import camcli
    from camcli.engine.framing import resize_for_model

    sys.path.insert(0, str(ROOT / "demo"))
    from shapes_segmenter import build
    from safetensors.torch import load_file

    model = build()
    model.load_state_dict({k: v.float() for k, v in load_file(str(ROOT / "demo" / "shapes_lraspp.safetensors")).items()})
    model.eval()
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(SAMPLES / "pairs" / "circle_square_07.png", folder / "pair.png")
    list(camcli.explain(folder, model=model, out=tmp_path / "run", method=["gradcam", "layercam"],
                        layer=["backbone.layer3"], save_heatmap="npy", heatmap_size="layer",
                        labels=str(ROOT / "demo" / "segmenter_labels.txt"), workers=0, batch_size=1))
    rows = [r for r in read_csv(tmp_path / "run" / "segments.csv") if r["seg_rank"] == "1"]
    rgb = np.asarray(Image.open(folder / "pair.png").convert("RGB"))
    x = torch.from_numpy(resize_for_model(rgb, (224, 224))).permute(2, 0, 1)[None].float() / 255
    x = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    class Out(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m(x)["out"]
    wrapped = Out(model)
    index = int(rows[0]["seg_index"])
    mask = (wrapped(x)[0].argmax(0) == index).float().numpy()
    for peer, name in ((GradCAM, "gradcam"), (LayerCAM, "layercam")):
        with peer(model=wrapped, target_layers=[model.backbone.layer3]) as cam:
            theirs = cam(input_tensor=x, targets=[SemanticSegmentationTarget(index, mask)])[0]
        row = next(r for r in rows if r["method"] == name)
        ours = torch.from_numpy(np.load(tmp_path / "run" / row["heatmap"]))[None, None]
        ours = F.interpolate(ours, size=(224, 224), mode="bilinear", align_corners=False)[0, 0].numpy()
        assert ours.std() > 0 and theirs.std() > 0
        r = np.corrcoef(ours.ravel(), theirs.ravel())[0, 1]
        assert r >= 0.99, f"{name}: r = {r:.4f}"


def test_a_torchvision_segmenter_by_name_and_its_checkpoint(cli, images, tmp_path):
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.get_model("lraspp_mobilenet_v3_large", weights=None, weights_backbone=None,
                                         num_classes=3)
    with torch.no_grad():  # class 2 wins everywhere but where class 1 does: two classes found
        model.classifier.high_classifier.bias[:] = torch.tensor([-5.0, 0.0, 0.1])
    torch.save(model.state_dict(), tmp_path / "seg.pt")
    out = tmp_path / "run"
    result = cli("explain", images, "-m", "lraspp_mobilenet_v3_large", "--checkpoint", tmp_path / "seg.pt",
                 "--input-size", "96", "-o", out, "--workers", "0", "--method", "gradcam,eigencam", "--save-mask",
                 "--min-area", "0")
    assert result.exit_code == 0, result.output
    rows = read_csv(out / "segments.csv")
    assert {r["layer"] for r in rows} == {"backbone[16]"}  # MobileNet's last feature block, what the head reads
    run = json.loads((out / "run.json").read_text())
    assert run["model"]["task"] == "segmentation" and run["model"]["num_classes"] == 3
    for path in {r["path"] for r in rows}:
        mine = [r for r in rows if r["path"] == path]
        shares = {r["seg_label"]: float(r["pixel_share"]) for r in mine}
        assert set(shares) <= {"class_1", "class_2"} and all(v > 0 for v in shares.values())
        assert sum(shares.values()) <= 1 + 1e-6
        assert len({r["method"] for r in mine}) == 2
        assert all((out / r["output"]).is_file() for r in mine)


def test_a_binary_segmenter_of_ones_own_with_task_segmentation(cli, images, tmp_path):
    factory = tmp_path / "unet.py"
    factory.write_text(
        "import torch\n"
        "from torch import nn\n"
        "class Tiny(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.encoder = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU())\n"
        "        self.head = nn.Conv2d(16, 1, 1)\n"
        "    def forward(self, x):\n"
        "        z = self.head(self.encoder(x))\n"
        "        return nn.functional.interpolate(z, size=x.shape[-2:], mode='bilinear')\n"
        "def build():\n"
        "    torch.manual_seed(0)\n"
        "    return Tiny()\n")
    base = ("explain", images, "-m", f"{factory}:build", "--workers", "0", "--input-size", "64")
    refused = cli(*base, "-o", tmp_path / "no")
    assert refused.exit_code == 2 and "task" in refused.output  # one output per pixel is no classifier's
    out = tmp_path / "run"
    result = cli(*base, "--task", "segmentation", "--background", "--min-area", "0", "-o", out)
    assert result.exit_code == 0, result.output
    rows = read_csv(out / "segments.csv")
    assert {r["seg_label"] for r in rows} <= {"background", "foreground"}
    # the default layer is the last map before the 1x1 convolution that makes the scores
    assert {r["layer"] for r in rows} == {"encoder"}
    for path in {r["path"] for r in rows}:
        shares = [float(r["pixel_share"]) for r in rows if r["path"] == path]
        assert abs(sum(shares) - 1) < 1e-3  # both sides, the background included
    no_bg = cli(*base, "--task", "segmentation", "--min-area", "0", "-o", tmp_path / "fg")
    assert no_bg.exit_code == 0
    assert {r["seg_label"] for r in read_csv(tmp_path / "fg" / "segments.csv") if r["seg_label"]} <= {"foreground"}


def test_a_region_replaces_each_classs_mask_and_a_missing_region_mask_is_a_failed_row(cli, images, tmp_path):
    out = tmp_path / "box"
    result = cli("explain", images, "--config", DEMO, "-o", out, "--workers", "0", "--region", "0,0,120,120",
                 "--save-heatmap", "npy")
    assert result.exit_code == 0, result.output
    rows = read_csv(out / "segments.csv")
    assert {r["region"] for r in rows if r["seg_label"]} == {"box 0,0,120,120"}
    masks = tmp_path / "masks"
    masks.mkdir()
    rgb = np.asarray(Image.open(images / "circle_07.jpg"))
    region = np.zeros(rgb.shape[:2], np.uint8)
    region[: rgb.shape[0] // 2] = 255
    Image.fromarray(region).save(masks / "circle_07.png")
    out = tmp_path / "folder"
    result = cli("explain", images, "--config", DEMO, "-o", out, "--workers", "0", "--region", masks)
    assert result.exit_code == 1  # the images without a mask failed, the others were explained
    rows = read_csv(out / "segments.csv")
    failed = [r for r in rows if r["status"] == "error"]
    assert {r["path"] for r in failed} == {"ring_00.jpg", "star_05.jpg", "pair.png"}
    assert all("no region mask" in r["error"] for r in failed)
    assert any(r["path"] == "circle_07.jpg" and r["region"] == "mask circle_07.png" for r in rows)


def test_settings_of_other_tasks_are_refused(cli, images, tmp_path):
    from conftest import DEMO_CONFIG

    cases = [(("--config", DEMO, "--method", "cam"), "cannot explain a segmenter"),
             (("--config", DEMO, "--resize", "crop"), "crop"),
             (("--config", DEMO, "--score-threshold", "0.3"), "score_threshold"),
             (("--config", DEMO, "--task", "classification"), "segmenter"),
             (("--config", DEMO_CONFIG, "--min-area", "0.2"), "segmentation run's setting"),
             (("--config", DEMO, "--region", "5,5,1,1"), "x1 > x0")]
    for args, words in cases:
        result = cli("explain", images, *args, "-o", tmp_path / "x", "--workers", "0")
        assert result.exit_code == 2, (args, result.output)
        assert words.replace("_", "-") in result.output.replace("_", "-"), (args, result.output)


def test_a_huggingface_segformer_folder_is_a_segmenter(cli, images, tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.SegformerConfig(num_channels=3, num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1],
                                          hidden_sizes=[8, 16], patch_sizes=[7, 3], strides=[4, 2],
                                          num_attention_heads=[1, 1], mlp_ratios=[2, 2], decoder_hidden_size=16,
                                          num_labels=3, id2label={0: "background", 1: "cat", 2: "dog"},
                                          label2id={"background": 0, "cat": 1, "dog": 2})
    torch.manual_seed(0)
    transformers.SegformerForSemanticSegmentation(config).eval().save_pretrained(tmp_path / "segformer")
    out = tmp_path / "run"
    result = cli("explain", images, "-m", tmp_path / "segformer", "--input-size", "64", "-o", out, "--workers", "0",
                 "--min-area", "0")
    assert result.exit_code == 0, result.output
    rows = read_csv(out / "segments.csv")
    assert {r["layer"] for r in rows} == {"decode_head.linear_fuse"}
    assert {r["seg_label"] for r in rows} <= {"cat", "dog"}
    layers = cli("layers", tmp_path / "segformer")
    assert "default layer: decode_head.linear_fuse" in layers.output


def test_models_lists_the_segmenters_with_their_task(cli):
    result = cli("models", "segmentation", "--json")
    listed = {m["name"]: m for m in json.loads(result.stdout)}
    assert {"fcn_resnet50", "deeplabv3_resnet50", "lraspp_mobilenet_v3_large"} <= set(listed)
    assert {m["task"] for m in listed.values()} == {"segmentation"}


def heldout(folder, count: int):
    """Held-out scenes (the generator the demo never trained on) with their truth label masks."""
    sys.path.insert(0, str(ROOT / "scripts"))
    sys.path.insert(0, str(ROOT / "demo"))
    import heldout_scenes
    from shapes_segmenter import CLASSES

    rng = np.random.default_rng(5)
    (folder / "images").mkdir(parents=True)
    (folder / "truth").mkdir()
    for i in range(count):
        img, objects = heldout_scenes.heldout_scene(rng, 1 + i % 2)
        truth = np.zeros(img.shape[:2], np.uint8)
        for o in objects:
            truth[o.mask] = CLASSES.index(o.label)
        Image.fromarray(img).save(folder / "images" / f"s{i}.png")
        Image.fromarray(truth).save(folder / "truth" / f"s{i}.png")
    return folder / "images", folder / "truth"


def test_evaluate_scores_the_masks_and_each_classs_maps_and_gates(cli, tmp_path):
    images, truth = heldout(tmp_path / "scenes", 6)
    out = tmp_path / "run"
    result = cli("explain", images, "--config", DEMO, "-o", out, "--workers", "0", "--save-mask", "--save-heatmap",
                 "npy")
    assert result.exit_code == 0, result.output
    report = cli("evaluate", out, "--truth", truth, "--json", "--min-iou", "0.5", "--min-pointing", "0.7")
    assert report.exit_code == 0, report.output
    summary = json.loads(report.stdout)
    assert summary["segmenter"]["miou"] >= 0.5 and summary["segmenter"]["images"] == 6
    assert summary["summaries"][0]["pointing"] >= 0.7
    rows = read_csv(out / "evaluation.csv")
    assert {"iou", "pointing", "energy", "truth_share"} <= set(rows[0])
    # the same run against the truth shifted by half the image: the gate fails, exit 1
    shifted = tmp_path / "shifted"
    shifted.mkdir()
    for p in truth.glob("*.png"):
        t = np.asarray(Image.open(p))
        Image.fromarray(np.roll(t, t.shape[1] // 2, axis=1)).save(shifted / p.name)
    failed = cli("evaluate", out, "--truth", shifted, "--min-iou", "0.5")
    assert failed.exit_code == 1 and "mIoU" in failed.output
    no_masks = cli("explain", images, "--config", DEMO, "-o", tmp_path / "bare", "--workers", "0")
    assert no_masks.exit_code == 0
    refused = cli("evaluate", tmp_path / "bare", "--truth", truth)
    assert refused.exit_code == 2 and "save-mask" in refused.output.replace("_", "-")


def test_evaluate_will_not_explain_a_segmenters_images_itself_and_says_what_to_do(cli, tmp_path):
    """A segmenter is scored from a finished run against truth masks; asked to explain its images
    itself (as for a classifier, with faithfulness or sanity checks that need a class per image),
    evaluate says so in one line and exits 2, instead of scoring class maps against boxes or
    reaching the sanity checks with no class to explain."""
    images, truth = heldout(tmp_path / "scenes", 2)
    for extra in ((), ("--sanity",), ("--faithfulness",)):
        r = cli("evaluate", images, "--truth", SAMPLES / "boxes.csv", "--config", DEMO, "--workers", "0", *extra)
        assert r.exit_code == 2, (extra, r.output)
        assert "evaluated from a finished segmentation run" in r.stderr and "--save-mask" in r.stderr, r.stderr


def test_a_resumed_segmentation_run_keeps_what_it_finished(cli, images, tmp_path):
    out = tmp_path / "run"
    first = cli("explain", images, "--config", DEMO, "-o", out, "--workers", "0")
    assert first.exit_code == 0
    before = (out / "segments.csv").read_text()
    again = cli("explain", images, "--config", DEMO, "-o", out, "--workers", "0", "--resume")
    assert again.exit_code == 0, again.output
    assert (out / "segments.csv").read_text() == before


def test_min_area_and_target_choose_the_classes_and_an_image_without_one_says_so(cli, images, tmp_path):
    result = cli("explain", images, "--config", DEMO, "-o", tmp_path / "big", "--workers", "0", "--min-area", "0.9")
    assert result.exit_code == 0, result.output
    rows = read_csv(tmp_path / "big" / "segments.csv")
    assert len(rows) == 4 and {r["segments"] for r in rows} == {"0"}
    assert all("no class covers 90% of the image" in r["note"] and r["status"] == "ok" for r in rows)
    result = cli("explain", images, "--config", DEMO, "-o", tmp_path / "circle", "--workers", "0", "--target", "circle")
    assert result.exit_code == 0, result.output
    rows = read_csv(tmp_path / "circle" / "segments.csv")
    assert {r["seg_label"] for r in rows if r["seg_label"]} == {"circle"}
    assert {r["path"] for r in rows if r["seg_label"] == "circle"} >= {"circle_07.jpg", "pair.png"}


def test_shards_of_a_segmentation_run_merge_into_the_whole_runs_segments(cli, images, tmp_path):
    whole = cli("explain", images, "--config", DEMO, "-o", tmp_path / "whole", "--workers", "0")
    assert whole.exit_code == 0
    for i in (0, 1):
        part = cli("explain", images, "--config", DEMO, "-o", tmp_path / "parts", "--workers", "0", "--shard", f"{i}/2")
        assert part.exit_code == 0, part.output
    merged = cli("merge", tmp_path / "parts")
    assert merged.exit_code == 0, merged.output

    def rows(folder):
        return sorted(tuple(sorted(r.items())) for r in read_csv(folder / "segments.csv"))
    assert rows(tmp_path / "parts") == rows(tmp_path / "whole")


def test_no_output_file_reads_as_a_doubled_extension(demo_run):
    """Many samples are PNGs: a mask named after the image alone read `circle_square_07.png.png`;
    the word says what the file is (`circle_square_07.png.mask.png`)."""
    written = [p.name for p in demo_run.rglob("*") if p.is_file()]
    assert not [n for n in written if n.endswith(".png.png")]
    masks = {r["mask"] for r in read_csv(demo_run / "segments.csv") if r["mask"]}
    assert masks and all(m.startswith("masks/") and m.endswith(".mask.png") for m in masks)
    assert any(m.endswith(".png.mask.png") for m in masks)  # a PNG input's
    assert all((demo_run / m).is_file() for m in masks)


def test_a_class_caption_says_what_its_number_is_and_sits_on_the_object_not_a_speck():
    """The caption is the class's share of the image (it read like a confidence), on a dark tab at
    the top of the mask's largest part: a stray speck of the same class higher up does not carry it."""
    from camcli.output.render import draw_mask_outline

    white = np.full((200, 200, 3), 255, np.uint8)
    speck = np.array([[10, 10], [13, 10], [13, 13], [10, 13]], np.int32).reshape(-1, 1, 2)
    body = np.array([[100, 100], [180, 100], [180, 180], [100, 180]], np.int32).reshape(-1, 1, 2)
    drawn = draw_mask_outline(white, [speck, body], "square: 16% of image").min(axis=2)
    assert (drawn[80:99, 110:170] < 100).sum() > 50  # the tab above the square
    assert (drawn[17:30, 0:60] < 100).sum() == 0  # no tab at the speck (at the top edge it would hang below it)
