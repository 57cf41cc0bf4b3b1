"""Sliding-window masks as litert-torch's Gemma decoders hand them to the attention function.

Gemma 2 and Gemma 3 alternate global layers with local (sliding-window)
layers: query position p sees the keys at cache positions ``p - window < key
<= p``. The two decoders build that mask with different code, and both are
called here, unchanged, so the property suite draws exactly the masks they
pass the kernel, for a prefill or decode step at ``input_pos = offset ..
offset + T - 1`` over a KV cache of S slots:

- Gemma 2 (``examples/gemma/gemma2.py``, ``Gemma2.get_attention_mask``): rows
  ``input_pos`` of ``attention_utils.build_sliding_window_mask_cache(S,
  window)``.
- Gemma 3 (``examples/gemma3/decoder.py``): rows ``input_pos`` of the causal
  mask cache, cut to S columns, combined by ``torch.min`` with
  ``Decoder.create_sliding_mask``
  (``Decoder.get_local_global_attention_mask``). Masked keys below the window
  carry ``config.causal_mask_value``; keys above the diagonal keep the causal
  cache's -inf.

``window_kinds`` names which of the situations the suite must cover a case is
in (the cache in front of the query block, the window wrapping inside it, a
decode step past the window); ``window_sizes`` draws windows that reach them.

Pure numerics: no I/O.
"""

from __future__ import annotations

import types

import torch
from hypothesis import strategies as st
from litert_torch.generative.examples.gemma3 import decoder as gemma3_decoder
from litert_torch.generative.layers import attention_utils
from litert_torch.generative.layers import model_config as cfg

# Mask kinds built here (strategies.MASK_KINDS), by the decoder whose code builds them.
WINDOW_MASKS = ("gemma2-window", "gemma3-window")
# Sliding windows of litert-torch 0.10's configs: the fake Gemma 2 / Gemma 3
# configs (64), Gemma 3 1B and 270M (512), Gemma 2 2B (4096, longer than any
# drawn cache: the window covers everything and the mask is causal).
DECODER_WINDOWS = (64, 512, 4096)
# The situations each of which the suite must draw (see window_kinds).
WINDOW_KINDS = ("cache-in-front", "wraps-in-block", "decode-past-window")


class _Gemma3Masks:
    """litert-torch's Gemma 3 ``Decoder`` mask methods, on the one config field they read.

    A ``Decoder`` asserts ``mask_cache_size <= config.max_seq_len`` and builds
    embeddings and blocks; its two mask methods read only
    ``self.config.causal_mask_value`` (and each other), so they are bound here
    to a stand-in holding that value: litert-torch's own functions, unchanged,
    for any S. property_tests/test_window_masks.py checks the result equals a
    fake Gemma 3 decoder's mask.
    """

    create_sliding_mask = gemma3_decoder.Decoder.create_sliding_mask
    get_local_global_attention_mask = gemma3_decoder.Decoder.get_local_global_attention_mask

    def __init__(self, causal_mask_value: float):
        self.config = types.SimpleNamespace(causal_mask_value=causal_mask_value)


def decoder_window_mask(
    family: str, seq_q: int, seq_kv: int, offset: int, window: int, fill: float
) -> torch.Tensor:
    """The sliding-window mask a Gemma decoder gives its local layers: [1, 1, T, S] float32.

    Args:
      family: "gemma2-window" or "gemma3-window" (WINDOW_MASKS).
      seq_q, seq_kv, offset: T query rows at cache positions offset .. offset + T - 1
        of a cache of S slots (the mask cache has S rows and columns, as the
        decoders build it for a KV cache of S).
      window: the sliding window, >= 1.
      fill: the masked value. The decoders use -inf; a finite one goes through
        Gemma 2's ``mask_value`` argument or Gemma 3's ``causal_mask_value``.

    Raises:
      ValueError: an unknown family, a window < 1, or positions past the cache.
    """
    if family not in WINDOW_MASKS:
        raise ValueError(f"family ({family!r}) must be one of {WINDOW_MASKS}")
    if window < 1:
        raise ValueError(f"window ({window}) must be >= 1")
    if offset < 0 or offset + seq_q > seq_kv:
        raise ValueError(
            f"query positions offset .. offset + seq_q - 1 ({offset} .. {offset + seq_q - 1})"
            f" must lie in the cache of seq_kv ({seq_kv}) slots"
        )
    input_pos = torch.arange(offset, offset + seq_q, dtype=torch.int32)  # as the converter's
    if family == "gemma2-window":
        cache = attention_utils.build_sliding_window_mask_cache(
            size=seq_kv, window_size=window, mask_value=fill
        )  # (1, 1, S, S)
        return cache.index_select(2, input_pos)  # (1, 1, T, S)
    causal = attention_utils.build_causal_mask_cache(seq_kv)  # (1, 1, S, S), -inf
    causal = causal.index_select(2, input_pos)[:, :, :, :seq_kv]  # (1, 1, T, S)
    return _Gemma3Masks(fill).get_local_global_attention_mask(
        causal, cfg.AttentionType.LOCAL_SLIDING, input_pos, window
    )  # (1, 1, T, S)


def window_kinds(seq_q: int, offset: int, window: int) -> set:
    """Which of WINDOW_KINDS a sliding-window case is in (none, one or several).

    - "cache-in-front": the query block starts past cache slot 0 and the window
      of its first row begins inside the cache in front of it
      (1 < window <= offset): some cached keys are seen, the earliest are not.
    - "wraps-in-block": a prefill (T > 1) with window < T: later rows lose the
      first keys of their own block.
    - "decode-past-window": one row (T = 1) at a position the window does not
      reach back from to slot 0 (window <= offset).
    """
    kinds = set()
    if offset > 0 and 1 < window <= offset:
        kinds.add("cache-in-front")
    if seq_q > 1 and window < seq_q:
        kinds.add("wraps-in-block")
    if seq_q == 1 and window <= offset:
        kinds.add("decode-past-window")
    return kinds


def window_sizes(seq_q: int, offset: int, seq_kv: int) -> st.SearchStrategy:
    """Windows for a case of T rows at ``offset`` in S slots, reaching every one of WINDOW_KINDS.

    Anywhere in 1 .. S + 1 first (hypothesis shrinks toward it); then windows
    shorter than the block (wraps-in-block), windows ending inside the cache in
    front (cache-in-front, and decode-past-window for T = 1), and the
    decoders' own sizes.
    """
    choices = [st.integers(1, seq_kv + 1)]
    if seq_q > 1:
        choices.append(st.integers(1, seq_q - 1))
    if offset > 1:
        choices.append(st.integers(2, offset))
    choices.append(st.sampled_from(DECODER_WINDOWS))
    return st.one_of(choices)
