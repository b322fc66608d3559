"""camcli: class activation maps for whole folders of images.

The command line (``camcli explain``) is a thin layer over this API:

>>> import camcli
>>> run = camcli.explain("sample_images/", config="configs/demo.toml")       # doctest: +SKIP
>>> lm = camcli.load_model("resnet18", checkpoint="demo/shapes_resnet18.safetensors")  # doctest: +SKIP
>>> explainer = camcli.Explainer(lm.model, ["layer4.1"], [camcli.get_method("gradcam")])  # doctest: +SKIP
>>> sorted(camcli.methods())                                                    # doctest: +SKIP
"""

__version__ = "0.1.0"

# The public names are imported on first use (PEP 562), so that `camcli --help`, `--version`
# and shell completion do not wait ~4 s for torch and torchvision to load.
_LAZY = {
    "explain": ("camcli.api", "explain"),
    "evaluate": ("camcli.evaluation.evaluate", "evaluate"),
    "audit": ("camcli.auditing", "audit"),
    "layers": ("camcli.api", "layers"),
    "Run": ("camcli.run", "Run"),
    "RunSummary": ("camcli.run", "RunSummary"),
    "ExplainSession": ("camcli.session", "ExplainSession"),
    "Explainer": ("camcli.engine.explainer", "Explainer"),
    "methods": ("camcli.engine.methods", "available"),
    "get_method": ("camcli.engine.methods", "get_method"),
    "load_model": ("camcli.models", "load_model"),
}


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


__all__ = ["ExplainSession", "Explainer", "Run", "RunSummary", "__version__", "audit", "evaluate", "explain", "get_method",
           "layers", "load_model", "methods"]
