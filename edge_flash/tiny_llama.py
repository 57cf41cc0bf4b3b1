"""TinyLlama-1.1B built with litert-torch, optionally with flash attention.

The seed's entry point: ``build_model(checkpoint_path, use_flash_attention=True)``
is litert-torch's ``tiny_llama.build_model`` plus the attention switch. The
architecture is fixed (litert-torch's ``get_model_config``); a checkpoint's
config.json, when present, must match it field by field.
"""

from __future__ import annotations

import os

from litert_torch.generative.examples.tiny_llama import tiny_llama as litert_tiny_llama

from edge_flash.builders import CustomLoader, FlashChoice, build_fixed_model

MODEL_NAME = "TinyLlama-1.1B"
TinyLlama = litert_tiny_llama.TinyLlama
get_model_config = litert_tiny_llama.get_model_config


def build_model(
    checkpoint_path: os.PathLike,
    custom_loader: CustomLoader = None,
    mask_cache_size: int = 0,
    use_flash_attention: FlashChoice = False,
) -> TinyLlama:
    """TinyLlama-1.1B from an HF checkpoint directory (e.g. TinyLlama-1.1B-Chat-v1.0).

    Args:
      checkpoint_path: directory with config.json (optional) and *.safetensors.
      custom_loader: litert-torch's hook, ``path -> {hf_name: tensor}``.
      mask_cache_size: causal mask cache size (0: masks passed explicitly).
      use_flash_attention: True, False or "auto" (see ``edge_flash.builders``).

    Raises:
      ConfigMismatchError: if config.json differs from TinyLlama-1.1B, naming
        every differing field. CheckpointError: unusable path or tensors.
    """
    return build_fixed_model(
        checkpoint_path,
        get_model_config(),
        TinyLlama,
        MODEL_NAME,
        custom_loader=custom_loader,
        mask_cache_size=mask_cache_size,
        use_flash_attention=use_flash_attention,
    )
