"""``--attention-impl`` in the parity suites takes litert-torch's exact SDPA signature.

litert-torch's own ``scaled_dot_product_attention`` and a correct kernel with
only that signature (no block-size keywords) run as the flash leg through the
plug-in path a user takes, and pass the tiny model's flash cases: block sizes
reach only functions that accept them (``parity.impl_loader.accepted_options``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LITERT = "litert_torch.generative.layers.scaled_dot_product_attention:scaled_dot_product_attention"
BARE = "property_tests.test_litert_standard:flash_with_litert_signature"
# 3 prompts x (prefill logits, decode logits, KV cache) of the tiny model's one-shot flash
# leg ("-ids" after the leg name leaves out reauthored_flash_chunked).
FLASH_CASES = 9


@pytest.mark.quick
@pytest.mark.parametrize("spec", [LITERT, BARE], ids=["litert-sdpa", "bare-signature-flash"])
def test_kernel_with_the_litert_signature_passes_the_flash_leg(spec, tmp_path):
    """The tiny model's flash cases pass with the kernel given by --attention-impl."""
    command = [
        sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
        "parity/test_chain_logits.py", "parity/test_chain_kv_cache.py", "-m", "quick",
        "-k", "tiny-random-llama-reauthored_flash-ids and not owner_bound", f"--attention-impl={spec}",
    ]  # fmt: skip
    env = {**os.environ, "PARITY_RESULTS": str(tmp_path / "results.jsonl")}
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)
    output = result.stdout + result.stderr
    assert result.returncode == pytest.ExitCode.OK, output[-3000:]
    assert re.search(rf"\b{FLASH_CASES} passed\b", output), output[-2000:]
    assert "TypeError" not in output
