"""``python -m property_tests.mutation``: mutation testing of edge_flash/kernel.py by the gate.

    python -m property_tests.mutation [--out reports/mutation.json] [--limit N]
        [--only ID ...] [--timeout S] [--list]

Runs the unmutated kernel through the gate first (it must pass, and its time
sets the default per-mutant timeout), then every mutant (or the first N, or
the ids given), printing one line per mutant: id, status, killing test,
seconds. Writes the JSON after every mutant (``complete`` false until the
end). Exits 0 when every surviving mutant is listed in
property_tests/equivalent_mutants.toml (and every listed one survived),
1 otherwise, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import sys
import tempfile
from pathlib import Path

from property_tests.mutation.equivalents import (
    EQUIVALENTS_PATH,
    REFRESH_HINT,
    load_equivalents,
    stale_entries,
)
from property_tests.mutation.mutator import Mutant, generate_mutants
from property_tests.mutation.runner import run_mutants
from property_tests.mutation.worker import KERNEL_PATH, ORIGINAL, PROFILE, ROOT, SUITE

DEFAULT_OUT = Path("reports") / "mutation.json"
# The unmutated run: the ci suite took 120 s on this machine under load (measured);
# an hour means the gate itself is broken.
BASELINE_TIMEOUT_S = 3600.0
# Default per-mutant timeout: a surviving mutant runs the whole suite, like the
# baseline, and the machine's load varies several-fold between runs (2 shared cores).
TIMEOUT_FACTOR, TIMEOUT_FLOOR_S = 4.0, 120.0
DETECTED = ("killed", "timeout")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m property_tests.mutation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the JSON to write")
    parser.add_argument("--limit", type=int, help="run only the first N mutants")
    parser.add_argument("--only", nargs="+", metavar="ID", help="run only these mutant ids")
    parser.add_argument("--timeout", type=float, help="seconds per mutant (default: from baseline)")
    parser.add_argument(
        "--logs", type=Path, help="directory for pytest outputs (default: a temp dir)"
    )
    parser.add_argument("--list", action="store_true", help="print the mutants and exit")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the unmutated run (needs --timeout; for a second runner)")  # fmt: skip
    return parser


def select(mutants: list[Mutant], args, parser) -> list[Mutant]:
    """The mutants the arguments ask for; a bad --limit or --only is a usage error (exit 2)."""
    if args.no_baseline and args.timeout is None:
        parser.error("--no-baseline needs --timeout (the baseline's time sets the default)")
    if args.limit is not None and args.limit < 1:
        parser.error(f"--limit ({args.limit}) must be at least 1")
    if args.only:
        by_id = {m.id: m for m in mutants}
        unknown = [i for i in args.only if i not in by_id]
        if unknown:
            parser.error(f"--only: no mutant {unknown} of {KERNEL_PATH.name}; see --list")
        mutants = [by_id[i] for i in args.only]
    return mutants[: args.limit] if args.limit else mutants


def report(mutants, records, equivalents, kernel_sha, meta, complete) -> dict:
    """The JSON document: kernel hash, every mutant with its status, counts and score.

    score = detected / (run - equivalent), detected = killed + timeout,
    equivalent = survivors listed in the kept file; None when nothing counts.
    """
    reasons = {entry.id: entry.reason for entry in equivalents}
    rows = []
    for mutant in mutants:
        record = records.get(mutant.id)
        if record is None:
            continue
        equivalent = record["status"] == "survived" and mutant.id in reasons
        rows.append({
            "id": mutant.id, "operator": mutant.operator, "line": mutant.line, "col": mutant.col,
            "function": mutant.function, "before": mutant.before, "after": mutant.after,
            "status": "equivalent" if equivalent else record["status"],
            "killer": record.get("killer"), "message": record.get("message", ""),
            "seconds": round(record["seconds"], 2), "reason": reasons.get(mutant.id),
        })  # fmt: skip
    counts = {s: sum(r["status"] == s for r in rows)
              for s in ("killed", "timeout", "survived", "equivalent", "error")}  # fmt: skip
    judged = len(rows) - counts["equivalent"]
    detected = counts["killed"] + counts["timeout"]
    return {
        "kernel": str(KERNEL_PATH.relative_to(ROOT)), "kernel_sha256": kernel_sha,
        "total_mutants": len(mutants), "run": len(rows), "complete": complete,
        "counts": counts, "score": detected / judged if judged else None, **meta, "mutants": rows,
    }  # fmt: skip


def problems_of(document: dict, equivalents) -> list[str]:
    """One line per survivor not listed as equivalent, listed one that was killed, or error."""
    listed = {entry.id for entry in equivalents}
    problems = []
    for row in document["mutants"]:
        where = f"{row['id']} ({row['function']}: {row['before']!r} -> {row['after']!r})"
        if row["status"] == "survived":
            problems.append(f"{where} survived: kill it with a property, or list it in"
                            f" {EQUIVALENTS_PATH.name} with the reason it is equivalent")  # fmt: skip
        elif row["status"] == "error":
            problems.append(f"{where}: the gate run errored: {row['message'][:200]}")
        elif row["id"] in listed and row["status"] in DETECTED:
            problems.append(f"{where} is listed as equivalent but was {row['status']} by"
                            f" {row['killer']}: remove it from {EQUIVALENTS_PATH.name}")  # fmt: skip
    return problems


def _write(path: Path, document: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")


def _line(record: dict, number: int, total: int) -> str:
    killer = record.get("killer") or record.get("message", "")[:80]
    by = f"  by {killer.split('::')[-1]}" if record["status"] in DETECTED and killer else ""
    return f"[{number:3d}/{total}] {record['id']:<28} {record['status']:<9}{by}  {record['seconds']:.1f} s"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    source = KERNEL_PATH.read_text(encoding="utf-8")
    mutants = generate_mutants(source)
    if args.list:
        for mutant in mutants:
            print(f"{mutant.id}\t{mutant.function}\t{mutant.before!r} -> {mutant.after!r}")
        return 0
    chosen = select(mutants, args, parser)
    try:
        equivalents = load_equivalents()
    except (OSError, ValueError) as error:
        print(f"mutation: error: {error}", file=sys.stderr)
        return 2
    stale = stale_entries(equivalents, mutants)
    for problem in stale:
        print(f"mutation: stale entry in {EQUIVALENTS_PATH.name}: {problem}", file=sys.stderr)
    if stale:
        print(f"mutation: to refresh: {REFRESH_HINT}", file=sys.stderr)
    logs = args.logs or Path(tempfile.mkdtemp(prefix="mutation-"))
    logs.mkdir(parents=True, exist_ok=True)
    print(
        f"mutation: {len(chosen)} of {len(mutants)} mutants; pytest outputs in {logs}", flush=True
    )
    return _run(args, source, mutants, chosen, equivalents, logs, bool(stale))


def _baseline(args, logs, total: int) -> dict:
    """The unmutated kernel's gate run (a stand-in record under --no-baseline)."""
    if args.no_baseline:
        return {"status": "survived", "seconds": 0.0, "killer": None, "message": ""}
    baseline = []
    run_mutants([ORIGINAL], logs, BASELINE_TIMEOUT_S, baseline.append)
    base = baseline[0]
    print(f"[  0/{total}] {'original':<28} {'passed' if base['status'] == 'survived' else base['status']}"
          f"  {base['seconds']:.1f} s", flush=True)  # fmt: skip
    return base


def _run(args, source, mutants, chosen, equivalents, logs, stale) -> int:
    base = _baseline(args, logs, len(chosen))
    if base["status"] != "survived":
        print(f"mutation: the gate fails the unmutated kernel ({base['killer']}: "
              f"{base['message'][:300]}); fix that first", file=sys.stderr)  # fmt: skip
        return 1
    timeout_s = args.timeout or max(TIMEOUT_FLOOR_S, TIMEOUT_FACTOR * base["seconds"])
    meta = {
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "gate": f"{' '.join(SUITE)} --hypothesis-profile={PROFILE} -x, no shrinking",
        "baseline_seconds": None if args.no_baseline else round(base["seconds"], 1), "timeout_s": round(timeout_s, 1),
        "selection": "all" if len(chosen) == len(mutants) else f"{len(chosen)} chosen",
        "logs": str(logs),
    }  # fmt: skip
    sha = hashlib.sha256(source.encode("utf-8")).hexdigest()
    records = {}

    def on_result(record: dict) -> None:
        records[record["id"]] = record
        print(_line(record, len(records), len(chosen)), flush=True)
        _write(args.out, report(mutants, records, equivalents, sha, meta, complete=False))

    run_mutants([m.id for m in chosen], logs, timeout_s, on_result)
    document = report(
        mutants, records, equivalents, sha, meta, complete=len(chosen) == len(mutants)
    )
    _write(args.out, document)
    problems = problems_of(document, equivalents)
    for problem in problems:
        print(f"mutation: {problem}")
    counts = document["counts"]
    score = "n/a" if document["score"] is None else f"{document['score']:.3f}"
    print(f"mutation: score {score} (killed {counts['killed']} + timeout {counts['timeout']} of"
          f" {document['run']} run - {counts['equivalent']} equivalent); written to {args.out}")  # fmt: skip
    return 1 if problems or stale else 0


if __name__ == "__main__":
    sys.exit(main())
