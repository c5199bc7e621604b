"""Budget rules: the schema of a budgets file and its validation, one line per problem.

A budgets file is a list of rules (or ``rules:`` holding that list)::

    - name: bf16 GAN trains on less energy than 32-true
      select: {model: gan, precision: bf16-mixed}
      metric: energy_fit_j
      max_ratio: 0.9
      relative_to: {model: gan, precision: 32-true}
      tolerance: 0.05

Every number (a bound, a ratio, the tolerance, a numeric config field in ``select`` or
``relative_to``) is written as a finite number: never a boolean, never text such as ``"0.5"``,
never NaN or infinity; the config fields that are text (``model``, ``dataset``, ``precision``)
are written as text. A rule's name and text values are plain text on one line: no control
characters, which would break the terminal table and the JUnit XML.

A sweep over a user's class selects on its init args by their results columns, and bounds its
quality metric by the metric's column::

    - name: lr 0.01 reaches a val_acc of 0.9
      select: {model: mypkg.models.MyNet, "model.init_args.lr": 0.01}
      metric: val_acc
      min: 0.9

An init arg (``model.init_args.<name>``, ``data.init_args.<name>``) takes the value the sweep
gave it: text, a number or true/false; one that no record has is an error naming it. How
rules are decided is ``budget``'s.
"""

from __future__ import annotations

import difflib
import math
import unicodedata
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, ConfigDict, Field, create_model, model_validator

from greenbench.errors import UserError
from greenbench.records import POINT_FIELDS, TEXT_POINT_FIELDS, is_argument
from greenbench.yamlfile import StrictModel, load_yaml, number, validate

BOUNDS = ("max", "min", "max_ratio", "min_ratio")
SELECTABLE = POINT_FIELDS  # a rule selects runs by what was trained, and by init args:
# Characters that reorder or hide printed text: the bidirectional embeddings and isolates.
_BIDI = frozenset(chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A)))


def unprintable(text: str) -> str | None:
    """The first character of ``text`` that must not reach a terminal or an XML file (a
    control character, a lone surrogate, a bidirectional override, U+FFFE/U+FFFF), or None."""
    for char in text:
        if (unicodedata.category(char) in ("Cc", "Cs") or char in _BIDI
                or char in ("\ufffe", "\uffff")):
            return char
    return None


def _plain_text(text: str) -> str:
    char = unprintable(text)
    if char is not None:
        raise ValueError(f"contains the unprintable character U+{ord(char):04X}; write plain "
                         "text on one line")
    return text


PlainText = Annotated[str, AfterValidator(_plain_text)]


class _SelectionBase(StrictModel):
    """Config fields and the values a rule selects runs by; text fields take text, the others
    numbers; an init arg (``model.init_args.lr``) takes text, a number or true/false."""

    model_config = ConfigDict(extra="allow", frozen=True)  # init args, checked below

    @model_validator(mode="before")
    @classmethod
    def _known_fields(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, value in data.items():
                if key in SELECTABLE:
                    continue
                if isinstance(key, str) and is_argument(key):
                    _init_arg_value(key, value)
                    continue
                close = difflib.get_close_matches(str(key), SELECTABLE, n=1)
                hint = (f"; did you mean '{close[0]}'?" if close else
                        "; an init arg is selected as model.init_args.<name> or "
                        "data.init_args.<name>, a trainer keyword as trainer.<name>"
                        if "." in str(key) else "")
                raise ValueError(f"{key!r} is not a config field to select on{hint}")
        return data

    def given(self) -> dict[str, Any]:
        """The fields this selection names, with their values, in ``POINT_FIELDS`` order, then
        the init args in the order written."""
        return {key: value for key, value in self if value is not None}


def _init_arg_value(key: str, value: Any) -> None:
    """An init arg's value in a selection: text, a finite number or a boolean (null: any)."""
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, str):
        char = unprintable(value)
        if char is not None:
            raise ValueError(f"{key!r}: contains the unprintable character U+{ord(char):04X}; "
                             "write plain text on one line")
        return
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ValueError(f"{key!r}: {value!r} should be a finite number")
        return
    raise ValueError(f"{key!r}: {_short(value)} should be text, a number or true/false, as "
                     "the sweep set the init arg")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


Selection = create_model(
    "Selection", __base__=_SelectionBase,
    **{key: ((PlainText if key in TEXT_POINT_FIELDS else number(float)) | None, None)
       for key in POINT_FIELDS},
)


class Rule(StrictModel):
    name: Annotated[PlainText, Field(min_length=1)]
    select: Selection = Field(default_factory=Selection)
    metric: str
    max: number(float) | None = None
    min: number(float) | None = None
    max_ratio: number(float, gt=0) | None = None
    min_ratio: number(float, gt=0) | None = None
    relative_to: Selection | None = None
    tolerance: number(float, ge=0, le=10) = 0.0
    statistic: Literal["mean", "upper_ci", "lower_ci"] = "mean"

    @model_validator(mode="after")
    def _one_bound(self) -> Rule:
        bounds = [k for k in BOUNDS if getattr(self, k) is not None]
        if len(bounds) != 1:
            raise ValueError("give exactly one of max, min, max_ratio, min_ratio")
        if self.relative_to is not None and bounds[0] in ("max", "min"):
            raise ValueError("relative_to goes with max_ratio or min_ratio, not an absolute bound")
        if bounds[0].endswith("_ratio") and self.statistic != "mean":
            raise ValueError(f"statistic {self.statistic} goes with an absolute bound (max or "
                             "min); a ratio is of means, tested for significance")
        return self

    @property
    def bound_kind(self) -> str:
        return next(k for k in BOUNDS if getattr(self, k) is not None)

    @property
    def bound(self) -> float:
        return getattr(self, self.bound_kind)

    @property
    def is_ratio(self) -> bool:
        return self.bound_kind.endswith("_ratio")

    @property
    def uses_baseline(self) -> bool:
        """A ratio to the same selection in a stored results file (``check --baseline``)."""
        return self.is_ratio and self.relative_to is None

    @property
    def effective_bound(self) -> float:
        """The bound widened by the tolerance, a fraction of its size: up for a max, down for a
        min, whatever the bound's sign."""
        room = self.tolerance * abs(self.bound)
        return self.bound + room if self.bound_kind.startswith("max") else self.bound - room


class Budgets(StrictModel):
    rules: list[Rule] = Field(min_length=1)


def load_budgets(path: str | Path, columns: list[str],
                 fields: list[str] | None = None) -> list[Rule]:
    """Read and validate a budgets file; ``columns`` are the metrics a rule may name, and
    ``fields`` (when given) the columns of the records, which every init arg a rule selects
    on must be."""
    path = Path(path)
    data = load_yaml(path)
    if isinstance(data, list):
        data = {"rules": data}
    rules = validate(Budgets, data, path).rules
    for i, rule in enumerate(rules):
        if rule.metric not in columns:
            close = difflib.get_close_matches(rule.metric, columns, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise UserError(f"{path}: rules[{i}].metric: {rule.metric!r} is not a results "
                            f"column{hint}")
        if fields is not None:
            _selected_columns(path, i, rule, fields)
    names = [rule.name for rule in rules]
    for name in names:
        if names.count(name) > 1:
            raise UserError(f"{path}: rule name {name!r} appears twice")
    return rules


def _selected_columns(path: Path, i: int, rule: Rule, fields: list[str]) -> None:
    """A ``UserError`` naming the field when a rule selects on an init arg that no record
    has."""
    known = sorted((field for field in map(str, fields) if is_argument(field)),
                   key=lambda field: (not field.startswith("model."), field))
    for where in ("select", "relative_to"):
        selection = getattr(rule, where)
        for key in selection.given() if selection is not None else {}:
            if key in fields:
                continue
            close = _close_init_arg(key, known)
            hint = (f"; did you mean '{close}'?" if close else
                    f" (their init args: {', '.join(known)})" if known else
                    " (none of them has init args: those are a user's class's)")
            raise UserError(f"{path}: rules[{i}].{where}.{key}: not a column of these "
                            f"records{hint}")


def _close_init_arg(key: str, known: list[str]) -> str | None:
    """The init arg of ``known`` whose name is closest to ``key``'s (any case; its own
    section's first), or None."""
    def name(field: str) -> str:
        return field.split(".init_args.", 1)[1].lower()

    section = key.split(".", 1)[0]
    by_name = {name(field): field for field in sorted(known, key=lambda f: f.startswith(section))}
    close = difflib.get_close_matches(name(key), list(by_name), n=1)
    return by_name[close[0]] if close else None
