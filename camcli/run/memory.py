"""How much of a run is in flight at once, planned from the images' sizes and a memory budget.

Decoded originals wait in the loader (each worker prepares ``prefetch`` batches, and a batch is
briefly held twice while it crosses to the main process), in the batch being explained, and in
the writer's queue; each writer thread renders one image at a time in about
``RENDER_BYTES_PER_PIXEL`` bytes per pixel (the overlay, rendered a strip of rows at a time, and
the encoder's output). The plan shrinks batches, the queue, the prefetch, the writer threads and
the loader workers, in that order, until the estimate fits the budget, down to decoding in the
main process (no worker: each worker process costs about 500 MB of its own, more than a 50 MP
photo); an image that alone exceeds the budget is processed alone, with the least in flight.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from camcli.engine.batching import BYTES_PER_PIXEL, image_pixels, plan_batches
from camcli.engine.images import ImageItem

RENDER_BYTES_PER_PIXEL = 6
MB = 2**20
#: the automatic budget: a quarter of the available memory, at most this (torch, the model and
#: the loader workers take about 1.2 GB more: measured with benchmarks/photos.py)
AUTO_BUDGET_CAP = 768 * MB


@dataclass(frozen=True)
class MemoryPlan:
    batches: list[list[ImageItem]]
    workers: int
    prefetch: int  # batches each loader worker prepares ahead
    writer_threads: int
    writer_bytes: int  # decoded originals waiting to be written, at most
    budget: int

    def describe(self) -> str:
        return (f"memory budget {self.budget / MB:.0f} MB: {len(self.batches)} batch(es), "
                f"{self.workers} loader worker(s), prefetch {self.prefetch}, {self.writer_threads} writer thread(s)")


def available_memory() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def budget_bytes(megabytes: int | None) -> int:
    """The ``memory_budget`` setting in bytes, or the automatic one."""
    if megabytes:
        return megabytes * MB
    free = available_memory()
    return min(AUTO_BUDGET_CAP, free // 4) if free else AUTO_BUDGET_CAP


def plan_memory(items: list[ImageItem], batch_size: int, workers: int, budget: int) -> MemoryPlan:
    pixels = [i.pixels.shape[0] * i.pixels.shape[1] if i.pixels is not None else image_pixels(i.path) for i in items]
    largest = max(pixels, default=0)
    threads, prefetch = 2, 2

    def estimate(per_batch: int) -> int:
        # each worker: the batches it prepares ahead and the one it decodes, held twice in transit;
        # without workers the main process decodes one batch at a time
        loader = (2 * workers * (prefetch + 1) if workers else 1) * per_batch
        return loader + 3 * per_batch + threads * RENDER_BYTES_PER_PIXEL * largest  # explained + writer queue

    one_image = BYTES_PER_PIXEL * largest
    per_batch = max(one_image, budget // 30)  # about 30 batches' worth: loader 2 x 2 workers x 3, +3, render
    while estimate(per_batch) > budget:
        if per_batch > one_image:
            per_batch = max(one_image, per_batch * 3 // 4)
        elif prefetch > 1:
            prefetch = 1
        elif threads > 1:
            threads = 1
        elif workers > 0:
            workers -= 1
        else:
            break  # one image at a time, as little in flight as there can be
    batches = plan_batches(items, pixels, batch_size, per_batch)
    return MemoryPlan(batches, workers, prefetch, threads, 2 * per_batch, budget)
