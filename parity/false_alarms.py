"""The false-alarm study: correct legs must pass under settings that change rounding only.

Each ``Setting`` is a set of environment variables (``parity.run_settings``):
the CPU kernels torch dispatches to, torch's and LiteRT's thread counts, LiteRT
with and without the XNNPACK delegate, and other seeds of the random prompts.
``run_setting`` runs the chain suites in a child process under one setting
(conversions shared through ``PARITY_TFLITE_CACHE``, which no setting changes),
and ``summarize`` reads the child's results file into one row per leg: the
worst error / allowed over every comparison of that leg, and whether every
check passed. A correct model must show zero false alarms everywhere.

- ``GATE_SETTINGS`` (the fast subset, run by ``parity/test_false_alarms.py`` in
  the gate) on the tiny random Llama, every leg;
- ``FULL_SETTINGS`` (nightly: ``python -m parity.false_alarms --full``) on every
  zoo model with weights here, plus the verify CLI with and without flash and TFLite.

Exit status: 0 no false alarm, 1 a correct leg failed under some setting (a
false alarm), 2 unusable input (bad flag, unknown ``--models``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from edge_flash.cli import ArgumentParser
from parity.cpu_capabilities import cpu_capabilities
from parity.tflite_cache import explicit_directory

ROOT = Path(__file__).resolve().parents[1]
CHAIN_SUITES = (
    "parity/test_chain_logits.py",
    "parity/test_chain_kv_cache.py",
    "parity/test_chain_greedy.py",
)
PYTORCH, TFLITE, ALL = "not tflite", "tflite", ""  # pytest -m selections of the legs


@dataclasses.dataclass(frozen=True)
class Setting:
    """A named environment under which a correct model must still pass."""

    name: str
    env: tuple[tuple[str, str], ...]
    legs: str = ALL  # which legs the setting can change (-m selection)

    def environment(self) -> dict:
        return dict(self.env)


def _cpu(capability: str) -> Setting:
    return Setting(f"cpu-{capability}", (("ATEN_CPU_CAPABILITY", capability),))


def all_settings() -> list[Setting]:
    """Every setting of the study on this machine (avx512 only where the CPU has it)."""
    settings = [_cpu(capability) for capability in cpu_capabilities()]
    settings += [
        Setting(f"torch-threads-{n}", (("PARITY_TORCH_THREADS", str(n)),), PYTORCH) for n in (1, 2)
    ]
    settings += [
        Setting(f"litert-xnnpack-threads-{n}", (("PARITY_LITERT_THREADS", str(n)),), TFLITE)
        for n in (1, 2, 4)
    ]
    settings.append(Setting("litert-builtin-kernels", (("PARITY_LITERT_XNNPACK", "0"),), TFLITE))
    settings += [Setting(f"prompt-seed-{n}", (("PARITY_PROMPT_SEED", str(n)),)) for n in (1, 2, 3)]
    return settings


# The gate's subset: one of each kind of setting, on the tiny model (seconds each).
GATE_SETTING_NAMES = (
    "cpu-default",
    "cpu-avx2",
    "torch-threads-1",
    "litert-xnnpack-threads-1",
    "litert-builtin-kernels",
    "prompt-seed-1",
)
GATE_MODELS = ("tiny-random-llama",)
FULL_MODELS = ("tiny-random-llama", "tinyllama-shaped", "smollm2-135m")


def gate_settings() -> list[Setting]:
    return [s for s in all_settings() if s.name in GATE_SETTING_NAMES]


def run_setting(setting: Setting, models, results: Path, tflite_cache: Path) -> int:
    """Runs the chain suites on ``models`` under ``setting``; returns pytest's exit status."""
    selection = " or ".join(f"{model}-" for model in models)
    command = [
        sys.executable, "-m", "pytest", *CHAIN_SUITES, "-q", "-p", "no:cacheprovider",
        "-k", selection, "-m", setting.legs,
    ]  # fmt: skip
    # The parent converted (or is converting) the shared files, so a child's own
    # prefetcher would only cost a process: PARITY_PREFETCH=0.
    env = {**os.environ, **setting.environment(), "PARITY_RESULTS": str(results),
           "PARITY_TFLITE_CACHE": str(tflite_cache), "PARITY_PREFETCH": "0"}  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=3600, check=False)  # fmt: skip
    if done.returncode not in (0, 1):
        tail = (done.stdout + done.stderr)[-3000:]
        raise RuntimeError(f"setting {setting.name}: pytest exited {done.returncode}:\n{tail}")
    return done.returncode


@dataclasses.dataclass
class LegSummary:
    """One leg under one setting: its worst error / allowed and its checks."""

    setting: str
    model: str
    leg: str
    worst_ratio: float
    checks: int
    failed: int


def summarize(setting: Setting, results: Path) -> list[LegSummary]:
    """Per (model, leg): the worst error / allowed and failed checks, from a results file."""
    from parity.results import load_results

    found: dict[tuple[str, str], LegSummary] = {}
    for row in load_results(results).rows:
        if row.get("suite") != "parity" or "-vs-" not in row.get("legs", ""):
            continue
        leg = row["legs"].split("-vs-")[0]
        key = (row["model"], leg)
        entry = found.setdefault(key, LegSummary(setting.name, row["model"], leg, 0.0, 0, 0))
        entry.checks += 1
        entry.failed += not row["passed"]
        ratio = row.get("ratio")
        if ratio is None and row.get("tolerance"):
            ratio = float(row["value"]) / float(row["tolerance"])
        if ratio is not None and row.get("metric") != "greedy_identical_steps":
            entry.worst_ratio = max(entry.worst_ratio, float(ratio))
    return sorted(found.values(), key=lambda s: (s.model, s.leg))


def record_summaries(summaries: list[LegSummary], record) -> None:
    """One ``record_result`` row per leg summary (suite ``false_alarm``)."""
    for item in summaries:
        record(suite="false_alarm", case_id=f"{item.setting}-{item.model}-{item.leg}",
               model=item.model, legs=f"{item.leg}-vs-oracle_fp64", metric="worst_error_ratio",
               value=item.worst_ratio, tolerance=1.0, passed=item.failed == 0,
               details=f"setting={item.setting} checks={item.checks} failed={item.failed}",
               ratio=item.worst_ratio)  # fmt: skip


def _verify_commands() -> list[tuple[str, list[str]]]:
    base = [sys.executable, "-m", "parity.verify", "--max_new_tokens", "8"]
    return [
        ("verify", base),
        ("verify --use_flash_attention", base + ["--use_flash_attention"]),
        ("verify --tflite", base + ["--tflite"]),
        ("verify --use_flash_attention --tflite", base + ["--use_flash_attention", "--tflite"]),
    ]


def build_parser() -> argparse.ArgumentParser:
    """The false_alarms CLI's parser (both spellings of every flag; bad flags exit 2)."""
    parser = ArgumentParser(prog="python -m parity.false_alarms", description=main.__doc__)
    parser.add_argument("--full", action="store_true", help="every setting and zoo model")
    parser.add_argument("--results", default="reports/false_alarms.jsonl",
                        help="study rows (default: reports/false_alarms.jsonl)")  # fmt: skip
    parser.add_argument("--models", nargs="+", default=None,
                        help=f"zoo models (default: {' '.join(GATE_MODELS)}; --full: all)")
    parser.add_argument("--no-verify", action="store_true", help="--full without the verify CLI")
    return parser


def main(argv=None) -> int:
    """Runs the study; prints one line per (setting, model, leg); exits 1 on any false alarm."""
    from parity.results import ResultRow, ResultsWriter

    parser = build_parser()
    args = parser.parse_args(argv)
    settings = all_settings() if args.full else gate_settings()
    models = args.models or (FULL_MODELS if args.full else GATE_MODELS)
    from parity.zoo import zoo_model

    for name in models:
        try:
            zoo_model(name)
        except ValueError as error:
            parser.error(str(error))
    writer = ResultsWriter(Path(args.results))
    writer.write_header(suite="false_alarm", settings=[s.name for s in settings])
    alarms = 0
    with tempfile.TemporaryDirectory(prefix="parity-false-alarms-") as work:
        cache = explicit_directory() or Path(work) / "tflite"
        for setting in settings:
            results = Path(work) / f"{setting.name}.jsonl"
            print(f"parity.false_alarms: {setting.name} ...", file=sys.stderr, flush=True)
            run_setting(setting, models, results, cache)
            summaries = summarize(setting, results)
            record_summaries(summaries, lambda **f: writer.record(ResultRow(test="study", **f)))
            for item in summaries:
                alarms += item.failed
                print(f"{setting.name:26} {item.model:18} {item.leg:17} worst error/allowed"
                      f" {item.worst_ratio:.3f}  failed {item.failed}/{item.checks}", flush=True)
            if args.full and not args.no_verify and setting.name.startswith("cpu-"):
                alarms += _run_verify(setting, writer)
    writer.write_footer(suite="false_alarm", exitstatus=1 if alarms else 0, false_alarms=alarms)
    writer.close()
    print(f"parity.false_alarms: {alarms} false alarm(s)", flush=True)
    return 1 if alarms else 0


def _run_verify(setting: Setting, writer) -> int:
    """The verify CLI under a CPU setting; returns the number of failing runs."""
    from parity.results import ResultRow

    failures = 0
    for label, command in _verify_commands():
        done = subprocess.run(command, cwd=ROOT, env={**os.environ, **setting.environment()},
                              capture_output=True, text=True, timeout=3600, check=False)  # fmt: skip
        failures += done.returncode != 0
        print(f"{setting.name:26} {label}: exit {done.returncode}", flush=True)
        writer.record(ResultRow(test="study", suite="false_alarm",
                                case_id=f"{setting.name}-{label}", model="smollm2-135m",
                                legs=label, metric="exit_status", value=float(done.returncode),
                                tolerance=0.0, passed=done.returncode == 0,
                                details=json.dumps(done.stdout.splitlines()[-1:])))  # fmt: skip
    return failures


if __name__ == "__main__":
    sys.exit(main())
