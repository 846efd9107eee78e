"""torch.compile of a Focal backbone, or a model around one, with one graph for every input size.

Compiled as it is (``torch.compile(backbone, fullgraph=True)``), the model has no graph break
and no Python branch on a size: the first call compiles for its size, the first call at another
size recompiles once with dynamic sizes, and that graph serves every later size whose stage
maps all have at least 2 windows per side (with window 7 and 4 stages: inputs of 225 pixels or
more per side, every detection and segmentation size). PyTorch specialises sizes of 0 and 1,
though: a batch of 1 after a batch of 2 recompiles once, and so does a stage map of a single
window or token on a side (small inputs), once per such pattern. That is PyTorch's shape
reasoning (its reshape and contiguity checks ask whether a size is 1), not a branch of ours.

:func:`compile_for_any_size` removes those recompiles: it compiles with dynamic sizes from the
first call and traces with PyTorch's size-oblivious reasoning for backed sizes
(``torch.fx.experimental._config.backed_size_oblivious``), which decides such checks for the
general case, a decision that stays correct at 1. One graph then serves every batch and input
size, down to a 1x1 stage-4 map (tests/test_deployment.py).

Focal-fast (:class:`~mmfocal.models.backbones.FocalFastTransformer`) compiles with no graph break,
but once per input size: its nearest-token key sets come from ``torch.topk`` over the map's
distances, computed on the CPU per map size outside the graph (``int()`` of the size), so each
size is its own graph.
"""
import contextlib
from typing import Iterator, Optional

import torch
import torch.nn as nn

from ..errors import BadArgumentError


@contextlib.contextmanager
def size_oblivious_shapes() -> Iterator[None]:
    """While tracing: backed sizes get size-oblivious reasoning (no 0/1 specialisation).

    A private, experimental switch of PyTorch (``torch.fx.experimental._config``); it is read when
    Dynamo traces, so it must be on during the calls that compile, not when torch.compile is called.
    """
    problem = size_oblivious_problem()
    if problem is not None:
        raise BadArgumentError(problem)
    from torch.fx.experimental import _config
    with _config.patch(backed_size_oblivious=True):
        yield


def size_oblivious_problem() -> Optional[str]:
    """Why this torch cannot trace with size-oblivious shapes, in one line, or None where it can."""
    try:
        from torch.fx.experimental import _config
    except ImportError:  # torch 2.1 has no such module
        _config = None
    if hasattr(_config, 'backed_size_oblivious'):
        return None
    return (f'torch {torch.__version__} has no backed_size_oblivious switch (torch >= 2.8 has): '
            'use torch.compile(model, fullgraph=True), which recompiles for batch 1 and small maps')


class CompiledForAnySize(nn.Module):
    """``torch.compile(module, **options)`` called under :func:`size_oblivious_shapes`.

    ``compiled`` is the compiled module; ``module`` the original, whose parameters it shares.

    Args:
        module (nn.Module): The module to compile.
        **options: torch.compile's options. Defaults to ``fullgraph=True`` (a graph break is an
            error) and ``dynamic=True`` (sizes are symbolic from the first call).

    Raises:
        BadArgumentError: This torch has no size-oblivious tracing (torch < 2.8).
    """

    def __init__(self, module: nn.Module, **options):
        super().__init__()
        problem = size_oblivious_problem()
        if problem is not None:  # said now, not at the first call
            raise BadArgumentError(problem)
        options = dict(dict(fullgraph=True, dynamic=True), **options)
        self.compiled = torch.compile(module, **options)

    @property
    def module(self) -> nn.Module:
        """The original module."""
        return self.compiled._orig_mod

    def forward(self, *args, **kwargs):
        """The compiled module's forward, with sizes treated as symbolic.

        Args:
            *args: The module's positional arguments.
            **kwargs: The module's keyword arguments.

        Returns:
            object: What the module returns.
        """
        with size_oblivious_shapes():
            return self.compiled(*args, **kwargs)


def compile_for_any_size(module: nn.Module, **options) -> CompiledForAnySize:
    """A module compiled once for every batch and input size (train and eval mode: one graph each).

    Args:
        module (nn.Module): A Focal backbone, or a model around one.
        **options: torch.compile's options (``backend``, ``mode``, ...).

    Returns:
        CompiledForAnySize: The compiled module; call it as ``module``.

    Raises:
        BadArgumentError: This torch has no size-oblivious tracing (torch < 2.8).

    Examples:
        >>> from mmfocal.deployment.compile import compile_for_any_size
        >>> compiled = compile_for_any_size(backbone.eval())  # doctest: +SKIP
        >>> outs = compiled(torch.randn(1, 3, 480, 640))  # doctest: +SKIP
    """
    return CompiledForAnySize(module, **options)
