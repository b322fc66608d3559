"""Heads beyond softmax, on the shipped demo backbone (trained; tests/test_demo.py): a multi-label
reading of its classifier, a binary head, a model that ends in its own Sigmoid, an embedding
explained as a similarity, a tuple output and a regression. Each is checked where a user sees it
(the CSV's probabilities, the rows and overlays, exit codes) and against pytorch-grad-cam's
targets on the same input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import DEMO_CONFIG, ROOT, SAMPLES, read_csv

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
LABELS = (ROOT / "demo" / "labels.txt").read_text().split()

FACTORIES = f'''
import torch, torchvision
from safetensors.torch import load_file

def backbone():
    m = torchvision.models.resnet18(num_classes=6)
    m.load_state_dict(load_file({str(ROOT / "demo" / "shapes_resnet18.safetensors")!r}))
    return m

def binary():
    m = backbone()
    torch.manual_seed(7)
    m.fc = torch.nn.Linear(512, 1)
    return m

def regression():
    return binary()

def embedder():
    m = backbone()
    m.fc = torch.nn.Identity()
    return m

def squashed():
    return torch.nn.Sequential(backbone(), torch.nn.Sigmoid())

class Pair(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = backbone()
    def forward(self, x):
        n = self.net
        features = n.layer4(n.layer3(n.layer2(n.layer1(n.maxpool(n.relu(n.bn1(n.conv1(x))))))))
        return features, n.fc(torch.flatten(n.avgpool(features), 1))

def pair():
    return Pair()
'''


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """Four two-object scenes at the model's input size (224 x 224: camcli feeds them unresized,
    so the oracle's input is the very same tensor)."""
    d = tmp_path_factory.mktemp("scenes")
    (d / "imgs").mkdir()
    for p in sorted((SAMPLES / "pairs").glob("*.png"))[:4]:
        Image.open(p).convert("RGB").resize((224, 224), Image.BILINEAR).save(d / "imgs" / p.name)
    (d / "models.py").write_text(FACTORIES)
    return d


def inputs(folder) -> dict[str, torch.Tensor]:
    return {p.name: (torch.from_numpy(np.asarray(Image.open(p).convert("RGB"), np.float32) / 255).permute(2, 0, 1)[None]
                     - MEAN) / STD for p in sorted(folder.glob("*.png"))}


def factory(scenes, name: str):
    import importlib.util
    spec = importlib.util.spec_from_file_location(f"heads_{name}", scenes / "models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)().eval()


def peer_map(model, layer, x, target) -> np.ndarray:
    from pytorch_grad_cam import GradCAM
    cam = GradCAM(model=model, target_layers=[layer])
    try:
        return cam(input_tensor=x, targets=[target])[0]
    finally:
        cam.activations_and_grads.release()


class ConceptSimilarity:
    """pytorch-grad-cam's ``SimilarityToConceptTarget`` as its embeddings tutorial defines it (the
    released package does not export it): the cosine similarity of one output to a concept."""

    def __init__(self, concept: torch.Tensor) -> None:
        self.concept = concept

    def __call__(self, model_output: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cosine_similarity(model_output, self.concept, dim=0)


def pearson(a, b) -> float:
    return float(np.corrcoef(np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64))[0, 1])


def run(cli, scenes, out, *args):
    r = cli("explain", scenes / "imgs", "--input-size", "224", "--workers", "0", "--save-heatmap", "npy",
            "--out", out, *args)
    return r


@pytest.mark.slow
def test_multi_label_head_explains_every_positive_label_with_sigmoid_probabilities(cli, scenes, tmp_path):
    pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    out = tmp_path / "o"
    r = run(cli, scenes, out, "--config", DEMO_CONFIG, "--head", "sigmoid", "--topk", "6", "--json")
    assert r.exit_code == 0, r.stderr
    assert "sigmoid head (multi-label, threshold 0.5)" in r.stderr
    rows = read_csv(out / "predictions.csv")
    model = factory(scenes, "backbone")
    several = 0
    for name, x in inputs(scenes / "imgs").items():
        with torch.no_grad():
            probs = torch.sigmoid(model(x))[0]
        mine = [row for row in rows if row["path"] == name]
        positive = [LABELS[i] for i in torch.argsort(probs, descending=True).tolist() if probs[i] >= 0.5]
        assert [row["target_label"] for row in mine] == positive and positive
        several += len(positive) > 1
        for row in mine:
            i = LABELS.index(row["target_label"])
            assert float(row["target_score"]) == pytest.approx(float(probs[i]), abs=2e-5)
            assert float(row["score"]) == pytest.approx(float(probs.max()), abs=2e-5)
            assert row["targets"] == str(len(positive))
            assert (out / row["output"]).is_file() and f"--class{i}-{row['target_label']}." in row["output"]
            ours = np.load(out / row["heatmap"])
            theirs = peer_map(model, model.layer4[1], x, ClassifierOutputTarget(i))
            assert pearson(ours, theirs) >= 0.99, (name, row["target_label"])
        top = sorted(((float(row[f"top{k}_score"]) for k in range(1, 7))), reverse=True)
        assert sum(top) != pytest.approx(1.0, abs=1e-3)  # independent probabilities, not a softmax
    assert several >= 2, "the demo's two-object scenes should have two labels present"
    records = [json.loads(line) for line in r.stdout.splitlines() if '"image"' in line]
    assert all(len({m["target"]["label"] for m in rec["maps"]}) == len(rec["maps"]) for rec in records)


@pytest.mark.slow
def test_binary_head_reads_one_logit_and_explains_both_sides(cli, scenes, tmp_path):
    pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import BinaryClassifierOutputTarget

    spec = f"{scenes / 'models.py'}:binary"
    labels = tmp_path / "labels.txt"
    labels.write_text("background\nshape\n")
    model = factory(scenes, "binary")
    xs = inputs(scenes / "imgs")
    for side, index in (("shape", 1), ("background", 0)):
        out = tmp_path / side
        r = run(cli, scenes, out, "--model", spec, "--labels", labels, "--target", side)
        assert r.exit_code == 0, r.stderr
        assert "binary head" in r.stderr
        for row in read_csv(out / "predictions.csv"):
            x = xs[row["path"]]
            with torch.no_grad():
                p = float(torch.sigmoid(model(x))[0, 0])
            assert row["target_label"] == side and row["target_index"] == str(index)
            assert float(row["target_score"]) == pytest.approx(p if index else 1 - p, abs=2e-5)
            assert row["pred_label"] == ("shape" if p >= 0.5 else "background")
            assert float(row["score"]) == pytest.approx(max(p, 1 - p), abs=2e-5)
            theirs = peer_map(model, model.layer4[1], x, BinaryClassifierOutputTarget(index))
            assert pearson(np.load(out / row["heatmap"]), theirs) >= 0.99
    # the old reading of one logit (a softmax: always 1, empty maps) is refused with the reason
    r = run(cli, scenes, tmp_path / "softmax", "--model", spec, "--head", "softmax")
    assert r.exit_code == 2 and "--head binary" in r.stderr and "constant" in r.stderr


@pytest.mark.slow
def test_a_model_that_ends_in_its_own_sigmoid_is_never_squashed_twice(cli, scenes, tmp_path):
    out = tmp_path / "o"
    r = run(cli, scenes, out, "--model", f"{scenes / 'models.py'}:squashed", "--layer", "0.layer4.1")
    assert r.exit_code == 0, r.stderr
    assert "sigmoid head (multi-label, threshold 0.5) on the model's own probabilities" in r.stderr
    model = factory(scenes, "squashed")
    for row in read_csv(out / "predictions.csv"):
        with torch.no_grad():
            probs = model(inputs(scenes / "imgs")[row["path"]])[0]
        assert float(row["target_score"]) == pytest.approx(float(probs[int(row["target_index"])]), abs=2e-5)
    r = run(cli, scenes, tmp_path / "s", "--model", f"{scenes / 'models.py'}:squashed", "--layer", "0.layer4.1",
            "--head", "softmax")
    assert r.exit_code == 2 and "ends in its own Sigmoid" in r.stderr


@pytest.mark.slow
def test_similarity_to_a_reference_image_or_embedding(cli, scenes, tmp_path):
    pytest.importorskip("pytorch_grad_cam")

    spec = f"{scenes / 'models.py'}:embedder"
    ref = sorted((scenes / "imgs").glob("*.png"))[0]
    model = factory(scenes, "embedder")
    xs = inputs(scenes / "imgs")
    with torch.no_grad():
        concept = model(xs[ref.name])[0]
    np.save(tmp_path / "concept.npy", concept.numpy())
    results = {}
    for how, value in (("--target-image", ref), ("--target-embedding", tmp_path / "concept.npy")):
        out = tmp_path / how.strip("-")
        r = run(cli, scenes, out, "--model", spec, how, value)
        assert r.exit_code == 0, r.stderr
        rows = read_csv(out / "predictions.csv")
        results[how] = [(row["target_score"], np.load(out / row["heatmap"])) for row in rows]
        for row in rows:
            x = xs[row["path"]]
            with torch.no_grad():
                cosine = float(torch.nn.functional.cosine_similarity(model(x), concept[None])[0])
            assert float(row["target_score"]) == pytest.approx(cosine, abs=1e-5)
            assert row["target_label"] == f"similarity to {value.name}"
            if row["path"] == ref.name:
                assert cosine == pytest.approx(1.0, abs=1e-5)
            else:
                theirs = peer_map(model, model.layer4[1], x, ConceptSimilarity(concept))
                assert pearson(np.load(out / row["heatmap"]), theirs) >= 0.99
    (a, b) = results.values()
    assert [float(s) for s, _ in a] == pytest.approx([float(s) for s, _ in b], abs=1e-5)
    r = run(cli, scenes, tmp_path / "x", "--model", spec, "--target-image", ref, "--target", "0")
    assert r.exit_code == 2 and "target" in r.stderr
    (tmp_path / "bad.npy").write_bytes(b"not an array")
    r = run(cli, scenes, tmp_path / "y", "--model", spec, "--target-embedding", tmp_path / "bad.npy")
    assert r.exit_code == 2 and "bad.npy" in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_output_picks_a_part_of_a_tuple_and_a_regression_is_explained_either_way(cli, scenes, tmp_path):
    pytest.importorskip("pytorch_grad_cam")
    spec = f"{scenes / 'models.py'}:pair"
    r = run(cli, scenes, tmp_path / "first", "--model", spec, "--layer", "net.layer4.1")
    assert r.exit_code == 2 and "--output" in r.stderr  # the first element is a feature map, not scores
    r = run(cli, scenes, tmp_path / "a", "--model", spec, "--layer", "net.layer4.1", "--output", "1",
            "--labels", ROOT / "demo" / "labels.txt")
    assert r.exit_code == 0, r.stderr
    plain = run(cli, scenes, tmp_path / "b", "--config", DEMO_CONFIG)
    assert plain.exit_code == 0
    a, b = read_csv(tmp_path / "a" / "predictions.csv"), read_csv(tmp_path / "b" / "predictions.csv")
    assert [(x["pred_label"], x["score"]) for x in a] == [(x["pred_label"], x["score"]) for x in b]
    r = run(cli, scenes, tmp_path / "c", "--model", spec, "--output", "7")
    assert r.exit_code == 2 and "out of range" in r.stderr

    model = factory(scenes, "regression")
    xs = inputs(scenes / "imgs")
    for direction, sign in (("higher", 1.0), ("lower", -1.0)):
        out = tmp_path / direction
        r = run(cli, scenes, out, "--model", f"{scenes / 'models.py'}:regression", "--head", "regression",
                "--direction", direction)
        assert r.exit_code == 0, r.stderr
        for row in read_csv(out / "predictions.csv"):
            x = xs[row["path"]]
            with torch.no_grad():
                value = float(model(x)[0, 0])
            assert float(row["target_score"]) == pytest.approx(value, abs=1e-4)  # the value, its own sign
            theirs = peer_map(model, model.layer4[1], x, lambda o, s=sign: s * o[0])
            assert pearson(np.load(out / row["heatmap"]), theirs) >= 0.99


@pytest.mark.slow
def test_multi_label_runs_resume_to_the_same_rows_and_evaluate_scores_each_label(cli, scenes, tmp_path):
    out = tmp_path / "o"
    args = ("--config", DEMO_CONFIG, "--head", "sigmoid", "--boxes")
    assert run(cli, scenes, out, *args).exit_code == 0
    whole = (out / "predictions.csv").read_text()
    lines = whole.splitlines(True)
    first = [i for i, line in enumerate(lines[1:], 1) if line.split(",")[1] == lines[1].split(",")[1]]
    assert len(first) >= 2  # the first image explains two labels: cut its rows in half, as a kill would
    (out / "predictions.csv").write_text("".join(lines[:first[0] + 1]))
    r = run(cli, scenes, out, *args, "--resume")
    assert r.exit_code == 0, r.stderr
    assert (out / "predictions.csv").read_text() == whole
    truth = tmp_path / "truth.csv"
    boxes = [line for line in (SAMPLES / "boxes.csv").read_text().splitlines()[1:] if line.startswith("pairs/")]
    scale = {}
    for p in sorted((SAMPLES / "pairs").glob("*.png"))[:4]:
        w, h = Image.open(p).size
        scale[p.name] = (224 / w, 224 / h)
    rows = ["path,x0,y0,x1,y1,label"]
    for line in boxes:
        path, x0, y0, x1, y1, label = line.split(",")
        name = path.split("/")[-1]
        if name in scale:
            sx, sy = scale[name]
            rows.append(f"{name},{int(int(x0) * sx)},{int(int(y0) * sy)},{int(int(x1) * sx)},{int(int(y1) * sy)},{label}")
    truth.write_text("\n".join(rows) + "\n")
    r = cli("evaluate", out, "--truth", truth)
    assert r.exit_code in (0, 1), r.stderr
    scored = read_csv(out / "evaluation.csv")
    per_image = {}
    for row in scored:
        per_image.setdefault(row["path"], []).append(row)
    assert any(len({r["target_label"] for r in rows}) == 2 for rows in per_image.values())
    present = [r for r in scored if r["truth_boxes"] != "0"]  # labels in the scene (the head may see others)
    assert len(present) >= 6
    hits = [r for r in present if r["pointing"] == "true"]
    assert len(hits) >= 0.75 * len(present), "each label's map peaks on that label's object"


def test_refusals_name_the_option_and_the_reason(cli, scenes, tmp_path):
    cases = [(("--head", "softmax", "--threshold", "0.3"), "--threshold applies to --head sigmoid"),
             (("--direction", "lower"), "--direction applies to --head regression"),
             (("--explain-topk", "0"), "--explain-topk must be at least 1"),
             (("--explain-topk", "2", "--target", "circle"), "exclude each other"),
             (("--head", "binary"), "binary reads one output per image"),
             (("--head", "sideways"), "--head must be"),
             (("--threshold", "0.4"), "this model's is softmax"),
             (("--target-image", tmp_path / "a.png", "--target-embedding", tmp_path / "b.npy"), "exclude each other")]
    (tmp_path / "a.png").write_bytes(b"")  # present: the one mistake is giving both
    (tmp_path / "b.npy").write_bytes(b"")
    for args, message in cases:
        r = run(cli, scenes, tmp_path / "o", "--config", DEMO_CONFIG, *args)
        assert r.exit_code == 2, (args, r.stderr)
        assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)


@pytest.mark.slow
def test_a_vit_without_weights_says_its_head_is_all_zero(cli, tmp_path):
    """torchvision starts ViT heads at zero: with `--weights none` every map is empty, whatever the layer."""
    image = sorted((SAMPLES / "single").glob("*.jpg"))[0]
    r = cli("explain", image, "--model", "vit_b_16", "--weights", "none", "--workers", "0", "--out", tmp_path / "o")
    assert r.exit_code == 0, r.stderr
    assert "was empty" in r.stderr and "all-zero weights" in r.stderr and "ViT" in r.stderr
    assert "earlier layer" not in r.stderr


@pytest.mark.slow
def test_resume_refuses_a_reference_embedding_that_changed(cli, scenes, tmp_path):
    spec = f"{scenes / 'models.py'}:embedder"
    concept = tmp_path / "concept.npy"
    np.save(concept, np.random.default_rng(0).normal(size=512).astype(np.float32))
    out = tmp_path / "o"
    assert run(cli, scenes, out, "--model", spec, "--target-embedding", concept).exit_code == 0
    np.save(concept, np.random.default_rng(1).normal(size=512).astype(np.float32))  # same path, another vector
    r = run(cli, scenes, out, "--model", spec, "--target-embedding", concept, "--resume")
    assert r.exit_code == 2 and "target_reference_sha256" in r.stderr
