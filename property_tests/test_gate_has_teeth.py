"""The gate has teeth: run through ``--attention-impl``, it fails every broken kernel.

Each broken kernel of property_tests/broken_kernels.py is run through the
property suite (``pytest <suite> --attention-impl=... --hypothesis-profile=ci
-x``, the plug-in path a user takes), all in one fresh process
(property_tests/teeth_runner.py); the pinned ``@example`` cases make each fail
in about a second. The real kernel must pass the same run.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from edge_flash import flash_attention
from parity.compare import assert_close_to_oracle
from parity.oracle import reference_attention
from parity.tolerances import ERROR_MODELS
from property_tests import broken_kernels
from property_tests.strategies import AttentionCase, make_inputs

ROOT = Path(__file__).resolve().parents[1]
REAL_KERNEL = "edge_flash:flash_attention"
BROKEN = {bug: f"property_tests.broken_kernels:{bug}" for bug in sorted(broken_kernels.BUGS)}
CASE_ID = re.compile(r"\bb\d+-t\d+-s\d+-p\d+-n\d+g\d+-h\d+-\S+-seed\d+")
# Measured: ~30 s for all runs (imports once, ~1 s per broken kernel, ~20 s
# for the real kernel's full ci run); 15 minutes means something hangs.
RUN_TIMEOUT_S = 900


@pytest.fixture(scope="module")
def suite_runs(tmp_path_factory) -> dict:
    """{spec: (exit code, output)} of the suite run against every broken kernel and the real one."""
    out_dir = tmp_path_factory.mktemp("teeth")
    specs = [*BROKEN.values(), REAL_KERNEL]
    command = [sys.executable, "-m", "property_tests.teeth_runner", str(out_dir), *specs]
    result = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )
    assert result.returncode == 0, (
        f"teeth runner failed:\n{(result.stdout + result.stderr)[-5000:]}"
    )
    summary = json.loads((out_dir / "summary.json").read_text(encoding="utf-8"))
    return {
        spec: (run["exit_code"], Path(run["output"]).read_text(encoding="utf-8"))
        for spec, run in summary.items()
    }


@pytest.mark.parametrize("bug", sorted(BROKEN))
def test_gate_fails_broken_kernel(bug, suite_runs):
    """The suite fails the kernel with this bug, naming a case id and how to reproduce it."""
    exit_code, output = suite_runs[BROKEN[bug]]
    assert exit_code == pytest.ExitCode.TESTS_FAILED, (
        f"expected the suite to fail {bug} ({broken_kernels.BUGS[bug]}), got exit code"
        f" {exit_code}:\n{output[-3000:]}"
    )
    assert CASE_ID.search(output), f"no case id in the failure output of {bug}:\n{output[-3000:]}"
    assert f"--attention-impl={BROKEN[bug]}" in output, f"no reproduction command for {bug}"


def test_gate_passes_the_real_kernel(suite_runs):
    """The same run passes edge_flash.flash_attention."""
    exit_code, output = suite_runs[REAL_KERNEL]
    assert exit_code == pytest.ExitCode.OK, output[-5000:]


@pytest.mark.parametrize(
    "case",
    [
        AttentionCase(
            batch=2,
            seq_q=37,
            seq_kv=100,
            offset=20,
            num_heads=8,
            num_kv_heads=2,
            mask="pad-left",
            softcap=30.0,
            q_block_size=16,
            kv_block_size=24,
        ),
        AttentionCase(
            seq_q=5,
            seq_kv=9,
            num_heads=4,
            num_kv_heads=4,
            head_dim=80,
            mask="none",
            alibi=True,
            scale=0.3,
            logits="peaky",
            q_block_size=2,
            kv_block_size=4,
        ),
    ],  # fmt: skip
    ids=lambda case: case.case_id,
)
def test_broken_kernels_without_a_bug_are_correct(case):
    """The shared algorithm of the broken kernels, with no bug switched in, passes the gate's check."""
    inputs = make_inputs(case)
    oracle = reference_attention(**inputs)
    blocks = dict(q_block_size=case.q_block_size, kv_block_size=case.kv_block_size)
    assert_close_to_oracle(
        broken_kernels.correct_copy(**inputs, **blocks),
        oracle.output,
        error_model=ERROR_MODELS["fp32"],
        baseline=flash_attention(**inputs, **blocks),
        rounding_scale=oracle.rounding_scale,
        where=oracle.determined,
        case_id=case.case_id,
        names=("correct_copy", "edge_flash", "oracle"),
    )
    assert torch.isfinite(broken_kernels.correct_copy(**inputs, **blocks)).all()
