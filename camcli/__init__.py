"""camcli: class activation maps for whole folders of images.

The command line (``camcli explain``) is a thin layer over this API:

>>> import camcli
>>> results = camcli.explain("sample_images/", config="configs/demo.toml")   # doctest: +SKIP
>>> lm = camcli.load_model("resnet18", checkpoint="demo/shapes_resnet18.safetensors")  # doctest: +SKIP
>>> explainer = camcli.Explainer(lm.model, ["layer4.1"], [camcli.get_method("gradcam")])  # doctest: +SKIP
>>> sorted(camcli.methods())                                                    # doctest: +SKIP
"""

__version__ = "0.1.0"

# The public names are imported on first use (PEP 562), so that `camcli --help`, `--version`
# and shell completion do not wait ~4 s for torch and torchvision to load.
import sys as _sys
import types as _types

_LAZY = {
    "explain": ("camcli.api", "explain"),
    "Explainer": ("camcli.explainer", "Explainer"),
    "methods": ("camcli.methods", "available"),
    "get_method": ("camcli.methods", "get_method"),
    "load_model": ("camcli.models", "load_model"),
}


class _Package(_types.ModuleType):
    """``camcli.methods`` is both a function and a subpackage: loading the subpackage must not
    replace the function (it is still imported by ``from camcli.methods import ...``)."""

    def __setattr__(self, name: str, value) -> None:
        if name == "methods" and isinstance(value, _types.ModuleType):
            return
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'camcli' has no attribute {name!r}")
    import importlib

    module, attr = _LAZY[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["Explainer", "__version__", "explain", "get_method", "load_model", "methods"]
