"""A run's warnings: method assumptions that fail at a layer, and layers whose maps are all empty.

Each (method, layer, assumption) is reported once, when first seen, in the log; at the end of
the run every warning, with how many images it concerned and the worst figure measured, goes to
``run.json``. Rows carry theirs in the ``warning`` column as they are written.
"""

from __future__ import annotations

from collections.abc import Callable

from camcli.engine.stream import ImageResult
from camcli.engine.layer_names import display_name

EMPTY_MAPS = "maps with evidence"


class RunWarnings:
    def __init__(self, log: Callable[[str], None]) -> None:
        self.log = log
        self.found: dict[tuple[str, str, str], dict] = {}
        self._maps: dict[tuple[str, str], list[int]] = {}  # (method, layer) -> [maps, empty maps]

    def add(self, result: ImageResult) -> None:
        for m in result.maps:
            counts = self._maps.setdefault((m.method, m.layer), [0, 0])
            counts[0] += 1
            counts[1] += m.empty
            for assumption, value in m.failures:
                key = (m.method, m.layer, assumption.name)
                entry = self.found.get(key)
                if entry is None:
                    entry = self.found[key] = {
                        "method": m.method, "layer": display_name(m.layer), "assumption": assumption.name,
                        "figure": assumption.figure, "worst": value, "images": 0, "advice": assumption.advice,
                        "message": f"{m.method} at {display_name(m.layer)} assumes {assumption.name}, but "
                                   f"{assumption.describe(value)}"}
                    self.log(f"camcli: warning: {entry['message']}; {assumption.advice}")
                entry["images"] += 1
                entry["worst"] = max(entry["worst"], value)  # for every figure, larger is worse

    def finish(self, suggest: Callable[[str], str | None], cause: str | None = None) -> list[dict]:
        """Add a warning for every method x layer whose maps were all empty; return them all.

        ``suggest(layer)`` names an earlier layer to try (or ``None``); ``cause``: why no layer can
        give evidence (the model's head, not the layer), which is then the advice instead.
        """
        for (method, layer), (maps, empty) in self._maps.items():
            if maps and empty == maps:
                other = None if cause else suggest(layer)
                advice = cause or ("its gradients (or activations) carry no evidence for the explained class: choose "
                                   "an earlier layer" + (f", such as {display_name(other)}" if other else "")
                                   + " (see `camcli layers MODEL`)")
                entry = {"method": method, "layer": display_name(layer), "assumption": EMPTY_MAPS,
                         "figure": "share of empty maps", "worst": 1.0, "images": maps, "advice": advice,
                         "message": f"every {method} map at {display_name(layer)} was empty ({maps} image(s))"}
                self.found[(method, layer, EMPTY_MAPS)] = entry
                self.log(f"camcli: warning: {entry['message']}; {advice}")
        return list(self.found.values())
