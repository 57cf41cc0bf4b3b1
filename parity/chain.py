"""One zoo model's legs and their runs on its prompts, built lazily and computed once.

``Chain`` builds a leg only when a check first needs it, runs it on every
prompt of the model at once (the oracle first, so the other legs can be fed its
tokens), keeps the ``LegRun``s and drops the model. ``TFLiteStore`` converts
each variant (standard, flash) of a model at most once per store, keyed by
everything that determines the file, so a session converts SmolLM2 exactly
twice however many checks use it.

``python -m parity.chain --model smollm2-135m [--tflite]`` prints the max logit
difference of every leg pair and whether greedy generation was identical
(the numbers of the closing note). ``--tflite-cache DIR`` (env
``PARITY_TFLITE_CACHE``) keeps the converted models. Exit status: 0 printed,
2 unusable input (an unknown ``--model``); it checks nothing, so never 1.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from edge_flash.cli import ArgumentParser
from parity import legs as L
from parity.file_lock import exclusive_lock
from parity.model_builder import ModelBuilder
from parity.tflite_cache import explicit_directory, mark_used
from parity.zoo import PreparedModel

LegFactory = Callable[[], L.Leg]
# One line per conversion a TFLiteStore made, in the store's directory.
CONVERSION_LOG = "conversions.jsonl"
# What a converted file also depends on: the exporter, the converter, their runtime.
CONVERTER_PACKAGES = ("torch", "litert-torch", "ai-edge-litert", "tensorflow-cpu")


class TFLiteStore:
    """Converted models under ``directory``, one per (model, variant, kernel, builder, sizes) key.

    ``model_builder`` (``parity.model_builder``) builds the models converted;
    None means the zoo's own builder. A file already there is reused once it
    opens as TFLite (``tflite_problem``, checked once per store); an unusable one
    is moved aside to ``<name>.corrupt`` and converted again, with one line on
    stderr. Conversions land by rename (``convert_to_tflite``), never half-written.
    Processes sharing ``directory`` (pytest-xdist workers) convert each file once
    between them: a lock file per target serialises the check and conversion.
    """

    def __init__(
        self,
        directory: Path,
        attention_impl: Callable,
        attention_impl_spec: str,
        model_builder: ModelBuilder | None = None,
    ):
        self.directory = Path(directory)
        self.attention_impl = attention_impl
        self.attention_impl_spec = attention_impl_spec
        self.model_builder = model_builder
        self.conversions: dict[str, float] = {}  # file name -> seconds, this store only
        self._checked: set[Path] = set()  # files of this store known to open

    def path(self, prepared: PreparedModel, variant: str, quantize: str = "none") -> Path:
        """The .tflite of ``variant`` ("std" or "flash") converted with litert-torch's
        ``quantize`` recipe (``edge_flash.convert.QUANTIZE_CHOICES``), converting it if
        not there yet.

        Raises:
          ValueError: unknown variant or recipe.
        """
        from edge_flash.convert import QUANTIZE_CHOICES

        if variant not in ("std", "flash"):
            raise ValueError(f"variant ({variant!r}) must be 'std' or 'flash'")
        if quantize not in QUANTIZE_CHOICES:
            raise ValueError(f"quantize ({quantize!r}) must be one of {QUANTIZE_CHOICES}")
        target = self.target(prepared, variant, quantize)
        # Other processes (pytest-xdist workers) may share the directory: the first
        # to need this file converts it, the others wait here and then reuse it.
        lock = self.lock_path(target)
        with exclusive_lock(
            lock, f"parity.chain: waiting for another process to convert {target.name}"
        ):
            self._check_or_convert(prepared, variant, quantize, target)
        return target

    def target(self, prepared: PreparedModel, variant: str, quantize: str = "none") -> Path:
        """Where ``path`` keeps that file (nothing is converted or checked)."""
        stem = f"{prepared.zoo.name}-{variant}" + ("" if quantize == "none" else f"-{quantize}")
        return self.directory / f"{stem}-{self._key(prepared, variant, quantize)}.tflite"

    @staticmethod
    def lock_path(target: Path) -> Path:
        """The lock file that serialises checking and converting ``target``."""
        return target.with_name(target.name + ".lock")

    def _check_or_convert(self, prepared, variant: str, quantize: str, target: Path) -> None:
        """Moves an unusable cached ``target`` aside, then converts it if it is not there."""
        if target.is_file() and target not in self._checked:
            problem = tflite_problem(target)
            if problem is not None:
                aside = target.with_name(target.name + ".corrupt")
                target.replace(aside)
                print(f"parity.chain: cached {target} is unusable ({problem}); moved to"
                      f" {aside.name}, converting again", file=sys.stderr, flush=True)  # fmt: skip
        if not target.is_file():
            self._convert(prepared, variant, quantize, target)
        else:
            mark_used(target)  # the recency the default cache is pruned by
        self._checked.add(target)

    def _key(self, prepared: PreparedModel, variant: str, quantize: str) -> str:
        zoo = prepared.zoo
        options = L.accepted_options(self.attention_impl, zoo.kernel_options)
        kernel = self.attention_impl_spec if variant == "flash" else "standard"
        sizes = f"prefill={zoo.prefill_seq_len} kv={zoo.kv_cache_max_len}"
        if zoo.chunk_seq_lens:
            sizes += f" chunks={sorted(zoo.chunk_seq_lens)}"
        text = f"{prepared.model_hash} {variant} {kernel} {sorted(options.items())} {sizes}"
        text += f" {_sources_hash()} {_kernel_source_hash(self.attention_impl)}"
        text += f" {_converter_versions()} {_conversion_inputs_hash()}"
        if self.model_builder is not None:
            text += f" builder={self.model_builder.spec} {self.model_builder.source_hash()}"
        if quantize != "none":  # the fp32 files keep the keys they had before recipes
            text += f" quantize={quantize}"
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def _convert(self, prepared, variant: str, quantize: str, target: Path) -> None:
        from edge_flash.convert import convert_to_tflite

        zoo = prepared.zoo
        model = build_candidate(prepared, self.model_builder)
        if variant == "flash":
            L.route_attention(model, self.attention_impl, zoo.kernel_options)
        started = time.perf_counter()
        # The one-shot signature and the chunked legs' signatures, in one file.
        lengths = sorted({zoo.prefill_seq_len, *zoo.chunk_seq_lens})
        convert_to_tflite(model, target, lengths, zoo.kv_cache_max_len, quantize)
        self.conversions[target.name] = time.perf_counter() - started
        self._log_conversion(target.name, self.conversions[target.name])

    def _log_conversion(self, name: str, seconds: float) -> None:
        """Appends ``{file, seconds, pid, finished}`` to ``<directory>/conversions.jsonl``.

        The record of who converted what, across the processes sharing the
        directory (one short line, one append: lines of two processes never mix).
        """
        line = json.dumps(
            {
                "file": name,
                "seconds": round(seconds, 3),
                "pid": os.getpid(),
                "finished": time.time(),
            }
        )
        with (self.directory / CONVERSION_LOG).open("a", encoding="utf-8") as log:
            log.write(line + "\n")


_TFLITE_IDENTIFIER = b"TFL3"  # flatbuffer file identifier, bytes 4..8 of every .tflite


def tflite_problem(path: Path) -> str | None:
    """Why the .tflite at ``path`` cannot be used (not TFLite, cut short), or None if it opens."""
    from ai_edge_litert.interpreter import Interpreter

    with Path(path).open("rb") as file:
        head = file.read(8)
    if head[4:8] != _TFLITE_IDENTIFIER:
        return f"bytes 4..8 are {head[4:8]!r}, not the TFLite identifier {_TFLITE_IDENTIFIER!r}"
    try:
        Interpreter(model_path=str(path))  # verifies the flatbuffer: a cut file fails here
    except (ValueError, RuntimeError) as error:
        lines = str(error).strip().splitlines()
        return f"LiteRT cannot open it: {lines[0] if lines else type(error).__name__}"
    return None


def build_candidate(prepared: PreparedModel, model_builder: ModelBuilder | None):
    """The re-authored model under test: the user's builder's, else the zoo builder's."""
    zoo = prepared.zoo
    if model_builder is None:
        return L.build_reauthored(
            prepared.checkpoint, zoo.builder, zoo.kv_cache_max_len, zoo.family
        )
    return model_builder.build(prepared.checkpoint, zoo.kv_cache_max_len)


def _kernel_source_hash(fn: Callable) -> str:
    """Hash of the file defining the attention function (a candidate may be outside edge_flash)."""
    import inspect

    try:
        return hashlib.sha256(Path(inspect.getsourcefile(fn)).read_bytes()).hexdigest()[:12]
    except (TypeError, OSError):
        return "no-source"


@functools.cache
def _converter_versions() -> str:
    """The versions of the packages that make a file: a kept file goes stale with them."""
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for package in CONVERTER_PACKAGES:
        try:
            found.append(f"{package}={version(package)}")
        except PackageNotFoundError:
            found.append(f"{package}=absent")
    return " ".join(found)


@functools.cache
def _conversion_inputs_hash() -> str:
    """Hash of the parity modules that build and route the models converted (this one,
    ``parity.legs``, ``parity.model_builder``): a kept file goes stale with them too."""
    digest = hashlib.sha256()
    for name in ("chain.py", "legs.py", "model_builder.py"):
        digest.update((Path(__file__).parent / name).read_bytes())
    return digest.hexdigest()[:12]


def _sources_hash() -> str:
    """Hash of edge_flash's sources: a cache directory kept across sessions goes stale with them."""
    import edge_flash

    digest = hashlib.sha256()
    for path in sorted(Path(edge_flash.__file__).parent.glob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


class Chain:
    """The legs of one prepared zoo model (see the module docstring).

    Args:
      prepared: the model and its prompts.
      attention_impl: the attention function of the flash legs.
      tflite_store: converts the TFLite legs' models; None means no TFLite legs.
      factories: leg name -> factory, replacing the default for that leg (the
        harness's own tests inject broken legs this way).
      reuse: another chain of the same prepared model whose finished runs are
        taken over, except those of the legs in ``factories`` and, if its model
        builder differs, those of the legs the builder makes.
      model_builder: builds the re-authored legs' model (``parity.model_builder``);
        None means the zoo's builder. The oracle always uses the zoo's.
    """

    def __init__(
        self,
        prepared: PreparedModel,
        attention_impl: Callable,
        tflite_store: TFLiteStore | None = None,
        factories: Mapping[str, LegFactory] | None = None,
        reuse: Chain | None = None,
        model_builder: ModelBuilder | None = None,
    ):
        self.prepared = prepared
        self.model_builder = model_builder
        self.attention_impl = attention_impl
        self.tflite_store = tflite_store
        self.factories = {**self._default_factories(), **(factories or {})}
        self._runs: dict[str, dict[str, L.LegRun]] = {}
        self._spreads: dict = {}
        if reuse is not None:
            if reuse.prepared is not prepared:
                raise ValueError("reuse must be a chain of the same PreparedModel")
            replaced = set(factories or {})
            if model_builder is not reuse.model_builder:
                replaced |= {L.STD, L.FLASH, *L.TFLITE_LEGS, *L.CHUNKED_LEGS, *L.QUANTIZED_LEGS}
            self._runs = {leg: runs for leg, runs in reuse._runs.items() if leg not in replaced}
            if L.ORACLE not in replaced:
                self._spreads = reuse._spreads

    def spread(self, prompt: str, quantize: str = "none"):
        """The error spread (``parity.error_spread``) on ``prompt`` of the float64 oracle,
        or with ``quantize`` a recipe of ``L.QUANTIZED_ORACLE_OF``, of that recipe's
        quantized oracle (``parity.quant_emulation``); measured once each."""
        key = (prompt, quantize)
        if key not in self._spreads:
            from parity.error_spread import measure_spread
            from parity.spread_cache import load_spread, save_spread
            from parity.tolerances import MODEL_FP32

            leg = L.ORACLE if quantize == "none" else L.QUANTIZED_ORACLE_OF[quantize]
            run, zoo = self._leg_runs(leg)[prompt], self.prepared.zoo
            arguments = {"kv_cache_max_len": zoo.kv_cache_max_len, "z": MODEL_FP32.z,
                         "prefill_chunk": zoo.spread_prefill_chunk}  # fmt: skip
            kept = self._kept_spread_path(run, quantize, arguments)
            spread = None if kept is None else load_spread(kept)
            if spread is None:
                model = (self._oracle_model() if quantize == "none"
                         else self.quantized_oracle_model(quantize))  # fmt: skip
                spread = measure_spread(model, run, **arguments)
                if kept is not None:
                    save_spread(kept, spread)
            self._spreads[key] = spread
        return self._spreads[key]

    def _kept_spread_path(self, run, quantize: str, arguments: dict) -> Path | None:
        """Where the store's directory keeps this spread (``parity.spread_cache``); None
        without a store (nothing is kept)."""
        from parity import run_settings
        from parity.error_spread import SAMPLES
        from parity.spread_cache import spread_key

        if self.tflite_store is None:
            return None
        zoo = self.prepared.zoo
        identity = f"{self.prepared.model_hash} {zoo.builder} {zoo.family} quantize={quantize}"
        if quantize != "none":  # the quantized oracle's rows follow LiteRT's kernel
            identity += f" xnnpack={run_settings.current().litert_xnnpack}"
        key = spread_key(run, identity, samples=SAMPLES, seed=0, **arguments)
        return self.tflite_store.directory / "spreads" / f"{zoo.name}-{key}.pt"

    def _oracle_model(self):
        from parity.fp64_model import to_float64

        return to_float64(self._zoo_reauthored())

    def quantized_oracle_model(self, quantize: str):
        """The float64 oracle computing ``quantize``'s network with the row quantization of
        the kernel LiteRT runs here (``parity.run_settings``: XNNPACK or builtin)."""
        from parity import run_settings
        from parity.quant_emulation import emulate_recipe, row_scheme

        if quantize not in L.QUANTIZED_ORACLE_OF:
            raise ValueError(
                f"recipe {quantize!r} has no quantized oracle; those with one:"
                f" {sorted(L.QUANTIZED_ORACLE_OF)}"
            )
        scheme = row_scheme(run_settings.current().litert_xnnpack, quantize)
        return emulate_recipe(self._oracle_model(), quantize, scheme)

    def _zoo_reauthored(self):
        """The zoo builder's model: the oracle's, independent of the candidate builder."""
        zoo = self.prepared.zoo
        return L.build_reauthored(
            self.prepared.checkpoint, zoo.builder, zoo.kv_cache_max_len, zoo.family
        )

    def _quantized_oracle_leg(self, quantize: str, name: str) -> L.ReauthoredLeg:
        model = self.quantized_oracle_model(quantize)
        return L.ReauthoredLeg(model, self.prepared.zoo.kv_cache_max_len, name)

    def _candidate(self):
        return build_candidate(self.prepared, self.model_builder)

    def runs(self, prompt: str, legs: Iterable[str]) -> dict[str, L.LegRun]:
        """Runs of ``legs`` on ``prompt``, plus what their checks and diagnoses read: the
        oracle and, for TFLite legs, the PyTorch model each was converted from."""
        wanted = {L.ORACLE, *legs}
        # A TFLite leg's diagnosis searches the layers of the PyTorch model it came from.
        wanted |= {L.SOURCE_OF[leg] for leg in wanted if leg in L.SOURCE_OF}
        return {leg: self._leg_runs(leg)[prompt] for leg in _ordered(wanted)}

    def _leg_runs(self, leg: str) -> dict[str, L.LegRun]:
        if leg not in self._runs:
            zoo = self.prepared.zoo
            oracle = None if leg == L.ORACLE else self._leg_runs(L.ORACLE)
            instance = self.factories[leg]()
            self._runs[leg] = {
                name: L.run_leg(
                    instance,
                    ids,
                    zoo.max_new_tokens,
                    None if oracle is None else oracle[name].chosen,
                )
                for name, ids in self.prepared.prompt_ids.items()
            }
        return self._runs[leg]

    def _default_factories(self) -> dict[str, LegFactory]:
        zoo, checkpoint = self.prepared.zoo, self.prepared.checkpoint
        length = zoo.kv_cache_max_len
        reauthored = self._candidate

        def tflite(variant: str, name: str, chunked: bool = False, quantize="none") -> LegFactory:
            def factory():
                if self.tflite_store is None:
                    raise ValueError(f"leg {name} needs a TFLiteStore; this chain has none")
                path = self.tflite_store.path(self.prepared, variant, quantize)
                if chunked:
                    return ChunkedTFLiteLeg(path, name, zoo.chunk_seq_lens)
                return L.TFLiteLeg(path, name)

            return factory

        def flash_model():
            return L.route_attention(reauthored(), self.attention_impl, zoo.kernel_options)

        from parity.chunked import ChunkedReauthoredLeg, ChunkedTFLiteLeg

        chunks = zoo.chunk_seq_lens
        return {
            L.HF: lambda: L.HFLeg(L.load_hf_model(checkpoint)),
            L.STD: lambda: L.ReauthoredLeg(reauthored(), length, L.STD),
            L.FLASH: lambda: L.ReauthoredLeg(flash_model(), length, L.FLASH),
            L.ORACLE: lambda: L.ReauthoredLeg(self._oracle_model(), length, L.ORACLE),
            **{
                name: functools.partial(self._quantized_oracle_leg, quantize, name)
                for quantize, name in L.QUANTIZED_ORACLE_OF.items()
            },
            L.TFLITE_STD: tflite("std", L.TFLITE_STD),
            L.TFLITE_FLASH: tflite("flash", L.TFLITE_FLASH),
            L.STD_CHUNKED: lambda: ChunkedReauthoredLeg(
                reauthored(), length, L.STD_CHUNKED, chunks
            ),
            L.FLASH_CHUNKED: lambda: ChunkedReauthoredLeg(
                flash_model(), length, L.FLASH_CHUNKED, chunks
            ),
            L.TFLITE_STD_CHUNKED: tflite("std", L.TFLITE_STD_CHUNKED, chunked=True),
            L.TFLITE_FLASH_CHUNKED: tflite("flash", L.TFLITE_FLASH_CHUNKED, chunked=True),
            **{
                name: tflite(variant, name, quantize=quantize)
                for name, (variant, quantize) in L.QUANTIZED_OF.items()
            },
        }


def _ordered(legs: Iterable[str]) -> list:
    order = (L.ORACLE, *L.QUANTIZED_ORACLES) + L.ALL_LEGS + L.CHUNKED_LEGS + L.QUANTIZED_LEGS
    return sorted(legs, key=lambda leg: order.index(leg) if leg in order else len(order))


def pair_table(runs: Mapping[str, L.LegRun]) -> list:
    """Rows (leg a, leg b, max |logit diff| over prefill + decode rows, greedy agreement).

    Greedy agreement is the number of leading steps where a and b generate the
    same tokens. Legs other than the oracle were fed the oracle's tokens, so
    this is exact while both still agree with the oracle; if both leave it with
    the same token, their texts are known to agree only up to there ("N+").
    """
    names = _ordered(runs)
    rows = []
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            a, b = runs[first], runs[second]
            diff = max(
                float((a.prefill_logits - b.prefill_logits).abs().max()),
                float((a.step_logits - b.step_logits).abs().max()),
            )
            rows.append((first, second, diff, _greedy_agreement(runs, first, second)))
    return rows


def _greedy_agreement(runs: Mapping[str, L.LegRun], first: str, second: str) -> str:
    def leading(x: list, y: list) -> int:
        return next((s for s, (p, q) in enumerate(zip(x, y)) if p != q), min(len(x), len(y)))

    oracle = runs[L.ORACLE].chosen
    a, b = runs[first].chosen, runs[second].chosen
    steps = len(oracle)
    both = leading(a, b)
    with_oracle = min(leading(a, oracle), leading(b, oracle))
    if both <= with_oracle:
        return f"{both}/{steps}"
    return f"{with_oracle + 1}+/{steps}"


def build_parser() -> argparse.ArgumentParser:
    """The chain CLI's parser (both spellings of every flag; bad flags exit 2)."""
    from parity.zoo import ZOO

    parser = ArgumentParser(prog="python -m parity.chain", description=main.__doc__)
    parser.add_argument("--model", default="smollm2-135m", choices=[m.name for m in ZOO],
                        help="zoo model (default: smollm2-135m)")  # fmt: skip
    parser.add_argument("--tflite", action="store_true", help="include the TFLite legs")
    parser.add_argument(
        "--tflite-cache",
        default=explicit_directory(),
        help="keep converted models here (env PARITY_TFLITE_CACHE; default: a temp dir)",
    )
    return parser


def main(argv=None) -> int:
    """Prints the leg-pair table of one zoo model (default: SmolLM2), one block per prompt."""
    import edge_flash
    from parity.zoo import prepare, zoo_model

    args = build_parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="parity-chain-") as work:
        prepared = prepare(zoo_model(args.model), Path(work))
        cache = Path(args.tflite_cache) if args.tflite_cache else Path(work)
        cache.mkdir(parents=True, exist_ok=True)
        store = TFLiteStore(cache, edge_flash.flash_attention, "edge_flash:flash_attention")
        chain = Chain(prepared, edge_flash.flash_attention, store if args.tflite else None)
        legs = L.ALL_LEGS if args.tflite else L.PYTORCH_LEGS
        for prompt in prepared.prompt_ids:
            print(f"## {args.model} / {prompt}", flush=True)
            for first, second, diff, same in pair_table(chain.runs(prompt, legs)):
                print(f"{first:>17} vs {second:<17} max|logit diff| {diff:.3e}  greedy same {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
