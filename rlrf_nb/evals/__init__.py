"""Evaluations that score policies on external suites: GSM8K, FactScore, Just-Eval, and the suite that runs them
(notebook 05). The speed benchmark of ``make bench`` is not here: it is ``benchmarks/bench.py``."""
