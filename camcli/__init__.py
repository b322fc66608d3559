"""camcli: class activation maps for whole folders of images.

The command line (``camcli explain``) is a thin layer over these pieces:

>>> from camcli import load_model, Explainer, get_method          # doctest: +SKIP
>>> lm = load_model("resnet18", checkpoint="demo/shapes_resnet18.safetensors")  # doctest: +SKIP
"""

__version__ = "0.1.0"

from camcli.explainer import Explainer  # noqa: E402
from camcli.methods import available as methods, get_method  # noqa: E402
from camcli.models import load_model  # noqa: E402

__all__ = ["Explainer", "__version__", "get_method", "load_model", "methods"]
