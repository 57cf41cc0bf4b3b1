"""Running converted decoder models in LiteRT (ai-edge-litert), with an external KV cache.

``LiteRTRunner`` loads a ``.tflite`` written by ``edge_flash.convert`` (or
litert-torch's converter): signatures ``prefill_<T>`` (or ``prefill``) and
``decode``, inputs ``tokens``, ``input_pos``, ``kv_cache_k_<i>`` /
``kv_cache_v_<i>``, outputs ``logits`` and the updated cache. It keeps the
cache between calls, pads a prompt to the shortest prefill signature that fits
(padded rows write cache slots past the prompt, which decode overwrites before
any query can see them), and greedy-generates. XNNPACK is on by default, as on
device.

``tflite_op_counts`` counts the operators of each signature of a model file.
"""

from __future__ import annotations

import collections
import os
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

_PREFILL_NAME = re.compile(r"^prefill(?:_(\d+))?$")
_KV_INPUT = re.compile(r"^kv_cache_([kv])_(\d+)$")


class LiteRTModelError(ValueError):
    """A model file is missing, corrupt or not a decoder with prefill/decode signatures."""


class LiteRTInputError(ValueError):
    """Tokens that the model's signatures or KV cache cannot take."""


class LiteRTRunner:
    """Prefill / decode / greedy generation of one converted model in LiteRT.

    Args:
      model_path: the .tflite file.
      use_xnnpack: apply LiteRT's default XNNPACK delegate (default, as on device);
        False runs the builtin kernels (about 40x slower at T = 2048).
      num_threads: interpreter threads (None: LiteRT's default).

    Raises:
      LiteRTModelError: missing or corrupt file, or no prefill/decode signature.
    """

    def __init__(self, model_path: os.PathLike, *, use_xnnpack: bool = True, num_threads=None):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise LiteRTModelError(f"model_path '{self.model_path}' does not exist")
        resolver = (
            OpResolverType.AUTO
            if use_xnnpack
            else (OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        )
        try:
            self._interpreter = Interpreter(
                model_path=str(self.model_path),
                num_threads=num_threads,
                experimental_op_resolver_type=resolver,
            )
        except (ValueError, RuntimeError) as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error)
            raise LiteRTModelError(
                f"model_path '{self.model_path}' is not a valid TFLite model: {first}"
            ) from None
        self._signatures = self._interpreter.get_signature_list()
        self.prefill_signatures = _prefill_signatures(self._signatures, self.model_path)
        if "decode" not in self._signatures:
            raise LiteRTModelError(f"'{self.model_path}' has no 'decode' signature")
        self._kv_names, self._kv_shapes = self._kv_layout()
        self.kv_cache_max_len = self._kv_shapes[self._kv_names[0]][1]
        decode_outputs = self._interpreter.get_signature_runner("decode").get_output_details()
        self.vocab_size = int(decode_outputs["logits"]["shape"][-1])
        self._runners = {}
        self.reset()

    @property
    def max_prefill_len(self) -> int:
        return max(self.prefill_signatures)

    def reset(self) -> None:
        """Empties the KV cache; the next prefill starts at position 0."""
        self._kv = {name: np.zeros(shape, np.float32) for name, shape in self._kv_shapes.items()}
        self.position = 0

    def kv_cache(self) -> List[Tuple[np.ndarray, np.ndarray]]:
        """Copies of the cache per layer: (k, v), each (1, kv_cache_max_len, G, H)."""
        layers = len(self._kv_names) // 2
        return [
            (self._kv[f"kv_cache_k_{i}"].copy(), self._kv[f"kv_cache_v_{i}"].copy())
            for i in range(layers)
        ]

    def prefill(self, tokens: Sequence[int]) -> Optional[np.ndarray]:
        """Runs the prompt from the current position; returns logits (T, vocab) float32.

        Uses the shortest prefill signature with at least ``len(tokens)`` rows.
        Returns None if the model was converted without prefill logits.

        Raises:
          LiteRTInputError: empty prompt, prompt longer than the longest prefill
            signature, or padded prompt past the KV cache.
        """
        tokens = _as_token_list(tokens, self.vocab_size)
        seq_len = len(tokens)
        fitting = [length for length in self.prefill_signatures if length >= seq_len]
        if not fitting:
            raise LiteRTInputError(
                f"prompt has {seq_len} tokens; the longest prefill signature of"
                f" '{self.model_path.name}' takes {self.max_prefill_len}"
                f" ({self.prefill_signatures[self.max_prefill_len]})"
            )
        sig_len = min(fitting)
        self._check_room(sig_len, f"prefill of {seq_len} tokens (padded to {sig_len})")
        padded = np.zeros((1, sig_len), np.int32)
        padded[0, :seq_len] = tokens
        outputs = self._run(self.prefill_signatures[sig_len], padded, sig_len)
        self.position += seq_len
        logits = outputs.get("logits")
        return None if logits is None else logits[0, :seq_len].copy()

    def decode(self, token: int) -> np.ndarray:
        """Runs one token at the current position; returns its logits (vocab,) float32.

        Raises:
          LiteRTInputError: if the KV cache is full.
        """
        (token,) = _as_token_list([token], self.vocab_size)
        self._check_room(1, "decode")
        outputs = self._run("decode", np.array([[token]], np.int32), 1)
        self.position += 1
        return outputs["logits"][0, 0].copy()

    def generate(
        self, prompt: Sequence[int], max_new_tokens: int, stop_token_ids: Sequence[int] = ()
    ) -> List[int]:
        """Greedy continuation of ``prompt`` from an empty cache: the new token ids.

        Stops after ``max_new_tokens`` or at a stop token (included).
        """
        prompt = _as_token_list(prompt, self.vocab_size)
        self.reset()
        logits = self.prefill(prompt)
        if logits is None:  # No prefill logits: re-run the last prompt token as a decode.
            self.reset()
            if len(prompt) > 1:
                self.prefill(prompt[:-1])
            last = self.decode(prompt[-1])
        else:
            last = logits[-1]
        generated = []
        for step in range(max_new_tokens):
            token = int(np.argmax(last))
            generated.append(token)
            if token in stop_token_ids or step == max_new_tokens - 1:
                break
            last = self.decode(token)
        return generated

    def _run(self, signature: str, tokens: np.ndarray, sig_len: int) -> Dict[str, np.ndarray]:
        runner = self._runners.get(signature)
        if runner is None:
            runner = self._runners[signature] = self._interpreter.get_signature_runner(signature)
        input_pos = np.arange(self.position, self.position + sig_len, dtype=np.int32)
        outputs = runner(tokens=tokens, input_pos=input_pos, **self._kv)
        for name in self._kv_names:
            self._kv[name] = outputs[name]
        return outputs

    def _check_room(self, rows: int, what: str) -> None:
        if self.position + rows > self.kv_cache_max_len:
            raise LiteRTInputError(
                f"{what} at position {self.position} needs {self.position + rows} KV slots;"
                f" '{self.model_path.name}' has kv_cache_max_len {self.kv_cache_max_len}"
            )

    def _kv_layout(self):
        details = self._interpreter.get_signature_runner("decode").get_input_details()
        extra = sorted(
            set(details) - {"tokens", "input_pos"} - set(filter(_KV_INPUT.match, details))
        )
        if extra:
            raise LiteRTModelError(
                f"'{self.model_path}' decode takes inputs {extra}; only tokens, input_pos and"
                " kv_cache_* are supported (convert without mask_as_input / LoRA)"
            )
        names = sorted(filter(_KV_INPUT.match, details), key=_kv_sort_key)
        if not names:
            raise LiteRTModelError(f"'{self.model_path}' has no kv_cache_* inputs")
        return names, {name: tuple(details[name]["shape"]) for name in names}


def tflite_op_counts(model_path: os.PathLike) -> Dict[str, collections.Counter]:
    """Operators per signature subgraph of a .tflite: {signature: Counter(op name)}.

    Composite ops (``STABLEHLO_COMPOSITE``) count once; their decomposition
    subgraphs are listed under their own names (e.g. ``odml.rms_norm.impl``).
    """
    from ai_edge_litert import schema_py_generated as schema

    buffer = Path(model_path).read_bytes()
    model = schema.Model.GetRootAsModel(buffer, 0)
    builtin_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if k.isupper()}
    op_names = []
    for index in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(index)
        name = builtin_names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "?")
        op_names.append(f"CUSTOM:{code.CustomCode().decode()}" if name == "CUSTOM" else name)
    signature_of = {
        model.SignatureDefs(i).SubgraphIndex(): model.SignatureDefs(i).SignatureKey().decode()
        for i in range(model.SignatureDefsLength())
    }
    counts = {}
    for index in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(index)
        name = signature_of.get(index) or (subgraph.Name() or b"").decode() or f"subgraph_{index}"
        counts[name] = collections.Counter(
            op_names[subgraph.Operators(j).OpcodeIndex()] for j in range(subgraph.OperatorsLength())
        )
    return counts


def _prefill_signatures(signatures: dict, path: Path) -> Dict[int, str]:
    """{prefill length: signature name} from names ``prefill_<T>``."""
    found = {}
    for name in signatures:
        match = _PREFILL_NAME.match(name)
        if match is None:
            continue
        if not match.group(1):
            raise LiteRTModelError(
                f"'{path}' has a prefill signature without a length ({name!r});"
                " expected prefill_<T>"
            )
        found[int(match.group(1))] = name
    if not found:
        raise LiteRTModelError(f"'{path}' has no prefill signature (found {sorted(signatures)})")
    return found


def _kv_sort_key(name: str):
    kind, layer = _KV_INPUT.match(name).groups()
    return int(layer), kind


def _as_token_list(tokens: Sequence[int], vocab_size: int) -> List[int]:
    values = np.asarray(tokens).reshape(-1)
    if values.size == 0:
        raise LiteRTInputError("tokens is empty; expected at least one token id")
    if not np.issubdtype(values.dtype, np.integer):
        raise LiteRTInputError(f"tokens ({values.dtype}) must be integer token ids")
    bad = values[(values < 0) | (values >= vocab_size)]
    if bad.size:
        raise LiteRTInputError(f"token id {int(bad[0])} is outside the vocab [0, {vocab_size})")
    return [int(v) for v in values]
