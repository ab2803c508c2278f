"""The uncertainty benchmark: datasets, correctness judges, baselines, metrics, runs."""
