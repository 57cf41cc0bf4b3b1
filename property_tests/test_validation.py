"""Bad input to edge_flash.flash_attention raises ValueError naming the argument and value.

Also: a bad ``--attention-impl`` gives pytest's one-line usage error, not a traceback.
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

ROOT = Path(__file__).resolve().parents[1]


def _inputs(batch=1, seq_q=3, seq_kv=5, num_heads=4, num_kv_heads=2, head_dim=8, dtype=None):
    dtype = dtype or torch.float32
    return dict(
        q=torch.zeros(batch, seq_q, num_heads, head_dim, dtype=dtype),
        k=torch.zeros(batch, seq_kv, num_kv_heads, head_dim, dtype=dtype),
        v=torch.zeros(batch, seq_kv, num_kv_heads, head_dim, dtype=dtype),
        head_size=head_dim,
    )


def _with(**changes):
    return {**_inputs(), **changes}


# (id, keyword arguments, the message the ValueError must contain)
BAD_INPUTS = [
    ("q-rank-3", _with(q=torch.zeros(3, 4, 8)), "q must have rank 4 ([B, T, N, H] for q, [B, S, G, H] for k and v), got shape (3, 4, 8)"),
    ("k-rank-5", _with(k=torch.zeros(1, 5, 2, 8, 1)), "k must have rank 4"),
    ("v-not-a-tensor", _with(v=[[0.0]]), "v must be a torch.Tensor, got list"),
    ("q-integer", _with(q=torch.zeros(1, 3, 4, 8, dtype=torch.int64)), "q must be a floating tensor, got dtype torch.int64"),
    ("dtype-mismatch", _with(k=torch.zeros(1, 5, 2, 8, dtype=torch.float16)), "q, k and v must share one dtype, got q torch.float32, k torch.float16, v torch.float32"),
    ("k-v-shapes-differ", _with(v=torch.zeros(1, 6, 2, 8)), "k and v must have the same shape [B, S, G, H], got k (1, 5, 2, 8) and v (1, 6, 2, 8)"),
    ("batch-differs", _with(k=torch.zeros(2, 5, 2, 8), v=torch.zeros(2, 5, 2, 8)), "batch of k/v (2) must equal batch of q (1)"),
    ("head-dims-differ", _with(k=torch.zeros(1, 5, 2, 16), v=torch.zeros(1, 5, 2, 16)), "head_dim of k/v (16) must equal head_dim of q (8)"),
    ("heads-not-multiple", _inputs(num_heads=9, num_kv_heads=2), "num_heads (9) must be a multiple of num_kv_heads (2)"),
    ("head-size-wrong", _with(head_size=7), "head_size (7) must equal the last dimension of q (8)"),
    ("head-size-float", _with(head_size=8.0), "head_size (8.0) must equal the last dimension of q (8)"),
    ("mask-not-broadcastable", _with(mask=torch.zeros(1, 1, 3, 4)), "mask of shape (1, 1, 3, 4) is not broadcastable to [B, N, T, S] = [1, 4, 3, 5]"),
    ("mask-heads-not-broadcastable", _with(mask=torch.zeros(1, 2, 3, 5)), "mask of shape (1, 2, 3, 5) is not broadcastable to [B, N, T, S] = [1, 4, 3, 5]"),
    ("mask-rank-5", _with(mask=torch.zeros(1, 1, 1, 3, 5)), "mask must have rank <= 4, got shape (1, 1, 1, 3, 5)"),
    ("mask-bool", _with(mask=torch.ones(3, 5, dtype=torch.bool)), "mask must be an additive floating tensor (0 to keep, -inf or a large negative to mask), got torch.bool"),
    ("alibi-not-broadcastable", _with(alibi_bias=torch.zeros(1, 3, 1, 5)), "alibi_bias of shape (1, 3, 1, 5) is not broadcastable to [B, N, T, S] = [1, 4, 3, 5]"),
    ("seq-q-0", _inputs(seq_q=0), "seq_q (0) must be at least 1, got q of shape (1, 0, 4, 8)"),
    ("seq-kv-0", _inputs(seq_kv=0), "seq_kv (0) must be at least 1, got k of shape (1, 0, 2, 8)"),
    ("head-dim-0", _inputs(head_dim=0), "head_dim (0) must be at least 1, got q of shape (1, 3, 4, 0)"),
    ("scale-nan", _with(scale=float("nan")), "scale (nan) must be a finite number > 0, or None"),
    ("scale-inf", _with(scale=float("inf")), "scale (inf) must be a finite number > 0, or None"),
    ("scale-0", _with(scale=0.0), "scale (0.0) must be a finite number > 0, or None"),
    ("scale-negative", _with(scale=-0.5), "scale (-0.5) must be a finite number > 0, or None"),
    ("scale-string", _with(scale="0.5"), "scale ('0.5') must be a finite number > 0, or None"),
    ("softcap-negative", _with(softcap=-30.0), "softcap (-30.0) must be a finite number > 0, or None"),
    ("softcap-0", _with(softcap=0.0), "softcap (0.0) must be a finite number > 0, or None"),
    ("softcap-nan", _with(softcap=float("nan")), "softcap (nan) must be a finite number > 0, or None"),
]  # fmt: skip

BAD_BLOCKS = [
    ("q_block_size", 0, "q_block_size (0) must be a positive int"),
    ("kv_block_size", -3, "kv_block_size (-3) must be a positive int"),
    ("q_block_size", 2.0, "q_block_size (2.0) must be a positive int"),
    ("kv_block_size", True, "kv_block_size (True) must be a positive int"),
]


@pytest.mark.parametrize(
    "kwargs, message", [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS]
)
def test_bad_input_raises_value_error_naming_argument_and_value(kwargs, message):
    """Each bad input raises ValueError whose message names the argument and its value."""
    with pytest.raises(ValueError, match=re.escape(message)):
        flash_attention(**kwargs)


@pytest.mark.parametrize("name, value, message", BAD_BLOCKS, ids=lambda x: str(x)[:20])
def test_non_positive_block_size_raises_value_error(name, value, message):
    """A block size that is not a positive int raises ValueError naming it and its value."""
    with pytest.raises(ValueError, match=re.escape(message)):
        flash_attention(**_inputs(), **{name: value})


def test_valid_inputs_of_every_broadcast_shape_are_accepted():
    """The shapes the contract allows (mask [T,S], [B,1,T,S], [B,N,T,S]; G | N) raise nothing."""
    for mask in (torch.zeros(3, 5), torch.zeros(1, 1, 3, 5), torch.zeros(1, 4, 3, 5), None):
        out = flash_attention(**_inputs(), mask=mask, alibi_bias=torch.zeros(1, 4, 1, 5))
        assert out.shape == (1, 3, 4, 8)


def test_integer_scale_and_softcap_are_accepted():
    """A positive int is a number: scale=1 and softcap=30 raise nothing."""
    assert flash_attention(**_inputs(), scale=1, softcap=30).shape == (1, 3, 4, 8)


def test_causal_attention_on_the_meta_device_keeps_the_shape():
    """mask=None builds its causal block on q's device: meta inputs give a meta (1, 3, 4, 8) output."""
    inputs = {name: value.to("meta") if isinstance(value, torch.Tensor) else value
              for name, value in _inputs().items()}  # fmt: skip
    out = flash_attention(**inputs, q_block_size=2, kv_block_size=2)
    assert out.device.type == "meta" and out.shape == (1, 3, 4, 8)


def _run_pytest(*args: str, env_impl: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("EDGE_FLASH_ATTENTION_IMPL", None)
    if env_impl is not None:
        env["EDGE_FLASH_ATTENTION_IMPL"] = env_impl
    command = [sys.executable, "-m", "pytest", "property_tests", "-p", "no:cacheprovider", *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("nonsense", "--attention-impl ('nonsense') must look like package.module:function"),
        ("no_such_module_xyz:fn", "cannot import module 'no_such_module_xyz'"),
        ("edge_flash:no_such_function", "'edge_flash' has no attribute 'no_such_function'"),
    ],
)
def test_bad_attention_impl_gives_one_line_usage_error(spec, expected):
    """``--attention-impl`` that cannot be loaded: exit 4 (usage error), one ERROR line, no traceback."""
    result = _run_pytest(f"--attention-impl={spec}", "--collect-only")
    output = result.stdout + result.stderr
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, output
    errors = [line for line in output.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1 and expected in errors[0], output
    assert "Traceback" not in output, output


def test_bad_attention_impl_from_environment_gives_usage_error():
    """The environment variable is checked the same way as the option."""
    result = _run_pytest("--collect-only", env_impl="nonsense")
    output = result.stdout + result.stderr
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, output
    assert "--attention-impl ('nonsense') must look like package.module:function" in output
    assert "Traceback" not in output


def _one_usage_error(result: subprocess.CompletedProcess) -> str:
    """The single ERROR line of a pytest usage error (exit 4), after checking there is one."""
    output = result.stdout + result.stderr
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, output
    assert "Traceback" not in output and "INTERNALERROR" not in output, output
    (line,) = [line for line in output.splitlines() if line.startswith("ERROR:")]
    return line


def test_unknown_hypothesis_profile_is_a_one_line_usage_error_naming_the_known_ones():
    """--hypothesis-profile=bogus: exit 4 and one line listing dev, ci, ci-unpinned, thorough."""
    line = _one_usage_error(_run_pytest("--hypothesis-profile=bogus", "--collect-only"))
    assert "--hypothesis-profile ('bogus') is not a registered hypothesis profile" in line
    assert "dev, ci, ci-unpinned, thorough" in line


def test_unknown_hypothesis_profile_from_the_environment_is_a_usage_error_too():
    """HYPOTHESIS_PROFILE=bogus: the same one line, not an error while importing conftest.py."""
    env = {**os.environ, "HYPOTHESIS_PROFILE": "bogus"}
    env.pop("EDGE_FLASH_ATTENTION_IMPL", None)
    command = [sys.executable, "-m", "pytest", "property_tests", "-p", "no:cacheprovider",
               "--collect-only"]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert "HYPOTHESIS_PROFILE ('bogus') is not a registered" in _one_usage_error(result)


def test_attention_impl_module_with_a_syntax_error_is_one_line_naming_the_line(tmp_path):
    """A SyntaxError in the --attention-impl module: exit 4, one line with its line number."""
    (tmp_path / "typo_kernel.py").write_text("def attention(q, k, v, head_size:\n    pass\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    env.pop("EDGE_FLASH_ATTENTION_IMPL", None)
    command = [sys.executable, "-m", "pytest", "property_tests", "-p", "no:cacheprovider",
               "--collect-only", "--attention-impl=typo_kernel:attention"]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    line = _one_usage_error(result)
    assert "importing 'typo_kernel' raised SyntaxError (line 1)" in line, line
