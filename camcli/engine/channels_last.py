"""Channels-last (NHWC) models, where the model allows it.

NHWC convolutions run 1.2-1.4x faster on 2 CPU cores (benchmarks/) and are the layout tensor
cores want; results differ from NCHW only in float rounding. A model that flattens with
``x.view(N, -1)`` fails on an NHWC tensor, so one dummy pass decides.
"""

from __future__ import annotations

import torch

from camcli.errors import first_line


def to_channels_last(model, input_size: tuple[int, int], device: torch.device) -> str | None:
    """Make the model channels-last when one dummy pass shows it still runs so; else keep it as it
    was and return why (a line for the run's log)."""
    model.to(memory_format=torch.channels_last)
    x = torch.zeros(1, 3, *input_size, device=device).contiguous(memory_format=torch.channels_last)
    try:
        with torch.inference_mode():
            model(x)
    except RuntimeError as e:
        model.to(memory_format=torch.contiguous_format)
        return (f"the model runs channels-first (NCHW), as it was: it fails on a channels-last input "
                f"({first_line(e)})")
    return None
