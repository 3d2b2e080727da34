"""What a batch being decoded holds on the device: each row's tokens, its KV cache, its end.

Every tensor is allocated once for a batch-size bucket and then only written in place, so a decode
step that reads and writes them can be captured in a CUDA graph and replayed.

Layout of a causal row in the cache: its prompt, left-padded to its prefill group's width, from
column 0; generated tokens follow. ``start[b]`` is the row's first real column, ``column[b]`` the
number of columns it has written (its history, pads included, as Transformers keeps ``input_ids``);
position ids count from ``start`` as Transformers' do from the attention mask. Rows keep their own
columns, so a finished row can be refilled with a new prompt while the others go on.
"""

from __future__ import annotations

import inspect

import torch


def base_model(model: torch.nn.Module) -> torch.nn.Module:
    """The Transformers model under a PEFT wrapper (the model itself when there is none)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def cache_keyword(model: torch.nn.Module) -> str:
    """The forward's cache argument: ``cache`` from Transformers 5.2x, ``past_key_values`` before
    (5.17, the device machine's, knows only that name)."""
    target = base_model(model)
    return "cache" if "cache" in inspect.signature(target.forward).parameters else "past_key_values"


def device_tensor(values: list, device: torch.device, dtype: torch.dtype = torch.long) -> torch.Tensor:
    """``values`` on ``device`` without waiting for its queued work: a plain host-to-device copy
    synchronizes the stream (PyTorch waits for it to end), so each one a server made while admitting
    newcomers waited for the decode steps in flight and then for each kernel launched before it."""
    return torch.tensor(values, dtype=dtype).to(device, non_blocking=True)


class RowCache:
    """Keys and values of every layer, (rows, kv heads, capacity, head dim), given to the model's
    forward as its cache (the ``update`` a Transformers attention layer calls).

    A prefill writes the columns ``0..width`` of the rows in ``prefill_rows`` and attends only to
    itself; a decode step (one token a row) writes column ``column[b] - 1`` of every row and
    attends to the whole capacity, under the caller's mask, or to its first ``visible`` columns
    when that is set (eager steps: the columns some row has written). An eager step may run only
    the rows ``decode_rows`` (a server's slots still writing; None: every row).
    """

    visible: int | None = None
    decode_rows: torch.Tensor | None = None

    def __init__(self, rows: int, capacity: int, column: torch.Tensor):
        self.rows, self.capacity, self.column = rows, capacity, column
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.prefill_rows: torch.Tensor | None = None
        self._all = torch.arange(rows, device=column.device)

    def _allocate(self, keys: torch.Tensor, values: torch.Tensor, layer: int) -> None:
        if layer == len(self.keys):  # first use: allocate this layer once
            shape = (self.rows, keys.shape[1], self.capacity, keys.shape[3])
            self.keys.append(keys.new_zeros(shape))
            self.values.append(values.new_zeros(shape[:3] + (values.shape[3],)))

    def write(self, rows: torch.Tensor, keys: list[torch.Tensor], values: list[torch.Tensor]) -> None:
        """A prefill's keys and values of every layer, (len(rows), kv heads, width, head dim), into
        the columns ``0..width`` of ``rows`` (a captured prefill's, copied in after its replay)."""
        if self.keys and len(keys) != len(self.keys):
            raise ValueError(f"a prefill of {len(keys)} layers into a cache of {len(self.keys)}")
        for layer, (layer_keys, layer_values) in enumerate(zip(keys, values, strict=True)):
            self._allocate(layer_keys, layer_values, layer)
            width = layer_keys.shape[2]
            self.keys[layer][rows, :, :width] = layer_keys
            self.values[layer][rows, :, :width] = layer_values

    def update(self, keys: torch.Tensor, values: torch.Tensor, layer: int, *args, **kwargs):
        self._allocate(keys, values, layer)
        if self.prefill_rows is not None:
            width = keys.shape[2]
            self.keys[layer][self.prefill_rows, :, :width] = keys
            self.values[layer][self.prefill_rows, :, :width] = values
            return keys, values
        rows = self.decode_rows
        if rows is not None:
            where = self.column[rows] - 1
            self.keys[layer][rows, :, where] = keys[:, :, 0]
            self.values[layer][rows, :, where] = values[:, :, 0]
            return self.keys[layer][rows, :, :self.visible], self.values[layer][rows, :, :self.visible]
        where = self.column - 1
        self.keys[layer][self._all, :, where] = keys[:, :, 0]
        self.values[layer][self._all, :, where] = values[:, :, 0]
        if self.visible is not None:
            return self.keys[layer][:, :, :self.visible], self.values[layer][:, :, :self.visible]
        return self.keys[layer], self.values[layer]


class RowState:
    """Each row's history (for the n-gram ban), its generated tokens, counts and end.

    Args:
        rows: the batch size (slots).
        width: history columns (the longest prompt width plus the token limit plus one).
        max_new_tokens: the token limit of a row.
        stops: token ids that end a row (end of turn, EOS).
        pad_id: what a finished row emits, as Transformers does.
        device: the model's device.
    """

    def __init__(self, rows: int, width: int, max_new_tokens: int, stops: list[int], pad_id: int,
                 device: torch.device):
        self.max_new_tokens, self.pad_id = max_new_tokens, pad_id
        long = {"dtype": torch.long, "device": device}
        self.history = torch.full((rows, width + 1), pad_id, **long)
        self.generated = torch.full((rows, max_new_tokens + 1), pad_id, **long)
        self.count = torch.zeros(rows, **long)
        self.column = torch.zeros(rows, **long)
        self.start = torch.zeros(rows, **long)
        self.last = torch.full((rows,), pad_id, **long)
        self.finished = torch.ones(rows, dtype=torch.bool, device=device)
        self.limit = torch.full((rows,), max_new_tokens, **long)  # a row's own token limit
        self.stops = torch.tensor(stops, **long)

    def begin(self, rows: torch.Tensor, prompts: torch.Tensor, starts: torch.Tensor,
              limits: torch.Tensor | None = None) -> None:
        """Rows ``rows`` take new prompts: ``prompts`` (n, width) left-padded, ``starts`` their first
        real column, ``limits`` their token limits (default: ``max_new_tokens``)."""
        width = prompts.shape[1]
        self.limit[rows] = self.max_new_tokens if limits is None else limits
        self.history[rows, :width] = prompts
        self.column[rows] = width
        self.start[rows] = starts
        self.count[rows] = 0
        self.finished[rows] = False

    def commit(self, tokens: torch.Tensor, rows: torch.Tensor | None = None) -> None:
        """Append the chosen ``tokens`` to ``rows`` (all when None), in place: a finished row emits
        padding and keeps its columns; a row ends at a stop token or at its token limit."""
        if rows is None:
            self._commit_all(tokens)
            return
        live = ~self.finished[rows]
        tokens = torch.where(live, tokens, self.pad_id)
        self.history[rows, self.column[rows]] = tokens
        self.generated[rows, self.count[rows]] = tokens
        self.count[rows] += live
        self.column[rows] += live
        self.finished[rows] |= live & (self._is_stop(tokens) | (self.count[rows] >= self.limit[rows]))
        self.last[rows] = tokens

    def _commit_all(self, tokens: torch.Tensor) -> None:
        live = ~self.finished
        tokens = torch.where(live, tokens, self.pad_id)
        self.history.scatter_(1, self.column[:, None], tokens[:, None])
        self.generated.scatter_(1, self.count[:, None], tokens[:, None])
        self.count.add_(live)
        self.column.add_(live)
        self.finished.logical_or_(live & (self._is_stop(tokens) | (self.count >= self.limit)))
        self.last.copy_(tokens)

    def _is_stop(self, tokens: torch.Tensor) -> torch.Tensor:
        return (tokens[:, None] == self.stops[None, :]).any(dim=-1)

    def result(self, row: int) -> tuple[list[int], bool]:
        """(the row's generated ids, a stop token last included; whether it ended at a stop token)."""
        ids = self.generated[row, :int(self.count[row])].tolist()
        return ids, bool(ids) and ids[-1] in self.stops.tolist()


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """0 where ``allowed``, the dtype's lowest value elsewhere (a fully masked row stays finite)."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed,
                                                                                        torch.finfo(dtype).min)
