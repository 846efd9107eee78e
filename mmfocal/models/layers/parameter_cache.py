"""Tensors computed from parameters alone, kept between forward passes that take no gradient.

One job: :class:`InferenceCache`. FocalTransformer's position biases are a function of the
learned tables only, and building them (gathers, a log-sum-exp) is a visible part of a small
forward pass (docs/speed.md). Without gradients the result can be kept; it is used again only
while the tables hold exactly the values it was computed from, compared element by element: a
version counter would miss writes through ``param.data``, which mmengine's EMA and many loaders
use, and a stale bias would be a silent wrong result.
"""
from typing import Callable, Hashable, Sequence

import torch


class InferenceCache:
    """Values computed from ``sources`` (parameters), kept per key while no gradient is taken.

    Not for traced code (callers keep tracers out: a traced graph must compute the value).

    Args:
        max_entries (int): Keys kept at most, the oldest dropped first (a key per input size must
            not grow without bound over a multi-scale test). Defaults to 2.
    """

    def __init__(self, max_entries: int = 2):
        self.max_entries = max_entries
        self._entries = {}

    def get(self, key: Hashable, sources: Sequence[torch.Tensor], compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        """``compute()``, or the value kept for ``key`` while no gradient is taken.

        Where gradients are enabled, calls ``compute`` every time (the graph must reach the
        parameters); otherwise returns the kept value while every source has the dtype, device,
        shape and values it had when the value was computed.

        Args:
            key (Hashable): What the value is kept under.
            sources (Sequence[torch.Tensor]): The parameters the value is computed from.
            compute (Callable[[], torch.Tensor]): Computes the value.

        Returns:
            torch.Tensor: The value.
        """
        if torch.is_grad_enabled():
            return compute()
        entry = self._entries.get(key)
        if entry is not None and _same_values(entry[0], sources):
            return entry[1]
        value = compute()
        self._entries.pop(key, None)
        while len(self._entries) >= self.max_entries:
            del self._entries[next(iter(self._entries))]
        self._entries[key] = ([source.detach().clone() for source in sources], value)
        return value


def _same_values(snapshots: Sequence[torch.Tensor], sources: Sequence[torch.Tensor]) -> bool:
    return len(snapshots) == len(sources) and all(
        kept.dtype == now.dtype and kept.device == now.device and kept.shape == now.shape and torch.equal(kept, now)
        for kept, now in zip(snapshots, sources))
