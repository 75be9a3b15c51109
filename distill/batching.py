"""Length-bucketed batches: examples of similar length share a batch, so little of each batch is padding."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence

__all__ = ["BUCKET_MEGABATCH", "LengthBucketBatchSampler"]

BUCKET_MEGABATCH = 50
"""Batches per bucketing window: the shuffled examples are sorted by length within windows of this many batches."""


class LengthBucketBatchSampler:
    """Batches of example indices for ``torch.utils.data.DataLoader(batch_sampler=...)``.

    Each epoch: shuffle every index, sort each window of ``BUCKET_MEGABATCH`` batches by length, cut it into batches,
    shuffle the batches. The order depends only on ``seed`` and the epoch (``set_epoch``), not on torch's RNG, so a
    resumed run sees the same batches."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int):
        self.lengths = list(lengths)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)

    def batches(self, epoch: int) -> list[list[int]]:
        rng = random.Random(f"length-buckets:{self.seed}:{epoch}")
        order = list(range(len(self.lengths)))
        rng.shuffle(order)
        window = self.batch_size * BUCKET_MEGABATCH
        out = []
        for start in range(0, len(order), window):
            chunk = sorted(order[start : start + window], key=lambda i: self.lengths[i])
            out += [chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        rng.shuffle(out)
        return out

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches(self.epoch))
