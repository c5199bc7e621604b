"""Energy budgets for CI: the rules of a budgets file and their validation (``rules``), the one
decision, per rule and configuration (``budget``), how verdicts are shown (``verdicts``: the
terminal, the job summary, JUnit), what CI's benchmark trackers read (``exports``:
github-action-benchmark's and Bencher's JSON) and the pull-request comment (``comment``), the
machine's calibration file (``calibration``) and the ``check`` command (``command``). A reader:
it reads results, never runs a model, never imports torch."""
