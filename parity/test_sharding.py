"""CI sharding (pytest-split, .github/workflows/gate.yml): the shards partition the gate.

Collects the gate's tests once whole and once per shard, with the recorded
durations in .test_durations: every test is in exactly one shard.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GATE = ["property_tests", "parity", "--hypothesis-profile=ci"]
SHARDS = 3  # the matrix of .github/workflows/gate.yml


def _collected(*extra: str) -> list[str]:
    command = [sys.executable, "-m", "pytest", *GATE, "--collect-only", "-q",
               "-p", "no:cacheprovider", *extra]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return [line for line in done.stdout.splitlines() if "::" in line]


def test_the_recorded_durations_are_a_map_of_test_ids_to_seconds():
    durations = json.loads((ROOT / ".test_durations").read_text(encoding="utf-8"))
    assert durations and all("::" in test for test in durations)
    assert all(isinstance(seconds, float) and seconds >= 0 for seconds in durations.values())


def test_the_shards_of_the_ci_matrix_partition_the_gate():
    whole = _collected()
    shards = [_collected("--splits", str(SHARDS), "--group", str(group))
              for group in range(1, SHARDS + 1)]  # fmt: skip
    assert all(shards), "a shard has no tests"
    together = [test for shard in shards for test in shard]
    assert sorted(together) == sorted(whole), "a test is in no shard, or in two"
    workflow = (ROOT / ".github" / "workflows" / "gate.yml").read_text(encoding="utf-8")
    assert f'SHARDS: "{SHARDS}"' in workflow and "group: [1, 2, 3]" in workflow
