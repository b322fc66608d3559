"""`--json` on the commands that list things: one JSON array on stdout, what the text shows."""

import json

from camcli.engine.methods import available


def test_methods_json_lists_every_method_with_its_properties(cli):
    r = cli("methods", "--json")
    assert r.exit_code == 0
    rows = json.loads(r.stdout)
    assert [m["name"] for m in rows] == list(available())
    cam = next(m for m in rows if m["name"] == "cam")
    assert cam["needs_gradients"] is False and "ViT" in cam["transformers"]
    assert next(m for m in rows if m["name"] == "gradcam++")["assumes"] == ["non-negative activations"]
    assert all(set(m) >= {"summary", "paper", "cost", "class_discriminative"} for m in rows)
    fullgrad = next(m for m in rows if m["name"] == "fullgrad")
    assert fullgrad["resolution"] == "pixel" and fullgrad["uses_layer"] is False
    assert next(m for m in rows if m["name"] == "sscam")["options"] == ["max_n", "noise_samples", "noise_std"]
    assert "--finer-alpha" in cli("methods").stdout


def test_models_json_filters_and_lists_weights(cli):
    rows = json.loads(cli("models", "resnet18", "--json").stdout)
    assert rows == [{"name": "resnet18", "source": "torchvision", "task": "classification", "weights": ["IMAGENET1K_V1"]}]


def test_layers_json_gives_each_layers_map(cli):
    r = cli("layers", "swin_t", "--json")
    assert r.exit_code == 0
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert rows["features.7.1.norm1"]["map"] == {"layout": "nhwc", "grid": [7, 7], "prefix": 0}
    assert rows["permute"]["default"] and rows["permute"]["cam"]
    assert rows["head"]["map"] is None and rows["head"]["shape"] == [1000]
    assert sum(row["default"] for row in rows.values()) == 1


def test_method_names_checked_before_torch_loads_are_the_registry():
    """The settings check method names against camcli.engine.METHOD_NAMES (no torch needed); it
    must list exactly the registered methods, in the order `camcli methods` prints them."""
    from camcli.engine import METHOD_NAMES
    from camcli.engine.methods import available
    assert METHOD_NAMES == tuple(available())
