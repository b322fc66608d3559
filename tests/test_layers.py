"""Layer names as users write them, and the automatic choice of the target layer."""

import pytest
import torchvision

from camcli.errors import UsageError
from camcli.engine.layer_names import display_name, parse_layer, resolve_layer
from camcli.models.layer_search import default_layer


@pytest.fixture(scope="module")
def resnet18():
    return torchvision.models.resnet18().eval()


@pytest.mark.parametrize("spec", ["layer4[1]", "layer4.1", "layer4[-1]", " layer4 [ -1 ] ", "layer4[1]"])
def test_spellings_of_the_same_layer(resnet18, spec):
    assert resolve_layer(resnet18, spec) == "layer4.1"


def test_nested_and_negative_indices(resnet18):
    assert resolve_layer(resnet18, "layer4[-1].conv2") == "layer4.1.conv2"
    assert resolve_layer(resnet18, "layer3[0].downsample[0]") == "layer3.0.downsample.0"
    vgg = torchvision.models.vgg16()
    assert resolve_layer(vgg, "features.28") == "features.28"
    assert resolve_layer(vgg, "features[-3]") == "features.28"


def test_unknown_layer_names_close_matches(resnet18):
    with pytest.raises(UsageError) as e:
        resolve_layer(resnet18, "layer5[1]")
    assert "layer4[1]" in str(e.value)
    with pytest.raises(UsageError, match="out of range"):
        resolve_layer(resnet18, "layer4[2]")
    with pytest.raises(UsageError, match="cannot parse"):
        resolve_layer(resnet18, "layer4[1")


def test_parse_and_display_round_trip():
    assert parse_layer("features[12][2]") == ["features", 12, 2]
    assert display_name("features.12.2") == "features[12][2]"
    assert display_name("features.norm5") == "features.norm5"


@pytest.mark.parametrize("name, expected", [
    ("resnet18", "layer4.1"),  # the block, not its bn2 (which precedes the residual add)
    ("vgg16", "features.30"),  # not avgpool, which only copies the 7x7 map through
    ("densenet121", "features.norm5"),
    ("mobilenet_v3_small", "features.12"),  # the block, not its in-place Hardswish
])
def test_default_layer_is_the_last_spatial_map(name, expected):
    model = torchvision.models.get_model(name).eval()
    assert default_layer(model, (224, 224)) == expected
