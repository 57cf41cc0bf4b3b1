"""The gate has teeth: run through ``--attention-impl``, it fails every broken kernel.

Each broken kernel of property_tests/broken_kernels.py is run through the
property suite in a fresh pytest process (the plug-in path a user takes), with
the ci profile and ``-x``; the pinned ``@example`` cases make each fail in
seconds. The real kernel must pass the same run.
"""

from __future__ import annotations

import os
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
SUITE = ("property_tests/test_matches_oracle.py", "property_tests/test_metamorphic.py")
CASE_ID = re.compile(r"\bb\d+-t\d+-s\d+-p\d+-n\d+g\d+-h\d+-\S+-seed\d+")
# One run of the suite takes ~5 s to fail a broken kernel and ~60 s to pass
# the real one here; 15 minutes means something hangs.
RUN_TIMEOUT_S = 900


def run_suite(impl: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """Runs the property suite against ``impl`` in a fresh process (ci profile, -x)."""
    env = dict(os.environ, PARITY_RESULTS=str(tmp_path / "results.jsonl"))
    command = [
        sys.executable, "-m", "pytest", *SUITE, f"--attention-impl={impl}",
        "--hypothesis-profile=ci", "-x", "-q", "-p", "no:cacheprovider",
    ]  # fmt: skip
    return subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )


@pytest.mark.parametrize("bug", sorted(broken_kernels.BUGS))
def test_gate_fails_broken_kernel(bug, tmp_path):
    """The suite fails the kernel with this bug, naming a case id and how to reproduce it."""
    impl = f"property_tests.broken_kernels:{bug}"
    result = run_suite(impl, tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 1, (
        f"expected the suite to fail {bug} ({broken_kernels.BUGS[bug]}), got exit code"
        f" {result.returncode}:\n{output[-3000:]}"
    )
    assert CASE_ID.search(output), f"no case id in the failure output of {bug}:\n{output[-3000:]}"
    assert f"--attention-impl={impl}" in output, f"no reproduction command for {bug}"


def test_gate_passes_the_real_kernel(tmp_path):
    """The same run passes edge_flash.flash_attention."""
    result = run_suite("edge_flash:flash_attention", tmp_path)
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]


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
