"""Reading greenbench's YAML files: a safe loader, schema validation, one-line errors.

Sweep files (and, later, budget files) go through the same two steps. ``load_yaml`` parses with a
safe loader that never constructs Python objects, reads numbers the way people write them
(``1e-4`` is a float, not the string PyYAML 1.1 makes of it) and refuses duplicate keys.
``validate`` checks the parsed data against a pydantic schema and turns the first problem into
one line that names the file and the field, e.g.
``sweep.yaml: grid.precision[1]: '12-mixed' is not one of 32-true, 64-true, ...``.
"""

from __future__ import annotations

import difflib
import re
import typing
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from greenbench.errors import UserError

Schema = TypeVar("Schema", bound=BaseModel)


class StrictModel(BaseModel):
    """Base of every config section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _plain_number(value: Any) -> Any:
    # One rule for every number in a sweep or budgets file: a number is written as a number.
    # pydantic would read `true` as 1 and "0.5" as 0.5; both are mistakes, not spellings.
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {str(value).lower()}")
    if isinstance(value, str):
        raise ValueError(f"expected a number, got the text {value!r} (write it without quotes)")
    return value


def number(kind: type, **bounds: Any) -> Any:
    """A finite ``int`` or ``float`` field with pydantic bounds (``gt``, ``le``, ...): never a
    boolean, never text, never NaN or infinity."""
    return Annotated[kind, BeforeValidator(_plain_number), Field(allow_inf_nan=False, **bounds)]


class _Loader(yaml.SafeLoader):
    """A SafeLoader that reads ``1e-4`` as a float and refuses a key given twice."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # '<<' merges may override keys; only literal repeats are mistakes
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, typing.Hashable):
                continue  # the base class reports unhashable keys
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{key}' appears twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


# YAML 1.1 floats need a dot and a signed exponent, so PyYAML reads 1e-4, 1e6 and 2.5e3 as
# strings. Scientific notation without a dot is what people write for learning rates.
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load_yaml(path: Path) -> Any:
    """Parse a YAML file safely; every problem becomes a ``UserError`` naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, not a YAML file") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    except OSError as e:
        raise UserError(f"{path}: cannot be read ({e.strerror})") from None
    try:
        return yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader: no Python objects
    except yaml.MarkedYAMLError as e:
        raise UserError(f"{path}: {_describe_yaml_error(e)}") from None
    except yaml.YAMLError as e:
        raise UserError(f"{path}: invalid YAML ({e})") from None


def _describe_yaml_error(e: yaml.MarkedYAMLError) -> str:
    mark = e.problem_mark or e.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
    problem = e.problem or e.context or "invalid YAML"
    tag = re.search(r"constructor for the tag '([^']+)'", problem)
    if tag:
        name = tag.group(1).replace("tag:yaml.org,2002:", "!!")
        return f"{where}: YAML tag {name} is not allowed (greenbench reads plain YAML only)"
    if "appears twice" in problem:
        return f"{where}: {problem}"
    return f"{where}: invalid YAML ({problem})"


def validate(schema: type[Schema], data: Any, path: Path) -> Schema:
    """Check parsed YAML against ``schema``; the first problem becomes a one-line ``UserError``."""
    if data is None:
        raise UserError(f"{path}: the file is empty")
    if not isinstance(data, dict):
        raise UserError(f"{path}: the top level must be a mapping of keys to values, "
                        f"not a {_yaml_type(data)}")
    try:
        return schema.model_validate(data)
    except ValidationError as e:
        errors = e.errors()
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise UserError(f"{path}: {describe_error(errors[0], schema)}{more}") from None


def describe_error(error: dict, schema: type[BaseModel]) -> str:
    """One pydantic error as ``field.path: what is wrong``."""
    loc = error["loc"]
    field = format_loc(loc)
    kind = error["type"]
    value = _short_repr(error.get("input"))
    if kind == "missing":
        message = "required"
    elif kind == "extra_forbidden":
        known = _field_names(schema, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"known keys: {', '.join(known)}"
        message = f"unknown key; {hint}"
    elif kind == "literal_error":
        choices = error["ctx"]["expected"].replace("'", "").replace(" or ", ", ")
        message = f"{value} is not one of {choices}"
    elif kind == "value_error":
        message = str(error["ctx"]["error"])
    elif kind in _PLAIN_WORDS:
        message = f"{value} {_PLAIN_WORDS[kind]}"
    else:
        message = f"{value} {_plain(error['msg'])}"
    return f"{field}: {message}" if field else message


_PLAIN_WORDS = {
    "too_short": "is empty; give at least one value",
    "model_type": "should be a mapping of keys to values",
    "dict_type": "should be a mapping of keys to values",
    "list_type": "should be a list",
    "string_type": "should be text",
    "float_parsing": "is not a number",
    "float_type": "is not a number",
    "int_parsing": "is not a whole number",
    "int_type": "is not a whole number",
    "int_from_float": "is not a whole number",
}


def format_loc(loc: tuple) -> str:
    """``('grid', 'precision', 1)`` -> ``grid.precision[1]``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _plain(msg: str) -> str:
    msg = msg.removeprefix("Value error, ")
    msg = re.sub(r"^Input should be", "should be", msg)
    return msg[:1].lower() + msg[1:]


def _short_repr(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _yaml_type(value: Any) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}.get(
        type(value), type(value).__name__
    )


def _field_names(schema: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the (sub-)schema that ``loc`` points into; [] if it is not a schema."""
    current: Any = schema
    for part in loc:
        if isinstance(part, int):
            continue
        model = _as_model(current)
        if model is None or part not in model.model_fields:
            return []
        current = model.model_fields[part].annotation
    model = _as_model(current)
    return list(model.model_fields) if model else []


def _as_model(annotation: Any) -> type[BaseModel] | None:
    """The schema an annotation holds: itself, or inside ``X | None``, ``list[X]``, ..."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        model = _as_model(arg)
        if model is not None:
            return model
    return None
