"""Tests of the mutation tooling (property_tests/mutation/) and its report section.

Fast (seconds): the full pass is ``make mutation``; here the mutator, the kept
file of equivalent mutants, the CLI's usage errors, a couple of known mutants
killed by one property check, and the report's reading of reports/mutation.json.
"""

from __future__ import annotations

import ast
import hashlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parity.report import mutation as report_mutation
from property_tests.mutation import __main__ as cli
from property_tests.mutation.equivalents import (
    EQUIVALENTS_PATH,
    REFRESH_HINT,
    Equivalent,
    load_equivalents,
    stale_entries,
)
from property_tests.mutation.mutator import find_mutant, generate_mutants
from property_tests.mutation.worker import KERNEL_PATH, load_module, status_of
from property_tests.strategies import AttentionCase

KERNEL_SOURCE = KERNEL_PATH.read_text(encoding="utf-8")
MUTANTS = generate_mutants(KERNEL_SOURCE)
# Known mutants and a case on which the oracle property must kill each: the
# sign of the online-softmax rescale exp(m_old - m_new), and the causal
# diagonal of mask=None (row i no longer sees key i). Ids are looked up by
# their text, so a kernel edit that moves them fails here with a clear message.
_CAUSAL = dict(
    seq_q=4, seq_kv=6, num_heads=2, logits="peaky", q_block_size=2, kv_block_size=2, seed=3
)
KNOWN_KILLS = {
    "rescale-sign": ("running_max - new_max", "running_max + new_max",
                     AttentionCase(mask="causal", **_CAUSAL)),
    "causal-diagonal": ("1", "0", AttentionCase(mask="none", **_CAUSAL)),
}  # fmt: skip


def _known(name: str):
    """The mutant of KNOWN_KILLS[name], by its before / after text in its function."""
    before, after, _ = KNOWN_KILLS[name]
    function = {"rescale-sign": "_attend_query_block", "causal-diagonal": "_causal_block"}[name]
    found = [m for m in MUTANTS if (m.function, m.before, m.after) == (function, before, after)]
    assert len(found) == 1, (
        f"expected one mutant {before!r} -> {after!r} in {function}, got {found}"
    )
    return found[0]


def test_mutants_are_generated_deterministically_with_unique_ids():
    """Two generations from kernel.py give the same mutants; ids are unique."""
    again = generate_mutants(KERNEL_SOURCE)
    assert [m.id for m in again] == [m.id for m in MUTANTS]
    assert len({m.id for m in MUTANTS}) == len(MUTANTS)
    spaced = [m.id for m in MUTANTS if any(c.isspace() for c in m.id)]
    assert not spaced, f"ids with spaces need quoting in --only: {spaced}"
    assert len(MUTANTS) > 50, (
        f"only {len(MUTANTS)} mutants of kernel.py: an operator stopped applying"
    )


def test_every_mutant_compiles_and_differs_from_the_kernel_in_one_place():
    """Each mutant compiles, its AST differs from the kernel's, and only its line(s) changed."""
    original = ast.dump(ast.parse(KERNEL_SOURCE))
    kernel_lines = KERNEL_SOURCE.splitlines()
    for mutant in MUTANTS:
        compile(mutant.source, mutant.id, "exec")
        assert ast.dump(ast.parse(mutant.source)) != original, f"{mutant.id} changes nothing"
        changed = [i + 1 for i, (a, b) in enumerate(zip(kernel_lines, mutant.source.splitlines()))
                   if a != b]  # fmt: skip
        assert changed == [mutant.line], f"{mutant.id} changed lines {changed}"


def test_strings_annotations_and_validation_calls_are_not_mutated():
    """No mutant touches a string, the check_* validation calls, or an import."""
    skipped = {i + 1 for i, line in enumerate(KERNEL_SOURCE.splitlines())
               if "check_" in line or "import" in line}  # fmt: skip
    for mutant in MUTANTS:
        assert mutant.line not in skipped, f"{mutant.id} mutates a validation call or an import"
        assert not mutant.before.startswith(('"', "'")), f"{mutant.id} mutates a string"


def test_equivalent_mutants_file_matches_the_current_kernel():
    """Every entry of equivalent_mutants.toml names a mutant of the current kernel.py, with a reason."""
    problems = stale_entries(load_equivalents(), MUTANTS)
    assert not problems, (
        f"stale entries in {EQUIVALENTS_PATH}:\n  "
        + "\n  ".join(problems)
        + (f"\nTo refresh: {REFRESH_HINT}")
    )


def test_stale_entries_are_named_and_entries_without_a_reason_are_refused(tmp_path):
    """An entry for a mutant that is gone, or whose text changed, is a problem; a missing reason is an error."""
    mutant = MUTANTS[0]
    entries = [
        Equivalent("L1C0:9->10", "9", "10", "gone"),
        Equivalent(mutant.id, mutant.before, "something else", "text changed"),
        Equivalent(mutant.id, mutant.before, mutant.after, "matches"),
    ]
    problems = stale_entries(entries, MUTANTS)
    assert len(problems) == 2
    assert "no such mutant" in problems[0] and "something else" in problems[1]
    bad = tmp_path / "eq.toml"
    bad.write_text(f'[[mutant]]\nid = "{mutant.id}"\nbefore = "x"\nafter = "y"\nreason = ""\n')
    with pytest.raises(ValueError, match="lacks \\['reason'\\]"):
        load_equivalents(bad)


@pytest.mark.parametrize("argv", [["--limit", "0"], ["--only", "L1C0:no->such"]])
def test_cli_usage_errors_exit_2(argv, capsys):
    """A bad --limit or an unknown --only id is a usage error (exit 2) naming the argument."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert argv[0] in capsys.readouterr().err


def test_status_follows_pytest_exit_code():
    """Exit 0 is a survivor, 1 a kill, anything else an error of the gate run."""
    assert [status_of(c) for c in (0, 1, 2, 4)] == ["survived", "killed", "error", "error"]


def _oracle_property(impl, case: AttentionCase) -> None:
    """One run of the fp32 oracle property on ``case`` (rows are not recorded)."""
    from property_tests.gate import Gate

    gate = Gate(impl, "mutant", "test_mutation", lambda **row: None)

    @settings(max_examples=1, database=None, deadline=None)
    @given(st.just(case))
    def check(case):
        gate.check_against_oracle(case)

    check()


@pytest.mark.parametrize("name", sorted(KNOWN_KILLS))
def test_known_mutant_is_killed_by_the_oracle_property_and_the_kernel_is_not(name):
    """The mutant (loaded in memory, as the pass does) fails the property; kernel.py passes it."""
    mutant = _known(name)
    case = KNOWN_KILLS[name][2]
    kernel = load_module(
        f"property_tests.mutation.live.test_{name}_kernel", KERNEL_SOURCE, "kernel"
    )
    _oracle_property(kernel.flash_attention, case)
    module = load_module(f"property_tests.mutation.live.test_{name}", mutant.source, mutant.id)
    with pytest.raises(AssertionError, match="is not close to the oracle"):
        _oracle_property(module.flash_attention, case)


def _document(tmp_path, sha: str, complete: bool = True):
    rows = [
        {"id": "L1C0:1->2", "function": "f", "before": "1", "after": "2", "status": "killed"},
        {"id": "L2C0:+->-", "function": "f", "before": "a + b", "after": "a - b", "status": "survived"},
        {"id": "L3C0:1->0", "function": "g", "before": "1", "after": "0", "status": "equivalent",
         "reason": "a clamp that the guard makes moot"},
    ]  # fmt: skip
    path = tmp_path / "mutation.json"
    counts = {"killed": 1, "timeout": 0, "survived": 1, "equivalent": 1, "error": 0}
    path.write_text(json.dumps({"kernel_sha256": sha, "mutants": rows, "complete": complete,
                                "counts": counts, "score": 0.5, "run": 3}))  # fmt: skip
    return path


def test_report_says_not_run_stale_partial_or_current(tmp_path):
    """The report's state follows the file and kernel.py's hash, and lists the survivors first."""
    kernel = tmp_path / "kernel.py"
    kernel.write_text("x = 1\n")
    sha = hashlib.sha256(kernel.read_bytes()).hexdigest()
    assert report_mutation.load_summary(tmp_path / "none.json", kernel).state == "not run"
    assert report_mutation.load_summary(_document(tmp_path, "0" * 64), kernel).state == "stale"
    assert report_mutation.load_summary(_document(tmp_path, sha, False), kernel).state == "partial"
    summary = report_mutation.load_summary(_document(tmp_path, sha), kernel)
    assert summary.state == "current" and summary.score == 0.5
    assert [row["status"] for row in summary.survivors] == ["survived", "equivalent"]
    lines = report_mutation.summary_lines(summary)
    assert lines[0].startswith("mutation score 0.500 over 3 mutants")
    assert "GAP" in lines[1] and "a clamp that the guard makes moot" in lines[2]
    page = report_mutation.section_html(summary)
    assert 'id="mutation"' in page and "a - b" in page


def test_report_of_an_unreadable_file_says_so(tmp_path):
    """A truncated mutation.json is 'unreadable' with the reason, not an exception."""
    path = tmp_path / "mutation.json"
    path.write_text('{"kernel_sha256": ')
    summary = report_mutation.load_summary(path, KERNEL_PATH)
    assert summary.state == "unreadable" and "mutation.json" in summary.detail


def test_known_mutant_lookup_names_the_missing_mutant():
    """find_mutant returns None for an id that is not a mutant of the kernel."""
    assert find_mutant(MUTANTS, "L1C0:no->such") is None
    assert find_mutant(MUTANTS, MUTANTS[0].id) is MUTANTS[0]
