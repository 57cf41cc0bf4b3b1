"""The false-alarm study's gate subset: correct legs pass under every rounding setting.

Each case runs the chain suites on the tiny random Llama in a child process
under one setting of ``parity.false_alarms.GATE_SETTINGS`` (other CPU kernels,
thread counts, LiteRT without XNNPACK, other prompts) and records one row per
leg: its worst error / allowed there. Any failing check is a false alarm.
The full study (every setting, every zoo model, the verify CLI) is
``python -m parity.false_alarms --full``.
"""

from __future__ import annotations

import pytest

from parity import false_alarms


@pytest.fixture(scope="session")
def shared_tflite_cache(tflite_store):
    """The session's conversion directory, for every setting's child: no setting changes
    the converted file, and the files are keyed by content, so the children reuse the
    session's conversions of the tiny model (and the session theirs) instead of
    converting it again (its lock files make one process convert each)."""
    return tflite_store.directory


@pytest.mark.parametrize("setting", false_alarms.gate_settings(), ids=lambda s: s.name)
def test_correct_legs_pass_under_setting(setting, shared_tflite_cache, tmp_path, record_result):
    """Every leg of the tiny model passes every chain check under this setting."""
    results = tmp_path / "results.jsonl"
    status = false_alarms.run_setting(
        setting, false_alarms.GATE_MODELS, results, shared_tflite_cache
    )
    summaries = false_alarms.summarize(setting, results)
    false_alarms.record_summaries(summaries, record_result)
    assert summaries, f"setting {setting.name}: the child recorded no comparison"
    alarms = [f"{s.model} {s.leg}: {s.failed}/{s.checks} failed" for s in summaries if s.failed]
    assert status == 0 and not alarms, f"false alarms under {setting.name}: {alarms}"
