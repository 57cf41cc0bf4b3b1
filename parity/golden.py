"""Golden reference outputs of the zoo's fixed prompts, with provenance.

One file per zoo model, named after the test that owns it:
``golden/test_golden/<model>.json``. It holds, per prompt, the prompt's token
ids, the greedy token ids, and at chosen rows (first prompt position, last
prompt position = generation step 0, the middle and the last generation step)
a summary of the oracle's logits: the top-k ids and values and two checksums of
the full row (sum and L2 norm; numbers, not a hash, so that a last-bit change of
a float64 sum on another machine is not a mismatch). Provenance: package
versions, model hash, date, the sizes used and the tolerance.

The values come from the float64 oracle (``parity.fp64_model``), which is what
moves when the weights, the tokenizer or litert-torch's model code change, and
which agrees across machines to float64 rounding. The fp32 legs' greedy tokens
are stored and compared only up to the first step where the oracle's top-2
margin is within twice that step's logit allowance (``near_tie_from_step``):
from there a correct fp32 run on another machine may take either token, so the
file says so instead of demanding identity. ``compare`` lists every difference in
words; ``check_against_golden`` raises on any, after writing the obtained values
beside the golden file (``<model>.obtained.json``). A missing golden file fails;
so does an unreadable one (not JSON, or a key missing: ``GoldenFileError``, naming
the file, what is wrong and how to regenerate it).

``python -m parity.golden`` checks every zoo model; ``--update`` first runs the
whole chain (PyTorch legs) on every model, and only if every check passed shows
the diff and writes the files. A corrupt golden file is replaced then, after
being kept beside it as ``<model>.json.corrupt``. Exit status: 0 match (or
written), 1 a difference or a failing chain check, 2 an unreadable golden file
or other unusable input.
"""

from __future__ import annotations

import argparse
import datetime
import difflib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

import torch

from parity import legs as L
from parity.tolerances import GOLDEN_FLOAT64

GOLDEN_DIR_ENV = "PARITY_GOLDEN_DIR"
OWNER_TEST = "test_golden"
TOP_K = 8
GOLDEN_LEGS = (L.HF, L.STD, L.FLASH)  # fp32 legs whose greedy tokens are stored
UPDATE_COMMAND = "python -m parity.golden --update"


class GoldenFileError(ValueError):
    """A golden file that is not JSON or lacks a key; says how to regenerate it."""


# The keys compare() reads, per level of a golden payload.
_PROVENANCE_KEYS = ("model", "model_hash", "date")
_PROMPT_KEYS = ("prompt_ids", "greedy_ids", "greedy_ids_fp32_legs", "logits")
_ROW_KEYS = ("top_ids", "top_values", "row_len", "row_sum", "row_l2")


def read_golden(path: Path) -> dict:
    """The payload of golden file ``path``, after checking it has every key compare() reads.

    Raises:
      GoldenFileError: not JSON, or a key missing, naming the file, the key and
        the command that regenerates it.
    """
    regenerate = f"regenerate it with `{UPDATE_COMMAND}` (the bad file is kept as .corrupt)"
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise GoldenFileError(
            f"golden file {path} is not valid JSON ({error}); {regenerate}"
        ) from None
    missing = _missing_key(payload)
    if missing:
        raise GoldenFileError(f"golden file {path} lacks the key {missing}; {regenerate}")
    return payload


def _missing_key(payload) -> Optional[str]:
    """The first key compare() needs that ``payload`` lacks, as a path, or None."""
    if not isinstance(payload, dict):
        return "'provenance' (the file is not a JSON object)"
    for key in ("provenance", "prompts"):
        if not isinstance(payload.get(key), dict):
            return repr(key)
    for key in _PROVENANCE_KEYS:
        if key not in payload["provenance"]:
            return f"'provenance' / {key!r}"
    for name, prompt in payload["prompts"].items():
        for key in _PROMPT_KEYS:
            if not isinstance(prompt, dict) or key not in prompt:
                return f"'prompts' / {name!r} / {key!r}"
        for label, row in prompt["logits"].items():
            for key in _ROW_KEYS:
                if not isinstance(row, dict) or key not in row:
                    return f"'prompts' / {name!r} / 'logits' / {label!r} / {key!r}"
    return None


def _keep_aside(path: Path) -> Path:
    """Renames ``path`` to the first free ``<name>.corrupt[.N]`` beside it; returns that."""
    aside = path.with_name(path.name + ".corrupt")
    number = 1
    while aside.exists():
        aside = path.with_name(f"{path.name}.corrupt.{number}")
        number += 1
    path.replace(aside)
    return aside


def golden_dir() -> Path:
    """``PARITY_GOLDEN_DIR``, else the repository's golden/ directory."""
    override = os.environ.get(GOLDEN_DIR_ENV)
    return Path(override) if override else Path(__file__).resolve().parents[1] / "golden"


def golden_path(model_name: str, directory: Optional[Path] = None) -> Path:
    return (directory or golden_dir()) / OWNER_TEST / f"{model_name}.json"


def _rows_to_keep(prompt_len: int, steps: int) -> Dict[str, tuple]:
    """Row label -> ("prefill", row) or ("step", row)."""
    rows = {"prompt position 0": ("prefill", 0)}
    for step in sorted({0, steps // 2, steps - 1}):
        rows[f"generation step {step}"] = ("step", step)
    return rows


def _summary(row: torch.Tensor) -> dict:
    values, ids = row.topk(TOP_K)
    return {
        "top_ids": [int(i) for i in ids],
        "top_values": [float(v) for v in values],
        "row_len": int(row.numel()),
        "row_sum": float(row.sum()),
        "row_l2": float(row.norm()),
    }


def chain_payload(chain) -> dict:
    """The golden payload of a chain's model: its runs (oracle + GOLDEN_LEGS) and spreads."""
    runs = collect(chain)
    return summarize(chain.prepared, runs, {prompt: chain.spread(prompt) for prompt in runs})


def _near_tie_from_step(oracle: L.LegRun, spread) -> Optional[int]:
    """The first step whose oracle top-2 margin is within 2x its logit allowance, or None."""
    from parity.tolerances import MODEL_FP32

    allowance = MODEL_FP32.allowance(spread.step_logits)  # (n,)
    for step in range(len(oracle.chosen)):
        values = oracle.step_logits[step].topk(2).values
        if float(values[0] - values[1]) <= 2 * float(allowance[step]):
            return step
    return None


def summarize(prepared, runs_by_prompt: Dict[str, Dict[str, L.LegRun]], spreads: Dict) -> dict:
    """The golden payload of one model from the runs of its prompts (oracle + GOLDEN_LEGS)
    and their error spreads (``Chain.spread``)."""
    from parity.results import package_versions

    zoo = prepared.zoo
    prompts = {}
    for prompt, runs in runs_by_prompt.items():
        oracle = runs[L.ORACLE]
        rows = {}
        for label, (kind, index) in _rows_to_keep(oracle.prompt_len, len(oracle.chosen)).items():
            source = oracle.prefill_logits if kind == "prefill" else oracle.step_logits
            rows[label] = _summary(source[index])
        tie = _near_tie_from_step(oracle, spreads[prompt])
        kept = len(oracle.chosen) if tie is None else tie
        prompts[prompt] = {
            "prompt_ids": oracle.prompt_ids,
            "greedy_ids": oracle.chosen,
            "near_tie_from_step": tie,
            "greedy_ids_fp32_legs": {
                leg: runs[leg].chosen[:kept] for leg in GOLDEN_LEGS if leg in runs
            },
            "logits": rows,
        }
    return {
        "provenance": {
            "model": zoo.name,
            "model_hash": prepared.model_hash,
            "packages": package_versions(),
            "date": datetime.date.today().isoformat(),
            "values_from": L.ORACLE,
            "max_new_tokens": zoo.max_new_tokens,
            "kv_cache_max_len": zoo.kv_cache_max_len,
            "tolerance": {
                "name": GOLDEN_FLOAT64.name,
                "why": GOLDEN_FLOAT64.why,
                "relative_to_row_max": GOLDEN_FLOAT64.floor_units * GOLDEN_FLOAT64.unit_roundoff,
            },
            "generated_by": UPDATE_COMMAND,
        },
        "prompts": prompts,
    }


def compare(golden: dict, obtained: dict) -> List[str]:
    """Every difference between a golden payload and an obtained one, in words (empty: match)."""
    problems = []
    old, new = golden["provenance"], obtained["provenance"]
    if old["model_hash"] != new["model_hash"]:
        problems.append(
            f"model hash changed: {old['model_hash']} -> {new['model_hash']} (the checkpoint is"
            " not the one the golden file was made from)"
        )
    for name in sorted(set(golden["prompts"]) | set(obtained["prompts"])):
        if name not in obtained["prompts"] or name not in golden["prompts"]:
            where = "golden file" if name not in golden["prompts"] else "obtained run"
            problems.append(f"prompt {name!r} is missing from the {where}")
            continue
        problems += _compare_prompt(name, golden["prompts"][name], obtained["prompts"][name])
    return problems


def _compare_prompt(name: str, golden: dict, obtained: dict) -> List[str]:
    problems = []
    if golden["prompt_ids"] != obtained["prompt_ids"]:
        problems.append(f"prompt {name!r}: token ids changed (tokenizer or chat template)")
        return problems
    if golden.get("near_tie_from_step") != obtained.get("near_tie_from_step"):
        problems.append(
            f"prompt {name!r}: the first near-tie step moved from"
            f" {golden.get('near_tie_from_step')} to {obtained.get('near_tie_from_step')}"
        )
    for leg, ids in [(L.ORACLE, None)] + sorted(golden["greedy_ids_fp32_legs"].items()):
        want = golden["greedy_ids"] if ids is None else ids
        got = (obtained["greedy_ids"] if ids is None else
               obtained["greedy_ids_fp32_legs"].get(leg))  # fmt: skip
        if ids is not None and got is not None:
            got = got[: len(want)]
        if got != want:
            step = next((s for s, (a, b) in enumerate(zip(want, got or [])) if a != b), None)
            problems.append(
                f"prompt {name!r}: {leg} greedy ids differ from step {step}"
                f" (golden {want[step] if step is not None else want}, now"
                f" {got[step] if step is not None and got else got})"
            )
    for label, want in golden["logits"].items():
        problems += _compare_row(name, label, want, obtained["logits"].get(label))
    return problems


def _compare_row(name: str, label: str, want: dict, got: Optional[dict]) -> List[str]:
    if got is None:
        return [f"prompt {name!r}, {label}: row missing"]
    scale = max(abs(v) for v in want["top_values"])
    allowed = GOLDEN_FLOAT64.floor_units * GOLDEN_FLOAT64.unit_roundoff * scale
    problems = []
    if got["top_ids"] != want["top_ids"]:
        problems.append(
            f"prompt {name!r}, {label}: top-{TOP_K} ids {want['top_ids']} -> {got['top_ids']}"
        )
    worst = max(abs(a - b) for a, b in zip(want["top_values"], got["top_values"]))
    if not worst <= allowed:
        problems.append(
            f"prompt {name!r}, {label}: top-{TOP_K} logits moved by {worst:.3e}"
            f" (allowed {allowed:.3e})"
        )
    # Each of the V logits may move by `allowed`: the sum by V x allowed, the norm by sqrt(V) x it.
    length = want["row_len"]
    for key, bound in (("row_sum", length * allowed), ("row_l2", length**0.5 * allowed)):
        moved = abs(want[key] - got[key])
        if not moved <= bound:
            problems.append(
                f"prompt {name!r}, {label}: {key} {want[key]!r} -> {got[key]!r}"
                f" (moved {moved:.3e}, allowed {bound:.3e})"
            )
    return problems


def _dumps(payload: dict) -> str:
    return json.dumps(payload, indent=1, sort_keys=True) + "\n"


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; a golden file is for everyone
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def check_against_golden(obtained: dict, directory: Optional[Path] = None) -> None:
    """Compares ``obtained`` (from ``summarize``) with its golden file.

    Raises:
      AssertionError: the golden file is missing, or differs; the message lists
        what changed and how to regenerate.
      GoldenFileError: the golden file is not JSON or lacks a key. On a difference the obtained payload
        is written beside the golden file as ``<model>.obtained.json``.
    """
    model = obtained["provenance"]["model"]
    path = golden_path(model, directory)
    if not path.is_file():
        raise AssertionError(
            f"golden file {path} is missing: a missing golden file fails, it is never"
            f" created by a test. Generate it with `{UPDATE_COMMAND}` once the chain passes."
        )
    golden = read_golden(path)
    problems = compare(golden, obtained)
    if not problems:
        return
    beside = path.with_suffix(".obtained.json")
    _write_atomically(beside, _dumps(obtained))
    versions = _changed_versions(golden["provenance"], obtained["provenance"])
    raise AssertionError(
        f"{model}: obtained outputs differ from golden file {path}"
        f" (made {golden['provenance']['date']}):\n"
        + "\n".join(f"  - {problem}" for problem in problems)
        + f"\n  package versions changed since: {versions or 'none'}"
        + f"\n  obtained values written to {beside}; if the change is intended, accept it with"
        f" `{UPDATE_COMMAND}` (it reruns the whole chain first)"
    )


def _changed_versions(old: dict, new: dict) -> str:
    before, after = old.get("packages", {}), new.get("packages", {})
    return ", ".join(
        f"{name} {before.get(name)} -> {after.get(name)}"
        for name in sorted(set(before) | set(after))
        if before.get(name) != after.get(name)
    )


def collect(chain, legs=GOLDEN_LEGS) -> Dict[str, Dict[str, L.LegRun]]:
    """The runs of every prompt of ``chain``'s model for the oracle and ``legs``."""
    return {prompt: chain.runs(prompt, legs) for prompt in chain.prepared.prompt_ids}


def verified_payload(chain, say=print) -> dict:
    """Runs every PyTorch check of the chain on every prompt, then returns the golden payload.

    Raises:
      AssertionError: the first failing check (nothing is written by the caller then).
    """
    from parity import checks

    zoo = chain.prepared.zoo
    for prompt, runs in collect(chain).items():
        common = dict(case_id=f"{zoo.name}-{prompt}", model=zoo.name, record=lambda **row: None,
                      spread=chain.spread(prompt))  # fmt: skip
        for leg in GOLDEN_LEGS:
            checks.check_logits(runs, leg, "prefill", **common)
            checks.check_logits(runs, leg, "decode", **common)
            checks.check_kv_cache(runs, leg, **common)
            checks.check_greedy(runs, leg, **common)
        checks.check_flash_vs_standard(runs, L.FLASH, **common)
        say(f"parity.golden: {zoo.name} / {prompt}: every check passed")
    return chain_payload(chain)


def update(chains, directory: Optional[Path] = None, say=print) -> List[Path]:
    """Verifies every chain, then (only if all passed) shows the diffs and writes the files.

    Returns the paths written (unchanged files are not rewritten). A golden file
    that ``read_golden`` refuses is renamed to ``<name>.corrupt`` first, then replaced.
    """
    payloads = [verified_payload(chain, say) for chain in chains]  # raises before any write
    written = []
    for payload in payloads:
        path = golden_path(payload["provenance"]["model"], directory)
        old = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
        if old:  # keep the date when nothing else changed
            try:
                previous = read_golden(path)
            except GoldenFileError as error:
                say(f"parity.golden: {error}; kept as {_keep_aside(path)}, writing a new one")
                previous = None
            if previous is not None and not compare(previous, payload):
                say(f"parity.golden: {path} unchanged")
                continue
        new = _dumps(payload)
        diff = difflib.unified_diff(
            old.splitlines(), new.splitlines(), str(path), f"{path} (new)", lineterm="", n=1
        )
        say("\n".join(diff))
        _write_atomically(path, new)
        written.append(path)
        say(f"parity.golden: wrote {path}")
    return written


def _chains(names: List[str], work: Path):
    import edge_flash
    from parity.chain import Chain
    from parity.zoo import prepare, zoo_model

    for name in names:
        yield Chain(prepare(zoo_model(name), work), edge_flash.flash_attention)


def build_parser() -> argparse.ArgumentParser:
    """The golden CLI's parser (both spellings of every flag; bad flags exit 2)."""
    from edge_flash.cli import ArgumentParser
    from parity.zoo import ZOO

    parser = ArgumentParser(prog="python -m parity.golden", description=main.__doc__)
    parser.add_argument("--update", action="store_true", help="verify the chain, then write")
    parser.add_argument("--models", nargs="+", default=[m.name for m in ZOO if m.has_golden],
                        choices=[m.name for m in ZOO if m.has_golden],
                        help="zoo models with golden files (default: all of them)")  # fmt: skip
    parser.add_argument("--verbose", action="store_true", help="tracebacks on errors")
    return parser


def main(argv=None) -> int:
    """Checks (default) or updates (``--update``) the golden files of the zoo models."""
    args = build_parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        with tempfile.TemporaryDirectory(prefix="parity-golden-") as work:
            chains = list(_chains(args.models, Path(work)))
            if args.update:
                update(chains)
                return 0
            for chain in chains:
                check_against_golden(chain_payload(chain))
                print(f"parity.golden: {chain.prepared.zoo.name} matches its golden file")
    except GoldenFileError as error:
        if args.verbose:
            raise
        print(f"parity.golden: error: {error}", file=sys.stderr)
        return 2
    except (AssertionError, ValueError, OSError) as error:
        if args.verbose:
            raise
        print(f"parity.golden: FAILED: {error}", file=sys.stderr)
        print("parity.golden: nothing was written" if args.update else "", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
