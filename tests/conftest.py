"""Shared fixtures: the demo model, sample images, a CLI runner and small models made on the spot."""

from __future__ import annotations

import csv
import os
from pathlib import Path

# The suite pins the device: its numbers are compared with CPU references and peers at tight
# tolerances, and it must pass the same on a machine with a GPU. Hiding CUDA before torch loads
# pins this process and every camcli it starts. CAMCLI_TEST_GPU=1 lets the tests see the GPU.
if not os.environ.get("CAMCLI_TEST_GPU"):
    os.environ["CUDA_VISIBLE_DEVICES"] = ""

import pytest
import torch
from typer.testing import CliRunner

from camcli.cli import app

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_images"
DEMO_CONFIG = ROOT / "configs" / "demo.toml"
DEMO_CHECKPOINT = ROOT / "demo" / "shapes_resnet18.safetensors"
CIRCLE = sorted((SAMPLES / "single").glob("circle_*.jpg"))[0]  # a single-object sample scene
TRIANGLE = sorted((SAMPLES / "single").glob("triangle_*.jpg"))[0]
PAIR = sorted((SAMPLES / "pairs").glob("*.png"))[0]  # a two-object sample scene


@pytest.fixture
def cli():
    """Invoke ``camcli`` in-process; returns the Result (exit_code, stdout, stderr)."""
    runner = CliRunner()

    def invoke(*args: str, **kwargs):
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False, **kwargs)
    return invoke


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def read_boxes() -> dict[str, list[tuple[str, tuple[int, int, int, int]]]]:
    """sample_images/boxes.csv as path -> [(label, (x0, y0, x1, y1))]."""
    boxes: dict[str, list] = {}
    for row in read_csv(SAMPLES / "boxes.csv"):
        boxes.setdefault(row["path"], []).append(
            (row["label"], tuple(int(row[k]) for k in ("x0", "y0", "x1", "y1"))))
    return boxes


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def small_args(checkpoint) -> list:
    """The command line of a quick run of ``checkpoint`` (a 3-class resnet18 state dict) at 64 px."""
    return ["--model", "resnet18", "--checkpoint", checkpoint, "--input-size", "64", "--workers", "0", "--quiet"]


@pytest.fixture(scope="session")
def small_model(tmp_path_factory):
    """A seeded random 3-class resnet18 saved as a state dict, with labels apple/banana/cherry."""
    import torchvision
    d = tmp_path_factory.mktemp("small_model")
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(num_classes=3).state_dict(), d / "r18.pth")
    (d / "labels.txt").write_text("apple\nbanana\ncherry\n")
    return d
