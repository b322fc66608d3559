"""camcli: class activation maps for whole folders of images.

The command line (``camcli explain``) is a thin layer over this API:

>>> import camcli
>>> results = camcli.explain("sample_images/", config="configs/demo.toml")   # doctest: +SKIP
>>> lm = camcli.load_model("resnet18", checkpoint="demo/shapes_resnet18.safetensors")  # doctest: +SKIP
>>> explainer = camcli.Explainer(lm.model, ["layer4.1"], [camcli.get_method("gradcam")])  # doctest: +SKIP
>>> sorted(camcli.methods())                                                    # doctest: +SKIP
"""

__version__ = "0.1.0"

from camcli.api import explain  # noqa: E402
from camcli.explainer import Explainer  # noqa: E402
from camcli.methods import available as methods, get_method  # noqa: E402
from camcli.models import load_model  # noqa: E402

__all__ = ["Explainer", "__version__", "explain", "get_method", "load_model", "methods"]
