"""Splitting a run over processes and machines, and joining the parts.

A shard is this process's share of the sorted images: every ``count``-th image from ``index``.
Under ``torchrun`` the launcher's ``RANK`` and ``WORLD_SIZE`` say which; otherwise ``--shard
INDEX/COUNT`` does (a SLURM array, say). Each shard writes ``predictions.part-I-of-N.csv``; the
parts are joined in input order by rank 0 after a barrier (torchrun) or by ``camcli merge``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from camcli import tasks
from camcli.errors import UsageError
from camcli.output.csvfile import read_rows, write_rows
from camcli.settings import ExplainSettings, parse_shard


@dataclass(frozen=True)
class Shard:
    index: int = 0
    count: int = 1
    distributed: bool = False  # launched by torchrun: ranks meet at a barrier to merge
    stem: str = "predictions"  # the CSV's name without .csv: the run's task's (camcli/tasks/)

    @classmethod
    def of(cls, settings: ExplainSettings, environ=None) -> Shard:
        env = os.environ if environ is None else environ
        if settings.shard is not None:
            return cls(*parse_shard(settings.shard))
        world = int(env.get("WORLD_SIZE", "1") or 1)
        rank = int(env.get("RANK", "0") or 0)
        return cls(rank, world, world > 1 and "MASTER_ADDR" in env)

    @property
    def suffix(self) -> str:
        """``.part-002-of-008`` (empty for a whole run): names this shard's CSV, manifest and lock."""
        return f".part-{self.index:03d}-of-{self.count:03d}" if self.count > 1 else ""

    @property
    def csv_name(self) -> str:
        return f"{self.stem}{self.suffix}.csv"

    @property
    def manifest_name(self) -> str:
        return f"run{self.suffix}.json"

    @property
    def local_rank(self) -> int | None:
        """The GPU this rank should use, under a launcher."""
        return int(os.environ.get("LOCAL_RANK", self.index)) if self.distributed else None

    def select(self, items: list) -> list:
        return items[self.index::self.count] if self.count > 1 else items

    def describe(self, total: int) -> str:
        return f" (shard {self.index}/{self.count} of {total})" if self.count > 1 else ""


def merge_parts(out: Path) -> int:
    """Join ``predictions.part-*.csv`` into ``predictions.csv`` (a detection run's
    ``detections.part-*.csv`` into ``detections.csv``, a segmentation run's ``segments``) in input
    order; returns the row count."""
    found = {stem: sorted(out.glob(f"{stem}.part-*.csv")) for stem in tasks.csv_stems()}
    stems = [stem for stem, parts in found.items() if parts]
    if not stems:
        raise UsageError(f"no {', '.join(f'{stem}.part-*.csv' for stem in found)} files in {out}")
    if len(stems) > 1:
        raise UsageError(f"{out} holds parts of runs of different tasks ({', '.join(stems)}); merge them in folders "
                         "of their own")
    stem = stems[0]
    parts = found[stem]
    counts = {p.name.split("-of-")[-1].removesuffix(".csv") for p in parts}
    if len(counts) != 1:
        raise UsageError(f"parts in {out} come from different shard counts: {sorted(counts)}")
    expected = int(counts.pop())
    if len(parts) != expected:
        raise UsageError(f"{out} holds {len(parts)} of {expected} parts; wait for every shard or rerun the missing ones")
    header, rows = None, []
    for p in parts:
        h, r = read_rows(p)
        if header is not None and h != header:
            raise UsageError(f"{p.name} has different columns from {parts[0].name}")
        header = h
        rows += r
    rows.sort(key=lambda r: r.index)  # stable: an image's rows keep their order
    write_rows(out / f"{stem}.csv", header, rows)
    return len(rows)


def merge_after_barrier(out: Path, shard: Shard, log) -> bool:
    """Under torchrun: wait for every rank, then rank 0 merges the parts; True on rank 0."""
    import torch.distributed as dist
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    try:
        dist.barrier()
        if shard.index == 0:
            n = merge_parts(out)
            log(f"merged {shard.count} parts into {out / shard.stem}.csv ({n} rows)")
        dist.barrier()
    finally:
        dist.destroy_process_group()
    return shard.index == 0
