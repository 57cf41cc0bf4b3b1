"""Loading Hugging Face checkpoint directories into litert-torch models.

A checkpoint is TinyLlama's layout: a directory with ``config.json``, one or
more ``*.safetensors`` files holding HF tensor names
(``model.layers.N.self_attn.q_proj.weight``, ...) and, when text is involved,
tokenizer files. litert-torch's ``ModelLoader`` maps those names onto its own
modules (fusing q/k/v into ``qkv_projection``); this module chooses the name
table, checks the directory first, and turns the loader's ``KeyError`` /
``RuntimeError`` into one clear line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Dict, Optional

import torch

# Names of tokenizer files transformers can load; any one is enough.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")

CustomLoader = Callable[[str], Dict[str, torch.Tensor]]


class CheckpointError(ValueError):
    """A checkpoint path, its config.json, its tensors or its tokenizer is unusable."""


def checkpoint_dir(checkpoint_path: os.PathLike) -> Path:
    """The directory of a checkpoint given as a directory or as one weights file.

    Raises:
      CheckpointError: if the path does not exist or holds no weights file.
    """
    path = Path(checkpoint_path).expanduser()
    if not path.exists():
        raise CheckpointError(
            f"checkpoint_path '{path}' does not exist; expected an HF checkpoint directory"
            " with config.json and *.safetensors"
        )
    if path.is_file():
        if path.suffix not in _WEIGHT_SUFFIXES:
            raise CheckpointError(
                f"checkpoint_path '{path}' is a {path.suffix or 'suffix-less'} file; expected a"
                f" directory or a weights file ({', '.join(_WEIGHT_SUFFIXES)})"
            )
        return path.parent
    if not any(p.suffix in _WEIGHT_SUFFIXES for p in path.iterdir()):
        raise CheckpointError(
            f"checkpoint_path '{path}' holds no weights file (*.safetensors, *.bin, *.pt)"
        )
    return path


def read_hf_config(checkpoint_path: os.PathLike) -> Optional[dict]:
    """The parsed config.json beside the checkpoint, or None if there is none.

    Raises:
      CheckpointError: if the path is unusable or config.json is not a JSON object.
    """
    config_path = checkpoint_dir(checkpoint_path) / "config.json"
    if not config_path.is_file():
        return None
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise CheckpointError(f"config.json '{config_path}' is unreadable: {error}") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"config.json '{config_path}' is not a JSON object")
    return config


def require_tokenizer(checkpoint_path: os.PathLike) -> Path:
    """The checkpoint directory, after checking it has tokenizer files.

    Raises:
      CheckpointError: if no tokenizer file (tokenizer.json or tokenizer.model) is there.
    """
    directory = checkpoint_dir(checkpoint_path)
    if not any((directory / name).is_file() for name in TOKENIZER_FILES):
        raise CheckpointError(
            f"checkpoint_path '{directory}' has no tokenizer (none of"
            f" {', '.join(TOKENIZER_FILES)}); pass token ids instead of text, or add the"
            " tokenizer files of the model"
        )
    return directory


def hf_tensor_names(tied_embeddings: bool):
    """litert-torch's HF tensor-name table; with a separate ``lm_head`` unless tied."""
    from litert_torch.generative.utilities import model_builder

    if tied_embeddings:
        return model_builder.TENSOR_NAMES
    return model_builder.TENSOR_NAMES_WITH_SEPARATE_LM_HEAD


def load_weights(
    model: torch.nn.Module,
    checkpoint_path: os.PathLike,
    tensor_names,
    custom_loader: Optional[CustomLoader] = None,
) -> torch.nn.Module:
    """Loads an HF checkpoint into a litert-torch ``DecoderOnlyModel`` in place.

    Every checkpoint tensor must map onto the model (strict) unless the model
    ties its LM head to the embedding, where litert-torch loads non-strictly.

    Raises:
      CheckpointError: on a missing path, a truncated or corrupt safetensors
        file (naming it), a missing tensor, an unmapped tensor or a tensor of
        the wrong shape, naming the first one and the count.
    """
    from litert_torch.generative.utilities import loader as litert_loader

    path = Path(checkpoint_path).expanduser()
    directory = checkpoint_dir(path)  # Clear error for a missing path before litert-torch's.
    files = [path] if path.is_file() else sorted(directory.glob("*.safetensors"))
    check_safetensors_files(f for f in files if f.suffix == ".safetensors")
    loader = litert_loader.ModelLoader(str(path), tensor_names, custom_loader)
    strict = not model.config.lm_head_share_weight_with_embedding
    try:
        loader.load(model, strict=strict)
    except KeyError as error:
        raise CheckpointError(
            f"checkpoint '{path}' lacks tensor {error}; it does not have the layout"
            " (layers, projections, LM head) of the model being built"
        ) from None
    except (ValueError, RuntimeError) as error:
        message = f"checkpoint '{path}' does not fit the model: {_first_line(error)}"
        raise CheckpointError(message) from None
    return model


def check_safetensors_files(files) -> None:
    """Opens each safetensors file's header, which also checks the file is not cut short.

    Raises:
      CheckpointError: naming the first file that safetensors cannot open.
    """
    from safetensors import SafetensorError, safe_open

    for file in files:
        try:
            with safe_open(str(file), framework="pt"):
                pass
        except (SafetensorError, OSError) as error:
            raise CheckpointError(
                f"weights file '{file}' is unreadable ({_first_line(error)}): it is truncated or"
                " corrupt; download or write the checkpoint again"
            ) from None


def _first_line(error: Exception) -> str:
    """One line of a loader error: the first mismatch and how many there are."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    details = [
        line for line in lines if line.startswith(("size mismatch", "Missing", "Unexpected"))
    ]
    if not details:
        return lines[0] if lines else type(error).__name__
    more = f" (and {len(details) - 1} more)" if len(details) > 1 else ""
    return details[0] + more
