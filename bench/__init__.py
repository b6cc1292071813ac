"""hookrun benchmarks: `make bench` runs bench/run.py."""
