"""Hypothesis property tests of attention kernels against a float64 oracle."""
