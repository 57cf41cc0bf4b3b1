"""parity: the verification harness (oracle, tolerances, comparisons, golden
files, results, report) and the end-to-end parity suites."""
