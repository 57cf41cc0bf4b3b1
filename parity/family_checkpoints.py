"""Small random-weight HF checkpoints of every decoder family litert-torch ships.

Each config is the family's transformers config, sized like litert-torch's
fake config (2 layers, a small vocabulary) but narrower, so a family runs in
seconds in PyTorch and converts in seconds: hidden sizes of 64 to 112, with the
family's own features kept where attention bugs hide:

- Gemma 1: multi-query attention (1 KV head), zero-centred RMSNorm, sqrt(d)
  embedding scale, GELU-tanh;
- Gemma 2: a sliding layer then a global layer, attention softcap 50, final
  softcap 30, pre/post feed-forward norms;
- Gemma 3: a sliding layer then a global layer with different RoPE bases, QK norm;
- Qwen 2.5: qkv bias and a 7:1 GQA ratio (Qwen2.5-0.5B's 14:2);
- Qwen 3: QK norm and a head_dim that is not hidden / heads;
- Llama 3.2: the ``llama3`` RoPE scaling with Llama-3.2-1B's parameters;
- Phi-2: LayerNorm, parallel residual, partial rotary (0.4), biases everywhere;
- Phi-3.5, Phi-4-mini: fused qkv and gate/up projections, LongRoPE with the full
  models' short-factor tables (which litert-torch hard-codes: head_dim 96, and
  128 with 3/4 rotated), MHA and 2:1 GQA;
- DeepSeek-R1-Distill-Qwen, Hammer: the Qwen 2 architecture with 6:1 and 3:1 GQA;
- SmolLM, AMD-Llama-135m: Llama architectures (3:1 GQA, untied head);
- OpenELM: a different head count in each layer (2 query heads over 1 KV head,
  then 4 over 2) and MLP width per layer, QK norm; written with OpenELM's own
  config.json and tensor names, since transformers has no OpenELM class.

The sliding window (8) is shorter than the prompts (the longest is 30 tokens),
so prefill and decode both cross it, and the KV blocks of 16 put block
boundaries inside the prompt.

Weights are drawn by ``parity.exact_random`` (the same bytes on every CPU),
scaled so activations stay of unit size and the logits are O(1..10):
projections N(0, 1/fan_in), embeddings N(0, 1) (N(0, 9/d) when the LM head is the
embedding, so the logits stay near 10 at most), RMSNorm gains 1 + N(0, 0.1)
(Gemma stores the gain's offset from 1: N(0, 0.1)), biases N(0, 0.1).
The transformers model is built from the config only to name and shape the
tensors; its initialiser's values are all replaced.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from parity.exact_random import exact_generator, normal

_GEMMA_NORMS = ("gemma", "gemma2", "gemma3_text")

_BASE = {
    "max_position_embeddings": 256,
    "rms_norm_eps": 1e-6,
    "torch_dtype": "float32",
    "num_hidden_layers": 2,
    "vocab_size": 256,
}

# family name -> HF config.json (sizes small; the family's structure kept).
FAMILY_CONFIGS: dict[str, dict] = {
    "gemma1": {
        **_BASE, "architectures": ["GemmaForCausalLM"], "model_type": "gemma",
        "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
        "num_key_value_heads": 1, "head_dim": 16, "hidden_act": "gelu_pytorch_tanh",
        "tie_word_embeddings": True,
    },
    "gemma2": {
        **_BASE, "architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2",
        "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 16, "hidden_activation": "gelu_pytorch_tanh",
        "query_pre_attn_scalar": 16, "sliding_window": 8,
        "layer_types": ["sliding_attention", "full_attention"],
        "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0,
        "tie_word_embeddings": True,
    },
    "gemma3": {
        **_BASE, "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text",
        "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
        "num_key_value_heads": 1, "head_dim": 16, "hidden_activation": "gelu_pytorch_tanh",
        "query_pre_attn_scalar": 16, "sliding_window": 8,
        "layer_types": ["sliding_attention", "full_attention"],
        "rope_parameters": {
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            "full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
        },
        "final_logit_softcapping": None, "attn_logit_softcapping": None,
        "tie_word_embeddings": True,
    },
    "qwen2.5": {
        **_BASE, "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
        "hidden_size": 112, "intermediate_size": 192, "num_attention_heads": 7,
        "num_key_value_heads": 1, "rope_theta": 1000000.0, "tie_word_embeddings": True,
    },
    "deepseek": {
        **_BASE, "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
        "hidden_size": 96, "intermediate_size": 192, "num_attention_heads": 6,
        "num_key_value_heads": 1, "rope_theta": 10000.0, "tie_word_embeddings": False,
    },
    "hammer": {
        **_BASE, "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
        "hidden_size": 96, "intermediate_size": 192, "num_attention_heads": 6,
        "num_key_value_heads": 2, "rope_theta": 1000000.0, "tie_word_embeddings": True,
    },
    "qwen3": {
        **_BASE, "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3",
        "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 32, "rope_theta": 1000000.0,
        "attention_bias": False, "tie_word_embeddings": True,
    },
    "llama3.2": {
        **_BASE, "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 16, "tie_word_embeddings": True,
        "max_position_embeddings": 131072,
        "rope_parameters": {
            "rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
    },
    "phi2": {
        "architectures": ["PhiForCausalLM"], "model_type": "phi", "num_hidden_layers": 2,
        "vocab_size": 256, "hidden_size": 80, "intermediate_size": 160,
        "num_attention_heads": 4, "num_key_value_heads": 4, "hidden_act": "gelu_new",
        "max_position_embeddings": 256, "layer_norm_eps": 1e-5, "qk_layernorm": False,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0,
                            "partial_rotary_factor": 0.4},
        "tie_word_embeddings": False, "torch_dtype": "float32",
    },
    "phi3": {
        **_BASE, "architectures": ["Phi3ForCausalLM"], "model_type": "phi3",
        "hidden_size": 192, "intermediate_size": 128, "num_attention_heads": 2,
        "num_key_value_heads": 2, "hidden_act": "silu", "tie_word_embeddings": False,
        "max_position_embeddings": 131072, "original_max_position_embeddings": 4096,
        "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2,
    },
    "phi4": {
        **_BASE, "architectures": ["Phi3ForCausalLM"], "model_type": "phi3",
        "hidden_size": 256, "intermediate_size": 128, "num_attention_heads": 2,
        "num_key_value_heads": 1, "hidden_act": "silu", "tie_word_embeddings": True,
        "max_position_embeddings": 131072, "original_max_position_embeddings": 4096,
        "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2,
    },
    # OpenELM's own config.json names (its remote code's OpenELMConfig): per-layer heads.
    "openelm": {
        "architectures": ["OpenELMForCausalLM"], "model_type": "openelm",
        "num_transformer_layers": 2, "model_dim": 64, "head_dim": 16,
        "num_query_heads": [2, 4], "num_kv_heads": [1, 2], "ffn_multipliers": [0.5, 1.0],
        "ffn_dim_divisor": 16, "ffn_with_glu": True, "normalize_qk_projections": True,
        "share_input_output_layers": True, "rope_freq_constant": 10000,
        "max_context_length": 256, "vocab_size": 256, "torch_dtype": "float32",
    },
    "smollm": {
        **_BASE, "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": 72, "intermediate_size": 128, "num_attention_heads": 6,
        "num_key_value_heads": 2, "head_dim": 12, "tie_word_embeddings": True,
    },
    "amd-llama-135m": {
        **_BASE, "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
        "num_key_value_heads": 4, "head_dim": 16, "tie_word_embeddings": False,
    },
}  # fmt: skip


# Phi-3.5-mini's and Phi-4-mini's LongRoPE (the tables litert-torch's modules hard-code).
_LONGROPE = {"phi3": ("phi.phi3", 1.0), "phi4": ("phi.phi4", 0.75)}


def family_config(family: str) -> dict:
    """The HF config.json of ``family``'s checkpoint (Phi's LongRoPE tables filled in).

    Raises:
      KeyError: ``family`` has no config here.
    """
    config = dict(FAMILY_CONFIGS[family])
    if family in _LONGROPE:
        import importlib

        module, partial = _LONGROPE[family]
        table = importlib.import_module(
            "litert_torch.generative.examples." + module
        ).ROPE_SHORT_FACTOR
        config["rope_parameters"] = {
            "rope_type": "longrope", "rope_theta": 10000.0, "partial_rotary_factor": partial,
            "short_factor": list(table), "long_factor": list(table),
            "original_max_position_embeddings": 4096, "factor": 32.0,
        }  # fmt: skip
    return config


def write_family_checkpoint(family: str, path: Path, seed: int) -> Path:
    """Writes the ``family``'s small random checkpoint (config.json + safetensors) once.

    Raises:
      KeyError: ``family`` has no config here.
    """
    from safetensors.torch import save_file

    path = Path(path)
    if (path / "config.json").is_file() and (path / "model.safetensors").is_file():
        return path
    hf_config = family_config(family)
    path.mkdir(parents=True, exist_ok=True)
    generator = exact_generator(seed)
    zero_centred = hf_config["model_type"] in _GEMMA_NORMS
    tied = bool(hf_config.get("tie_word_embeddings", hf_config.get("share_input_output_layers")))
    state = {
        name: _draw(name, shape, zero_centred, tied, generator)
        for name, shape in _tensor_shapes(hf_config).items()
    }
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    (path / "config.json").write_text(json.dumps(hf_config, indent=2, sort_keys=True) + "\n")
    return path


def _tensor_shapes(hf_config: dict) -> dict[str, tuple[int, ...]]:
    """HF tensor name -> shape, of the transformers model of ``hf_config`` (tied ones once)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if hf_config["model_type"] == "openelm":
        return _openelm_shapes(hf_config)

    config = AutoConfig.for_model(**hf_config)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return {name: tuple(p.shape) for name, p in model.named_parameters()}


def _openelm_shapes(hf_config: dict) -> dict[str, tuple[int, ...]]:
    """OpenELM's tensor names and shapes (transformers has no class to read them from),
    as its modeling_openelm.py names them: fused qkv, fused gate/up (``proj_1``)."""
    from edge_flash.families import family_named

    config = family_named("openelm").model_config(hf_config)
    hidden = config.embedding_dim
    shapes = {"transformer.token_embeddings.weight": (config.vocab_size, hidden)}
    for layer in range(config.num_layers):
        attn, ff = config.block_config(layer).attn_config, config.block_config(layer).ff_config
        qkv = (attn.num_heads + 2 * attn.num_query_groups) * attn.head_dim
        prefix = f"transformer.layers.{layer}"
        shapes.update({
            f"{prefix}.attn_norm.weight": (hidden,),
            f"{prefix}.attn.qkv_proj.weight": (qkv, hidden),
            f"{prefix}.attn.q_norm.weight": (attn.head_dim,),
            f"{prefix}.attn.k_norm.weight": (attn.head_dim,),
            f"{prefix}.attn.out_proj.weight": (hidden, attn.num_heads * attn.head_dim),
            f"{prefix}.ffn_norm.weight": (hidden,),
            f"{prefix}.ffn.proj_1.weight": (2 * ff.intermediate_size, hidden),
            f"{prefix}.ffn.proj_2.weight": (hidden, ff.intermediate_size),
        })  # fmt: skip
    shapes["transformer.norm.weight"] = (hidden,)
    return shapes


def _draw(name: str, shape: tuple[int, ...], zero_centred: bool, tied: bool, generator):
    draws = normal(shape, generator)
    if name.endswith("norm.weight"):
        return (0.1 * draws) if zero_centred else (1.0 + 0.1 * draws)
    if name.endswith(".bias"):
        return 0.1 * draws
    if "embed_tokens" in name or "token_embeddings" in name:
        # A tied head scores the unit-RMS final state against these rows: std 3/sqrt(d)
        # gives logits of std about 3 (N(0, 1) rows gave maxima of 70 to 200).
        return draws * (3 / math.sqrt(shape[-1])) if tied else draws
    # sqrt and division are correctly rounded everywhere (parity.exact_random).
    return draws * (1 / math.sqrt(shape[-1]))
