"""Parametrisation of the chain suites: one readable case per (model, leg, prompt).

Case ids read ``<model>-<leg>-<prompt>``, e.g. ``smollm2-135m-tflite_flash-turboprop``.
Each case carries its model's markers (quick / slow / needs_checkpoint) and
``tflite`` for the TFLite legs (one-shot and chunked), so ``-m quick`` or ``-m "not tflite"`` select
as documented in tox.ini.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

import pytest

from parity import legs as L
from parity.zoo import ZOO, ZooModel


@dataclasses.dataclass(frozen=True)
class ChainCase:
    """One leg of one zoo model on one of its prompts."""

    model: ZooModel
    leg: str
    prompt: str

    @property
    def case_id(self) -> str:
        return f"{self.model.name}-{self.leg}-{self.prompt}"


def leg_cases(legs: Sequence[str], models: Iterable[ZooModel] = ZOO) -> list:
    """``pytest.param`` per (model, leg, prompt), with the model's and the leg's markers."""
    params = []
    for model in models:
        for leg in legs:
            marks = [getattr(pytest.mark, name) for name in model.marks]
            # Under pytest-xdist (--dist loadgroup, the root conftest's default with
            # -n) a model's cases share one worker, so its chain is built once.
            marks.append(pytest.mark.xdist_group(model.name))
            if L.is_tflite(leg):
                marks = [mark for mark in marks if mark.name != "quick"] + [pytest.mark.tflite]
            for prompt in model.prompts:
                case = ChainCase(model, leg, prompt.name)
                params.append(pytest.param(case, id=case.case_id, marks=marks))
    return params
