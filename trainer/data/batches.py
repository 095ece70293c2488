"""Batches drawn bucket by bucket: each epoch every bucket is shuffled and cut into batches, and each step takes
the next batch of a random bucket that still has one (upstream's continual random loader)."""

from __future__ import annotations

import random

from ..errors import UserError


class BucketBatches:
    def __init__(self, bucket_sizes: list[int], batch_size: int, rng: random.Random):
        """`bucket_sizes[i]` items in bucket i; yields (bucket index, item indices)."""
        self.bucket_sizes = [n for n in bucket_sizes]
        self.batch_size = batch_size
        self.rng = rng
        self.epoch = 0
        self._pending: list[list[list[int]]] = []

    def _new_epoch(self) -> None:
        self._pending = []
        for size in self.bucket_sizes:
            order = list(range(size))
            self.rng.shuffle(order)
            self._pending.append([order[i:i + self.batch_size] for i in range(0, size, self.batch_size)])

    def __iter__(self):
        return self

    def __next__(self) -> tuple[int, list[int]]:
        if not any(self._pending):
            if self._pending:
                self.epoch += 1
            self._new_epoch()
        candidates = [i for i, batches in enumerate(self._pending) if batches]
        bucket = self.rng.choice(candidates)
        return bucket, self._pending[bucket].pop(0)

    def state_dict(self) -> dict:
        """The epoch and the batches still due in it (the order itself comes from `rng`, saved with the RNGs)."""
        pending = [[list(batch) for batch in bucket] for bucket in self._pending]
        return {"bucket_sizes": list(self.bucket_sizes), "epoch": self.epoch, "pending": pending}

    def load_state_dict(self, state: dict) -> None:
        """Continue where `state_dict()` was taken; refused when the buckets differ (the training data changed)."""
        if list(state["bucket_sizes"]) != self.bucket_sizes:
            raise UserError(f"resume: the training data changed since the state was saved (items per bucket: "
                            f"{list(state['bucket_sizes'])} then, {self.bucket_sizes} now); start a new run")
        self.epoch = state["epoch"]
        self._pending = [[list(batch) for batch in bucket] for bucket in state["pending"]]


def repeat_items(n: int, multiply: int, batch_size: int) -> list[int]:
    """Item indices of one bucket: the list `multiply` times, and again ×batch when the batch is larger
    than the bucket (upstream repeats the data rather than refusing)."""
    items = list(range(n)) * max(1, multiply)
    if batch_size > len(items):
        items = items * batch_size
    return items
