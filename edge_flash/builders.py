"""Building litert-torch decoder models from HF checkpoints, with or without flash attention.

``build_model`` builds any Llama-family HF checkpoint directory from its
``config.json``; ``edge_flash.tiny_llama`` and ``edge_flash.smollm`` build
fixed architectures through ``build_fixed_model``. All take
``use_flash_attention``:

- ``False``: litert-torch's standard attention (with its HLFB composite);
- ``True``: ``edge_flash.flash_attention`` in every attention layer;
- ``"auto"``: flash for calls with at least ``AUTO_FLASH_MIN_SEQ_LEN`` query
  rows (long prefill), standard below (decode, short prefill). The query length
  is static at export, so each exported signature holds one path.
"""

from __future__ import annotations

import os
from typing import Callable, Dict, Optional, Union

import litert_torch.generative.layers.model_config as cfg
import torch
from litert_torch.generative.utilities import model_builder

from edge_flash import families, hf_config, loader
from edge_flash.integration import enable_flash_attention

# "auto" uses flash from this prefill length up. Measured in LiteRT (XNNPACK)
# on the TinyLlama attention shape: see edge_flash/DECISIONS.md ("auto" threshold).
AUTO_FLASH_MIN_SEQ_LEN = 512

FlashChoice = Union[bool, str]
CustomLoader = Optional[Callable[[str], Dict[str, torch.Tensor]]]


def flash_min_seq_len(use_flash_attention: FlashChoice) -> Optional[int]:
    """The smallest query length routed to flash, or None for the standard path.

    Raises:
      ValueError: unless ``use_flash_attention`` is True, False or "auto".
    """
    if use_flash_attention is True:
        return 1
    if use_flash_attention is False:
        return None
    if use_flash_attention == "auto":
        return AUTO_FLASH_MIN_SEQ_LEN
    raise ValueError(f"use_flash_attention ({use_flash_attention!r}) must be True, False or 'auto'")


def apply_attention_choice(
    model: torch.nn.Module, use_flash_attention: FlashChoice, **kernel_options
) -> torch.nn.Module:
    """Routes ``model``'s attention per ``use_flash_attention``; returns ``model``."""
    min_seq_len = flash_min_seq_len(use_flash_attention)
    if min_seq_len is not None:
        enable_flash_attention(model, min_seq_q=min_seq_len, **kernel_options)
    return model


def build_model(
    checkpoint_path: os.PathLike,
    *,
    use_flash_attention: FlashChoice = False,
    mask_cache_size: int = 0,
    family: Optional[str] = None,
) -> torch.nn.Module:
    """The litert-torch model of an HF checkpoint directory of any family in ``edge_flash.families``.

    Llama checkpoints (``model_type`` "llama" without Llama 3's RoPE scaling)
    build as a ``DecoderOnlyModel`` loaded by ``edge_flash.loader``; every other
    family is built by litert-torch's own module for it (its model class, its
    loader and tensor names), with the sizes of the checkpoint's config.json.

    Args:
      checkpoint_path: directory with config.json and *.safetensors (HF names).
      use_flash_attention: True, False or "auto" (see the module docstring).
      mask_cache_size: size of the causal mask cache (0: pass masks explicitly);
        at most the config's max_position_embeddings.
      family: a name in ``edge_flash.families.FAMILIES`` to build with that family's
        module (e.g. "deepseek" for a Qwen 2 checkpoint); None picks it by model_type.

    Returns:
      The model in eval mode, fp32, on CPU.

    Raises:
      CheckpointError: missing path, missing config.json or weights, or tensors
        that do not fit. ConfigMismatchError: a config field that does not map.
      ValueError: bad ``use_flash_attention`` or ``mask_cache_size``.
    """
    flash_min_seq_len(use_flash_attention)  # Fail on a bad value before loading weights.
    directory = loader.checkpoint_dir(checkpoint_path)
    hf = loader.read_hf_config(directory)
    if hf is None:
        raise loader.CheckpointError(
            f"checkpoint_path '{directory}' has no config.json; build_model reads the"
            " architecture from it (or use edge_flash.tiny_llama / edge_flash.smollm)"
        )
    source = f"config.json '{directory}'"
    chosen = families.family_named(family) if family else families.family_for(hf, source)
    if chosen is not None:
        return build_family_model(directory, chosen, hf, mask_cache_size, use_flash_attention)
    config = hf_config.model_config_from_hf(hf, source=source)
    return build_from_config(
        checkpoint_path,
        config,
        model_class=model_builder.DecoderOnlyModel,
        mask_cache_size=mask_cache_size,
        use_flash_attention=use_flash_attention,
    )


def build_family_model(
    directory: os.PathLike,
    family: "families.Family",
    hf: dict,
    mask_cache_size: int = 0,
    use_flash_attention: FlashChoice = False,
) -> torch.nn.Module:
    """``family``'s litert-torch model of the checkpoint in ``directory`` (config ``hf``).

    Raises:
      ConfigMismatchError: a config field the family cannot honour.
      ValueError: ``mask_cache_size`` outside [0, max_position_embeddings].
    """
    from litert_torch.generative.utilities import model_builder as litert_builder

    config = family.model_config(hf, source=f"config.json '{directory}'")
    if not 0 <= mask_cache_size <= config.max_seq_len:
        raise ValueError(
            f"mask_cache_size ({mask_cache_size}) must be in [0, max_seq_len ="
            f" {config.max_seq_len}]"
        )
    model_class = family.model_class_and_names()[0]
    model = litert_builder.build_decoder_only_model(
        str(directory),
        config,
        family.tensor_names_for(config),
        model_class,
        mask_cache_size=mask_cache_size,
    )
    return apply_attention_choice(model.eval(), use_flash_attention)


def build_fixed_model(
    checkpoint_path: os.PathLike,
    config: cfg.ModelConfig,
    model_class: type,
    model_name: str,
    custom_loader: CustomLoader = None,
    mask_cache_size: int = 0,
    use_flash_attention: FlashChoice = False,
) -> torch.nn.Module:
    """Builds a fixed architecture after checking the checkpoint's config.json against it.

    With a ``custom_loader`` the path may be remote (litert-torch's
    convention), so the config check only runs when a local config.json exists.

    Raises:
      ConfigMismatchError: naming every config.json field that differs.
    """
    flash_min_seq_len(use_flash_attention)
    local = os.path.exists(checkpoint_path)
    if custom_loader is None or local:
        hf = loader.read_hf_config(checkpoint_path)
        if hf is not None:
            source = f"config.json '{loader.checkpoint_dir(checkpoint_path)}'"
            hf_config.check_matches(hf, config, model_name, source)
    return build_from_config(
        checkpoint_path, config, model_class, custom_loader, mask_cache_size, use_flash_attention
    )


def build_from_config(
    checkpoint_path: os.PathLike,
    config: cfg.ModelConfig,
    model_class: type = model_builder.DecoderOnlyModel,
    custom_loader: CustomLoader = None,
    mask_cache_size: int = 0,
    use_flash_attention: FlashChoice = False,
) -> torch.nn.Module:
    """Instantiates ``model_class(config)``, loads the checkpoint, routes attention.

    Raises:
      ValueError: if ``mask_cache_size`` is negative or above ``config.max_seq_len``.
    """
    if isinstance(mask_cache_size, bool) or not isinstance(mask_cache_size, int):
        raise TypeError(f"mask_cache_size ({mask_cache_size!r}) must be an int")
    if not 0 <= mask_cache_size <= config.max_seq_len:
        raise ValueError(
            f"mask_cache_size ({mask_cache_size}) must be in [0, max_seq_len ="
            f" {config.max_seq_len}]"
        )
    model = model_class(config, mask_cache_size)
    names = loader.hf_tensor_names(config.lm_head_share_weight_with_embedding)
    loader.load_weights(model, checkpoint_path, names, custom_loader)
    model.eval()
    return apply_attention_choice(model, use_flash_attention)
