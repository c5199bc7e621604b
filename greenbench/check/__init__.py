"""Energy budgets for CI: the rules of a budgets file and their validation (``rules``), the one
decision, per rule and configuration (``budget``), how verdicts are shown (``verdicts``), the
machine's calibration file (``calibration``) and the ``check`` command (``command``). A reader:
it reads results, never runs a model, never imports torch."""
