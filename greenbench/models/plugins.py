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
import os
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
    "callbacks": ("lightning.pytorch", "Callback", "Lightning Callback"),
    "logger": ("lightning.pytorch.loggers", "Logger", "Lightning Logger"),
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
        with _exit_said(module_name, field):
            module = importlib.import_module(module_name)
    except SystemExit as error:  # sys.exit() while importing: a user's mistake, not ours
        raise UserError(f"{field}: importing {module_name} called sys.exit({error.code!r}); "
                        "a module a sweep names must import without exiting") from None
    except Exception as error:  # a user's module may raise anything while importing
        raise UserError(f"{field}: cannot import {module_name} ({last_line(error)})") from None
    found = getattr(module, attribute, None)
    if not inspect.isclass(found):
        what = "no attribute" if found is None else f"a {type(found).__name__}, not a class,"
        raise UserError(f"{field}: {module_name} has {what} named {attribute!r}")
    return found


@contextmanager
def _exit_said(module_name: str, field: str) -> Iterator[None]:
    """While a user's module is imported, ``os._exit`` first says, in greenbench's one-line
    form, which module ended the process and from which sweep field (exit status 2)."""
    real_exit = os._exit

    def said(status: int) -> None:
        print(f"error: {field}: importing {module_name} called os._exit({status}); a module a "
              "sweep names must import without exiting", file=sys.stderr, flush=True)
        real_exit(2)

    os._exit = said
    try:
        yield
    finally:
        os._exit = real_exit


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


def width_base(init_args: dict[str, Any], width_arg: str, cls: type) -> Any:
    """What ``width`` multiplies: ``init_args[width_arg]``, or the constructor's default."""
    return init_args.get(width_arg, _parameters(cls)[width_arg].default)


def scaled_init_args(init_args: dict[str, Any], width_arg: str | None, width: float,
                     cls: type) -> dict[str, Any]:
    """The init args a point builds with: ``width`` times ``init_args[width_arg]`` (or its
    default), rounded, at least 1."""
    args = dict(init_args)
    if width_arg is not None:
        args[width_arg] = max(1, round(width_base(args, width_arg, cls) * width))
    return args


def source_sha256(cls: type) -> str | None:
    """SHA-256 of the source ``cls`` is built from: the file that defines it and, for a class
    of a user's package (not an installed one, not greenbench), every module of that package,
    since a helper module may build the network; None when it has no readable source file."""
    try:
        path = inspect.getsourcefile(cls)
        if not path:
            return None
        digest = hashlib.sha256()
        for file in _source_files(cls.__module__, Path(path)):
            digest.update(file.name.encode() + b"\0" + file.read_bytes())
        return digest.hexdigest()
    except (TypeError, OSError):
        return None


def _source_files(module_name: str, defining: Path) -> list[Path]:
    """The defining file, or every module of the user's package it belongs to (a package that
    is neither greenbench nor installed: one beside the sweep file, say)."""
    top_name = module_name.split(".")[0]
    folders = list(getattr(sys.modules.get(top_name), "__path__", []))
    if top_name == "greenbench" or len(folders) != 1:
        return [defining]
    folder = Path(folders[0]).resolve()
    if {"site-packages", "dist-packages"} & set(folder.parts):
        return [defining]
    return sorted(folder.rglob("*.py"))


# What a count of samples is called, when ``sample``'s one argument carries no ``int`` annotation.
COUNT_NAMES = frozenset({"n", "num", "count", "number", "num_samples", "n_samples", "samples",
                         "num_images", "batch_size", "size", "k"})


def sampler_problem(cls: type) -> str | None:
    """Why ``cls`` has no ``sample(n)`` greenbench can call (None when it has): a sampler takes
    one count of samples, an ``int`` or an argument named like one (``n``, ``num_samples``), and
    nothing else it needs. ``sample(self, logits, temperature=1.0)`` draws from given logits; it
    is not a sampler."""
    sample = getattr(cls, "sample", None)
    if not callable(sample):
        return "it has no sample(n)"
    try:
        parameters = list(inspect.signature(sample).parameters.values())
    except (TypeError, ValueError):
        return "its sample has no signature to read"
    if parameters and parameters[0].name == "self":
        parameters = parameters[1:]
    required = [p for p in parameters if p.default is inspect.Parameter.empty
                and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    shown = f"sample{inspect.signature(sample)}".replace("(self, ", "(").replace("(self)", "()")
    if len(required) != 1 or required[0].kind is inspect.Parameter.KEYWORD_ONLY:
        return f"{shown} does not take one count of samples"
    count = required[0]
    if count.annotation in (int, "int") or count.name in COUNT_NAMES:
        return None
    return f"{shown} takes {count.name!r}, not a count of samples"


def is_generative(cls: type) -> bool:
    """A module greenbench can sample from: it has ``sample(n)`` (``sampler_problem``)."""
    return sampler_problem(cls) is None


def _parameters(cls: type) -> dict[str, inspect.Parameter]:
    parameters = dict(inspect.signature(cls.__init__).parameters)
    parameters.pop("self", None)
    return parameters
