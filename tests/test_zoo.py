"""One small model per torchvision family, with default settings and every cheap method: the
default layer is the one docs/models.md names, and every map comes out. (All 80 classifiers
and every method: benchmarks/zoo_sweep.py.)"""

import re

import pytest
import torch

import camcli
from camcli.engine.methods.cam import linear_head
from conftest import CIRCLE, ROOT

IMAGE = CIRCLE
METHODS = ["gradcam", "gradcam++", "xgradcam", "hirescam", "gradcam-elementwise", "layercam", "eigencam",
           "scorecam"]


def _family_table() -> dict[str, tuple[str, str]]:
    rows = {}
    for line in (ROOT / "docs" / "models.md").read_text().splitlines():
        m = re.match(r"\| [^|]+ \| (\w+) \| `([^`]+)` \| ([^|]+) \|", line)
        if m:
            rows[m.group(1)] = (m.group(2), m.group(3).strip())
    return rows


FAMILIES = _family_table()


def _family(name: str) -> str:
    return re.match(r"[a-z]+", name.split("_")[0]).group(0)  # vit_b_32 -> vit, resnet18 -> resnet


def test_the_table_covers_every_family():
    import torchvision
    every = {_family(n) for n in torchvision.models.list_models(module=torchvision.models)}
    assert every == {_family(n) for n in FAMILIES}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_family_default_layer_gives_every_map(name, tmp_path):
    layer, output = FAMILIES[name]
    torch.manual_seed(0)
    options = dict(model=name, workers=0, batch_size=1, device="cpu", max_n=4)
    import torchvision
    model = torchvision.models.get_model(name, weights=None)
    head = linear_head(model)
    if head is not None and not head[1].weight.detach().any():  # ViT starts at zero: every map blank
        torch.nn.init.normal_(head[1].weight, std=0.01)
        torch.save(model.state_dict(), tmp_path / "w.pt")
        options["checkpoint"] = str(tmp_path / "w.pt")
    else:
        options["weights"] = "none"
    result = list(camcli.explain(str(IMAGE), method=METHODS, **options))[0]
    assert result.status == "ok", result.error
    from camcli.engine.layer_names import display_name
    assert {display_name(m.layer) for m in result.maps} == {layer}
    grid = output.split("-> ")[-1] if "->" in output else "x".join(output.split("x")[1:])
    assert all("x".join(map(str, m.layer_map.shape)) == grid for m in result.maps)
    # Random weights: a gradient map may be all negative (empty). A layer the gradient cannot
    # reach leaves only the gradient-free eigencam and scorecam: that would be 2.
    assert sum(not m.empty for m in result.maps) >= 3
