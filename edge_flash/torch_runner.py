"""Running a litert-torch decoder model in PyTorch with an external KV cache.

``TorchRunner`` has the interface of ``edge_flash.runtime.LiteRTRunner``
(``prefill``, ``decode``, ``generate``, ``kv_cache``, ``reset``) so the same
comparison code drives both. It runs the model as built (fp32); the harness's
float64 oracle is ``parity.fp64_model``.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np
import torch


class TorchRunner:
    """Prefill / decode / greedy generation of a litert-torch ``DecoderOnlyModel``.

    Args:
      model: e.g. from ``edge_flash.build_model``; not modified.
      kv_cache_max_len: KV cache slots; at most the model's ``max_seq_len``.

    Raises:
      ValueError: bad ``kv_cache_max_len``.
    """

    def __init__(self, model: torch.nn.Module, kv_cache_max_len: int):
        from litert_torch.generative.layers import attention_utils

        max_len = model.config.max_seq_len
        if isinstance(kv_cache_max_len, bool) or not isinstance(kv_cache_max_len, int):
            raise ValueError(f"kv_cache_max_len ({kv_cache_max_len!r}) must be an int")
        if not 1 <= kv_cache_max_len <= max_len:
            raise ValueError(f"kv_cache_max_len ({kv_cache_max_len}) must be in [1, {max_len}]")
        self.model = model
        self.dtype = next(model.parameters()).dtype
        self.kv_cache_max_len = kv_cache_max_len
        # The model's own mask cache may be absent; build one here.
        self._mask = attention_utils.build_causal_mask_cache(kv_cache_max_len).to(self.dtype)
        self.vocab_size = model.config.vocab_size
        self.reset()

    def reset(self) -> None:
        """Empties the KV cache; the next prefill starts at position 0."""
        from litert_torch.generative.layers import kv_cache as kv_utils

        self._kv = kv_utils.KVCache.from_model_config(
            self.kv_cache_max_len, self.model.config, dtype=self.dtype
        )
        self.position = 0

    def kv_cache(self) -> List[Tuple[np.ndarray, np.ndarray]]:
        """Copies of the cache per layer: (k, v), each (1, kv_cache_max_len, G, H)."""
        return [(e.k_cache.numpy().copy(), e.v_cache.numpy().copy()) for e in self._kv.caches]

    def prefill(self, tokens: Sequence[int]) -> np.ndarray:
        """Runs the prompt from the current position; returns logits (T, vocab)."""
        return self._run(_as_tokens(tokens, self.vocab_size))

    def decode(self, token: int) -> np.ndarray:
        """Runs one token at the current position; returns its logits (vocab,)."""
        return self._run(_as_tokens([token], self.vocab_size))[0]

    def generate(
        self, prompt: Sequence[int], max_new_tokens: int, stop_token_ids: Sequence[int] = ()
    ) -> List[int]:
        """Greedy continuation of ``prompt`` from an empty cache: the new token ids."""
        self.reset()
        last = self.prefill(prompt)[-1]
        generated = []
        for step in range(max_new_tokens):
            token = int(np.argmax(last))
            generated.append(token)
            if token in stop_token_ids or step == max_new_tokens - 1:
                break
            last = self.decode(token)
        return generated

    def _run(self, tokens: torch.Tensor) -> np.ndarray:
        seq_len = tokens.shape[1]
        if self.position + seq_len > self.kv_cache_max_len:
            raise ValueError(
                f"{seq_len} tokens at position {self.position} need"
                f" {self.position + seq_len} KV slots; kv_cache_max_len is {self.kv_cache_max_len}"
            )
        input_pos = torch.arange(self.position, self.position + seq_len, dtype=torch.int)
        mask = self._mask.index_select(2, input_pos)  # (1, 1, T, kv_cache_max_len)
        with torch.no_grad():
            out = self.model(tokens, input_pos, self._kv, mask=mask)
        self._kv = out["kv_cache"]
        self.position += seq_len
        return out["logits"][0].numpy().copy()  # (T, vocab)


def _as_tokens(tokens: Sequence[int], vocab_size: int) -> torch.Tensor:
    values = np.asarray(tokens).reshape(-1)
    if values.size == 0 or not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"tokens ({values.dtype}, {values.size} ids) must be integer token ids")
    if values.min() < 0 or values.max() >= vocab_size:
        raise ValueError(f"tokens hold ids outside the vocab [0, {vocab_size})")
    return torch.from_numpy(values.astype(np.int64)).reshape(1, -1).to(torch.int)  # (1, T)
