"""Classes by ``class_path``: a user's LightningModule or LightningDataModule, and ours.

A sweep names what it trains the LightningCLI way, a dotted ``class_path`` plus ``init_args``.
``gan`` and ``vae`` are shorthands for the reference classes; they are built through the same
``build`` as any user class, with init args the harness derives from the config.

The checks here run in the parent before any point (``check_class``, ``check_init_args``,
``check_width_arg``) and raise ``UserError`` naming the sweep field; the point process only
imports and builds. Importing this module is cheap: nothing of torch or Lightning is imported
until a class is.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import inspect
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from greenbench.errors import UserError
from greenbench.records import last_line

SHORTHANDS = {"gan": "greenbench.models.gan.GAN", "vae": "greenbench.models.vae.VAE"}
BASES = {  # section -> (module, class, what a reader calls it)
    "model": ("lightning.pytorch", "LightningModule", "LightningModule"),
    "data": ("lightning.pytorch", "LightningDataModule", "LightningDataModule"),
}


def class_path(name: str) -> str:
    """The dotted path of a class: a shorthand's reference class, or ``name`` itself."""
    return SHORTHANDS.get(name, name)


@contextmanager
def importable_from(folder: str | Path | None) -> Iterator[None]:
    """Put ``folder`` (a sweep file's folder) first on the import path while the block runs."""
    if folder is None:
        yield
        return
    entry = str(folder)
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        if entry in sys.path:
            sys.path.remove(entry)


def import_class(path: str, field: str) -> type:
    """The class at ``path`` (``package.module.Class``); a ``UserError`` naming ``field`` and
    the import error's own last line when it cannot be imported."""
    module_name, _, attribute = path.rpartition(".")
    if not module_name:
        raise UserError(f"{field}: {path!r} is not a dotted path (package.module.Class)")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # a user's module may raise anything while importing
        raise UserError(f"{field}: cannot import {module_name} ({last_line(error)})") from None
    found = getattr(module, attribute, None)
    if not inspect.isclass(found):
        what = "no attribute" if found is None else f"a {type(found).__name__}, not a class,"
        raise UserError(f"{field}: {module_name} has {what} named {attribute!r}")
    return found


def check_class(cls: type, section: str, field: str) -> None:
    """``cls`` must subclass the section's Lightning base class."""
    module_name, base_name, what = BASES[section]
    base = getattr(importlib.import_module(module_name), base_name)
    if not issubclass(cls, base):
        raise UserError(f"{field}: {cls.__module__}.{cls.__qualname__} is not a {what} "
                        f"(it does not subclass {module_name}.{base_name})")


def check_init_args(cls: type, names: dict[str, str], given: set[str], section: str) -> None:
    """Every init arg in ``names`` (name -> the sweep field that sets it) is a parameter of
    ``cls``'s constructor, and every required parameter is set by one of ``given``."""
    parameters = _parameters(cls)
    takes_any = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    accepted = [name for name, p in parameters.items()
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for name, field in names.items():
        if name not in accepted and not takes_any:
            close = difflib.get_close_matches(name, accepted, n=1)
            hint = f"did you mean {close[0]!r}?" if close else (
                f"it takes {', '.join(accepted)}" if accepted else "it takes no arguments")
            raise UserError(f"{field}: {cls.__qualname__}.__init__ has no argument {name!r}; "
                            f"{hint}")
    missing = [name for name in accepted
               if parameters[name].default is inspect.Parameter.empty and name not in given]
    if missing:
        raise UserError(f"{section}.init_args: {cls.__qualname__} needs "
                        f"{', '.join(missing)}, which the sweep does not give")


def check_width_arg(cls: type, width_arg: str, value: Any) -> None:
    """``width_arg`` names an integer init arg (its value in the sweep, or its default)."""
    parameters = _parameters(cls)
    if value is None and width_arg in parameters:
        default = parameters[width_arg].default
        value = None if default is inspect.Parameter.empty else default
    if width_arg not in parameters and value is None:
        raise UserError(f"model.width_arg: {cls.__qualname__}.__init__ has no argument "
                        f"{width_arg!r}")
    if isinstance(value, bool) or not isinstance(value, int):
        shown = "no value" if value is None else f"{value!r}"
        raise UserError(f"model.width_arg: {width_arg!r} must be a whole-number init arg "
                        f"that width multiplies; it has {shown}")


def scaled_init_args(init_args: dict[str, Any], width_arg: str | None, width: float,
                     cls: type) -> dict[str, Any]:
    """The init args a point builds with: ``width`` times ``init_args[width_arg]`` (or its
    default), rounded, at least 1."""
    args = dict(init_args)
    if width_arg is not None:
        base = args.get(width_arg, _parameters(cls)[width_arg].default)
        args[width_arg] = max(1, round(base * width))
    return args


def source_sha256(cls: type) -> str | None:
    """SHA-256 of the file that defines ``cls``; None when it has no readable source file."""
    try:
        path = inspect.getsourcefile(cls)
        return hashlib.sha256(Path(path).read_bytes()).hexdigest() if path else None
    except (TypeError, OSError):
        return None


def is_generative(cls: type) -> bool:
    """A module greenbench can sample from: it has ``sample(n)``."""
    return callable(getattr(cls, "sample", None))


def _parameters(cls: type) -> dict[str, inspect.Parameter]:
    parameters = dict(inspect.signature(cls.__init__).parameters)
    parameters.pop("self", None)
    return parameters
