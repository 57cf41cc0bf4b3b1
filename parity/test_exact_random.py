"""``parity.exact_random``: the same bytes on every CPU, the distribution it claims, its errors.

The stored values below are regression constants computed once (x86-64,
torch 2.13, numpy 2.4). They exist to detect cross-machine drift: if one fails
on another CPU or after a numpy upgrade, random checkpoints, prompts and
property inputs differ there too, and golden files will not match.
"""

from __future__ import annotations

import hashlib
import math
import re
import shutil

import numpy as np
import pytest
import torch

from parity import zoo
from parity.cpu_capabilities import cpu_capabilities, run_under_capability
from parity.exact_random import exact_generator, integers, normal, uniform

# normal((8,), exact_generator(0)) in units of 2**-20 (every value is such a multiple).
FIRST_NORMALS_SEED0 = (-776174, 1308830, -133951, -2415117, 2023745, 1036844, 245338, 372568)
# sha256 of normal((100_000,), exact_generator(1)) / uniform(...) as little-endian float32.
NORMALS_SHA256_SEED1 = "f595c4bb9e2ecef1159fb368e355dcc4c497da48911abbbf97a79c561122b03b"
UNIFORMS_SHA256_SEED1 = "6ec9dfd6840e1b9d8b9253bc40a3d495f1cb092cd8499a6410b957b20aa19fd7"
# integers(1, 512, 8, exact_generator(3)); uniform((4,), exact_generator(0)) in units of 2**-24.
FIRST_INTEGERS_SEED3 = [415, 44, 92, 122, 93, 410, 445, 298]
FIRST_UNIFORMS_SEED0 = (14271106, 10686443, 8575447, 4526269)
# checkpoint_hash of the zoo's random checkpoints with exact_random weights (as in
# golden/ once regenerated). Under torch.randn the tiny Llama hashed a36c4e962dd4cafe
# on one CPU path and 02cfb55153aafa1c on another.
EXPECTED_CHECKPOINT_HASHES = {
    "tiny-random-llama": "ef6d05acb6a816d0",
    "tinyllama-shaped": "c91c0f2a028c8733",
}
STATISTICS_DRAWS = 100_000
# Bounds in standard errors: 5 leaves a false alarm about once in 1.7 million runs.
STANDARD_ERRORS = 5.0

# Writes both zoo checkpoints, hashes them and encodes the token-id prompts;
# prints {"hashes": {...}, "prompts": {...}} (argv[1]: a fresh directory).
_ZOO_CHILD = """
import json, sys
from pathlib import Path
from parity import zoo
work = Path(sys.argv[1])
directories = {
    zoo.TINY_RANDOM.name: zoo.write_tiny_random_llama(work / "tiny"),
    zoo.TINYLLAMA_SHAPED.name: zoo.write_tinyllama_shaped(work / "shaped", tokenizer=False),
}
prompts = {
    f"{name}/{prompt.name}": zoo.encode_prompt(prompt, None, zoo.vocab_size(path))
    for name, path in directories.items()
    for prompt in zoo.zoo_model(name).prompts
}
hashes = {name: zoo.checkpoint_hash(path) for name, path in directories.items()}
print(json.dumps({"hashes": hashes, "prompts": prompts}))
"""


def _little_endian_sha256(values: torch.Tensor) -> str:
    return hashlib.sha256(values.numpy().astype("<f4").tobytes()).hexdigest()


def test_normal_first_values_equal_the_stored_ones():
    """Seed 0's first normals are the stored multiples of 2**-20, exactly."""
    actual = normal((8,), exact_generator(0))
    expected = torch.tensor([k * 2.0**-20 for k in FIRST_NORMALS_SEED0], dtype=torch.float32)
    assert actual.dtype == torch.float32
    assert torch.equal(actual, expected), f"normals drifted: {(actual * 2**20).tolist()}"


def test_normal_and_uniform_bytes_equal_the_stored_hashes():
    """1e5 normals and 1e5 uniforms of seed 1 hash to the stored sha256."""
    assert _little_endian_sha256(normal((STATISTICS_DRAWS,), exact_generator(1))) == (
        NORMALS_SHA256_SEED1
    )
    assert _little_endian_sha256(uniform((STATISTICS_DRAWS,), exact_generator(1))) == (
        UNIFORMS_SHA256_SEED1
    )


def test_integers_and_uniform_first_values_equal_the_stored_ones():
    """Seed 3's first integers in [1, 512) and seed 0's first uniforms are the stored ones."""
    assert integers(1, 512, 8, exact_generator(3)) == FIRST_INTEGERS_SEED3
    expected = torch.tensor([k * 2.0**-24 for k in FIRST_UNIFORMS_SEED0], dtype=torch.float32)
    assert torch.equal(uniform((4,), exact_generator(0)), expected)


def test_normal_has_mean_zero_and_variance_one():
    """Over 1e5 draws the mean is within 5 standard errors of 0 and the variance of 1.

    Standard error of the mean: 1 / sqrt(n). Of the sample variance:
    sqrt((kurtosis - 1) / n), which is sqrt(2 / n) for a normal and a little
    less for Irwin-Hall with 12 terms (kurtosis 2.9), so the bound is safe.
    """
    values = normal((STATISTICS_DRAWS,), exact_generator(7)).double()
    mean_bound = STANDARD_ERRORS / math.sqrt(STATISTICS_DRAWS)
    variance_bound = STANDARD_ERRORS * math.sqrt(2 / STATISTICS_DRAWS)
    assert abs(values.mean().item()) < mean_bound
    assert abs(values.var().item() - 1.0) < variance_bound


def test_normal_values_are_multiples_of_2_pow_minus_20_within_six():
    """Every normal is k * 2**-20 with |k| <= 6 * 2**20 (the Irwin-Hall sum, exact in float32)."""
    units = normal((STATISTICS_DRAWS,), exact_generator(2)).double() * 2**20
    assert torch.equal(units, units.round())
    assert units.abs().max().item() <= 6 * 2**20


def test_uniform_values_are_in_the_unit_interval():
    """Uniforms lie in [0, 1) and are multiples of 2**-24."""
    values = uniform((STATISTICS_DRAWS,), exact_generator(2))
    assert values.min().item() >= 0.0 and values.max().item() < 1.0
    units = values.double() * 2**24
    assert torch.equal(units, units.round())


def test_first_values_do_not_depend_on_how_many_are_drawn():
    """A longer draw starts with the shorter one, across the sampler's internal chunks."""
    short = normal((3, 7001), exact_generator(4)).flatten()  # 21003 values: two chunks
    long = normal((30_000,), exact_generator(4))
    assert torch.equal(long[: short.numel()], short)


def test_draws_advance_the_stream_and_seeds_differ():
    """Two draws from one generator differ; the same seed repeats; another seed does not."""
    generator = exact_generator(5)
    first, second = normal((16,), generator), normal((16,), generator)
    assert not torch.equal(first, second)
    assert torch.equal(torch.cat([first, second]), normal((32,), exact_generator(5)))
    assert not torch.equal(first, normal((16,), exact_generator(6)))


def test_normal_accepts_a_torch_size_and_an_empty_shape():
    """Shapes may be a torch.Size; a zero-sized shape gives an empty tensor of that shape."""
    generator = exact_generator(0)
    assert normal(torch.Size([2, 3]), generator).shape == (2, 3)
    assert normal((0, 4), generator).shape == (0, 4)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: exact_generator(-1), "seed (-1) must be a non-negative int"),
        (lambda: exact_generator(1.5), "seed (1.5) must be a non-negative int"),
        (lambda: normal((2, -1), exact_generator(0)), "shape ((2, -1)) must be a sequence of"),
        (lambda: uniform((2.0,), exact_generator(0)), "shape ((2.0,)) must be a sequence of"),
        (lambda: integers(5, 5, 3, exact_generator(0)), "low (5) must be less than high (5)"),
        (lambda: integers(0, 5, -1, exact_generator(0)), "size (-1) must be a non-negative int"),
        (lambda: integers(0, 5.0, 2, exact_generator(0)), "high (5.0) must be an int"),
    ],
    ids=["negative-seed", "float-seed", "negative-dim", "float-dim", "empty-range",
         "negative-size", "float-high"],
)  # fmt: skip
def test_bad_arguments_raise_value_error_naming_argument_and_value(call, message):
    """Each bad argument raises ValueError with its name and value."""
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        call()


def test_a_torch_generator_is_refused_with_type_error():
    """Passing a torch.Generator (the old fixtures' habit) raises TypeError naming the fix."""
    with pytest.raises(TypeError, match=r"must be an ExactGenerator .*not a Generator"):
        normal((2,), torch.Generator().manual_seed(0))


def test_tiny_random_llama_hash_equals_the_stored_one(tmp_path):
    """The quick tests' tiny Llama, written in process, has the stored checkpoint hash."""
    path = zoo.write_tiny_random_llama(tmp_path / "tiny")
    assert zoo.checkpoint_hash(path) == EXPECTED_CHECKPOINT_HASHES[zoo.TINY_RANDOM.name]


def test_random_checkpoints_and_prompts_are_identical_on_every_cpu_path(tmp_path):
    """Checkpoint hashes and token-id prompts agree under every CPU path torch can be forced onto.

    Each path runs in a child process (``ATEN_CPU_CAPABILITY`` is read once at
    start-up); about 7 s per path, most of it drawing the tinyllama-shaped
    model's 90 M weights. With ``torch.randn`` weights this test fails.
    """
    results = {}
    for capability in cpu_capabilities():
        work = tmp_path / capability
        results[capability] = run_under_capability(_ZOO_CHILD, capability, [str(work)])
        shutil.rmtree(work)  # ~370 MB per path; only the hashes are needed
    hashes = {capability: result["hashes"] for capability, result in results.items()}
    assert len({tuple(sorted(h.items())) for h in hashes.values()}) == 1, (
        f"checkpoint hashes differ per CPU path: {hashes}"
    )
    assert next(iter(hashes.values())) == EXPECTED_CHECKPOINT_HASHES, (
        f"checkpoint hashes {hashes} differ from the stored {EXPECTED_CHECKPOINT_HASHES}"
        " (if the writer changed on purpose, store the new hashes here and regenerate golden/)"
    )
    prompts = {capability: result["prompts"] for capability, result in results.items()}
    first = next(iter(prompts.values()))
    assert all(p == first for p in prompts.values()), f"prompts differ per CPU path: {prompts}"
    models = (zoo.TINY_RANDOM, zoo.TINYLLAMA_SHAPED)
    assert set(first) == {f"{m.name}/{p.name}" for m in models for p in m.prompts}
    assert all(1 <= i < 512 for ids in first.values() for i in ids)  # never id 0 (padding)


def test_scaling_by_a_python_float_is_one_float32_rounding():
    """``std * normal(...)`` rounds std to float32, then the product once (as the docs assume).

    Two float32 significands multiply exactly in float64 (48 < 53 bits), so
    rounding that product to float32 is the correctly rounded float32 product.
    """
    values = normal((1000,), exact_generator(8))
    std = 1 / math.sqrt(160)
    expected = (values.double() * np.float64(np.float32(std))).float()
    assert torch.equal(std * values, expected)
