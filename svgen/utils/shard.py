"""Deterministic splits of a data stage's work for cluster job arrays (``--shard I/N``).

Shard I of N takes a contiguous block of the items, so the parts merged in shard order keep the
order of the unsharded run; every shard records a digest of the whole item list so a merge can
refuse parts of different splits.
"""
from __future__ import annotations

import hashlib
import os
import re
from typing import Optional, Sequence

from svgen.utils.errors import SvgenError

__all__ = ["parse_shard", "shard_slice", "inputs_digest", "shard_from_env", "shard_order"]


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> (I, N) with 0 <= I < N; ``"env"`` reads the job-array or torchrun variables."""
    if str(text).strip() == "env":
        found = shard_from_env()
        if found is None:
            raise SvgenError("--shard env needs SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT, or RANK and "
                             "WORLD_SIZE (torchrun), in the environment")
        return found
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not m or int(m.group(2)) < 1 or int(m.group(1)) >= int(m.group(2)):
        raise SvgenError(f"--shard must be I/N with 0 <= I < N (e.g. 0/4) or 'env', got {text!r}")
    return int(m.group(1)), int(m.group(2))


def shard_from_env(env: Optional[dict] = None) -> Optional[tuple[int, int]]:
    """(index, count) from a SLURM job array (``SLURM_ARRAY_TASK_ID`` minus ``SLURM_ARRAY_TASK_MIN``,
    ``SLURM_ARRAY_TASK_COUNT``) or from torchrun (``RANK``, ``WORLD_SIZE``); None when neither is set."""
    env = os.environ if env is None else env
    if "SLURM_ARRAY_TASK_ID" in env and "SLURM_ARRAY_TASK_COUNT" in env:
        i = int(env["SLURM_ARRAY_TASK_ID"]) - int(env.get("SLURM_ARRAY_TASK_MIN", 0))
        return parse_shard(f"{i}/{int(env['SLURM_ARRAY_TASK_COUNT'])}")
    if "RANK" in env and "WORLD_SIZE" in env:
        return parse_shard(f"{int(env['RANK'])}/{int(env['WORLD_SIZE'])}")
    return None


def shard_slice(count: int, shard: tuple[int, int]) -> range:
    """The items of shard I of N: a contiguous block (sizes differ by at most one)."""
    i, n = shard
    return range(i * count // n, (i + 1) * count // n)


def inputs_digest(names: Sequence[str]) -> str:
    """sha256 of an item list: the shards of one split record the same digest."""
    return hashlib.sha256("\0".join(str(n) for n in names).encode()).hexdigest()


def shard_order(paths: Sequence, shards: Sequence[Optional[tuple[int, int, str]]]) -> list[int]:
    """Order in which to join parts: ``shards[k]`` is part k's (index, count, digest of the split's
    inputs) or None. Parts that are not shards keep the given order; the shards of one split are
    sorted by index and must all be there; anything else is a one-line error naming the part."""
    if not any(shards):
        return list(range(len(paths)))
    first = next(k for k, s in enumerate(shards) if s)
    _, count, digest = shards[first]
    seen: dict = {}
    for k, s in enumerate(shards):
        if not s:
            raise SvgenError(f"is not a shard, but {paths[first]} is (merge the shards of one split)", paths[k])
        if (s[1], s[2]) != (count, digest):
            raise SvgenError(f"is shard {s[0]}/{s[1]} of another split of the inputs than {paths[first]} "
                             f"(shard {shards[first][0]}/{count})", paths[k])
        if s[0] in seen:
            raise SvgenError(f"is shard {s[0]}/{s[1]} again (also {paths[seen[s[0]]]})", paths[k])
        seen[s[0]] = k
    missing = ", ".join(f"{i}/{count}" for i in range(count) if i not in seen)
    if missing:
        raise SvgenError(f"shard(s) {missing} of this split are missing: give every shard", paths[first])
    return [seen[i] for i in sorted(seen)]
