"""Performance harness: `python benchmarks/run.py [--quick] --out DIR` (see run.py)."""
