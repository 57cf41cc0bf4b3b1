"""The legs of the parity chain: one model, several implementations, same prompts.

A leg prefills a prompt and then decodes one token at a time with a KV cache:

- ``hf``: the Hugging Face transformers model, eager attention, fp32 (the reference);
- ``reauthored_std``: the litert-torch re-authored model, standard attention;
- ``reauthored_flash``: the same with the attention under test (``--attention-impl``,
  by default ``edge_flash.flash_attention``) routed in by ``edge_flash.use_attention``;
- ``tflite_std`` / ``tflite_flash``: the two converted to TFLite, run in LiteRT
  through ``edge_flash.runtime.LiteRTRunner`` (XNNPACK, as on device);
- ``oracle_fp64``: the re-authored standard model lifted to float64
  (``parity.fp64_model``): the oracle every other leg is measured against;
- ``<leg>_chunked`` for the four legs above but HF (``parity.chunked``): the same
  model prefilled in chunks as LiteRT-LM does (``edge_flash.runtime.chunk_plan``
  over the zoo entry's ``chunk_seq_lens``), the cache carried between chunks.
  Chunking does not change the exact math, so each is judged like its one-shot
  leg (``BASE_OF``), against the same one-shot oracle.
- ``tflite_std_<recipe>`` / ``tflite_flash_<recipe>`` (``QUANTIZED_LEGS``): the two
  converted with one of litert-torch's quantization recipes
  (``edge_flash.convert.QUANTIZE_CHOICES``, e.g. ``tflite_flash_dynamic_int8``). No
  rounding-error model bounds them against the fp32 model's oracle;
  ``parity.quant_stats`` measures how far their next-token distributions are from it.
- ``oracle_<recipe>`` (``QUANTIZED_ORACLE_OF``), for the recipes
  ``parity.quant_emulation`` emulates (dynamic_int8, dynamic_int4_block32): the
  float64 oracle computing
  the quantized network itself; that recipe's legs are judged against it as the
  fp32 TFLite legs are against ``oracle_fp64``.

``run_leg`` drives a leg through prefill and decode and returns a ``LegRun``
with everything the checks compare: prefill logits at every position, the
logits of every generation step, the KV cache after prefill and (PyTorch legs)
every layer's hidden state at every position. The oracle generates greedily;
every other leg is fed the oracle's tokens (teacher forcing), so its logits are
comparable at every step, and its own greedy choice at each step is recorded:
the first step where that differs from the oracle's is where its free-running
greedy generation would first diverge (all earlier tokens being identical).
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Mapping, Sequence

import torch

from parity.impl_loader import accepted_options

HF = "hf"
STD = "reauthored_std"
FLASH = "reauthored_flash"
TFLITE_STD = "tflite_std"
TFLITE_FLASH = "tflite_flash"
ORACLE = "oracle_fp64"
STD_CHUNKED = "reauthored_std_chunked"
FLASH_CHUNKED = "reauthored_flash_chunked"
TFLITE_STD_CHUNKED = "tflite_std_chunked"
TFLITE_FLASH_CHUNKED = "tflite_flash_chunked"
PYTORCH_LEGS = (HF, STD, FLASH)
TFLITE_LEGS = (TFLITE_STD, TFLITE_FLASH)
ALL_LEGS = PYTORCH_LEGS + TFLITE_LEGS  # one-shot prefill
CHUNKED_LEGS = (STD_CHUNKED, FLASH_CHUNKED, TFLITE_STD_CHUNKED, TFLITE_FLASH_CHUNKED)

# The one-shot leg each chunked leg is judged like: the same model, the same
# oracle, error model and budgets (chunking changes the summation order at most,
# which the error spread's worst-order model already covers; each real row's
# math is the same, padded rows come after it and are masked from it). Its
# TFLite-or-PyTorch kind, and so its owner's-bound rule, is its base leg's.
BASE_OF = {STD_CHUNKED: STD, FLASH_CHUNKED: FLASH,
           TFLITE_STD_CHUNKED: TFLITE_STD, TFLITE_FLASH_CHUNKED: TFLITE_FLASH}  # fmt: skip
# The standard leg at the same stage (and the same chunking) as each flash leg
# (owner's 1e-4 bound).
STANDARD_OF = {FLASH: STD, TFLITE_FLASH: TFLITE_STD,
               FLASH_CHUNKED: STD_CHUNKED, TFLITE_FLASH_CHUNKED: TFLITE_STD_CHUNKED}  # fmt: skip
# The PyTorch model each TFLite leg was converted from (for a chunked TFLite leg,
# that model run on the same chunks, so its layers are searched like for like).
SOURCE_OF = {TFLITE_STD: STD, TFLITE_FLASH: FLASH,
             TFLITE_STD_CHUNKED: STD_CHUNKED, TFLITE_FLASH_CHUNKED: FLASH_CHUNKED}  # fmt: skip

# litert-torch's recipes other than "none" (edge_flash.convert.QUANTIZE_CHOICES;
# spelled out here so importing the legs does not import edge_flash).
QUANTIZE_RECIPES = (
    "dynamic_int8",
    "weight_only_int8",
    "fp16",
    "dynamic_int4_block32",
    "dynamic_int4_block128",
)


def quantized_leg(variant: str, quantize: str) -> str:
    """The name of the TFLite leg of ``variant`` ("std" / "flash") under ``quantize``."""
    return f"tflite_{variant}_{quantize}"


# leg name -> (variant, recipe), e.g. "tflite_flash_dynamic_int8" -> ("flash", "dynamic_int8")
QUANTIZED_OF = {
    quantized_leg(variant, quantize): (variant, quantize)
    for quantize in QUANTIZE_RECIPES
    for variant in ("std", "flash")
}
QUANTIZED_LEGS = tuple(QUANTIZED_OF)
# The standard leg under the same recipe as each quantized flash leg.
QUANTIZED_STANDARD_OF = {
    quantized_leg("flash", quantize): quantized_leg("std", quantize)
    for quantize in QUANTIZE_RECIPES
}


# recipe -> the float64 oracle of the quantized network (``parity.quant_emulation``);
# recipes without one (weight-only, fp16: fp32 arithmetic on dequantized weights;
# dynamic_int4_block128: not convertible here) are judged with the fp32 oracle's spread.
QUANTIZED_ORACLE_OF = {
    "dynamic_int8": "oracle_dynamic_int8",
    "dynamic_int4_block32": "oracle_dynamic_int4_block32",
}
QUANTIZED_ORACLES = tuple(QUANTIZED_ORACLE_OF.values())


def base_leg(leg: str) -> str:
    """The one-shot leg ``leg`` is judged like: itself, or a chunked leg's ``BASE_OF``."""
    return BASE_OF.get(leg, leg)


def is_tflite(leg: str) -> bool:
    """Whether ``leg`` runs a converted model in LiteRT (one-shot, chunked or quantized)."""
    return base_leg(leg) in TFLITE_LEGS or leg in QUANTIZED_OF


@dataclasses.dataclass
class Step:
    """What one prefill or decode call returned (float64 copies).

    Attributes:
      logits: (T, V) logits of the T tokens of this call.
      kv: per layer (k, v), each (T, G, H): the cache rows this call wrote; None
        if the leg cannot read its cache.
      hidden: (L, T, D) output of every transformer block, or None.
    """

    logits: torch.Tensor
    kv: list[tuple] | None = None
    hidden: torch.Tensor | None = None


class Leg(abc.ABC):
    """One implementation of the model with its own KV cache."""

    name: str

    @abc.abstractmethod
    def prefill(self, token_ids: Sequence[int]) -> Step:
        """Starts a new sequence (fresh cache) with ``token_ids`` at positions 0..T-1."""

    @abc.abstractmethod
    def decode(self, token_id: int) -> Step:
        """Feeds one token at the next position."""


@dataclasses.dataclass
class LegRun:
    """One leg on one prompt (see the module docstring).

    Attributes:
      leg: leg name.
      prompt_ids: the T prompt tokens.
      chosen: the leg's greedy token at each of the n generation steps.
      fed: the n - 1 tokens fed to the decode steps (the oracle's greedy tokens).
      prefill_logits: (T, V) float64.
      step_logits: (n, V) float64; row 0 is the last prefill row, row i the
        logits of decode step i (token ``fed[i - 1]`` at position T + i - 1).
      kv: (L, 2, T, G, H) float64 cache contents after prefill, or None.
      hidden: (L, T + n - 1, D) float64 block outputs at every position, or None.
      model_file: the .tflite a TFLite leg ran (``parity.tflite_layers`` localises in it).
    """

    leg: str
    prompt_ids: list[int]
    chosen: list[int]
    fed: list[int]
    prefill_logits: torch.Tensor
    step_logits: torch.Tensor
    kv: torch.Tensor | None
    hidden: torch.Tensor | None
    model_file: object = None

    @property
    def prompt_len(self) -> int:
        return len(self.prompt_ids)


def run_leg(
    leg: Leg,
    prompt_ids: Sequence[int],
    max_new_tokens: int,
    forced: Sequence[int] | None = None,
) -> LegRun:
    """Prefills ``prompt_ids`` and runs ``max_new_tokens - 1`` decode steps.

    Args:
      leg: the leg.
      prompt_ids: T >= 1 token ids.
      max_new_tokens: n >= 1 generation steps (the first comes from prefill).
      forced: the tokens to feed (at least n - 1 of them), or None to feed the
        leg's own greedy choices (free-running greedy generation).

    Raises:
      ValueError: empty prompt, n < 1, or too few forced tokens.
    """
    if len(prompt_ids) < 1:
        raise ValueError("prompt_ids (empty) must hold at least one token")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens ({max_new_tokens}) must be >= 1")
    if forced is not None and len(forced) < max_new_tokens - 1:
        raise ValueError(f"forced ({len(forced)} tokens) must hold max_new_tokens - 1 tokens")
    first = leg.prefill(list(prompt_ids))
    rows, hidden, chosen, fed = [first.logits[-1]], [first.hidden], [], []
    chosen.append(int(first.logits[-1].argmax()))
    for step in range(1, max_new_tokens):
        token = chosen[-1] if forced is None else int(forced[step - 1])
        out = leg.decode(token)
        fed.append(token)
        rows.append(out.logits[-1])
        hidden.append(out.hidden)
        chosen.append(int(out.logits[-1].argmax()))
    kv = None
    if first.kv is not None:
        kv = stack_layers([torch.stack([k, v]) for k, v in first.kv], dim=0)  # (L, 2, T, G, H)
    all_hidden = None
    if first.hidden is not None:
        all_hidden = torch.cat(hidden, dim=1)  # (L, T + n - 1, D)
    return LegRun(
        leg=leg.name,
        prompt_ids=list(prompt_ids),
        chosen=chosen,
        fed=fed,
        prefill_logits=first.logits,
        step_logits=torch.stack(rows),
        kv=kv,
        hidden=all_hidden,
        model_file=getattr(getattr(leg, "runner", None), "model_path", None),
    )


def stack_layers(per_layer: Sequence[torch.Tensor], dim: int) -> torch.Tensor:
    """``torch.stack`` of per-layer KV tensors (..., G, H), zero-padding G and H to the widest.

    OpenELM has a different KV head count in each layer. Every leg and the
    oracle pad the same layers the same way, so the padded entries are exact
    zeros on both sides and never differ.
    """
    groups = max(t.shape[-2] for t in per_layer)
    size = max(t.shape[-1] for t in per_layer)
    padded = [
        torch.nn.functional.pad(t, (0, size - t.shape[-1], 0, groups - t.shape[-2]))
        for t in per_layer
    ]
    return torch.stack(padded, dim=dim)


class BlockRecorder:
    """Forward hooks that keep each block's output of the latest call, float64.

    ``take()`` gives (L, T, D) of batch row 0, or with ``batch=True`` (N, L, T, D)
    of every row (``parity.error_spread``'s noisy samples).
    """

    def __init__(self, blocks: Sequence[torch.nn.Module], batch: bool = False):
        self.batch = batch
        self.outputs: list[torch.Tensor | None] = [None] * len(blocks)
        self.handles = [
            block.register_forward_hook(self._hook(index)) for index, block in enumerate(blocks)
        ]

    def _hook(self, index: int) -> Callable:
        def hook(module, args, output):
            hidden = output[0] if isinstance(output, tuple) else output  # (N, T, D)
            self.outputs[index] = hidden.detach().to(torch.float64)

        return hook

    def take(self) -> torch.Tensor:
        stacked = torch.stack(self.outputs, dim=1)  # (N, L, T, D)
        self.outputs = [None] * len(self.outputs)
        return stacked if self.batch else stacked[0]

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


class HFLeg(Leg):
    """A transformers causal LM with its ``DynamicCache``.

    Block outputs come from forward hooks on ``model.model.layers``, not from
    ``output_hidden_states``: in transformers 5.24 the last entry of the latter
    is taken after the final norm (measured), so hooks compare like with like.
    """

    def __init__(self, model: torch.nn.Module, name: str = HF):
        self.name = name
        self.model = model.eval()
        self.recorder = BlockRecorder(model.model.layers)
        self.cache = None

    @torch.no_grad()
    def prefill(self, token_ids: Sequence[int]) -> Step:
        from transformers import DynamicCache

        # No config: every layer keeps all its rows. With the config, transformers 5 gives
        # sliding-window layers (Gemma 2, 3) a cache of the last window's rows only, and
        # the KV cache check compares every row written by prefill. The sliding mask
        # comes from the model's config either way.
        self.cache = DynamicCache()
        out = self._forward(token_ids)
        kv = [
            (layer.keys[0].transpose(0, 1).to(torch.float64),  # (T, G, H)
             layer.values[0].transpose(0, 1).to(torch.float64))
            for layer in self.cache.layers
        ]  # fmt: skip
        return dataclasses.replace(out, kv=kv)

    @torch.no_grad()
    def decode(self, token_id: int) -> Step:
        return self._forward([token_id])

    def _forward(self, token_ids: Sequence[int]) -> Step:
        tokens = torch.tensor([list(token_ids)], dtype=torch.long)  # (1, T)
        out = self.model(input_ids=tokens, cache=self.cache, use_cache=True)
        self.cache = out.cache
        return Step(logits=out.logits[0].to(torch.float64), hidden=self.recorder.take())


class ReauthoredLeg(Leg):
    """A litert-torch ``DecoderOnlyModel`` with its external ``KVCache`` of length S.

    The causal mask comes from the model's own mask cache (built with
    ``mask_cache_size = S``), as in the converted TFLite model.
    """

    def __init__(self, model: torch.nn.Module, kv_cache_max_len: int, name: str):
        self.name = name
        self.model = model.eval()
        self.kv_cache_max_len = kv_cache_max_len
        self.dtype = next(model.parameters()).dtype
        self.recorder = BlockRecorder(model.transformer_blocks)
        self.cache = None
        self.position = 0

    def prefill(self, token_ids: Sequence[int]) -> Step:
        self.new_cache()
        out = self._forward(token_ids)
        return dataclasses.replace(out, kv=self.cache_rows(len(token_ids)))

    def new_cache(self) -> None:
        """An empty KV cache; the next call starts at position 0."""
        from litert_torch.generative.layers import kv_cache as kv_utils

        self.cache = kv_utils.KVCache.from_model_config(
            self.kv_cache_max_len, self.model.config, dtype=self.dtype
        )
        self.position = 0

    def cache_rows(self, rows: int) -> list:
        """Per layer (k, v), each (rows, G, H) float64: cache slots 0..rows-1."""
        return [
            (entry.k_cache[0, :rows].to(torch.float64), entry.v_cache[0, :rows].to(torch.float64))
            for entry in self.cache.caches
        ]

    def decode(self, token_id: int) -> Step:
        return self._forward([token_id])

    def _forward(self, token_ids: Sequence[int]) -> Step:
        count = len(token_ids)
        if self.position + count > self.kv_cache_max_len:
            raise ValueError(
                f"position {self.position} + {count} tokens exceeds the KV cache length"
                f" ({self.kv_cache_max_len}) of leg {self.name}"
            )
        tokens = torch.tensor([list(token_ids)], dtype=torch.int)  # (1, T)
        input_pos = torch.arange(self.position, self.position + count, dtype=torch.int)
        with torch.no_grad():
            out = self.model(tokens, input_pos, self.cache)
        self.cache = out["kv_cache"]
        self.position += count
        return Step(logits=out["logits"][0].to(torch.float64), hidden=self.recorder.take())


class TFLiteLeg(Leg):
    """A converted model in LiteRT. Its per-layer hidden states are not readable
    (the graph exposes only logits and the KV cache), so ``hidden`` is None.

    XNNPACK and the thread count follow ``parity.run_settings`` (the environment).
    """

    def __init__(self, model_path, name: str):
        from edge_flash.runtime import LiteRTRunner
        from parity.run_settings import current

        settings = current()
        self.name = name
        self.runner = LiteRTRunner(
            model_path, use_xnnpack=settings.litert_xnnpack, num_threads=settings.litert_threads
        )

    def prefill(self, token_ids: Sequence[int]) -> Step:
        self.runner.reset()
        logits = self.runner.prefill(list(token_ids))
        if logits is None:
            raise ValueError(
                f"{self.runner.model_path} has no prefill logits; convert it with"
                " output_logits_on_prefill=True (edge_flash.convert does by default)"
            )
        return self.step_after_prefill(logits, len(token_ids))

    def step_after_prefill(self, logits, rows: int) -> Step:
        """The Step of a prefill that returned ``logits`` (T, V): with cache slots 0..rows-1."""
        kv = [
            (torch.from_numpy(k[0, :rows]).to(torch.float64),
             torch.from_numpy(v[0, :rows]).to(torch.float64))
            for k, v in self.runner.kv_cache()
        ]  # fmt: skip
        return Step(logits=torch.from_numpy(logits).to(torch.float64), kv=kv)

    def decode(self, token_id: int) -> Step:
        logits = self.runner.decode(int(token_id))  # (V,)
        return Step(logits=torch.from_numpy(logits).to(torch.float64).unsqueeze(0))


def load_hf_model(checkpoint) -> torch.nn.Module:
    """The transformers model of an HF checkpoint directory: fp32, eager attention, eval."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        str(checkpoint), dtype=torch.float32, attn_implementation="eager"
    )
    return model.eval()


def build_reauthored(
    checkpoint, builder: str, kv_cache_max_len: int, family: str | None = None
) -> torch.nn.Module:
    """The litert-torch model of a checkpoint, standard attention, mask cache of size S.

    Args:
      builder: "smollm2" (``edge_flash.smollm.build_model_v2``), "generic"
        (``edge_flash.build_model``) or "family" (``edge_flash.build_model`` with
        ``family``: litert-torch's own module for it).

    Raises:
      ValueError: unknown builder.
    """
    import edge_flash

    if builder == "smollm2":
        return edge_flash.smollm.build_model_v2(checkpoint, mask_cache_size=kv_cache_max_len)
    if builder == "generic":
        return edge_flash.build_model(checkpoint, mask_cache_size=kv_cache_max_len)
    if builder == "family":
        return edge_flash.build_model(checkpoint, mask_cache_size=kv_cache_max_len, family=family)
    raise ValueError(f"builder ({builder!r}) must be 'smollm2', 'generic' or 'family'")


def route_attention(model: torch.nn.Module, fn: Callable, options: Mapping[str, int]):
    """Routes every attention layer of ``model`` to ``fn`` with the options it accepts."""
    import edge_flash

    return edge_flash.use_attention(model, fn, **accepted_options(fn, options))
