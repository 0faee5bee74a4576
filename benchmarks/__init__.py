"""Performance harnesses that print tables (not timed tests).

``python -m benchmarks`` (= ``make bench``) runs the platform's hot-path harness (see
``benchmarks/__main__.py``); ``python -m benchmarks.bench_compare`` times the compare step.
"""
