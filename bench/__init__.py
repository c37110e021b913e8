"""Benchmarks: each worker against raw-client baselines on the same broker and database, same run."""
