"""Running converted decoder models in LiteRT (ai-edge-litert), with an external KV cache.

``LiteRTRunner`` loads a ``.tflite`` written by ``edge_flash.convert`` (or
litert-torch's converter): signatures ``prefill_<T>`` (or ``prefill``) and
``decode``, inputs ``tokens``, ``input_pos``, ``kv_cache_k_<i>`` /
``kv_cache_v_<i>``, outputs ``logits`` and the updated cache. It keeps the
cache between calls, pads a prompt to the shortest prefill signature that fits
(padded rows write cache slots past the prompt, which decode overwrites before
any query can see them), and greedy-generates. XNNPACK is on by default, as on
device.

``chunk_plan`` is LiteRT-LM's rule for a prompt longer than one signature
(the largest signature while the rest exceeds it, then the smallest that fits
the rest, padded); ``LiteRTRunner.prefill_chunked`` runs a prompt that way.

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


def chunk_plan(prompt_len: int, signature_lengths: Sequence[int]) -> List[int]:
    """Chunk sizes (tokens) of a ``prompt_len``-token prefill, LiteRT-LM's rule.

    While more than the largest signature's rows remain, a chunk of that many
    tokens; the rest (1 to largest tokens) is the last chunk, run through the
    smallest signature that fits it and padded to it
    (``smallest_fitting_signature``). E.g. 88 tokens with signatures (5, 7):
    twelve chunks of 7, then 4 tokens padded to 5. A multiple of the largest
    ends with a full chunk, never an empty one. The sizes sum to ``prompt_len``.

    Raises:
      TypeError: ``prompt_len`` or a signature length is not an int.
      ValueError: ``prompt_len`` < 1, no signature lengths, or one < 1.
    """
    if isinstance(prompt_len, bool) or not isinstance(prompt_len, (int, np.integer)):
        raise TypeError(f"prompt_len ({prompt_len!r}) must be an int")
    if prompt_len < 1:
        raise ValueError(f"prompt_len ({prompt_len}) must be >= 1")
    lengths = _signature_lengths(signature_lengths)
    largest, plan, left = lengths[-1], [], int(prompt_len)
    while left > largest:
        plan.append(largest)
        left -= largest
    return plan + [left]


def smallest_fitting_signature(rows: int, signature_lengths: Sequence[int]) -> int:
    """The shortest of ``signature_lengths`` with at least ``rows`` rows.

    Raises:
      ValueError: no signature has that many rows (or bad lengths, as ``chunk_plan``).
    """
    lengths = _signature_lengths(signature_lengths)
    fitting = [length for length in lengths if length >= rows]
    if not fitting:
        raise ValueError(f"rows ({rows}) exceeds every signature length {lengths}")
    return fitting[0]


def _signature_lengths(signature_lengths: Sequence[int]) -> List[int]:
    """Sorted distinct positive ints, or TypeError / ValueError naming the argument."""
    if isinstance(signature_lengths, (str, bytes)) or not hasattr(signature_lengths, "__iter__"):
        raise TypeError(f"signature_lengths ({signature_lengths!r}) must be a sequence of ints")
    lengths = list(signature_lengths)
    if not lengths:
        raise ValueError("signature_lengths is empty; expected at least one prefill length")
    for length in lengths:
        if isinstance(length, bool) or not isinstance(length, (int, np.integer)):
            raise TypeError(f"signature_lengths ({lengths}) must hold ints, not {length!r}")
        if length < 1:
            raise ValueError(f"signature_lengths ({lengths}) must hold lengths >= 1")
    return sorted({int(length) for length in lengths})


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

    def prefill(
        self, tokens: Sequence[int], signature_len: Optional[int] = None
    ) -> Optional[np.ndarray]:
        """Runs the prompt from the current position; returns logits (T, vocab) float32.

        Uses prefill signature ``prefill_<signature_len>``, by default the
        shortest with at least ``len(tokens)`` rows; the prompt is padded to it.
        Returns None if the model was converted without prefill logits.

        Raises:
          LiteRTInputError: empty prompt, prompt longer than the longest prefill
            signature (or than ``signature_len``), no such signature, or padded
            prompt past the KV cache.
        """
        tokens = _as_token_list(tokens, self.vocab_size)
        seq_len = len(tokens)
        if signature_len is None:
            fitting = [length for length in self.prefill_signatures if length >= seq_len]
            if not fitting:
                raise LiteRTInputError(
                    f"prompt has {seq_len} tokens; the longest prefill signature of"
                    f" '{self.model_path.name}' takes {self.max_prefill_len}"
                    f" ({self.prefill_signatures[self.max_prefill_len]})"
                )
            signature_len = min(fitting)
        self._check_signatures([signature_len], "signature_len")
        if seq_len > signature_len:
            raise LiteRTInputError(
                f"prompt has {seq_len} tokens; signature_len ({signature_len}) takes fewer"
            )
        self._check_room(signature_len, f"prefill of {seq_len} tokens (padded to {signature_len})")
        return self._prefill_rows(tokens, signature_len)

    def prefill_chunked(
        self, tokens: Sequence[int], signature_lengths: Optional[Sequence[int]] = None
    ) -> np.ndarray:
        """Prefills the prompt in chunks as LiteRT-LM does; returns logits (T, vocab) float32.

        The chunks follow ``chunk_plan(len(tokens), signature_lengths)`` (default:
        every prefill signature of the model), each run from the current position
        through its signature, the cache carried from chunk to chunk; the last
        chunk is padded. The rows are the logits of every prompt token, in order.

        Raises:
          LiteRTInputError: empty prompt, a length in ``signature_lengths`` that is
            not a prefill signature of the model, or the padded last chunk past the
            KV cache (checked before any chunk runs, so the cache is untouched).
          LiteRTModelError: the model was converted without prefill logits.
        """
        tokens = _as_token_list(tokens, self.vocab_size)
        if signature_lengths is None:
            signature_lengths = sorted(self.prefill_signatures)
        try:
            plan = chunk_plan(len(tokens), signature_lengths)
        except (TypeError, ValueError) as error:
            raise LiteRTInputError(str(error)) from None
        self._check_signatures(signature_lengths, "signature_lengths")
        last_sig = smallest_fitting_signature(plan[-1], signature_lengths)
        padded = sum(plan[:-1]) + last_sig
        self._check_room(padded, f"chunked prefill of {len(tokens)} tokens in chunks {plan}")
        rows, start = [], 0
        for size in plan:
            logits = self._prefill_rows(
                tokens[start : start + size], smallest_fitting_signature(size, signature_lengths)
            )
            if logits is None:
                raise LiteRTModelError(
                    f"'{self.model_path.name}' has no prefill logits; convert it with"
                    " output_logits_on_prefill=True (edge_flash.convert does by default)"
                )
            rows.append(logits)
            start += size
        return np.concatenate(rows)  # (T, vocab)

    def _prefill_rows(self, tokens: List[int], signature_len: int) -> Optional[np.ndarray]:
        """Runs checked ``tokens`` padded to ``signature_len`` rows; their logits or None."""
        padded = np.zeros((1, signature_len), np.int32)
        padded[0, : len(tokens)] = tokens
        outputs = self._run(self.prefill_signatures[signature_len], padded, signature_len)
        self.position += len(tokens)
        logits = outputs.get("logits")
        return None if logits is None else logits[0, : len(tokens)].copy()

    def _check_signatures(self, lengths: Sequence[int], argument: str) -> None:
        missing = sorted(set(lengths) - set(self.prefill_signatures))
        if missing:
            raise LiteRTInputError(
                f"{argument} ({list(lengths)}): '{self.model_path.name}' has no prefill"
                f" signature of {missing} rows (it has {sorted(self.prefill_signatures)})"
            )

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
