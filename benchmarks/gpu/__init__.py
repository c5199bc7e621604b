"""What only a GPU can check, one module per measurement.

Two scripts, run by their paths from any folder:

* ``first_contact.py``: the first thing to run when a GPU is lent (a few minutes): the device
  and its MIG mode, NVML in a point forked from the warm server, power (averaged and
  instantaneous) and the energy counter logged at 50 Hz across idle, matrix products and idle
  again, then the quick validation without the quickstart. Writes
  ``reports/gpu-first-contact-<gpu>.md``.
* ``validate.py``: the validation (under 8 minutes): ``nvml_counter``, ``callback_overhead``,
  ``precisions``, ``flops``, ``quickstart``. Writes ``reports/gpu-validation-<gpu>.md``.

Both refuse in one line and exit 2 where there is no CUDA GPU; every section has a time limit
and the whole script one. ``docs/gpu.md`` says what each figure means.
"""
