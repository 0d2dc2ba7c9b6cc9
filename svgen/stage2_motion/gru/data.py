"""Training windows of t consecutive W+ codes, streamed from ``latents.h5``.

An epoch is one pass over all windows: each clip of n frames is tiled with windows of t frames at
``stride`` (default t, i.e. non-overlapping) starting at a random phase in [0, stride) drawn per
epoch and clip, so over epochs every start position is used. The order is shuffled, but reading
stays sequential: windows are grouped in blocks of consecutive frames, blocks are visited in random
order, a few blocks are held in memory at a time and their windows are shuffled together. Memory is
bounded by ``blocks_in_memory * block_frames`` frames, whatever the size of the store; a store
smaller than ``cache_bytes`` is instead decompressed once and kept in memory.

The plan of an epoch depends only on (seed, epoch), so ``--resume`` can skip the batches already
done without reading them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np

from svgen.utils.errors import SvgenError


@dataclass
class _Block:
    clip: str
    first: int          # first frame held
    stop: int           # one past the last frame held
    starts: np.ndarray  # window starts inside the block (absolute frame indices)


class WindowSampler:
    """Epochs of shuffled batches [B, t, num_ws, w_dim] (float32) from a :class:`LatentStore`."""

    def __init__(self, store, window: int, batch: int, stride: Optional[int] = None, seed: int = 0,
                 block_frames: int = 1024, blocks_in_memory: int = 4, drop_last: bool = True,
                 cache_bytes: int = 2 << 30):
        if window < 2:
            raise ValueError(f"window must be >= 2, got {window}")
        self.store = store
        self.window = int(window)
        self.batch = int(batch)
        self.stride = int(stride or window)
        self.seed = int(seed)
        self.block_frames = max(int(block_frames), self.window)
        self.blocks_in_memory = max(1, int(blocks_in_memory))
        self.drop_last = drop_last
        self.lengths = {c: store.num_frames(c) for c in store.clips}
        usable = [c for c, n in self.lengths.items() if n >= self.window]
        if not usable:
            longest = max(self.lengths.values())
            raise SvgenError(f"no clip has the {self.window} frames a training window needs "
                             f"(longest clip: {longest} frames)", store.path)
        self.clips = usable
        # a store that fits in ``cache_bytes`` (a 10-minute clip of 14x512 codes is 430 MB) is
        # decompressed once and kept; a larger one is streamed block by block every epoch
        frame_bytes = 4 * store.num_ws * store.w_dim
        self.cache: Optional[dict[str, np.ndarray]] = (
            {} if sum(self.lengths[c] for c in usable) * frame_bytes <= cache_bytes else None)
        if self.windows_per_epoch(0) < self.batch and drop_last:
            # a tiny store: fewer windows than one batch -> batches of what there is
            self.drop_last = False

    # -- plan -----------------------------------------------------------------------------------
    def _rng(self, epoch: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, int(epoch), 0x5EED])

    def _blocks(self, epoch: int, rng: np.random.Generator) -> list[_Block]:
        blocks = []
        for clip in self.clips:
            n = self.lengths[clip]
            last = n - self.window
            phase = int(rng.integers(0, min(self.stride, last + 1)))
            starts = np.arange(phase, last + 1, self.stride)
            for a in range(0, n, self.block_frames):
                sel = starts[(starts >= a) & (starts < a + self.block_frames)]
                if len(sel):
                    blocks.append(_Block(clip, int(sel[0]), int(sel[-1]) + self.window, sel))
        return blocks

    def plan(self, epoch: int) -> list[tuple[list[_Block], list[list[tuple[str, int]]]]]:
        """[(blocks of a group, its batches as lists of (clip, start))] for ``epoch``, in order."""
        rng = self._rng(epoch)
        blocks = self._blocks(epoch, rng)
        order = rng.permutation(len(blocks))
        groups = [[blocks[j] for j in order[g:g + self.blocks_in_memory]]
                  for g in range(0, len(order), self.blocks_in_memory)]
        out = []
        carry: list[tuple[str, int]] = []     # windows left over from earlier groups (< one batch)
        for gi, group in enumerate(groups):
            windows = [(b.clip, int(s)) for b in group for s in b.starts]
            windows = carry + windows
            perm = rng.permutation(len(windows))
            windows = [windows[j] for j in perm]
            full = len(windows) // self.batch * self.batch
            is_last = gi == len(groups) - 1
            batches = [windows[a:a + self.batch] for a in range(0, full, self.batch)]
            carry = windows[full:]
            if is_last and carry and not self.drop_last:
                batches.append(carry)
                carry = []
            out.append((group, batches))
        return out

    def windows_per_epoch(self, epoch: int) -> int:
        return sum(len(b.starts) for b in self._blocks(epoch, self._rng(epoch)))

    def batches_per_epoch(self, epoch: int) -> int:
        return sum(len(batches) for _, batches in self.plan(epoch))

    # -- reading --------------------------------------------------------------------------------
    def epoch(self, epoch: int, skip: int = 0) -> Iterator[np.ndarray]:
        """Yield the batches of ``epoch`` in order, skipping the first ``skip`` without reading them."""
        done = 0
        for group, batches in self.plan(epoch):
            if done + len(batches) <= skip:
                done += len(batches)
                continue
            loaded = [(b.clip, b.first, self._read(b.clip, b.first, b.stop)) for b in group]
            for batch in batches:
                if done < skip:
                    done += 1
                    continue
                done += 1
                yield np.stack([self._window(loaded, clip, s) for clip, s in batch])

    def _window(self, loaded: list, clip: str, start: int) -> np.ndarray:
        for c, first, arr in loaded:
            if c == clip and first <= start and start + self.window <= first + len(arr):
                return arr[start - first:start - first + self.window]
        # a window carried over from an earlier group (fewer than one batch per group)
        return self._read(clip, start, start + self.window)

    def _read(self, clip: str, start: int, stop: int) -> np.ndarray:
        """Frames [start, stop) of ``clip`` as W+ [n, num_ws, w_dim] (from the cache when there is one)."""
        if self.cache is None:
            return self.store.read(clip, start, stop, as_wplus=True)
        if clip not in self.cache:
            self.cache[clip] = self.store.read(clip, 0, self.lengths[clip], as_wplus=True)
        return self.cache[clip][start:stop]
