"""Evaluation: held-out accuracy, benchmarks with test-time compute (pass@k, maj@k, best-of-N, thinking budgets)."""
