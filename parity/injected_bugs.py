"""Deliberate bugs for testing the harness itself: the chain must catch and locate each.

Model-level bugs go into one transformer block of one model instance through a
forward pre-hook that rewrites the block's inputs (the block is called as
``block(x, rope, mask, input_pos, kv_entry, lora)``); other blocks, other
instances and litert-torch are untouched, so the diagnosis must name that block:

- ``kv_write_shift``: the block writes its k, v one slot late (``input_pos + 1``);
  rope and mask are right, so attention reads an empty slot 0 and misses the newest row.
- ``decode_rope_shift``: decode steps (one token) rotate q and k for position + 1.
  (Shifting every call instead changes no logit, since q.k depends on position
  differences only; it shows in the cached keys: ``rope_shift``.)
- ``rope_shift``: every call rotates q and k for position + 1.
- ``mask_for_shorter_cache``: the causal mask is built for a cache 16 slots
  shorter and zero-padded to the real length: the last 16 slots are always visible.

Each model bug also comes as a builder for ``--model-builder``:
``parity.injected_bugs:build_with_<bug>`` (``BUGGY_BUILDERS``), the plain builder
with the bug in layer 1.

Chunked-prefill bug for the chunked legs (``parity.chunked``):
``chunks_starting_one_early`` is the right chunking except that every chunk
after the first is fed one position early (its first token overwrites the cache
row of the previous chunk's last token, and every later position is one short):
an off-by-one at each chunk boundary, as a runner advancing its position by
``chunk - 1`` would make.

Kernel-level bug for ``--attention-impl``: ``drifting_flash_attention`` is
``edge_flash.flash_attention`` scaled by (1 + 1e-3).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

import edge_flash

MASK_SHORTFALL = 16  # slots by which ``mask_for_shorter_cache`` undercounts the cache
DRIFT = 1e-3


def drifting_flash_attention(q, k, v, head_size, mask=None, scale=None, softcap=None,
                             alibi_bias=None, **kernel_options):  # fmt: skip
    """``edge_flash.flash_attention`` times (1 + 1e-3): a small systematic drift."""
    out = edge_flash.flash_attention(
        q, k, v, head_size, mask=mask, scale=scale, softcap=softcap, alibi_bias=alibi_bias,
        **kernel_options,
    )  # fmt: skip
    return out * (1 + DRIFT)


def _kv_write_shift(model, args):
    x, rope, mask, input_pos, kv_entry, lora = args
    return x, rope, mask, input_pos + 1, kv_entry, lora


def _shifted_rope(model, input_pos):
    attn = model.config.block_config(0).attn_config
    n_elem = int(attn.rotary_percentage * attn.head_dim)
    return model.config.build_rope(input_pos + 1, n_elem, attn.rotary_base)


def _rope_shift(model, args):
    x, _rope, mask, input_pos, kv_entry, lora = args
    return x, _shifted_rope(model, input_pos), mask, input_pos, kv_entry, lora


def _decode_rope_shift(model, args):
    x, _rope, mask, input_pos, kv_entry, lora = args
    if x.shape[1] != 1:
        return None  # prefill: inputs unchanged
    return x, _shifted_rope(model, input_pos), mask, input_pos, kv_entry, lora


def _mask_for_shorter_cache(model, args):
    x, rope, mask, input_pos, kv_entry, lora = args
    wrong = mask.clone()
    wrong[..., mask.shape[-1] - MASK_SHORTFALL :] = 0.0  # (1, 1, T, S): zero = visible
    return x, rope, wrong, input_pos, kv_entry, lora


MODEL_BUGS: dict[str, Callable] = {
    "kv_write_shift": _kv_write_shift,
    "decode_rope_shift": _decode_rope_shift,
    "rope_shift": _rope_shift,
    "mask_for_shorter_cache": _mask_for_shorter_cache,
}


def inject(model: torch.nn.Module, bug: str, layer: int) -> torch.nn.Module:
    """Puts ``bug`` into transformer block ``layer`` of this ``model`` instance; returns it.

    Raises:
      ValueError: unknown bug or layer out of range.
    """
    if bug not in MODEL_BUGS:
        raise ValueError(f"bug ({bug!r}) is unknown; expected one of {sorted(MODEL_BUGS)}")
    blocks = model.transformer_blocks
    if not 0 <= layer < len(blocks):
        raise ValueError(f"layer ({layer}) must be in [0, {len(blocks)})")
    rewrite = MODEL_BUGS[bug]
    blocks[layer].register_forward_pre_hook(lambda module, args: rewrite(model, args))
    return model


def chunks_starting_one_early(prompt_len: int, signature_lengths) -> list:
    """``parity.chunked.planned_chunks`` with every chunk after the first one position early."""
    import dataclasses

    from parity.chunked import planned_chunks

    chunks = planned_chunks(prompt_len, signature_lengths)
    return chunks[:1] + [dataclasses.replace(c, position=c.position - 1) for c in chunks[1:]]


# ---- model builders with one bug each, for --model-builder ----------------------

# The layer the buggy builders break: not the first, so naming it takes the
# per-layer search (every zoo model has at least 2 layers).
BUILDER_BUG_LAYER = 1


def _buggy_builder(bug: str) -> Callable:
    def build(checkpoint_path: str, kv_cache_max_len: int) -> torch.nn.Module:
        from parity.model_builder import plain_builder

        return inject(plain_builder(checkpoint_path, kv_cache_max_len), bug, BUILDER_BUG_LAYER)

    build.__name__ = f"build_with_{bug}"
    build.__doc__ = f"``parity.model_builder.plain_builder`` with ``{bug}`` in layer {BUILDER_BUG_LAYER}."
    return build


build_with_kv_write_shift = _buggy_builder("kv_write_shift")
build_with_decode_rope_shift = _buggy_builder("decode_rope_shift")
build_with_rope_shift = _buggy_builder("rope_shift")
build_with_mask_for_shorter_cache = _buggy_builder("mask_for_shorter_cache")
# One builder per model bug, by bug name (the tests check none is missing).
BUGGY_BUILDERS = {
    "kv_write_shift": "parity.injected_bugs:build_with_kv_write_shift",
    "decode_rope_shift": "parity.injected_bugs:build_with_decode_rope_shift",
    "rope_shift": "parity.injected_bugs:build_with_rope_shift",
    "mask_for_shorter_cache": "parity.injected_bugs:build_with_mask_for_shorter_cache",
}
