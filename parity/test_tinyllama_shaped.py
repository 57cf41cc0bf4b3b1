"""Flash vs standard on a TinyLlama-1.1B-shaped checkpoint directory written by the test.

TinyLlama's config.json fields (hidden 2048, 32 heads, 4 KV heads, head_dim 64,
intermediate 5632, RoPE 10000, untied embeddings) with 2 layers and a 512-token
vocab, random seeded weights, loaded through ``edge_flash.build_model``. Two
prompts: the tokenizer's "What is a turboprop?" (20 ids, one query block) and
300 seeded random ids (two query blocks of 256, three KV blocks of 128).
Each is prefilled and then decoded greedily for 8 steps.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edge_flash import TorchRunner, build_model
from edge_flash.logit_checks import LOGIT_BUDGETS, OWNER_ATOL, allowed_error, check_logits
from parity.random_checkpoints import write_tinyllama_shaped_checkpoint

SEED = 0
KV_LEN = 512
DECODE_STEPS = 8
MODEL = "tinyllama-shaped-2l"
TURBOPROP = "What is a turboprop?"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_tinyllama_shaped_checkpoint(tmp_path_factory.mktemp("tinyllama"), seed=SEED)


@pytest.fixture(scope="module")
def prompts(checkpoint):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    random_ids = np.random.default_rng(SEED).integers(3, 512, size=300)
    return {
        "turboprop-20": tokenizer(TURBOPROP).input_ids,
        "random-300": [int(i) for i in random_ids],
    }


@pytest.fixture(scope="module")
def models(checkpoint):
    return {
        "standard": build_model(checkpoint, use_flash_attention=False),
        "flash": build_model(checkpoint, use_flash_attention=True),
    }


def _prefill_then_decode(model, prompt, dtype=torch.float32):
    """Prefill logits (T, V), then the logits of each greedy decode step (steps, V) and ids."""
    runner = TorchRunner(model, KV_LEN, dtype=dtype)
    prefill = runner.prefill(prompt)
    last, steps, tokens = prefill[-1], [], []
    for _ in range(DECODE_STEPS):
        tokens.append(int(np.argmax(last)))
        last = runner.decode(tokens[-1])
        steps.append(last)
    return {"prefill": prefill, "decode": np.stack(steps), "tokens": tokens}


@pytest.fixture(scope="module")
def runs(models, prompts):
    return {
        (name, leg): _prefill_then_decode(model, prompt)
        for name, prompt in prompts.items()
        for leg, model in models.items()
    } | {
        (name, "fp64"): _prefill_then_decode(models["standard"], prompt, torch.float64)
        for name, prompt in prompts.items()
    }


PROMPTS = ["turboprop-20", "random-300"]
PHASES = ["prefill", "decode"]


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("prompt", PROMPTS)
def test_flash_and_standard_logits_agree_within_owner_bound(runs, record_result, prompt, phase):
    """build_model(path, use_flash_attention=True) and False agree within 1e-4."""
    message = check_logits(
        record_result,
        case_id=f"{MODEL}-{prompt}-{phase}",
        model=MODEL,
        legs="flash-vs-standard",
        actual=runs[prompt, "flash"][phase],
        expected=runs[prompt, "standard"][phase],
        tolerance=OWNER_ATOL,
        why="owner's bound for flash vs standard on the same weights",
        seed=SEED,
    )
    assert not message, message


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("prompt", PROMPTS)
def test_flash_error_against_fp64_is_that_of_standard(runs, record_result, prompt, phase):
    """Against the float64 run, flash's error is within 2x standard's (+ 16 u |logits|)."""
    oracle = runs[prompt, "fp64"][phase]
    standard_error = float(np.abs(runs[prompt, "standard"][phase] - oracle).max())
    budget = LOGIT_BUDGETS["torch-flash"]
    message = check_logits(
        record_result,
        case_id=f"{MODEL}-{prompt}-{phase}",
        model=MODEL,
        legs="flash-vs-fp64",
        actual=runs[prompt, "flash"][phase],
        expected=oracle,
        tolerance=allowed_error(budget, standard_error, oracle),
        why=f"{budget.why}; standard's error {standard_error:.2e}",
        seed=SEED,
    )
    assert not message, message


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_tokens_are_the_same_for_flash_standard_and_fp64(runs, prompt):
    """The 8 greedy decode tokens are identical on every leg."""
    expected = runs[prompt, "fp64"]["tokens"]
    assert runs[prompt, "standard"]["tokens"] == expected
    assert runs[prompt, "flash"]["tokens"] == expected


def test_transformers_reads_the_checkpoint_like_the_litert_loader(
    checkpoint, prompts, runs, record_result
):
    """HF transformers' logits on the written checkpoint match build_model's (loader mapping)."""
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(
        checkpoint, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    prompt = prompts["turboprop-20"]
    with torch.no_grad():
        actual = hf(torch.tensor([prompt])).logits[0].numpy()
    oracle = runs["turboprop-20", "fp64"]["prefill"]
    standard_error = float(np.abs(runs["turboprop-20", "standard"]["prefill"] - oracle).max())
    # HF computes the same Llama in another fp32 op order: another draw of the
    # standard leg's rounding. A loader bug (a swapped or mis-fused projection)
    # moves logits by O(1), far outside this.
    budget = LOGIT_BUDGETS["torch-flash"]
    message = check_logits(
        record_result,
        case_id=f"{MODEL}-turboprop-20-prefill",
        model=MODEL,
        legs="hf-vs-fp64",
        actual=actual,
        expected=oracle,
        tolerance=allowed_error(budget, standard_error, oracle),
        why=f"another fp32 op order of the same model: 2x standard's error {standard_error:.2e}"
        " + 16 u |logits|",
        seed=SEED,
    )
    assert not message, message
