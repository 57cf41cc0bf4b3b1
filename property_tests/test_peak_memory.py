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
