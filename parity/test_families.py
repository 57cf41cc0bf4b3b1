"""Every decoder family litert-torch ships is built, or refused with the family and the field.

The chain suites (``test_chain_*.py``) run every leg of each family's zoo entry
(marker ``family``). These tests specify the mapping itself: which litert-torch
module builds which ``config.json``, what is refused and how, and that the verify
CLI takes a Qwen 3 and a Gemma 3 checkpoint written by transformers itself.
"""

from __future__ import annotations

import copy

import pytest

import edge_flash
from edge_flash.families import FAMILIES, UNMAPPED, family_for, family_named
from edge_flash.hf_config import ConfigMismatchError
from parity.family_checkpoints import FAMILY_CONFIGS, family_config
from parity.zoo import FAMILY_MODELS, SMOLLM2, TINYLLAMA_SHAPED

# The decoder families of litert-torch 0.10's examples (issue 10's list).
LITERT_DECODER_FAMILIES = (
    "gemma1", "gemma2", "gemma3", "qwen2.5", "qwen3", "llama3.2", "phi2", "phi3",
    "phi4", "openelm", "amd-llama-135m", "smollm", "tinyllama", "deepseek", "hammer",
)  # fmt: skip


def test_every_litert_family_is_built_or_says_why_not():
    built = {f.name for f in FAMILIES}
    for name in LITERT_DECODER_FAMILIES:
        assert name in built or UNMAPPED.get(name), f"{name}: neither built nor explained"


def test_every_built_family_has_a_zoo_entry_or_a_zoo_model():
    in_zoo = {m.family for m in FAMILY_MODELS} | {"tinyllama"}  # tinyllama-shaped is TinyLlama's
    assert TINYLLAMA_SHAPED.family == "llama" and SMOLLM2.family == "smollm2"
    assert {f.name for f in FAMILIES} <= in_zoo


@pytest.mark.parametrize("family", sorted(FAMILY_CONFIGS))
def test_build_model_uses_the_familys_own_litert_module(family, tmp_path):
    from parity.family_checkpoints import write_family_checkpoint

    path = write_family_checkpoint(family, tmp_path / family, seed=1)
    model = edge_flash.build_model(path, mask_cache_size=16, family=family)
    assert type(model) is family_named(family).model_class_and_names()[0]


def test_model_type_picks_the_family():
    picks = {
        "gemma": "gemma1", "gemma2": "gemma2", "gemma3_text": "gemma3", "qwen2": "qwen2.5",
        "qwen3": "qwen3", "phi": "phi2",
    }  # fmt: skip
    assert family_for(family_config("phi3")).name == "phi3"
    assert family_for(family_config("phi4")).name == "phi4"
    for model_type, family in picks.items():
        assert family_for({"model_type": model_type}).name == family
    assert family_for(family_config("llama3.2")).name == "llama3.2"
    assert family_for({"model_type": "llama"}) is None  # the plain Llama mapping


@pytest.mark.parametrize(
    ("model_type", "words"),
    [("mistral", "'mistral'"), ("falcon", "'falcon'")],
)
def test_an_unbuilt_family_is_refused_naming_it(model_type, words):
    with pytest.raises(ConfigMismatchError, match=words):
        family_for({"model_type": model_type})


@pytest.mark.parametrize(
    ("family", "field", "value", "words"),
    [
        ("gemma3", "query_pre_attn_scalar", 256, "query_pre_attn_scalar is 256"),
        ("gemma2", "final_logit_softcapping", 20.0, "final_logit_softcapping is 20.0"),
        ("gemma2", "hidden_activation", "gelu", "hidden_activation is 'gelu'"),
        ("qwen3", "attention_bias", True, "attention_bias is True"),
        ("gemma1", "layer_types", ["sliding_attention", "full_attention"], "Gemma 1 has none"),
        ("qwen3", "num_key_value_heads", 3, "multiple of num_key_value_heads"),
        ("phi3", "max_position_embeddings", 8192, "max_position_embeddings / original"),
    ],
)
def test_a_field_the_family_cannot_honour_is_named(family, field, value, words):
    hf = copy.deepcopy(family_config(family))
    hf[field] = value
    with pytest.raises(ConfigMismatchError, match=words) as raised:
        family_named(family).model_config(hf, "config.json '/x'")
    assert f"({family})" in str(raised.value)


def test_gemma3_layers_follow_layer_types_with_their_rope_bases():
    import litert_torch.generative.layers.model_config as cfg

    config = family_named("gemma3").model_config(family_config("gemma3"))
    local, overall = (config.block_config(i).attn_config for i in range(2))
    assert local.attn_type == cfg.AttentionType.LOCAL_SLIDING and local.rotary_base == 10000
    assert overall.attn_type == cfg.AttentionType.GLOBAL and overall.rotary_base == 1000000
    assert local.sliding_window_size == family_config("gemma3")["sliding_window"]


# ---- the verify CLI on checkpoints transformers writes (not the zoo's) ----------------


def _transformers_checkpoint(directory, config_class, **fields):
    """A checkpoint written by transformers' own save_pretrained, with the byte tokenizer.

    transformers' initialiser (std ``initializer_range``) writes the weights;
    0.2 keeps the logits away from a uniform distribution (0.02 gives ties).
    """
    import torch
    from transformers import AutoModelForCausalLM

    from parity.random_checkpoints import write_byte_tokenizer

    torch.manual_seed(0)
    config = config_class(initializer_range=0.2, vocab_size=320, num_hidden_layers=2, **fields)
    AutoModelForCausalLM.from_config(config).save_pretrained(str(directory))
    write_byte_tokenizer(directory)
    return directory


def test_verify_cli_passes_a_qwen3_checkpoint_written_by_transformers(tmp_path, capsys):
    from transformers import Qwen3Config

    from parity import verify

    path = _transformers_checkpoint(
        tmp_path / "qwen3", Qwen3Config, hidden_size=64, intermediate_size=128,
        num_attention_heads=4, num_key_value_heads=2, head_dim=32, tie_word_embeddings=True,
    )  # fmt: skip
    code = verify.main(
        ["--checkpoint_path", str(path), "--use_flash_attention", "--max_new_tokens", "4"]
    )
    assert code == 0, capsys.readouterr().out


def test_verify_cli_passes_a_gemma3_text_checkpoint_written_by_transformers(tmp_path, capsys):
    from transformers import Gemma3TextConfig

    from parity import verify

    path = _transformers_checkpoint(
        tmp_path / "gemma3", Gemma3TextConfig, hidden_size=64, intermediate_size=128,
        num_attention_heads=4, num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=16,
        sliding_window=4, layer_types=["sliding_attention", "full_attention"],
    )  # fmt: skip
    code = verify.main(
        ["--checkpoint_path", str(path), "--use_flash_attention", "--max_new_tokens", "4"]
    )
    assert code == 0, capsys.readouterr().out


def test_family_prompts_cross_the_sliding_window_and_a_kv_block_boundary():
    for model in FAMILY_MODELS:
        longest = max(p.length for p in model.prompts)
        window = family_config(model.family).get("sliding_window") or 8
        assert longest > 2 * window, model.name  # the window slides past whole windows
        assert longest > model.kernel_options["kv_block_size"], model.name
        assert longest + model.max_new_tokens - 1 < model.kv_cache_max_len, model.name
        assert longest % min(model.chunk_seq_lens), model.name  # a remainder fits no signature
