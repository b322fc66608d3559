"""Loading torchvision weights from the hub cache, and user checkpoints in every common shape."""

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from camcli.errors import UsageError
from camcli.models import hub_cache_file, load_model


def _random_state(arch: str, **kw) -> dict:
    torch.manual_seed(1)
    return torchvision.models.get_model(arch, **kw).state_dict()


def test_hub_cache_loads_offline(tmp_path, monkeypatch):
    """A pre-filled torch hub cache is used as is: no download, the file's weights are loaded."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    w = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    target = hub_cache_file(w)
    assert target == tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    target.parent.mkdir(parents=True)
    state = _random_state("resnet18")
    torch.save(state, target)
    loaded = load_model("resnet18", weights="IMAGENET1K_V1")
    assert torch.equal(loaded.model.fc.weight, state["fc.weight"])
    assert loaded.labels[0] == "tench" and loaded.num_classes == 1000
    assert loaded.input_size == (224, 224) and loaded.weights == "ResNet18_Weights.IMAGENET1K_V1"


def test_missing_weights_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    import torch.hub

    def offline(*a, **k):
        raise OSError("network is unreachable")
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(UsageError) as e:
        load_model("resnet18", weights="IMAGENET1K_V1")
    msg = str(e.value)
    assert str(tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in msg
    # the library speaks of its own keyword; the command line names the flag
    assert "your own weights with checkpoint" in msg and "your own weights with --checkpoint" in e.value.for_cli()
    assert "--weights none" in e.value.for_cli()  # the way to try camcli offline at once


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "module_prefix", "both", "safetensors"])
def test_checkpoint_shapes_and_inferred_class_count(tmp_path, wrap):
    state = _random_state("resnet18", num_classes=7)
    if wrap in ("module_prefix", "both"):
        state = {f"module.{k}": v for k, v in state.items()}
    if wrap in ("state_dict", "both"):
        state = {"state_dict": state, "epoch": 3}
    if wrap == "safetensors":
        path = tmp_path / "ck.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        path = tmp_path / "ck.pth"
        torch.save(state, path)
    loaded = load_model("resnet18", checkpoint=path)
    assert loaded.num_classes == 7 and loaded.labels[6] == "class_6"
    expected = _random_state("resnet18", num_classes=7)["fc.weight"]
    assert torch.equal(loaded.model.fc.weight, expected)
    assert len(loaded.checkpoint_sha256) == 64


def test_fp16_checkpoint_with_labels(tmp_path):
    state = {k: v.half() if v.is_floating_point() else v for k, v in _random_state("resnet18", num_classes=3).items()}
    save_file(state, str(tmp_path / "m.safetensors"))
    (tmp_path / "labels.json").write_text('["a", "b", "c"]')
    loaded = load_model("resnet18", checkpoint=tmp_path / "m.safetensors", labels=tmp_path / "labels.json")
    assert loaded.labels == ["a", "b", "c"] and loaded.model.fc.weight.dtype == torch.float32


def test_mismatched_checkpoint_names_keys_and_shapes(tmp_path):
    torch.save(_random_state("resnet34", num_classes=5), tmp_path / "r34.pth")
    with pytest.raises(UsageError) as e:
        load_model("resnet18", checkpoint=tmp_path / "r34.pth")
    assert "unexpected key" in str(e.value) and "layer1.2" in str(e.value)
    torch.save(_random_state("resnet18", num_classes=5), tmp_path / "r18.pth")
    with pytest.raises(UsageError, match=r"fc.weight: checkpoint \(5, 512\) vs model \(4, 512\)"):
        load_model("resnet18", checkpoint=tmp_path / "r18.pth", num_classes=4)


def test_pickled_model_is_refused(tmp_path):
    torch.save(torchvision.models.resnet18(num_classes=2), tmp_path / "whole.pth")
    with pytest.raises(UsageError, match="arbitrary code"):
        load_model("resnet18", checkpoint=tmp_path / "whole.pth")


def test_labels_count_must_match(tmp_path):
    torch.save(_random_state("resnet18", num_classes=3), tmp_path / "m.pth")
    (tmp_path / "labels.txt").write_text("a\nb\n")
    with pytest.raises(UsageError, match="2 labels but the model has 3 classes"):
        load_model("resnet18", checkpoint=tmp_path / "m.pth", labels=tmp_path / "labels.txt")


def test_unknown_model_and_weights_suggest(tmp_path):
    with pytest.raises(UsageError, match="resnet18"):
        load_model("resnet81")
    with pytest.raises(UsageError, match="IMAGENET1K_V1"):
        load_model("resnet18", weights="IMAGENET_V1")
