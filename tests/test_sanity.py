"""Sanity checks (model-parameter randomisation) and the evaluate report page."""

import json
import re
import shutil

import pytest
import torch
import torchvision
from scipy.stats import spearmanr  # an oracle only: scipy comes with grad-cam, camcli does not use it
from torchvision.models.vision_transformer import VisionTransformer

from camcli.evaluation.sanity import parameter_units, reinitialise, spearman, ssim
from conftest import DEMO_CONFIG, SAMPLES, read_csv
from test_interface import _chromium, browse


def names(model, size=64):
    return [u.name for u in parameter_units(model.eval(), torch.zeros(1, 3, size, size))]


def test_units_follow_the_architecture_bottom_to_top():
    assert names(torchvision.models.resnet18()) == [
        "conv1", "bn1", "layer1[0]", "layer1[1]", "layer2[0]", "layer2[1]", "layer3[0]", "layer3[1]", "layer4[0]",
        "layer4[1]", "fc"]
    # VGG: conv groups between pooling layers, then the classifier
    assert names(torchvision.models.vgg11()) == [
        "features[0]", "features[3]", "features[6]..features[8]", "features[11]..features[13]",
        "features[16]..features[18]", "classifier[0]..classifier[6]"]
    vit = VisionTransformer(image_size=32, patch_size=8, num_layers=3, num_heads=2, hidden_dim=16, mlp_dim=32,
                            num_classes=5)
    assert names(vit, 32) == ["class_token", "conv_proj", "encoder.pos_embedding", "encoder.layers.encoder_layer_0",
                              "encoder.layers.encoder_layer_1", "encoder.layers.encoder_layer_2", "encoder.ln",
                              "heads.head"]


def test_reinitialise_redraws_only_the_unit_and_is_seeded():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=4).eval()
    with torch.no_grad():  # as a trained model's: BatchNorm away from identity
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.fill_(2.0)
                m.weight.fill_(0.5)
    units = {u.name: u for u in parameter_units(model, torch.zeros(1, 3, 64, 64))}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    reinitialise(units["layer4[1]"], seed=3)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("layer4.1.") for k in changed)
    assert "layer4.1.conv1.weight" in changed and "layer4.1.bn2.running_var" in changed
    first = after["layer4.1.conv1.weight"].clone()
    reinitialise(units["layer4[1]"], seed=3)
    assert torch.equal(model.state_dict()["layer4.1.conv1.weight"], first)
    # loose parameters (a ViT's class token) are redrawn too
    vit = VisionTransformer(image_size=32, patch_size=8, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32,
                            num_classes=5).eval()
    token = next(u for u in parameter_units(vit, torch.zeros(1, 3, 32, 32)) if u.name == "class_token")
    old = vit.class_token.detach().clone()
    reinitialise(token, seed=1)
    assert not torch.equal(vit.class_token, old)


def test_similarities_against_scipy_and_known_values():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 20, 20, generator=g)
    b = (a + 0.3 * torch.rand(3, 20, 20, generator=g)).round(decimals=1)  # many ties
    ours = spearman(a, b)
    for i in range(3):
        assert ours[i].item() == pytest.approx(spearmanr(a[i].flatten(), b[i].flatten())[0], abs=1e-5)
    assert spearman(a, torch.zeros_like(a)).tolist() == [0.0, 0.0, 0.0]  # an empty map: uncorrelated
    assert ssim(a, a).tolist() == pytest.approx([1.0] * 3)
    assert (ssim(a, 1 - a) < 0.2).all()


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """Three demo images explained with Grad-CAM and Guided Backprop, heatmaps kept."""
    from typer.testing import CliRunner

    from camcli.cli import app
    d = tmp_path_factory.mktemp("sanity")
    (d / "imgs").mkdir()
    for p in sorted((SAMPLES / "single").iterdir())[:2] + sorted((SAMPLES / "pairs").iterdir())[:1]:
        shutil.copy(p, d / "imgs" / p.name)
    r = CliRunner().invoke(app, ["explain", str(d / "imgs"), "--config", str(DEMO_CONFIG), "--out", str(d / "run"),
                                 "--method", "gradcam,guidedbackprop", "--save-heatmap", "npy", "--workers", "0",
                                 "--quiet"], catch_exceptions=False)
    assert r.exit_code == 0, r.stderr
    return d / "run"


@pytest.mark.slow
def test_sanity_cascade_in_json_csv_and_gate(cli, small_run):
    checkpoint = json.loads((small_run / "run.json").read_text())["model"]["checkpoint"]
    digest = open(checkpoint, "rb").read()
    r = cli("evaluate", small_run, "--truth", SAMPLES / "boxes.csv", "--sanity", "--json", "--seed", "1")
    assert r.exit_code == 0, r.stderr
    data = json.loads(r.stdout)
    by = {s["method"]: s["sanity"] for s in data["summaries"]}
    grad, guided = by["gradcam"], by["guidedbackprop"]
    assert grad["images"] == 3 and grad["units"][-1] == "fc" and grad["units"][0] == "conv1"
    steps = [s["randomised"] for s in grad["cascade"]]
    assert steps == grad["units"][::-1] and len(grad["independent"]) == len(steps)
    for s in grad["cascade"]:
        assert -1 <= s["spearman"] <= 1 and s["spearman_std"] >= 0 and -1 <= s["ssim"] <= 1
    # Grad-CAM depends on the weights; Guided Backprop much less so (Adebayo et al.'s finding)
    assert grad["final_spearman"] < 0.5
    assert guided["cascade"][0]["spearman"] > grad["cascade"][0]["spearman"]
    rows = read_csv(small_run / "evaluation.csv")
    assert all(row["sanity_spearman"] != "" and row["sanity_ssim"] != "" for row in rows)
    # the gate names the methods that fail it
    gate = guided["final_spearman"] - 0.01
    r = cli("evaluate", small_run, "--truth", SAMPLES / "boxes.csv", "--max-sanity-similarity", f"{gate:.3f}",
            "--seed", "1")
    assert r.exit_code == 1 and "guidedbackprop @ input" in r.stderr and "gradcam @" not in r.stderr.split("gate")[-1]
    r = cli("evaluate", small_run, "--truth", SAMPLES / "boxes.csv", "--max-sanity-similarity", "0.99", "--quiet")
    assert r.exit_code == 0
    assert open(checkpoint, "rb").read() == digest  # the user's files are never touched


def test_report_page_in_headless_chromium(cli, small_run, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("no Chromium found: install Debian's chromium (CI does) to test the report page")
    r = cli("evaluate", small_run, "--truth", SAMPLES / "boxes.csv", "--sanity", "--html", "--quiet")
    assert r.exit_code == 0, r.stderr
    page = small_run / "report.html"
    text = page.read_text()
    assert not re.search(r'(src|href)="(https?:|//)', text) and "<script" not in text  # self-contained
    dom = browse(browser, page.as_uri(), tmp_path)
    assert dom.count('class="metric"') == 2  # gradcam @ layer4[1], guidedbackprop @ input
    assert dom.count('class="chart sanity"') == 2 and dom.count('class="series"') >= 6
    assert 1 <= dom.count('class="miss"') <= 6 and "data:image/png;base64," in dom
    assert 'href="overlays/' in dom


def test_a_run_without_heatmaps_or_boxes_says_what_to_rerun(cli, tmp_path):
    out = tmp_path / "plain"
    image = sorted((SAMPLES / "single").iterdir())[0]
    assert cli("explain", image, "--config", DEMO_CONFIG, "--out", out, "--workers", "0", "--quiet").exit_code == 0
    r = cli("evaluate", out, "--truth", SAMPLES / "boxes.csv", "--sanity")
    assert r.exit_code == 2 and "save_heatmap" in r.stderr.replace("-", "_")


def test_report_says_which_gates_links_the_gallery_and_has_rows_per_class(cli, small_run):
    assert cli("gallery", small_run).exit_code == 0
    r = cli("evaluate", small_run, "--truth", SAMPLES / "boxes.csv", "--html", "--quiet")
    assert r.exit_code == 0, r.stderr
    page = (small_run / "report.html").read_text()
    assert "no gates set" in page and "every gate holds" not in page  # nothing was checked
    assert 'href="index.html"' in page and 'href="report.html"' in (small_run / "index.html").read_text()
    rows = read_csv(small_run / "evaluation.csv")
    groups = {(row["method"], row["layer"], row["target_label"]) for row in rows}
    labels = {label for _, _, label in groups}
    assert page.count('class="per-class"') == (len(groups) if len(labels) > 1 else 0)
    # captions wrap at words: only the file name may break anywhere
    style = page.split("<style>", 1)[1].split("</style>", 1)[0]
    assert "break-all" not in style and ".miss p.path{overflow-wrap:anywhere}" in style
    r = cli("evaluate", small_run, "--truth", SAMPLES / "boxes.csv", "--html", "--quiet", "--min-pointing", "0")
    assert r.exit_code == 0 and "every gate holds (--min-pointing 0)" in (small_run / "report.html").read_text()
