"""Fixtures of the property suite: the ``gate`` that runs and judges one case.

The attention function under test comes from the root conftest's
``--attention-impl`` (``attention_impl``); rows go through ``record_result``.
"""

from __future__ import annotations

import pytest
import torch

# property_tests.gate imports litert-torch (~4 s); it is imported inside the
# fixture so that a bad --attention-impl fails in ~1 s, before anything heavy.


@pytest.fixture(scope="package", autouse=True)
def _one_torch_thread():
    """Runs the property suite on one torch thread, restoring the count afterwards.

    The suite makes thousands of small-op calls; on this shared 2-core machine
    (load ~3) two OpenMP threads spin against other processes: one blockwise
    call (B3 T160 S160 N8 H256, 16 x 16 blocks) took 9.0 s on 2 threads and
    0.06 s on 1 (measured).
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def gate(attention_impl, attention_impl_spec_str, record_result, request):
    """A ``Gate`` for this test: candidate vs oracle vs standard, with rows and targets."""
    from property_tests.gate import Gate

    return Gate(attention_impl, attention_impl_spec_str, request.node.nodeid, record_result)
