"""Chunks of windows for the fused kernels: their size, their windows and their position biases.

On the CPU the kernels work in chunks of windows, each operator streaming through a chunk's
temporaries (gathered keys and values, biases, probabilities, score gradients) before the next
reads them; a chunk holds about the L2 caches of the threads that share the work
(:func:`default_chunk_bytes`; the sweep behind the bounds: docs/speed.md). Other devices want large
batched kernels: one chunk. A chunk's windows are a slice, or for Focal-fast's window order a
tensor of window numbers (:class:`BiasColumns`); :func:`take` and :func:`put` read and write their
rows, :func:`chunk_bias` and :func:`add_bias_grad` their position bias and its gradient.
"""
import functools
import os
from typing import List, NamedTuple, Optional, Tuple, Union

import torch

from .attention_switch import attention_settings, uses_cpu_kernels

FALLBACK_L2_BYTES = 2**20  # where the machine does not tell its L2 size
# Below about 1 MiB a thread the operator calls of each chunk show; above 16 MiB the temporaries.
MIN_CHUNK_BYTES_PER_THREAD = 2**20
MAX_CHUNK_BYTES = 16 * 2**20


@functools.lru_cache(maxsize=None)
def l2_cache_bytes() -> int:
    """The L2 cache of one core, in bytes: Linux's sysfs for CPU 0, else :data:`FALLBACK_L2_BYTES`."""
    root = '/sys/devices/system/cpu/cpu0/cache'
    try:
        for entry in sorted(os.listdir(root)):
            path = os.path.join(root, entry)
            with open(os.path.join(path, 'level')) as f:
                level = f.read().strip()
            with open(os.path.join(path, 'type')) as f:
                kind = f.read().strip()
            if level == '2' and kind in ('Unified', 'Data'):
                with open(os.path.join(path, 'size')) as f:
                    return parse_cache_size(f.read())
    except (OSError, ValueError):
        pass
    return FALLBACK_L2_BYTES


def parse_cache_size(text: str) -> int:
    """A cache size as sysfs writes it: '2048K', '1M', or bytes.

    Args:
        text (str): The size, maybe with a unit and a newline.

    Returns:
        int: The size in bytes.
    """
    text = text.strip().upper()
    units = {'K': 2**10, 'M': 2**20, 'G': 2**30}
    if text and text[-1] in units:
        return int(text[:-1]) * units[text[-1]]
    return int(text)


def default_chunk_bytes() -> int:
    """The CPU kernels' chunk size unless :func:`~.attention_switch.attention_path` sets one.

    The L2 cache of one core (at least :data:`MIN_CHUNK_BYTES_PER_THREAD`) times the threads
    PyTorch uses, at most :data:`MAX_CHUNK_BYTES`; read at each call, so that
    ``torch.set_num_threads`` counts.

    Returns:
        int: Bytes of temporaries a chunk.
    """
    per_thread = max(l2_cache_bytes(), MIN_CHUNK_BYTES_PER_THREAD)
    return min(per_thread * torch.get_num_threads(), MAX_CHUNK_BYTES)


def chunk_bytes() -> int:
    """The chunk size in force: :func:`~.attention_switch.attention_path`'s, else the default."""
    return attention_settings().chunk_bytes or default_chunk_bytes()


class BiasColumns(NamedTuple):
    """Per-window position biases as columns of one table (Focal-fast).

    With it, the kernels take ``bias`` as a table (heads, w*w, U) and key j of window n uses
    column ``columns[n, j]``. A chunk inside a group takes one (heads, w*w, keys) bias broadcast
    over its windows, and its bias gradient is the sum over its windows, added to the table once.

    Attributes:
        columns (torch.Tensor): (nW, keys) long.
        order (torch.Tensor, optional): (nW,) window numbers in the order the CPU kernels take
            them: first each group of windows with identical rows of ``columns``, then the rest.
        shared_groups (tuple[tuple[int, int], ...]): Those groups, as (start, stop) ranges of
            positions in ``order``.
    """
    columns: torch.Tensor
    order: Optional[torch.Tensor] = None
    shared_groups: Tuple[Tuple[int, int], ...] = ()


def as_bias_columns(bias_columns) -> Optional[BiasColumns]:
    """Bias columns as a :class:`BiasColumns`.

    Args:
        bias_columns (BiasColumns | torch.Tensor | None): A :class:`BiasColumns`, or a plain
            (nW, keys) tensor of columns (no groups), or None.

    Returns:
        BiasColumns | None: ``bias_columns`` as one; None for None.
    """
    if bias_columns is None or isinstance(bias_columns, BiasColumns):
        return bias_columns
    return BiasColumns(bias_columns)


class WindowChunk(NamedTuple):
    """Windows the kernels process at once.

    Attributes:
        windows (slice | torch.Tensor): A slice of the windows in row-major order, or a (n,)
            tensor of window numbers.
        shared (bool): Whether they all have the same bias columns. Defaults to False.
    """
    windows: Union[slice, torch.Tensor]
    shared: bool = False

    @property
    def size(self) -> int:
        """The number of windows in the chunk."""
        w = self.windows
        return w.stop - w.start if isinstance(w, slice) else len(w)

    @property
    def first(self) -> int:
        """The first window's number."""
        return self.windows.start if isinstance(self.windows, slice) else int(self.windows[0])


def off_map_flags(off_map: torch.Tensor, on_cpu: bool, known: Optional[list] = None) -> Optional[list]:
    """For each window, whether any of its keys has a nonzero off-map logit.

    A Python list, so that the chunks ask without a tensor operation each. None off the CPU
    kernels, which always add the off-map logits (and would wait for the device here).

    Args:
        off_map (torch.Tensor): (nW, keys) logits.
        on_cpu (bool): Whether the CPU kernels run.
        known (list, optional): The flags where already found. Defaults to None.

    Returns:
        list[bool] | None: The flags.
    """
    if not on_cpu:
        return None
    return known if known is not None else off_map.any(1).tolist()


def has_off_map_keys(chunk: WindowChunk, windows_off_map: list) -> bool:
    """Whether a window of ``chunk`` has keys with an off-map logit.

    The CPU kernel then needs the per-window mask; elsewhere the shared bias broadcasts.

    Args:
        chunk (WindowChunk): The windows.
        windows_off_map (list[bool]): For each window, whether it has such keys
            (:func:`off_map_flags`).

    Returns:
        bool: Whether any window of the chunk has.
    """
    windows = chunk.windows
    if isinstance(windows, slice):
        return any(windows_off_map[windows])
    return any(windows_off_map[i] for i in windows.tolist())


def window_chunks(num_windows: int, bytes_per_window: int, device: torch.device) -> List[slice]:
    """The windows in row-major chunks of at most :func:`chunk_bytes` (one chunk off the CPU kernels).

    Args:
        num_windows (int): Windows of an image.
        bytes_per_window (int): Bytes of temporaries a window.
        device (torch.device): The inputs' device.

    Returns:
        list[slice]: The chunks.
    """
    if not uses_cpu_kernels(device):
        return [slice(0, num_windows)]
    step = max(1, chunk_bytes() // bytes_per_window)
    return [slice(start, min(start + step, num_windows)) for start in range(0, num_windows, step)]


def bias_chunks(num_windows: int, bytes_per_window: int, device: torch.device,
                bias_columns: Optional[BiasColumns]) -> List[WindowChunk]:
    """The kernels' chunks: :func:`window_chunks`, or with a window order (CPU only) chunks of at
    most as many windows along the order, none straddling a group's edge.

    Args:
        num_windows (int): Windows of an image.
        bytes_per_window (int): Bytes of temporaries a window.
        device (torch.device): The inputs' device.
        bias_columns (BiasColumns, optional): The window order and its groups.

    Returns:
        list[WindowChunk]: The chunks.
    """
    if bias_columns is None or bias_columns.order is None or not uses_cpu_kernels(device):
        return [WindowChunk(chunk) for chunk in window_chunks(num_windows, bytes_per_window, device)]
    order, groups = bias_columns.order, bias_columns.shared_groups
    step = max(1, chunk_bytes() // bytes_per_window)
    edges = sorted({0, num_windows, *(edge for group in groups for edge in group)})
    return [WindowChunk(order[start:min(start + step, stop)], (begin, stop) in groups)
            for begin, stop in zip(edges, edges[1:]) for start in range(begin, stop, step)]


def take(t: torch.Tensor, windows, dim: int = 0, offset: int = 0) -> torch.Tensor:
    """Some windows' rows of a tensor: a view for a slice, a gather for a tensor of windows.

    Args:
        t (torch.Tensor): The tensor.
        windows (slice | torch.Tensor): The windows, a slice or a (n, ) tensor of numbers.
        dim (int): The dimension of the windows in ``t``. Defaults to 0.
        offset (int): Added to the window numbers (the first window of an image in a batch).
            Defaults to 0.

    Returns:
        torch.Tensor: ``t`` with only those rows along ``dim``.
    """
    if isinstance(windows, slice):
        return t.narrow(dim, offset + windows.start, windows.stop - windows.start)
    return t.index_select(dim, windows + offset if offset else windows)


def put(t: torch.Tensor, windows, value: torch.Tensor, dim: int = 0, offset: int = 0):
    """Write ``value`` into some windows' rows of a tensor, in place.

    Args:
        t (torch.Tensor): The tensor written.
        windows (slice | torch.Tensor): The windows, a slice or a (n, ) tensor of numbers.
        value (torch.Tensor): The rows, ``t``'s shape with n rows along ``dim``.
        dim (int): The dimension of the windows in ``t``. Defaults to 0.
        offset (int): Added to the window numbers. Defaults to 0.
    """
    if isinstance(windows, slice):
        t.narrow(dim, offset + windows.start, windows.stop - windows.start).copy_(value)
    else:
        t.index_copy_(dim, windows + offset if offset else windows, value.to(t.dtype))


def chunk_bias(bias: torch.Tensor, bias_columns, chunk) -> torch.Tensor:
    """The position bias of the windows of ``chunk``, a view or a gather.

    From a table, a shared chunk gets one bias for all its windows; otherwise one gather along
    the table's last dimension, which leaves the keys contiguous as the CPU flash kernel wants
    its mask (a mask with strided keys costs it a copy).

    Args:
        bias (torch.Tensor): One of: (heads, w*w, keys), shared by every window; (nW, heads, w*w,
            keys), one per window; or with ``bias_columns``, a table (heads, w*w, U).
        bias_columns (BiasColumns | torch.Tensor | None): The table's column of each key of each
            window ((nW, keys)).
        chunk (WindowChunk | slice): The windows.

    Returns:
        torch.Tensor: (heads, 1 or windows, w*w, keys).
    """
    if not isinstance(chunk, WindowChunk):
        chunk = WindowChunk(chunk)
    if bias_columns is not None:
        columns = as_bias_columns(bias_columns).columns
        heads, area, num_columns = bias.shape
        chunk_columns = columns[chunk.first:chunk.first + 1] if chunk.shared else take(columns, chunk.windows)
        # Along the last dimension of a 2-d view: index_select of a 3-d tensor along its last
        # dimension takes several times longer.
        gathered = bias.reshape(heads * area, num_columns).index_select(1, chunk_columns.reshape(-1))
        return gathered.view(heads, area, *chunk_columns.shape).transpose(1, 2)
    if bias.dim() == 4:
        return take(bias, chunk.windows).transpose(0, 1)
    return bias.unsqueeze(1)


def add_bias_grad(grad_bias: torch.Tensor, grad_scores: torch.Tensor, bias_columns, chunk):
    """Accumulate the score gradients of ``chunk`` into the bias gradient.

    Args:
        grad_bias (torch.Tensor): Shaped as the bias (see :func:`chunk_bias`).
        grad_scores (torch.Tensor): (heads, windows, w*w, keys).
        bias_columns (BiasColumns | torch.Tensor | None): As :func:`chunk_bias` takes them.
        chunk (WindowChunk | slice): The windows.
    """
    if not isinstance(chunk, WindowChunk):
        chunk = WindowChunk(chunk)
    if bias_columns is not None:
        columns = as_bias_columns(bias_columns).columns
        heads, windows, area, keys = grad_scores.shape
        if chunk.shared:  # one bias for every window of the chunk: sum first, then add to the table once
            summed = grad_scores.sum(1).view(heads * area, keys)
            grad_bias.view(heads * area, -1).index_add_(1, columns[chunk.first], summed)
            return
        grad_bias.view(heads * area, -1).index_add_(1, take(columns, chunk.windows).reshape(-1),
                                                    grad_scores.transpose(1, 2).reshape(heads * area, windows * keys))
    elif grad_bias.dim() == 4:
        if isinstance(chunk.windows, slice):
            grad_bias[chunk.windows] += grad_scores.transpose(0, 1)
        else:
            grad_bias.index_add_(0, chunk.windows, grad_scores.transpose(0, 1))
    else:
        grad_bias += grad_scores.sum(1)
