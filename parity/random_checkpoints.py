"""Random checkpoints: real HF checkpoint directories with seeded random weights.

Harness fixtures, not part of what edge_flash ships (they moved here from
``edge_flash.testing``). Weights come from ``parity.exact_random``, so a seed
gives the same bytes on every CPU (x86 of any vector width, ARM); with
``torch.randn`` they did not.

- ``write_tinyllama_shaped_checkpoint``: TinyLlama-1.1B's config.json fields
  (hidden 2048, 32 heads, 4 KV heads, head_dim 64, intermediate 5632, RoPE base
  10000, RMSNorm eps 1e-5, untied embeddings) with fewer layers and a small vocab.
- ``write_tiny_random_llama_checkpoint``: TinyLlama's attention shape (32 heads,
  4 KV heads, head_dim 64) on a narrow model (hidden 256) for the quick tests.

Both write ``config.json``, ``model.safetensors`` (HF tensor names, fp32) that
both transformers and ``edge_flash.build_model`` load, and a byte-level BPE
tokenizer (259 tokens: ``<unk>``, ``<s>``, ``</s>`` and the 256 bytes, no merges)
built offline, when asked and the vocab has room for it (``vocab_size >= 259``);
otherwise the checkpoint has no tokenizer.

``random_decoder_model`` fills a litert-torch model of any config the same way.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from parity.exact_random import ExactGenerator, exact_generator, normal

# TinyLlama-1.1B-Chat-v1.0's config.json, field by field (weights stored fp32 here).
TINYLLAMA_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "attention_bias": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "hidden_act": "silu",
    "hidden_size": 2048,
    "initializer_range": 0.02,
    "intermediate_size": 5632,
    "max_position_embeddings": 2048,
    "model_type": "llama",
    "num_attention_heads": 32,
    "num_hidden_layers": 22,
    "num_key_value_heads": 4,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_scaling": None,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
    "torch_dtype": "float32",
    "use_cache": True,
    "vocab_size": 32000,
}
# The quick tests' model: TinyLlama's attention (N=32, G=4, H=64) on hidden 256.
TINY_RANDOM_LLAMA_OVERRIDES = {
    "hidden_size": 256,
    "head_dim": 64,
    "intermediate_size": 512,
    "max_position_embeddings": 512,
}
BYTE_TOKENIZER_SIZE = 259  # <unk>, <s>, </s> + 256 byte symbols.
# Weight scale of HF's Llama init (initializer_range); norm weights get
# 1 + 0.1 * noise so that a swapped or missing norm is visible in the logits.
# Both are Python floats: std * x and 1 + y are single correctly rounded
# float32 operations, the same on every machine.
_INIT_STD = 0.02
_NORM_NOISE = 0.1


def write_tinyllama_shaped_checkpoint(
    path: os.PathLike,
    num_layers: int = 2,
    vocab_size: int = 512,
    seed: int = 0,
    *,
    tokenizer: bool = True,
    **overrides,
) -> Path:
    """Writes a TinyLlama-1.1B-shaped HF checkpoint with random weights; returns the directory.

    Args:
      path: directory to create (parents too); existing files are overwritten.
      num_layers: ``num_hidden_layers`` (TinyLlama has 22).
      vocab_size: ``vocab_size`` (TinyLlama has 32000); >= 259 adds a tokenizer.
      seed: seeds every weight (same seed, same bytes, on every CPU).
      tokenizer: write the byte-level tokenizer (needs vocab_size >= 259; writing
        it imports transformers, about 3 s).
      overrides: any other config.json field (e.g. ``tie_word_embeddings=True``).

    Raises:
      ValueError: if ``num_layers`` or ``vocab_size`` is not a positive int.
    """
    config = dict(TINYLLAMA_CONFIG, num_hidden_layers=num_layers, vocab_size=vocab_size)
    config.update(overrides)
    return write_llama_checkpoint(path, config, seed, tokenizer=tokenizer)


def write_tiny_random_llama_checkpoint(
    path: os.PathLike,
    num_layers: int = 2,
    vocab_size: int = 512,
    seed: int = 0,
    *,
    tokenizer: bool = True,
    **overrides,
) -> Path:
    """Writes the quick tests' tiny Llama (TinyLlama attention shape, hidden 256)."""
    merged = dict(TINY_RANDOM_LLAMA_OVERRIDES, **overrides)
    return write_tinyllama_shaped_checkpoint(
        path, num_layers, vocab_size, seed, tokenizer=tokenizer, **merged
    )


def write_llama_checkpoint(
    path: os.PathLike, config: dict, seed: int = 0, *, tokenizer: bool = True
) -> Path:
    """Writes ``config`` as config.json plus seeded random weights for it; returns the directory."""
    from safetensors.torch import save_file

    for name in ("num_hidden_layers", "vocab_size"):
        value = config.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} ({value!r}) must be a positive int")
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    save_file(
        llama_state_dict(config, seed), str(directory / "model.safetensors"), {"format": "pt"}
    )
    if tokenizer and config["vocab_size"] >= BYTE_TOKENIZER_SIZE:
        write_byte_tokenizer(directory)
    return directory


def llama_state_dict(config: dict, seed: int = 0) -> dict:
    """Seeded random fp32 tensors with HF Llama names and shapes for ``config``.

    Matrices are N(0, 0.02), norm weights 1 + 0.1 N(0, 1) (``parity.exact_random``
    normals: the same bytes on every CPU).
    """
    generator = exact_generator(seed)
    hidden = config["hidden_size"]
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim") or hidden // heads
    inter = config["intermediate_size"]

    def matrix(*shape):
        return _INIT_STD * normal(shape, generator)

    def norm_weight():
        return _norm_weight((hidden,), generator)

    state = {"model.embed_tokens.weight": matrix(config["vocab_size"], hidden)}
    for i in range(config["num_hidden_layers"]):
        prefix = f"model.layers.{i}"
        state[f"{prefix}.self_attn.q_proj.weight"] = matrix(heads * head_dim, hidden)
        state[f"{prefix}.self_attn.k_proj.weight"] = matrix(kv_heads * head_dim, hidden)
        state[f"{prefix}.self_attn.v_proj.weight"] = matrix(kv_heads * head_dim, hidden)
        state[f"{prefix}.self_attn.o_proj.weight"] = matrix(hidden, heads * head_dim)
        state[f"{prefix}.mlp.gate_proj.weight"] = matrix(inter, hidden)
        state[f"{prefix}.mlp.up_proj.weight"] = matrix(inter, hidden)
        state[f"{prefix}.mlp.down_proj.weight"] = matrix(hidden, inter)
        state[f"{prefix}.input_layernorm.weight"] = norm_weight()
        state[f"{prefix}.post_attention_layernorm.weight"] = norm_weight()
    state["model.norm.weight"] = norm_weight()
    if not config.get("tie_word_embeddings", False):
        state["lm_head.weight"] = matrix(config["vocab_size"], hidden)
    return state


def _norm_weight(shape: tuple[int, ...], generator: ExactGenerator) -> torch.Tensor:
    """1 + 0.1 N(0, 1): gains near one that still differ per channel."""
    return 1.0 + _NORM_NOISE * normal(shape, generator)


def write_byte_tokenizer(directory: os.PathLike) -> None:
    """Writes a byte-level BPE tokenizer without merges (any text, 259 ids) for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>"]
    byte_symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {token: index for index, token in enumerate(specials + byte_symbols)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    wrapped.save_pretrained(str(directory))


def tiny_random_llama_config(**hf_overrides):
    """litert-torch ``ModelConfig`` of the quick tests' tiny Llama (2 layers, vocab 512)."""
    from edge_flash.hf_config import model_config_from_hf

    hf = dict(TINYLLAMA_CONFIG, num_hidden_layers=2, vocab_size=512)
    hf.update(TINY_RANDOM_LLAMA_OVERRIDES)
    hf.update(hf_overrides)
    return model_config_from_hf(hf, source="tiny random Llama config")


def random_decoder_model(config, seed: int = 0, mask_cache_size: int = 0):
    """A litert-torch ``DecoderOnlyModel`` of ``config`` with seeded random weights, in eval mode.

    Matrices get N(0, 0.02) and vectors (norm weights, biases) 1 + 0.1 N(0, 1),
    like ``llama_state_dict`` (same bytes on every CPU); works for any config
    (e.g. with softcap or ALiBi).
    """
    from litert_torch.generative.utilities.model_builder import DecoderOnlyModel

    model = DecoderOnlyModel(config, mask_cache_size)
    generator = exact_generator(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            shape = tuple(parameter.shape)
            if parameter.dim() == 1:
                parameter.copy_(_norm_weight(shape, generator))
            else:
                parameter.copy_(_INIT_STD * normal(shape, generator))
    return model.eval()
