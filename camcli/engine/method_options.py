"""The options CAM methods take, each declared once: type, default as shown, help, check, and
which methods take it.

Everything that offers or checks a method option reads this table: the settings fields
(:func:`camcli.settings.fields.method_option`), so the command line's flags, ``--help``, config
keys and the docs table; the checks (:func:`check`, before any model is loaded);
``camcli methods``; and the registry, which sets each method class's ``options`` from
:func:`takes` and refuses options a method does not take (:func:`given_to`). No torch here: the
command line checks its options before torch is imported, which is also why the table is not
spread over the method classes themselves.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from camcli.errors import UsageError

#: KPCA-CAM's kernels (scikit-learn's definitions)
KERNELS = ("sigmoid", "rbf", "poly", "linear", "cosine")


@dataclass(frozen=True)
class MethodOption:
    """One option of one or more methods."""

    name: str  # as the API and config files spell it; the flag is --name-with-dashes
    kind: type  # int, float or str
    help: str
    shown: str  # the default as --help and the docs show it (the method's own default)
    takers: tuple[str, ...]  # the methods that take it, in the order messages name them
    problem: Callable[[Any], str | None]  # what is wrong with a value ("must be ..."), or None
    #: where else the option applies, so that it is never refused for the methods chosen
    also: str | None = None
    shapes_outputs: bool = True  # a resumed run must match it
    #: words after the option's name in a refusal ("(Faster Score-CAM)") and after the takers
    called: str = ""
    why_not: str = ""


def _at_least_one(value) -> str | None:
    return "must be at least 1" if value < 1 else "must be at most 100000" if value > 100_000 else None


def _finite_not_negative(value) -> str | None:
    if not math.isfinite(value) or value < 0:
        return "must be a finite number, 0 or more"
    return None if value <= 1e6 else "must be at most 1e6"


def _not_negative(value) -> str | None:
    if value < 0:
        return "must be 0 or more"
    return None if math.isfinite(value) and value <= 1e6 else "must be a finite number, at most 1e6"


def _finite_positive(value) -> str | None:
    return None if math.isfinite(value) and 0 < value <= 1e6 else "must be a finite number above 0, at most 1e6"


def _kernel(value) -> str | None:
    return None if value in KERNELS else f"must be one of {', '.join(KERNELS)}"


OPTIONS: tuple[MethodOption, ...] = (
    MethodOption("cam_batch_size", int, "Masked inputs per forward pass for scorecam, ablationcam and the "
                 "faithfulness metrics; bounds their memory.", "16 on a CPU, 64 on a GPU",
                 ("scorecam", "sscam", "iscam", "ablationcam"), _at_least_one, also="the faithfulness metrics",
                 shapes_outputs=False),
    MethodOption("max_n", int, "Faster Score-CAM: use only the N channels with the largest spatial spread "
                 "(scorecam, sscam and iscam only).", "all", ("scorecam", "sscam", "iscam"), _at_least_one,
                 called=" (Faster Score-CAM)"),
    MethodOption("fem_k", float, "FEM's k-sigma rule: a position counts when it is above its channel's mean + k "
                 "standard deviations (fem only).", "2, the paper's", ("fem",),
                 _not_negative),
    MethodOption("kpca_kernel", str, "KPCA-CAM's kernel: sigmoid, rbf, poly, linear or cosine (scikit-learn's "
                 "definitions; kpcacam only).", "sigmoid, the paper's", ("kpcacam",), _kernel),
    MethodOption("kpca_gamma", float, "KPCA-CAM's kernel coefficient (kpcacam only).", "1 / channels",
                 ("kpcacam",), _finite_positive),
    MethodOption("finer_alpha", float, "Finer-CAM's comparison strength: the explained score is the target's logit "
                 "minus alpha times those of the three most similar classes, weighted by their probabilities "
                 "(finercam only).", "1, the authors' code", ("finercam",), _finite_not_negative),
    MethodOption("noise_samples", int, "Noisy samples per image for sscam and smoothgradcam++, integration steps "
                 "for iscam.", "35 sscam, 4 smoothgradcam++, 10 iscam (torchcam's)",
                 ("sscam", "iscam", "smoothgradcam++"), _at_least_one),
    MethodOption("noise_std", float, "Standard deviation of the Gaussian noise: on the [0, 1] masks for sscam, on "
                 "the normalised input for smoothgradcam++.", "2 sscam, 0.3 smoothgradcam++ (torchcam's)",
                 ("sscam", "smoothgradcam++"), _finite_positive, why_not=" (iscam adds no noise)"),
)

BY_NAME = {o.name: o for o in OPTIONS}


def takes(method: str) -> tuple[str, ...]:
    """The options ``method`` takes, in declaration order."""
    return tuple(o.name for o in OPTIONS if method in o.takers)


def _and(names: Collection[str]) -> str:
    names = list(names)
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def problem(name: str, value) -> str | None:
    """The one-line refusal of ``value`` for option ``name`` (``None`` when it is fine)."""
    wrong = BY_NAME[name].problem(value)
    return f"`{name}` {wrong}, got {value!r}" if wrong else None


def check(values: Mapping[str, Any], chosen: Collection[str]) -> None:
    """Refuse a method option with a bad value, or given while no chosen method takes it."""
    for option in OPTIONS:
        value = values.get(option.name)
        if value is None:
            continue
        wrong = problem(option.name, value)
        if wrong:
            raise UsageError(wrong)
        if option.also is None and not set(option.takers) & set(chosen):
            raise UsageError(f"`{option.name}`{option.called} applies to `method` {_and(option.takers)} "
                             f"only{option.why_not}")


def given_to(method: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The options (not ``None``) to build ``method`` with; a UsageError for an option it does not
    take, an unknown one, or a bad value."""
    mine = takes(method)
    found = {}
    for name, value in options.items():
        if value is None:
            continue
        if name not in BY_NAME:
            raise UsageError(f"unknown method option `{name}`; the options are {_and(sorted(BY_NAME))}")
        if name not in mine:
            taken = f"it takes {_and(mine)}" if mine else "it takes none"
            raise UsageError(f"method {method} does not take `{name}` ({taken}); `{name}` is for "
                             f"{_and(BY_NAME[name].takers)}")
        wrong = problem(name, value)
        if wrong:
            raise UsageError(wrong)
        found[name] = value
    return found
