"""The seed's 30-second test: a tiny random Llama with TinyLlama's attention shape.

32 heads, 4 KV heads, head_dim 64 on hidden 256, 2 layers, vocab 512, written
as a real HF checkpoint and built with ``edge_flash.build_model``. Covers what the
chain suites (``parity/test_chain_*.py``, which judge every leg of the zoo's
tiny models against the float64 oracle) do not: decode after prefill equals a
longer prefill, the cache rows attention cannot touch, and the mask cache.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edge_flash import TorchRunner, build_model
from parity.compare import assert_close_to_oracle
from parity.random_checkpoints import write_tiny_random_llama_checkpoint
from parity.tolerances import OWNER_BOUND

pytestmark = pytest.mark.quick

SEED = 0
KV_LEN = 64
PROMPT = [1, 57, 74, 67, 86, 223, 75, 85, 223, 67, 223, 86, 87, 84, 68, 81, 82, 33]  # 18 ids
MODEL = "tiny-random-llama-n32g4h64"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    # No tokenizer: the quick tests feed token ids, and writing one imports transformers (~3 s).
    directory = tmp_path_factory.mktemp("tiny_llama")
    return write_tiny_random_llama_checkpoint(directory, seed=SEED, tokenizer=False)


@pytest.fixture(scope="module")
def models(checkpoint):
    """Standard and flash models of the same checkpoint."""
    standard = build_model(checkpoint, use_flash_attention=False)
    flash = build_model(checkpoint, use_flash_attention=True)
    return standard, flash


@pytest.mark.parametrize("flash", [False, True], ids=["standard", "flash"])
def test_decode_one_token_equals_prefill_last_row(models, record_result, flash):
    """Prefill of prompt[:-1] then decode of prompt[-1] gives the full prefill's last row."""
    model = models[1] if flash else models[0]
    full = TorchRunner(model, KV_LEN).prefill(PROMPT)[-1]
    runner = TorchRunner(model, KV_LEN)
    runner.prefill(PROMPT[:-1])
    stepped = runner.decode(PROMPT[-1])
    # Same weights and positions; only the attention's query length differs
    # (T = 18 vs 1), which changes summation order: fp32 rounding of logits of
    # size ~1. The owner's 1e-4 is the requirement for any reordering of attention.
    assert_close_to_oracle(
        torch.from_numpy(stepped), torch.from_numpy(full), error_model=OWNER_BOUND,
        allowance=OWNER_BOUND.atol, names=("decode", "", "prefill"),
        case_id=f"{MODEL}-{'flash' if flash else 'standard'}-decode-vs-prefill",
        on_result=lambda c: record_result(suite="parity", model=MODEL, seed=SEED,
                                          **c.record_fields()),
    )  # fmt: skip


def test_kv_cache_after_prefill_is_the_same_for_flash_and_standard(models):
    """Layer 0's cache after prefill is identical: attention does not feed it."""
    standard, flash = (TorchRunner(model, KV_LEN) for model in models)
    standard.prefill(PROMPT)
    flash.prefill(PROMPT)
    # Layer 0's K and V come from the embedding, norm and projections only,
    # which both models compute with the same ops: exactly equal.
    np.testing.assert_array_equal(flash.kv_cache()[0][0], standard.kv_cache()[0][0])
    np.testing.assert_array_equal(flash.kv_cache()[0][1], standard.kv_cache()[0][1])
    assert np.abs(flash.kv_cache()[0][0][0, : len(PROMPT)]).max() > 0  # The cache was written.
    assert np.abs(flash.kv_cache()[0][0][0, len(PROMPT) :]).max() == 0  # And only there.


def test_forward_with_kv_cache_uses_the_mask_cache_like_an_explicit_mask(checkpoint):
    """A model with a mask cache, called without a mask, equals the runner's explicit mask."""
    from litert_torch.generative.layers import kv_cache as kv_utils

    model = build_model(checkpoint, use_flash_attention=True, mask_cache_size=KV_LEN)
    kv = kv_utils.KVCache.from_model_config(KV_LEN, model.config)
    tokens = torch.tensor([PROMPT], dtype=torch.int)
    with torch.no_grad():
        implicit = model(tokens, torch.arange(len(PROMPT), dtype=torch.int), kv)["logits"]
    explicit = TorchRunner(model, KV_LEN).prefill(PROMPT)
    # Same mask values (both from build_causal_mask_cache), same ops: bit-identical.
    np.testing.assert_array_equal(implicit[0].numpy(), explicit)
