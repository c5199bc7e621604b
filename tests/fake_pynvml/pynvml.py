"""``pynvml`` for a process a test starts on a machine without a GPU: put this folder first on
``PYTHONPATH`` (and the checkout after it). It holds the real binding's constants and exception
classes, and the functions of a ``tests.nvml_fake.FakeNvml`` with one GPU on the real clock
(UUID ``FAKE_NVML_UUID``, default ``GPU-fake-0000``). Every NVML init and shutdown, and every
fork of a process that imported it, is appended to the file ``FAKE_NVML_LOG`` (when set) as a
JSON line with the process id and the session's reference count, so that a test can see what a
process held when it forked."""

import importlib.machinery
import importlib.util
import json
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
_found = importlib.machinery.PathFinder.find_spec(
    "pynvml", [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE])
# the real binding under its own name: it builds its exception classes on sys.modules[__name__]
_spec = importlib.util.spec_from_file_location("_real_pynvml", _found.origin)
_real = sys.modules["_real_pynvml"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_real)
globals().update({name: value for name, value in vars(_real).items()
                  if not name.startswith("__")})
_nvmlLib_refcount = 0

from tests.nvml_fake import FakeGpu, FakeNvml, RealClock  # noqa: E402  (after the constants)

_fake = FakeNvml(FakeGpu(os.environ.get("FAKE_NVML_UUID", "GPU-fake-0000"),
                         energy_mj=5_000_000_000, counter_update_s=0.1, counter_offset_s=0.03),
                 clock=RealClock(), module=sys.modules[__name__])
globals().update({name: getattr(_fake, name) for name in FakeNvml.FUNCTIONS})


def _log(event: str) -> None:
    path = os.environ.get("FAKE_NVML_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as log:
            log.write(json.dumps({"event": event, "pid": os.getpid(),
                                  "refcount": _fake.refcount}) + "\n")


def _logged(function, event):
    def call(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        finally:
            _log(event)
    return call


nvmlInit = _logged(_fake.nvmlInit, "init")
nvmlShutdown = _logged(_fake.nvmlShutdown, "shutdown")
os.register_at_fork(before=lambda: _log("fork"))
