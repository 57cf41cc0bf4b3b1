"""parity.memory.peak_bytes_during measures what a call allocates (used for the kernel's memory claim)."""

from __future__ import annotations

import torch

from parity.memory import peak_bytes_during

MB = 1_000_000


def _two_temporaries_then_one_result():
    first = torch.ones(MB // 4)  # 1 MB
    second = torch.ones(2 * MB // 4)  # 2 MB: 3 MB live here, the peak
    del first, second
    return torch.ones(MB // 4)  # 1 MB, returned


def test_peak_counts_temporaries_freed_inside_the_call():
    """Two live temporaries (1 MB + 2 MB) give a 3 MB peak even though both are freed."""
    peak = peak_bytes_during(_two_temporaries_then_one_result)
    assert 3 * MB <= peak < 3 * MB + 64 * 1024


def test_inputs_allocated_before_the_call_do_not_count():
    """A tensor made before the call and only read inside adds nothing."""
    big = torch.ones(8 * MB // 4)
    peak = peak_bytes_during(lambda: big.sum())
    assert peak < 64 * 1024


def test_candidate_never_holds_a_full_score_tensor(attention_impl, record_result):
    """TinyLlama's attention at T = S = 1024: peak allocation stays below one [N, T, S] fp32 tensor."""
    seq_len, num_heads, num_kv_heads, head_dim = 1024, 32, 4, 64
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(1, seq_len, num_heads, head_dim, generator=generator)
    k = torch.randn(1, seq_len, num_kv_heads, head_dim, generator=generator)
    v = torch.randn(1, seq_len, num_kv_heads, head_dim, generator=generator)
    scores_bytes = num_heads * seq_len * seq_len * 4  # 134 MB: what standard attention holds
    peak = peak_bytes_during(lambda: attention_impl(q, k, v, head_dim))
    record_result(
        suite="property", case_id=f"b1-t{seq_len}-s{seq_len}-n32g4-h64-none-default-blocks",
        model="kernel", legs="candidate", metric="peak_bytes", value=float(peak),
        tolerance=float(scores_bytes), passed=peak < scores_bytes,
        shapes="q[1,1024,32,64] kv[1,1024,4,64]",
    )  # fmt: skip
    assert peak < scores_bytes, (
        f"peak {peak / 1e6:.1f} MB >= one score tensor {scores_bytes / 1e6:.1f} MB"
    )
