"""Benchmarks: one script per measured claim (bench_*.py), each printing a table with a ratio
to a baseline measured in the same run."""
