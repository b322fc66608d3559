"""What a map explains: the model's output read through its head, and the score taken from it.

One :class:`Target` serves every method and every metric. It reads the model's output (a
tensor, or one part of a tuple, dict or output object: ``output``), turns it into a *table*
with one column per explainable class (:meth:`Target.table`), says what the numbers in the CSV
mean (:meth:`Target.values`: softmax or sigmoid probabilities, a regression value, a cosine
similarity) and gives the (N,) scores that gradient methods differentiate and Score-CAM or
Ablation-CAM compare on their masked inputs (:meth:`Target.scores`).

Heads (``kind``):

- ``softmax``: classes that exclude each other (ImageNet); probabilities are a softmax.
- ``sigmoid``: independent labels (multi-label); probabilities are sigmoids, and every label
  at or above ``threshold`` is explained (:meth:`Target.choose`).
- ``binary``: one output ``z``; the table is ``[-z, z]`` (negative, positive class), so the
  negative class is explained through the negated logit and both probabilities are sigmoids.
- ``regression``: the outputs themselves, explained as they grow (``direction`` +1) or fall (-1).
- ``similarity``: the cosine similarity of each image's embedding to a reference embedding
  (pytorch-grad-cam's ``SimilarityToConceptTarget``).

``squashed``: the model applies its own Sigmoid or Softmax last; its outputs are already
probabilities and are never squashed twice (the logit score is then the probability itself).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from camcli.engine import SCORES
from camcli.errors import UsageError
from camcli.engine.tensors import first_tensor

KINDS = ("softmax", "sigmoid", "binary", "regression", "similarity")
#: default ``threshold`` of the sigmoid head: a label at or above it is positive
THRESHOLD = 0.5


def select_output(output, which: str | None = None) -> torch.Tensor:
    """The tensor of a model's output to explain.

    ``which`` ``None``: the output itself when it is a tensor, else its ``logits`` (a dict key or
    an attribute, as HuggingFace models return them), else its first tensor. A number picks that
    element of a tuple or list; a name picks that key or attribute (``pooler_output``).
    """
    if which is None or which == "":
        if isinstance(output, torch.Tensor):
            return output
        if isinstance(output, dict) and "logits" in output:
            output = output["logits"]
        elif hasattr(output, "logits") and isinstance(output.logits, torch.Tensor):
            output = output.logits
        tensor = first_tensor(output)
        if tensor is None:
            raise UsageError(f"the model's output holds no tensor (got {type(output).__name__})")
        return tensor
    text = str(which)
    if text.lstrip("-").isdigit():
        if not isinstance(output, (tuple, list)):
            raise UsageError(f"`output` {text} picks an element of a tuple, but the model returns "
                             f"{type(output).__name__}")
        if not -len(output) <= int(text) < len(output):
            raise UsageError(f"`output` {text} is out of range: the model returns {len(output)} values")
        picked = output[int(text)]
    elif isinstance(output, dict) and text in output:
        picked = output[text]
    elif not isinstance(output, (torch.Tensor, tuple, list)) and hasattr(output, text):
        picked = getattr(output, text)
    else:
        have = list(output.keys()) if isinstance(output, dict) else None
        raise UsageError(f"`output` {text!r}: the model's {type(output).__name__} output has no such part"
                         + (f" (it has {', '.join(map(str, have))})" if have else ""))
    if not isinstance(picked, torch.Tensor):
        raise UsageError(f"`output` {text} is a {type(picked).__name__}, not a tensor")
    return picked


@dataclass
class Target:
    """How the model's output is read, and which of its numbers each map explains."""

    kind: str = "softmax"
    score: str = "logit"
    squashed: bool = False  # the model's own last module is the Sigmoid/Softmax
    output: str | None = None  # which part of a tuple/dict output (see select_output)
    #: names of the table's columns (the binary head's: negative, positive); None: class_N
    labels: list[str] | None = None
    #: classes explained in every image (``target``; several for multi-label runs)
    fixed: tuple[int, ...] = ()
    threshold: float = THRESHOLD  # sigmoid head: labels at or above it are explained
    explain_topk: int | None = None  # the K best classes of each image are explained
    direction: float = 1.0  # regression: +1 explains "higher", -1 "lower"
    reference: torch.Tensor | None = field(default=None, repr=False)  # similarity: (D,) embedding
    reference_name: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise UsageError(f"unknown head {self.kind!r}; choose one of {', '.join(KINDS)}")
        if self.score not in SCORES:
            raise UsageError(f"unknown `score` {self.score!r}; choose one of logit, probability")
        if self.kind == "similarity" and self.reference is None:
            raise UsageError("a similarity target needs a reference embedding")

    # -- reading the output -------------------------------------------------------------------

    def read(self, output) -> torch.Tensor:
        """The output tensor this target reads (``output`` picks it), as float."""
        return select_output(output, self.output).float()

    def table(self, output) -> torch.Tensor:
        """(N, K): one column per explainable class, differentiable."""
        t = self.read(output)
        n = t.shape[0] if t.dim() else 1
        if self.kind == "binary":
            if t.dim() == 2 and t.shape[1] != 1 or t.dim() > 2:
                raise UsageError(f"the binary head reads one output per image, but the model's output is "
                                 f"{tuple(t.shape)}")
            z = t.reshape(n)
            return torch.stack([1 - z, z], 1) if self.squashed else torch.stack([-z, z], 1)
        if t.dim() != 2:
            what = ("an embedding per image" if self.kind == "similarity" else "(N, classes) scores")
            raise UsageError(f"the model's output is {tuple(t.shape)}, not {what}: pick another part of it with "
                             "`output`" + (", or pool it to one vector per image in your model"
                                           if t.dim() > 2 else "")
                             + ("; if it scores every pixel (a segmenter), say `task` segmentation"
                                if t.dim() == 4 else ""))
        if self.kind == "similarity":
            ref = self.reference.to(t.device, t.dtype).flatten()
            if ref.numel() != t.shape[1]:
                raise UsageError(f"the reference embedding has {ref.numel()} values but the model's embeddings "
                                 f"have {t.shape[1]}")
            return F.cosine_similarity(t, ref[None], dim=1)[:, None]
        if self.kind == "regression":
            return t * self.direction
        return t

    def values(self, table: torch.Tensor) -> torch.Tensor:
        """(N, K) what the CSV reports for each column: probabilities under the head, a regression
        value (its own sign), or the cosine similarity; detached."""
        return self.probabilities(table.detach())

    def probabilities(self, table: torch.Tensor) -> torch.Tensor:
        """:meth:`values`, differentiable (Finer-CAM weighs rival classes by them)."""
        table = table.float()
        if self.kind == "regression":
            return table * self.direction
        if self.kind == "similarity" or self.squashed:
            return table
        return table.softmax(1) if self.kind == "softmax" else table.sigmoid()

    @property
    def probabilistic(self) -> bool:
        """Whether the values are probabilities (in [0, 1])."""
        return self.kind in ("softmax", "sigmoid", "binary")

    def scores(self, table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """(N,) the explained score of each row, differentiable: the table's entry, or its
        probability with ``score`` probability (a no-op for squashed heads and non-probabilities)."""
        values = table.float()
        if self.score != "logit" and self.probabilistic and not self.squashed:
            values = values.softmax(1) if self.kind == "softmax" else values.sigmoid()
        return values.gather(1, index.view(-1, 1).to(values.device).long()).squeeze(1)

    def __call__(self, output, index: torch.Tensor) -> torch.Tensor:
        """The explained scores of a model output: ``scores(table(output), index)``."""
        return self.scores(self.table(output), index)

    def probabilities_of(self, output) -> torch.Tensor:
        """(N, K) reported values of a model output (what faithfulness and ROAD follow)."""
        return self.values(self.table(output))

    # -- which classes are explained ----------------------------------------------------------

    @property
    def several(self) -> bool:
        """Whether an image may get more than one explained class (rows and files then name it)."""
        return len(self.fixed) > 1 or (self.explain_topk or 1) > 1 or (self.kind == "sigmoid" and not self.fixed)

    def first(self, table: torch.Tensor) -> torch.Tensor:
        """(N,) the first class explained in each image: the first fixed one, else the best."""
        n = table.shape[0]
        if self.fixed:
            return torch.full((n,), self.fixed[0], dtype=torch.long, device=table.device)
        return table.detach().argmax(1)

    def choose(self, table: torch.Tensor) -> list[tuple[list[int], str]]:
        """For each image: the classes explained, first one first (always what :meth:`first`
        gave), and a note ("" or why the choice is not what was asked)."""
        table = table.detach().float()
        values = self.values(table)
        # ties broken by the lower index, as argmax does
        order = torch.sort(table, dim=1, descending=True, stable=True).indices.cpu().tolist()
        values = values.cpu().tolist()
        chosen = []
        for i, ranked in enumerate(order):
            if self.fixed:
                chosen.append((list(self.fixed), ""))
            elif self.explain_topk:
                chosen.append((ranked[:self.explain_topk], ""))
            elif self.kind == "sigmoid":
                positive = [c for c in ranked if values[i][c] >= self.threshold]
                if positive:
                    chosen.append((positive, ""))
                else:
                    best = ranked[0]
                    chosen.append(([best], f"no label reached `threshold` {self.threshold:g}: its best label "
                                           f"({self.label(best)}, {values[i][best]:.3f}) is explained"))
            else:
                chosen.append((ranked[:1], ""))
        return chosen

    def label(self, index: int) -> str:
        return self.labels[index] if self.labels and 0 <= index < len(self.labels) else f"class_{index}"

    def describe(self) -> str:
        """The log's words for the head: ``sigmoid head (multi-label, threshold 0.5)``."""
        if self.kind == "similarity":
            return f"cosine similarity to {self.reference_name or 'a reference embedding'}"
        if self.kind == "regression":
            return f"regression output, explained as it {'grows' if self.direction > 0 else 'falls'}"
        words = {"softmax": "softmax head", "sigmoid": f"sigmoid head (multi-label, threshold {self.threshold:g})",
                 "binary": "binary head (one logit: the negative class is its negation)"}[self.kind]
        return words + (" on the model's own probabilities" if self.squashed else "")


def default_target(score: str = "logit") -> Target:
    """The target of a plain classifier: softmax head, each image's best class."""
    return Target("softmax", score=score)


def resolve_classes(spec: str | Sequence[str] | None, labels: list[str]) -> tuple[int, ...]:
    """The ``target`` setting: class indices or label names (case-insensitive), comma-separated."""
    from camcli.models.labels import class_indices

    return class_indices(spec, labels)
