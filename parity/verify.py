"""Verifies a re-authored model against Hugging Face and a float64 oracle (seed: verify_flash.py).

    python -m parity.verify --checkpoint_path PATH --prompts "What is a turboprop?" \\
        --max_new_tokens 50 [--use_flash_attention[=true|false|auto]] \\
        [--tflite | --tflite_path FILE] [--model-builder package.module:function]

Every multi-word flag also takes the other spelling (``--checkpoint-path``,
``--max-new-tokens``, ``--model_builder``, ...; ``edge_flash.cli``).

Without ``--checkpoint_path`` it verifies the shipped SmolLM2-135M-Instruct.
The model under test is ``edge_flash.build_model(PATH, use_flash_attention=...)``
(``--use_flash_attention`` alone means true, as in the seed; ``auto`` routes
flash for prefills of at least ``edge_flash.AUTO_FLASH_MIN_SEQ_LEN`` tokens);
the reference is the transformers model (fp32, eager attention); the oracle is
the re-authored standard model in float64 (``parity.fp64_model``). It prints
one PASSED or FAILED line, with the measured difference, for:

- ``verify with input IDs``: prefill logits of ``--input_ids`` at every
  position, against the oracle, within the allowance derived from the oracle's
  fp32 rounding spread (``parity.error_spread``; error model ``model-fp32-spread``
  of ``parity.tolerances``, the same for every leg);
- ``verify with prompts`` (one per prompt, chat template applied when the
  tokenizer has one): greedy generation of ``--max_new_tokens`` tokens, token
  ids identical to the oracle's (and so to each other's), and the logits of
  prefill and every decode step within the error model;
- ``verify TFLite with prompts`` (``--tflite``): the same for the model under
  test converted to TFLite and run in LiteRT, under the same error model;
  ``--tflite_path FILE`` runs a file the user converted instead (no conversion;
  ``parity.user_tflite`` checks that it fits the checkpoint);
- ``--model-builder package.module:function`` (``parity.model_builder``): the
  model under test is that builder's ``(checkpoint_path, kv_cache_max_len)``
  model, with ``edge_flash.flash_attention`` routed in by ``use_attention`` under
  ``--use_flash_attention`` (for ``auto``, with ``min_seq_q=AUTO_FLASH_MIN_SEQ_LEN``);
  the oracle is still ``edge_flash.build_model``'s;
- ``verify_reauthored_model``: all of the above.

Exit status: 0 all passed, 1 a check failed, 2 bad arguments or unusable input
(one line each; ``--verbose`` adds the full diagnosis or traceback).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import tempfile
from pathlib import Path

from edge_flash.cli import ArgumentParser
from parity import legs as L
from parity.checks import Judge, check_greedy, check_logits

DEFAULT_INPUT_IDS = (1, 2, 3, 4)


_FLASH_CHOICES = {"true": True, "false": False, "auto": "auto"}


def build_parser() -> argparse.ArgumentParser:
    """The verify CLI's parser (both spellings of every flag; bad flags exit 2)."""
    parser = ArgumentParser(prog="python -m parity.verify", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--checkpoint_path", default=None, help="HF checkpoint dir (default: SmolLM2)"
    )
    parser.add_argument("--prompts", nargs="+", default=["What is a turboprop?"],
                        help="prompts for greedy generation (chat template applied)")  # fmt: skip
    parser.add_argument("--max_new_tokens", type=int, default=50, help="tokens generated per prompt")
    parser.add_argument("--input_ids", type=int, nargs="+", default=list(DEFAULT_INPUT_IDS),
                        help="token ids whose prefill logits are checked")  # fmt: skip
    parser.add_argument(
        "--use_flash_attention", nargs="?", const="true", default="false", type=str.lower,
        choices=tuple(_FLASH_CHOICES),
        help="attention of the model under test: true (the flag alone), false, or auto",
    )  # fmt: skip
    parser.add_argument("--tflite", action="store_true", help="also convert and run in LiteRT")
    parser.add_argument(
        "--tflite_path", default=None, help="run this converted .tflite in LiteRT (no conversion)"
    )
    parser.add_argument(
        "--model-builder",
        "--model_builder",
        dest="model_builder",
        default=None,
        help="package.module:function (checkpoint_path, kv_cache_max_len) -> litert-torch decoder",
    )
    parser.add_argument("--verbose", action="store_true", help="full diagnosis / traceback")
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    """The parsed flags, ``use_flash_attention`` as True, False or "auto" (as build_model takes it).

    Exits 2 (argparse) on a bad flag or value.
    """
    args = build_parser().parse_args(argv)
    # "auto" counts as flash for the leg names: the model routes flash_attention in
    # (for prefills of at least AUTO_FLASH_MIN_SEQ_LEN tokens).
    args.use_flash_attention = _FLASH_CHOICES[args.use_flash_attention]
    return args


def _say(message: str) -> None:
    print(f"parity.verify: {message}", file=sys.stderr, flush=True)


def _prepare(args):
    """The PreparedModel of the checkpoint: prompts encoded, sizes for the KV cache."""
    import edge_flash
    from parity import zoo

    path = Path(args.checkpoint_path) if args.checkpoint_path else None
    if path is None:
        _say("no --checkpoint_path: using the shipped SmolLM2-135M-Instruct")
        path = edge_flash.shipped_smollm2_checkpoint()
    edge_flash.read_hf_config(path)  # one clear error for a missing or bad directory
    prompts = tuple(zoo.Prompt(f"prompt-{i}", text=text) for i, text in enumerate(args.prompts))
    tokenizer = zoo.load_tokenizer(edge_flash.loader.checkpoint_dir(path))
    vocab = zoo.vocab_size(path)
    ids = {p.name: zoo.encode_prompt(p, tokenizer, vocab) for p in prompts}
    bad = [i for i in args.input_ids if not 0 <= i < vocab]
    if bad:
        raise ValueError(f"--input_ids ({bad}) must be token ids in [0, {vocab}) of this checkpoint")
    ids["input-ids"] = list(args.input_ids)
    longest = max(len(v) for v in ids.values())
    prefill = 32 * math.ceil(longest / 32)
    kv = 64 * math.ceil((prefill + args.max_new_tokens) / 64)
    model = zoo.ZooModel(
        name="verify", marks=(), prompts=prompts, max_new_tokens=args.max_new_tokens,
        kv_cache_max_len=kv, prefill_seq_len=prefill, kernel_options={},
    )  # fmt: skip
    return zoo.PreparedModel(model, path, tokenizer, ids, zoo.checkpoint_hash(path))


def _model_under_test(prepared, args):
    """A factory of the model under test: the user's builder's, else ``edge_flash.build_model``."""
    import edge_flash
    from parity.model_builder import load_model_builder

    length = prepared.zoo.kv_cache_max_len
    if args.model_builder is None:
        return lambda: edge_flash.build_model(
            prepared.checkpoint, use_flash_attention=args.use_flash_attention, mask_cache_size=length
        )
    builder = load_model_builder(args.model_builder)

    def model():
        built = builder.build(prepared.checkpoint, length)
        if args.use_flash_attention == "auto":
            return edge_flash.use_attention(
                built, edge_flash.flash_attention, min_seq_q=edge_flash.AUTO_FLASH_MIN_SEQ_LEN
            )
        if args.use_flash_attention:
            return edge_flash.use_attention(built, edge_flash.flash_attention)
        return built

    return model


def _user_tflite(prepared, args):
    """The ``--tflite_path`` file, checked to fit the checkpoint and the prompts."""
    from edge_flash import model_config_from_hf, read_hf_config
    from parity.user_tflite import Architecture, TFLiteFileError, open_tflite

    file = open_tflite(args.tflite_path)
    architecture = Architecture.of_config(model_config_from_hf(read_hf_config(prepared.checkpoint)))
    longest = max(len(ids) for ids in prepared.prompt_ids.values())
    kv = longest + args.max_new_tokens - 1
    problem = file.fit_problem(architecture, longest, kv)
    if problem:
        raise TFLiteFileError(
            f"--tflite_path ({file.path}) does not fit {prepared.checkpoint}: {problem};"
            f" {file.how_to_convert(longest, kv)}"
        )
    return file.path


def _chain(prepared, args, work: Path):
    """A chain whose model under test is built exactly as a user builds it."""
    import edge_flash
    from parity.chain import Chain

    under_test = L.FLASH if args.use_flash_attention else L.STD
    length = prepared.zoo.kv_cache_max_len
    model = _model_under_test(prepared, args)
    user_file = _user_tflite(prepared, args) if args.tflite_path else None

    def tflite_leg():
        from edge_flash.convert import convert_to_tflite

        if user_file is not None:
            _say(f"running {user_file} in LiteRT (no conversion)")
            return L.TFLiteLeg(user_file, tflite)
        prefill = prepared.zoo.prefill_seq_len
        _say(f"converting the {under_test} model to TFLite (prefill {prefill}, KV {length})")
        # litert-torch prints its progress to stdout; stdout is for the PASSED/FAILED lines.
        with contextlib.redirect_stdout(sys.stderr):
            path = convert_to_tflite(model(), work / "model.tflite", [prefill], length)
        return L.TFLiteLeg(path, tflite)

    tflite = L.TFLITE_FLASH if args.use_flash_attention else L.TFLITE_STD
    factories = {
        under_test: lambda: L.ReauthoredLeg(model(), length, under_test),
        tflite: tflite_leg,
    }
    judge = Judge(reproduce="python -m parity.verify --verbose ... (same arguments)")
    chain = Chain(prepared, edge_flash.flash_attention, None, factories)
    return chain, under_test, tflite, judge


def _max_diff(first: L.LegRun, second: L.LegRun, rows: str) -> float:
    if rows == "prefill":
        return float((first.prefill_logits - second.prefill_logits).abs().max())
    prefill = _max_diff(first, second, "prefill")
    return max(prefill, float((first.step_logits - second.step_logits).abs().max()))


def _run_checks(runs, spread, legs, stages, judge, case_id, token_text):
    """Runs the checks of every leg; returns (passed, greatest allowance of legs[0], failure)."""
    rows, failure = [], ""
    for leg in legs:
        common = {
            "spread": spread,
            "case_id": case_id,
            "model": "verify",
            "token_text": token_text,
            "judge": judge,
            "record": lambda **row: rows.append(row),
        }
        try:
            for stage in stages:
                if stage == "greedy":
                    check_greedy(runs, leg, **common)
                else:
                    check_logits(runs, leg, stage, **common)
        except AssertionError as error:
            failure = failure or str(error)
    mine = [row for row in rows if row["legs"].startswith(f"{legs[0]}-vs-")]
    return not failure, _allowance(mine), failure


def _allowance(rows) -> float:
    values = [row["tolerance"] for row in rows if row.get("metric") == "max_abs_err"]
    return max(values) if values else float("nan")


def _report(passed: bool, label: str, detail: str, failure: str, verbose: bool) -> bool:
    print(f"{'PASSED' if passed else 'FAILED'} {label}: {detail}", flush=True)
    if not passed:
        lines = failure.splitlines()
        wanted = ("first divergent token", "first layer", "note that")
        keep = [line for line in lines if any(text in line for text in wanted)]
        print("\n".join(lines if verbose else [lines[0]] + keep), flush=True)
    return passed


def _verify_input_ids(chain, leg, judge, args, token_text) -> bool:
    runs = chain.runs("input-ids", [leg, L.HF])
    spread = chain.spread("input-ids")
    passed, allowed, failure = _run_checks(
        runs, spread, [leg, L.HF], ["prefill"], judge, "input-ids", token_text
    )
    detail = (
        f"max |logit diff| {_max_diff(runs[leg], runs[L.HF], 'prefill'):.2e} vs HF,"
        f" {_max_diff(runs[leg], runs[L.ORACLE], 'prefill'):.2e} vs float64 oracle"
        f" (allowed {allowed:.2e}), {len(args.input_ids)} positions"
    )
    return _report(passed, f"verify with input IDs {args.input_ids}", detail, failure, args.verbose)


def _verify_prompt(chain, leg, reference, judge, prompt, text, args, token_text) -> bool:
    runs = chain.runs(prompt, [leg, reference])
    stages = ["prefill", "decode", "greedy"]
    # HF is checked against the oracle too: the oracle is the re-authored model in
    # float64, so a bug in the re-authored code is in both and only HF can expose it.
    judged = [leg, L.HF] if leg in L.PYTORCH_LEGS else [leg]
    spread = chain.spread(prompt)
    passed, allowed, failure = _run_checks(runs, spread, judged, stages, judge, prompt, token_text)
    chosen, oracle = runs[leg].chosen, runs[L.ORACLE].chosen
    same = next((s for s, (a, b) in enumerate(zip(chosen, oracle)) if a != b), len(oracle))
    name = "HF" if reference == L.HF else f"PyTorch ({reference})"
    label = "verify with prompts" if leg in L.PYTORCH_LEGS else "verify TFLite with prompts"
    detail = (
        f"{same}/{len(oracle)} greedy tokens identical to the float64 oracle; max |logit diff|"
        f" {_max_diff(runs[leg], runs[reference], 'all'):.2e} vs {name},"
        f" {_max_diff(runs[leg], runs[L.ORACLE], 'all'):.2e} vs float64 oracle (allowed"
        f" {allowed:.2e}; prefill + {len(oracle) - 1} decode steps)"
    )
    ok = _report(passed, f"{label} {text!r}", detail, failure, args.verbose)
    if leg in L.PYTORCH_LEGS:
        print(f"  text: {chain.prepared.decode(oracle)!r}", flush=True)
    return ok


def verify(args) -> bool:
    """Runs every verification; prints one line each; returns whether all passed."""
    prepared = _prepare(args)
    with tempfile.TemporaryDirectory(prefix="parity-verify-") as work:
        chain, leg, tflite, judge = _chain(prepared, args, Path(work))

        def token_text(token):
            return prepared.decode([token])

        _say(f"model under test: {leg}; running HF, it, the float64 oracle and its rounding spread")
        results = [_verify_input_ids(chain, leg, judge, args, token_text)]
        prompts = [p for p in prepared.zoo.prompts]
        for prompt in prompts:
            results.append(_verify_prompt(chain, leg, L.HF, judge, prompt.name, prompt.text, args,
                                          token_text))  # fmt: skip
        if args.tflite or args.tflite_path:
            for prompt in prompts:
                results.append(_verify_prompt(chain, tflite, leg, judge, prompt.name, prompt.text,
                                              args, token_text))  # fmt: skip
    kind = {True: "flash", False: "standard", "auto": "auto"}[args.use_flash_attention]
    detail = f"{sum(results)}/{len(results)} checks passed ({kind} attention"
    detail += ", with TFLite)" if args.tflite or args.tflite_path else ")"
    print(f"{'PASSED' if all(results) else 'FAILED'} verify_reauthored_model: {detail}", flush=True)
    return all(results)


def main(argv=None) -> int:
    """Entry point; returns the exit status (see the module docstring)."""
    import os

    args = parse_args(argv)
    if args.max_new_tokens < 1:
        print(f"parity.verify: error: --max_new_tokens ({args.max_new_tokens}) must be >= 1",
              file=sys.stderr)  # fmt: skip
        return 2
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        return 0 if verify(args) else 1
    except KeyboardInterrupt:
        print("parity.verify: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError, RuntimeError) as error:
        if args.verbose:
            raise
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        print(f"parity.verify: error: {type(error).__name__}: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
