"""Tests of parity.report: verdict, claims, robustness, and the page in headless Chromium."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import pytest

from parity.bench.cases import BenchCase
from parity.bench.runner import case_rows
from parity.report import analysis, claims
from parity.report.__main__ import main as report_main
from parity.report.page import render_page
from parity.results import ResultRow, ResultsWriter, load_results

CHROMIUM = "/usr/bin/chromium"
_CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip


def _row(suite="property", case_id="b1-t8-s8-n4g2-h16-causal", value=1e-7, tolerance=1e-6,
         passed=True, legs="flash-vs-oracle", model="kernel", metric="max_abs_err") -> ResultRow:  # fmt: skip
    return ResultRow(suite=suite, case_id=case_id, model=model, legs=legs, metric=metric,
                     value=value, tolerance=tolerance, passed=passed, test=f"t::{case_id}")  # fmt: skip


def _bench(runtime, impl, length, peak_mb, latency_ms, target="attention") -> list[ResultRow]:
    blocks = (256, 128) if impl == "flash" else (None, None)
    case = BenchCase(runtime, target, impl, length, length, *blocks)
    outcome = {"status": "measured", "peak_bytes": peak_mb * 1e6, "median_ms": latency_ms}
    return case_rows(case, outcome)


def _difference(value: float, length: int = 2048) -> ResultRow:
    legs = "flash-q256-kv128-vs-standard-hlfb"
    return ResultRow(suite="bench", case_id=f"litert-attention-{legs}-t{length}", model="attention",
                     legs=f"litert/attention/{legs}", metric="max_abs_diff", value=value,
                     tolerance=None, passed=True)  # fmt: skip


def _standard_rows(std_peak=630.0, flash_peak=4.5, flash_ms=(150.0, 300.0), diff=5.96e-7):
    rows = [_row(), _row(case_id="b2-t37-s100-n8g2-h64", value=3e-7)]
    rows += [_row("parity", f"tiny-layer{i}", 1e-6 * (i + 1), 1e-5, legs="reauthored_flash-vs-oracle_fp64",
                  model="tiny-random-llama") for i in range(3)]  # fmt: skip
    for length, ms in zip((1024, 2048), flash_ms, strict=True):
        rows += _bench(
            "litert", "standard-hlfb", length, std_peak * length / 2048, 200.0 * length / 1024
        )
        rows += _bench("litert", "flash", length, flash_peak * length / 2048, ms)
        rows += _bench("litert", "copy", length, 30.0 * length / 2048, 5.0)
    return [*rows, _difference(diff)]


def _write(path: Path, rows: list[ResultRow], exitstatus=0, footer=True, events=()) -> Path:
    with ResultsWriter(path) as writer:
        writer.write_header(attention_impl="edge_flash:flash_attention", hypothesis_profile="ci")
        for row in rows:
            writer.record(row)
        for event in events:
            writer.write_event("test_failed", **event)
        if footer:
            writer.write_footer(exitstatus=exitstatus, passed=1, failed=int(exitstatus != 0))
    return path


def _claims(rows) -> dict:
    return {
        c.claim.split()[0]: c for c in claims.claims_table([json.loads(r.to_json()) for r in rows])
    }


def test_verdict_passes_when_every_row_passed_and_pytest_exited_zero(tmp_path):
    """All rows passed, footer exit 0: the gate passed with no problems."""
    verdict = analysis.verdict(load_results(_write(tmp_path / "r.jsonl", _standard_rows())))
    assert verdict.passed and verdict.problems == [] and verdict.label == "PASSED"


def test_verdict_fails_when_any_row_failed_and_names_it(tmp_path):
    """One failing comparison fails the gate, names its case and gives a reproduce command."""
    rows = [*_standard_rows(), _row(case_id="b1-t5-s9-bad", value=1e-3, passed=False)]
    verdict = analysis.verdict(load_results(_write(tmp_path / "r.jsonl", rows)))
    assert not verdict.passed
    assert any("b1-t5-s9-bad" in p and "0.001" in p and "1e-06" in p for p in verdict.problems)
    assert verdict.reproduce == [".venv/bin/pytest t::b1-t5-s9-bad --hypothesis-profile=ci"]


def test_reference_rows_outside_the_model_are_findings_not_failures(tmp_path):
    """litert's standard off the oracle (its own row) leaves the gate passed, noted as a finding."""
    reference = _row(case_id="b3-t156-s159-huge", value=2.6e-7, tolerance=1.4e-5, passed=False,
                     legs="standard-vs-oracle")  # fmt: skip
    verdict = analysis.verdict(
        load_results(_write(tmp_path / "r.jsonl", [*_standard_rows(), reference]))
    )
    assert verdict.passed and verdict.problems == []
    assert any("finding: litert-torch's standard" in n and "b3-t156-s159-huge" in n
               for n in verdict.notes)  # fmt: skip


def test_verdict_fails_on_nonzero_exit_or_failed_test_without_rows(tmp_path):
    """A failing test that recorded no row still fails the gate, with its error line."""
    event = {"test": "parity/test_x.py::test_y", "when": "call", "message": "x\nE   boom\ny"}
    path = _write(tmp_path / "r.jsonl", _standard_rows(), exitstatus=1, events=[event])
    verdict = analysis.verdict(load_results(path))
    assert not verdict.passed
    assert "test failed: parity/test_x.py::test_y (call): boom" in verdict.problems
    assert any("pytest exited with status 1" in p for p in verdict.problems)


def test_verdict_fails_when_a_session_never_finished(tmp_path):
    """A header without a footer (crash, Ctrl-C) is a failure, not a pass."""
    verdict = analysis.verdict(
        load_results(_write(tmp_path / "r.jsonl", _standard_rows(), footer=False))
    )
    assert not verdict.passed and any("never finished" in p for p in verdict.problems)


def test_verdict_fails_when_no_suite_ran(tmp_path):
    """Benchmarks alone are not a passed gate."""
    path = tmp_path / "r.jsonl"
    with ResultsWriter(path) as writer:
        writer.write_header(suite="bench")
        for row in _bench("litert", "flash", 512, 10.0, 5.0):
            writer.record(row)
    assert not analysis.verdict(load_results(path)).passed


def test_skipped_benchmark_is_a_note_not_a_pass_or_a_gate_failure(tmp_path):
    """A bench case not measured is listed with its reason; the gate verdict ignores it."""
    case = BenchCase("torch", "attention", "standard-math", 8192, 8192)
    skipped = case_rows(case, {"status": "skipped", "reason": "estimated peak 22 GB"})
    assert len(skipped) == 1 and not skipped[0].passed and math.isnan(skipped[0].value)
    verdict = analysis.verdict(
        load_results(_write(tmp_path / "r.jsonl", _standard_rows() + skipped))
    )
    assert verdict.passed
    assert any("torch-attention-standard-math-t8192" in n and "22 GB" in n for n in verdict.notes)


def test_margin_is_tolerance_minus_value_and_failures_sort_first(tmp_path):
    rows = [_row(value=2e-7, tolerance=1e-6), _row(case_id="bad", value=3e-6, passed=False)]
    frame = analysis.comparison_frame(load_results(_write(tmp_path / "r.jsonl", rows)))
    assert frame.loc[0, "case_id"] == "bad" and frame.loc[0, "margin"] == pytest.approx(-2e-6)
    assert frame.loc[1, "margin"] == pytest.approx(8e-7) and frame.loc[1, "used"] == pytest.approx(
        0.2
    )


def test_memory_claim_held_only_at_128x_or_more():
    """630 MB over 4.5 MB is 140x (held); over 5.25 MB it is 120x (not held)."""
    held = _claims(_standard_rows(std_peak=630.0, flash_peak=4.5))["128x"]
    assert held.status == claims.HELD and "140.0x at T=1024" in held.measured
    not_held = _claims(_standard_rows(std_peak=630.0, flash_peak=5.25))["128x"]
    assert not_held.status == claims.NOT_HELD and "120.0x" in not_held.measured


def test_difference_claims_follow_the_measured_flash_vs_standard_difference():
    """5.96e-7: not identical, within 1.19e-6; 0: identical; 2e-6: neither."""
    measured = _claims(_standard_rows(diff=5.96e-7))
    assert measured["identical"].status == claims.NOT_HELD
    assert measured["max"].status == claims.HELD and "5.96e-07" in measured["max"].measured
    assert _claims(_standard_rows(diff=0.0))["identical"].status == claims.HELD
    assert _claims(_standard_rows(diff=2e-6))["max"].status == claims.NOT_HELD


def test_prefill_claim_needs_flash_faster_at_every_length():
    """Flash 150/300 ms vs standard 200/400 ms: held, "1.33x faster"; 150/450 ms: "1.12x slower" at 2048."""
    faster = _claims(_standard_rows(flash_ms=(150.0, 300.0)))["faster"]
    assert faster.status == claims.HELD and "flash 1.33x faster" in faster.measured
    slower = _claims(_standard_rows(flash_ms=(150.0, 450.0)))["faster"]
    assert slower.status == claims.NOT_HELD and "T=2048: flash 1.12x slower" in slower.measured


def test_claims_are_not_measured_without_rows():
    """No rows, no verdict: every claim says "not measured"."""
    assert {c.status for c in claims.claims_table([])} == {claims.NOT_MEASURED}


def test_truncated_results_file_still_renders(tmp_path):
    """A file cut mid-line (crash) renders; the cut line is counted, earlier rows survive."""
    path = _write(tmp_path / "r.jsonl", _standard_rows(), footer=False)
    text = path.read_text()
    path.write_text(text[: len(text) - 40])
    results = load_results(path)
    assert results.unreadable_lines == 1 and len(results.rows) > 10
    page = render_page(results, str(path), "make report")
    assert "Gate FAILED" in page and "never finished" in page


def test_cli_exit_codes_follow_the_verdict(tmp_path, capsys):
    """--from: 0 when passed, 1 when failed, 2 with one line for a missing file."""
    good = _write(tmp_path / "good.jsonl", _standard_rows())
    bad = _write(tmp_path / "bad.jsonl", [*_standard_rows(), _row(case_id="x", passed=False)])
    assert report_main(["--from", str(good), "--out", str(tmp_path / "g.html")]) == 0
    assert report_main(["--from", str(bad), "--out", str(tmp_path / "b.html")]) == 1
    assert "GATE FAILED" in capsys.readouterr().out
    assert report_main(["--from", str(tmp_path / "missing.jsonl")]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert (
        len(error) == 1 and error[0].startswith("parity.report: error:") and "missing" in error[0]
    )


def test_several_results_files_are_judged_as_one_report(tmp_path, capsys):
    """--from A --from B (CI shards): B's failing row fails the gate; both passing pass it."""
    first = _write(tmp_path / "shard-1.jsonl", _standard_rows())
    second = _write(tmp_path / "shard-2.jsonl", [_row(case_id="x", passed=False)], exitstatus=1)
    third = _write(tmp_path / "shard-3.jsonl", [_row(case_id="y")])
    page = tmp_path / "index.html"
    merged = ["--from", str(first), "--from", str(second), "--out", str(page)]
    assert report_main(merged) == 1
    assert "GATE FAILED" in capsys.readouterr().out
    assert str(first) in page.read_text() and str(second) in page.read_text()
    assert report_main(["--from", str(first), "--from", str(third), "--out", str(page)]) == 0
    garbage = tmp_path / "notes.txt"
    garbage.write_text("not json\n")
    assert report_main(["--from", str(first), "--from", str(garbage), "--out", str(page)]) == 2
    assert "notes.txt is not a results file" in capsys.readouterr().err


@pytest.mark.skipif(
    shutil.which(CHROMIUM) is None,
    reason="needs Debian's chromium (apt-get install chromium chromium-driver; make setup does)",
)
def test_page_renders_in_headless_chromium_with_tables_and_images(tmp_path):
    """The page opens offline in Chromium: verdict, claims, tables and inline PNG plots render."""
    page_path = tmp_path / "index.html"
    assert report_main(["--from", str(_write(tmp_path / "r.jsonl", _standard_rows())),
                        "--out", str(page_path)]) == 0  # fmt: skip
    html_text = page_path.read_text()
    assert "http://" not in html_text and "https://" not in html_text  # self-contained
    base = [CHROMIUM, *_CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*base, "--dump-dom", page_path.as_uri()], capture_output=True,
                         text=True, timeout=120, check=True).stdout  # fmt: skip
    assert 'id="verdict"' in dom and "Gate PASSED" in dom and 'id="claims"' in dom
    assert dom.count("<table") >= 5
    assert dom.count('src="data:image/png;base64,') >= 2  # memory/latency and kernel errors
    screenshot = tmp_path / "report.png"
    subprocess.run([*base, "--window-size=1300,2400", f"--screenshot={screenshot}",
                    page_path.as_uri()], capture_output=True, timeout=120, check=True)  # fmt: skip
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert screenshot.stat().st_size > 20_000  # a blank page compresses to a few kB


def test_targets_are_judged_from_litert_rows():
    """Flash 4.5 MB at 2048 (0.12x of the 37.7 MB floor), 300 vs 400 ms; constant 140x ratio."""
    rows = [json.loads(r.to_json()) for r in _standard_rows(std_peak=630.0, flash_peak=4.5)]
    targets = {t.claim.split()[0]: t for t in claims.targets_table(rows)}
    assert targets["peak"].status == claims.HELD and "0.12x of 37.7 MB" in targets["peak"].measured
    assert targets["latency"].status == claims.HELD
    assert targets["memory"].status == claims.NOT_HELD  # 140x at both lengths: not growing
    assert targets["ratio"].status == claims.NOT_MEASURED  # no T=8192 row


def test_owner_bound_claims_hold_per_stage_and_tflite_says_why():
    """PyTorch 6e-5 holds the owner's 1e-4; TFLite 1.05e-4 is "not held", with the reason."""
    rows = [
        ResultRow(suite="parity", case_id="m-reauthored_flash-p", model="m",
                  legs="reauthored_flash-vs-reauthored_std", metric="max_abs_diff",
                  value=6e-5, tolerance=1e-4, passed=True),
        ResultRow(suite="parity", case_id="m-tflite_flash-p", model="m",
                  legs="tflite_flash-vs-tflite_std", metric="max_abs_diff",
                  value=1.05e-4, tolerance=4e-4, passed=True),
    ]  # fmt: skip
    table = claims.claims_table([json.loads(r.to_json()) for r in rows])
    owner = {c.claim: c for c in table if c.claim.startswith("flash vs standard logits")}
    assert owner["flash vs standard logits within 0.0001 (PyTorch)"].status == claims.HELD
    tflite = owner["flash vs standard logits within 0.0001 (TFLite)"]
    assert tflite.status == claims.NOT_HELD and "0.000105" in tflite.measured
    assert "LiteRT's own rounding" in tflite.basis


def test_false_alarm_and_detection_tables_read_their_rows():
    """Study rows become setting x leg rows; detection rows keep both ends of the bracket."""
    from parity.report import study

    rows = [
        ResultRow(suite="false_alarm", case_id="cpu-avx2-m-hf", model="m", legs="hf-vs-oracle_fp64",
                  metric="worst_error_ratio", value=0.25, tolerance=1.0, passed=True,
                  details="setting=cpu-avx2 checks=12 failed=0"),
        ResultRow(suite="detection", case_id="m-reauthored_flash", model="m",
                  legs="reauthored_flash-vs-oracle_fp64", metric="detection_limit_relative",
                  value=2.8e-6, tolerance=2.7e-6, passed=True,
                  details="attention output relative in every layer: passes at 2.7e-06"),
    ]  # fmt: skip
    dicts = [json.loads(r.to_json()) for r in rows]
    alarms = study.false_alarm_table(dicts)
    assert alarms.to_dict("records") == [{
        "setting": "cpu-avx2", "model": "m", "leg": "hf", "worst error / allowed": 0.25,
        "checks": 12, "false alarms": 0,
    }]  # fmt: skip
    detection = study.detection_table(dicts).iloc[0]
    assert detection["perturbation of the attention output"] == "relative in every layer"
    assert (detection["passes at"], detection["fails at"]) == (2.7e-6, 2.8e-6)


def test_from_a_file_that_is_not_results_exits_2_and_leaves_the_page_alone(tmp_path, capsys):
    """--from garbage: one line naming the file, exit 2, the existing page unchanged."""
    garbage, page = tmp_path / "notes.txt", tmp_path / "index.html"
    garbage.write_text("these are my notes\nnot json at all\n")
    page.write_text("<html>earlier page</html>")
    assert report_main(["--from", str(garbage), "--out", str(page)]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "not a results file" in error[0] and str(garbage) in error[0]
    assert page.read_text() == "<html>earlier page</html>"


def test_out_equal_to_from_exits_2_and_keeps_the_results_file(tmp_path, capsys):
    """--from F --out F: refused with one line, exit 2, F byte for byte as it was."""
    results = _write(tmp_path / "r.jsonl", _standard_rows())
    before = results.read_bytes()
    assert report_main(["--from", str(results), "--out", str(results)]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "--out" in error[0] and "same file" in error[0]
    assert results.read_bytes() == before


def test_kernel_error_series_are_comparison_families_not_ids():
    """Row numbers and positions in leg names collapse: one legend entry per kind of comparison."""
    from parity.report.plots import comparison_family

    assert (
        comparison_family("decode-row3-at-17-vs-prefill-row3") == "decode-rowN-at-N-vs-prefill-rowN"
    )
    assert comparison_family("qb16-kb7-vs-case-blocks") == comparison_family(
        "qb2-kb300-vs-case-blocks"
    )
    assert comparison_family("candidate-vs-oracle") == "candidate-vs-oracle"


def test_page_shows_the_worst_rows_and_the_csv_beside_it_holds_every_row(tmp_path):
    """1000 property rows: the page shows the 400 worst (the failed one first), the CSV all 1000."""
    import csv

    rows = [_row(case_id=f"b1-t{i}-s{i}", value=1e-9 * (i + 1)) for i in range(999)]
    rows.append(_row(case_id="b1-t5-s9-bad", value=1e-3, passed=False))
    page = tmp_path / "index.html"
    assert report_main(["--from", str(_write(tmp_path / "r.jsonl", rows)), "--out", str(page)]) == 1
    text = page.read_text(encoding="utf-8")
    assert "the 400 worst shown" in text and "b1-t5-s9-bad" in text
    assert "b1-t998-s998" in text and "b1-t0-s0<" not in text  # largest shares of tolerance first
    with (tmp_path / "index.comparisons.csv").open(encoding="utf-8") as handle:
        assert len(list(csv.DictReader(handle))) == 1000


@pytest.mark.quick
def test_page_links_the_tflite_overlays_beside_the_results_file(tmp_path):
    """Overlays in ``overlays/`` beside the results file are linked from the page, relative to it."""
    results = _write(tmp_path / "run" / "results.jsonl", _standard_rows())
    overlay = tmp_path / "run" / "overlays" / "model-tflite_flash-1a2b3c4d-isolated.json"
    overlay.parent.mkdir()
    overlay.write_text("{}")
    out = tmp_path / "page" / "index.html"
    report_main(["--from", str(results), "--out", str(out)])
    page = out.read_text()
    assert "TFLite localisation overlays (Model Explorer)" in page
    assert f'<a href="../run/overlays/{overlay.name}">{overlay.name}</a>' in page


def test_family_matrix_says_passed_failed_with_diagnosis_and_unsupported_with_reason():
    from parity.report.families import family_matrix

    def row(model, leg, passed, ratio):
        case = f"{model}-{leg}-ids-30"
        return {
            "suite": "parity", "model": model, "legs": f"{leg}-vs-oracle_fp64", "passed": passed,
            "ratio": ratio, "case_id": f"{case} prefill logits",
            "test": f"parity/test_chain_logits.py::test_prefill[{case}]",
        }  # fmt: skip

    rows = [row("qwen3-tiny", "hf", True, 0.2), row("qwen3-tiny", "tflite_flash", False, 3.5)]
    events = [
        {"event": "test_failed", "test": "parity/test_chain_logits.py::test_prefill[qwen3-tiny-tflite_flash-ids-30]",
         "message": "E   AssertionError: over budget\nE   first layer over budget: layer 1"},
        {"event": "test_failed", "test": "parity/test_chain_kv_cache.py::test_kv[gemma3-tiny-hf-ids-5]",
         "message": "E   RuntimeError: stack expects each tensor to be equal size"},
    ]  # fmt: skip
    matrix = family_matrix(rows, events).set_index("model")
    assert matrix.loc["qwen3-tiny", "hf"] == "passed (1 checks, worst error / allowed 0.20)"
    assert matrix.loc["qwen3-tiny", "tflite_flash"].startswith("FAILED")
    assert "layer 1" in matrix.loc["qwen3-tiny", "tflite_flash"]
    assert matrix.loc["qwen3-tiny", "reauthored_std"] == "not run"
    assert "RuntimeError" in matrix.loc["gemma3-tiny", "hf"]  # failed before writing a row
    rows.append(row("openelm-tiny", "reauthored_std", True, 0.2))
    openelm = family_matrix(rows, events).set_index("model").loc["openelm-tiny"]
    assert openelm["hf"] == "unsupported" and "remote code" in openelm["why not"]
