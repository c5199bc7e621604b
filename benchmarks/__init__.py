"""greenbench's benchmarks: scripts that measure speed, overhead and what only a GPU can show,
and write their results to ``reports/``.

Every benchmark is a script run by its path, from any folder (``python benchmarks/overhead.py``,
``python benchmarks/gpu/validate.py``): its first lines put the checkout on ``sys.path``, and it
imports what it shares with the others as ``benchmarks.<module>``. The shared modules are
``sweep_runs`` (run a sweep as a user would, read its records) and ``ab_rounds`` (the A/B/C
timing method). ``gpu/`` holds the GPU checks, one module per measurement.
"""
