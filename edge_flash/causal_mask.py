"""A causal mask computed from positions, in place of litert-torch's mask cache.

litert-torch's decoders keep ``mask_cache``, a constant [1, 1, S, S] float32
tensor (-inf above the diagonal, 0 elsewhere), and read its rows with
``mask_cache.index_select(2, input_pos)``. Exported, that constant is stored in
the .tflite file: S * S * 4 bytes, 268 MB at S = 8192 (measured: the 2-layer
TinyLlama-shaped model's file grows from 428.7 MB at S = 4096 to 630.7 MB at
8192 with the same graph), and a chunked prefill over all S positions pages
all of it in. ``use_computed_causal_mask(model)`` replaces the cache by
``CausalMaskRows``, which computes exactly those rows from ``input_pos``: one
comparison of an S-long column index against the T positions, so the file
holds S int32 column indices instead of S * S floats.

The rows are the cache's, value for value (-inf where column > position, +0.0
elsewhere); ``parity/test_causal_mask.py`` checks that, and that a model gives
the same logits bit for bit either way. Only the causal cache is replaced: a
sliding-window cache (Gemma 2) stays a constant.
"""

from __future__ import annotations

import torch
from torch import nn


class CausalMaskRows(nn.Module):
    """Stands for a causal mask cache of ``size`` x ``size`` without holding it.

    ``index_select(2, input_pos)`` returns what the cache's would: (1, 1, T, size),
    row t being -inf at columns > input_pos[t] and 0 elsewhere, in ``dtype``.
    """

    def __init__(self, size: int, dtype: torch.dtype = torch.float32):
        super().__init__()
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"size ({size!r}) must be an int >= 1")
        self.size = size
        self.dtype = dtype

    @property
    def shape(self) -> torch.Size:
        """The shape of the cache it stands for, (1, 1, size, size)."""
        return torch.Size((1, 1, self.size, self.size))

    def index_select(self, dim: int, index: torch.Tensor) -> torch.Tensor:
        """Rows ``index`` of the causal mask: (1, 1, T, size). Only ``dim`` 2 (rows) exists."""
        if dim != 2:
            raise ValueError(f"CausalMaskRows selects rows (dim 2), not dim {dim}")
        columns = torch.arange(self.size, dtype=index.dtype, device=index.device)
        hidden = columns.unsqueeze(0) > index.unsqueeze(1)  # (T, size): after the position
        zeros = torch.zeros((), dtype=self.dtype, device=index.device)
        rows = torch.where(hidden, torch.full((), float("-inf"), dtype=self.dtype), zeros)
        return rows.unsqueeze(0).unsqueeze(0)

    def extra_repr(self) -> str:
        return f"size={self.size}, dtype={self.dtype}"


def use_computed_causal_mask(model: nn.Module) -> nn.Module:
    """Replaces ``model.mask_cache`` by ``CausalMaskRows`` of its size; returns ``model``.

    Raises:
      ValueError: the model has no causal mask cache (built with mask_cache_size=0)
        or its cache is not litert-torch's causal one.
    """
    cache = getattr(model, "mask_cache", None)
    if isinstance(cache, CausalMaskRows):
        return model
    if not isinstance(cache, torch.Tensor) or cache.dim() != 4 or cache.shape[:2] != (1, 1):
        raise ValueError(
            f"{type(model).__name__} has no causal mask cache to replace (mask_cache is"
            f" {type(cache).__name__}); build it with mask_cache_size=kv_cache_max_len"
        )
    size = cache.shape[-1]
    rows = CausalMaskRows(size, cache.dtype)
    expected = rows.index_select(2, torch.arange(size))
    if not torch.equal(cache, expected):
        raise ValueError(
            f"{type(model).__name__}.mask_cache is not a causal mask (-inf above the"
            " diagonal, 0 elsewhere); it cannot be computed from positions"
        )
    model.mask_cache = rows
    return model
