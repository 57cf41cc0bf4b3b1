"""The family oracle has teeth: a bug in a family's own feature fails, with the layer named.

Each bug is put into one layer of a family's re-authored standard model (the
chain's ``reauthored_std`` leg replaced, every other run reused); the float64
oracle is still the family's correct model, so the logits check must fail and
the per-layer diagnosis must name that layer. A prompt that cannot reach the
feature (5 tokens inside an 8-token window) must still pass: the check fails
because of the bug, not because the leg was replaced.
"""

from __future__ import annotations

import dataclasses

import litert_torch.generative.layers.model_config as cfg
import pytest
import torch

from parity import checks
from parity import legs as L
from parity.chain import Chain
from parity.zoo import zoo_model

pytestmark = pytest.mark.family


def _sliding_window_ignored(model, layer: int):
    """Gemma 3: the local layer attends globally (its mask built without the window)."""
    blocks = list(model.config.block_configs)
    blocks[layer] = dataclasses.replace(
        blocks[layer],
        attn_config=dataclasses.replace(
            blocks[layer].attn_config, attn_type=cfg.AttentionType.GLOBAL
        ),
    )
    model.config = dataclasses.replace(model.config, block_configs=blocks)


def _softcap_dropped(model, layer: int):
    """Gemma 2: the attention logit softcap (50) left out of one layer."""
    attention = model.transformer_blocks[layer].atten_func
    attention.config = dataclasses.replace(attention.config, logit_softcap=None)


def _key_norm_skipped(model, layer: int):
    """Qwen 3: the key's RMSNorm (QK norm) skipped in one layer."""
    model.transformer_blocks[layer].atten_func.key_norm = torch.nn.Identity()


def _chain_with_bug(chains, model_name: str, bug, layer: int) -> Chain:
    good = chains.get(zoo_model(model_name))
    prepared, zoo = good.prepared, good.prepared.zoo

    def factory():
        model = L.build_reauthored(
            prepared.checkpoint, zoo.builder, zoo.kv_cache_max_len, zoo.family
        )
        bug(model, layer)
        return L.ReauthoredLeg(model, zoo.kv_cache_max_len, L.STD)

    return Chain(prepared, chains.attention_impl, None, {L.STD: factory}, reuse=good)


def _check(chain: Chain, prompt: str):
    runs = chain.runs(prompt, [L.STD])
    checks.check_logits(
        runs, L.STD, "prefill", spread=chain.spread(prompt), case_id=f"family-bug-{prompt}",
        model=chain.prepared.zoo.name, record=lambda **row: None, token_text=str,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("model_name", "bug", "layer"),
    [
        ("gemma3-tiny", _sliding_window_ignored, 0),
        ("gemma2-tiny", _softcap_dropped, 1),
        ("qwen3-tiny", _key_norm_skipped, 1),
    ],
)
def test_a_bug_in_the_familys_feature_fails_at_its_layer(chains, model_name, bug, layer):
    chain = _chain_with_bug(chains, model_name, bug, layer)
    with pytest.raises(AssertionError) as raised:
        _check(chain, "ids-30")
    assert f"first layer over budget: layer {layer} of reauthored_std" in str(raised.value)


def test_a_prompt_inside_the_window_cannot_see_an_ignored_window(chains):
    _check(_chain_with_bug(chains, "gemma3-tiny", _sliding_window_ignored, 0), "ids-5")
