"""edge_flash: blockwise ("flash") attention for litert-torch decoder models.

The system under test of this project. ``flash_attention`` has exactly the
contract of litert-torch's ``scaled_dot_product_attention``; the rest puts it
into litert-torch models (per instance), loads checkpoints, converts to TFLite
and runs the result in LiteRT.
"""

from edge_flash import checkpoints, cli, smollm, tiny_llama
from edge_flash.builders import AUTO_FLASH_MIN_SEQ_LEN, build_model
from edge_flash.checkpoints import (
    CACHE_ENV,
    CheckpointCacheError,
    resolve_cache_dir,
    shipped_smollm2_checkpoint,
)
from edge_flash.hf_config import ConfigMismatchError, model_config_from_hf
from edge_flash.integration import (
    AttentionFunction,
    RoutedCausalSelfAttention,
    attention_functions,
    enable_flash_attention,
    use_attention,
    use_standard_attention,
)
from edge_flash.runtime import (
    LiteRTInputError,
    LiteRTModelError,
    LiteRTRunner,
    chunk_plan,
    smallest_fitting_signature,
    tflite_op_counts,
)
from edge_flash.torch_runner import TorchRunner
from edge_flash.kernel import DEFAULT_KV_BLOCK_SIZE, DEFAULT_Q_BLOCK_SIZE, flash_attention
from edge_flash.loader import CheckpointError, read_hf_config, require_tokenizer

__all__ = [
    "LiteRTInputError",
    "LiteRTModelError",
    "LiteRTRunner",
    "TorchRunner",
    "chunk_plan",
    "smallest_fitting_signature",
    "tflite_op_counts",
    "AUTO_FLASH_MIN_SEQ_LEN",
    "ConfigMismatchError",
    "build_model",
    "model_config_from_hf",
    "checkpoints",
    "cli",
    "smollm",
    "tiny_llama",
    "AttentionFunction",
    "RoutedCausalSelfAttention",
    "attention_functions",
    "enable_flash_attention",
    "use_attention",
    "use_standard_attention",
    "flash_attention",
    "DEFAULT_Q_BLOCK_SIZE",
    "DEFAULT_KV_BLOCK_SIZE",
    "CACHE_ENV",
    "CheckpointCacheError",
    "CheckpointError",
    "read_hf_config",
    "require_tokenizer",
    "resolve_cache_dir",
    "shipped_smollm2_checkpoint",
]
