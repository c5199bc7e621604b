"""Reading greenbench's YAML files: a safe loader, schema validation, one-line errors.

Sweep files (and, later, budget files) go through the same two steps. ``load_yaml`` parses with a
safe loader that never constructs Python objects, reads numbers the way people write them
(``1e-4`` is a float, not the string PyYAML 1.1 makes of it) and refuses duplicate keys.
``validate`` checks the parsed data against a pydantic schema and turns the first problem into
one line that names the file and the field, e.g.
``sweep.yaml: grid.precision[1]: '12-mixed' is not one of 32-true, 64-true, ...``.

Limits, so that no file can make greenbench read, parse or print without end: a file is a
regular file of at most ``MAX_BYTES`` (checked before parsing; never more than that is read),
nested at most ``MAX_DEPTH`` levels, and its aliases repeat at most ``MAX_ALIASED_NODES``
values in all (a billion-laughs file is refused at its first alias beyond that). No text in it
holds a NUL character (a path or name with one cannot name a file).
"""

from __future__ import annotations

import difflib
import itertools
import os
import re
import reprlib
import stat
import typing
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from greenbench.errors import UserError

Schema = TypeVar("Schema", bound=BaseModel)

MAX_BYTES = 1_000_000  # a sweep or budgets file is hand-written; the largest we ship is 1.7 kB
MAX_DEPTH = 20  # levels of nesting; a sweep needs 3 (grid: width: [...]), budgets 4
MAX_ALIASED_NODES = 10_000  # values repeated through aliases, in all; most files use none


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


class _Refused(yaml.composer.ComposerError):
    """A file greenbench will not read (too deep, too many aliased values): ``problem`` is the
    whole message, without the "invalid YAML" of a syntax error."""

    def __init__(self, problem: str, mark: yaml.Mark) -> None:
        super().__init__(None, None, problem, mark)


class _Loader(yaml.SafeLoader):
    """A SafeLoader that reads ``1e-4`` as a float and refuses a key given twice, nesting deeper
    than ``MAX_DEPTH``, aliases that would repeat more than ``MAX_ALIASED_NODES`` values (or the
    collection they sit in), and numbers too long to convert."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliased = 0  # values repeated through aliases so far
        # each collection's size with its aliases expanded (a scalar's is 1); a collection
        # that is not in it yet is still being composed
        self._sizes: dict[yaml.Node, int] = {}

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        # The composer builds a graph in which an alias is the anchored node itself, so
        # composing costs what the text costs; what is expensive is everything after it that
        # walks the expanded tree (validation, error messages, writing it out). Each node's
        # expanded size is known once it is composed: an alias adds its target's to the count.
        event = self.peek_event()
        if isinstance(event, yaml.ScalarEvent):
            return super().compose_node(parent, index)
        if isinstance(event, yaml.AliasEvent):
            target = self.anchors.get(event.anchor)
            if target is not None:  # an undefined alias is the base class's error
                self._count_alias(event, target)
            return super().compose_node(parent, index)
        self._depth += 1  # a collection starts
        if self._depth > MAX_DEPTH:
            raise _Refused(f"nested more than {MAX_DEPTH} levels deep, more than any "
                           "greenbench file needs", event.start_mark)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        size = self._sizes.get
        if isinstance(node, yaml.SequenceNode):
            self._sizes[node] = 1 + sum(size(item, 1) for item in node.value)
        else:
            self._sizes[node] = 1 + sum(size(k, 1) + size(v, 1) for k, v in node.value)
        return node

    def _count_alias(self, event: yaml.AliasEvent, target: yaml.Node) -> None:
        size = 1 if isinstance(target, yaml.ScalarNode) else self._sizes.get(target)
        if size is None:  # still being composed: the alias sits inside what it repeats
            raise _Refused(f"alias *{event.anchor} is inside the value it repeats; a value "
                           "cannot contain itself", event.start_mark)
        self._aliased += size
        if self._aliased > MAX_ALIASED_NODES:
            raise _Refused(f"alias *{event.anchor} makes the aliases of this file repeat "
                           f"{self._aliased:,} values, more than the {MAX_ALIASED_NODES:,} "
                           "greenbench expands; write the values out instead",
                           event.start_mark)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        try:
            return super().construct_yaml_int(node)
        except ValueError:  # Python refuses to convert more than 4,300 digits
            raise _Refused(f"a number of {len(node.value):,} characters is too long to read",
                           node.start_mark) from None

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


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)

# YAML 1.1 floats need a dot and a signed exponent, so PyYAML reads 1e-4, 1e6 and 2.5e3 as
# strings. Scientific notation without a dot is what people write for learning rates.
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load_yaml(path: Path) -> Any:
    """Parse a YAML file safely; every problem becomes a ``UserError`` naming the file."""
    text = _read_text(path)
    try:
        return yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader: no Python objects
    except yaml.MarkedYAMLError as e:
        raise UserError(f"{path}: {_describe_yaml_error(e)}") from None
    except yaml.reader.ReaderError as e:  # a control character, such as NUL, in the text
        line = text.count("\n", 0, e.position) + 1
        column = e.position - (text.rfind("\n", 0, e.position) + 1) + 1
        raise UserError(f"{path}: line {line}, column {column}: character "
                        f"#x{e.character:04x} is not allowed in YAML ({e.reason})") from None
    except yaml.YAMLError as e:
        raise UserError(f"{path}: invalid YAML ({' '.join(str(e).split())})") from None


_FILE_KINDS = {stat.S_ISFIFO: "a pipe or FIFO", stat.S_ISCHR: "a character device",
               stat.S_ISBLK: "a block device", stat.S_ISSOCK: "a socket"}


def _read_text(path: Path) -> str:
    """The file's text, if it is a regular file of at most ``MAX_BYTES``; never reads more than
    ``MAX_BYTES + 1`` bytes, and never waits on a FIFO (opened without blocking, then refused)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, not a YAML file") from None
    except OSError as e:
        raise UserError(f"{path}: cannot be read ({e.strerror})") from None
    except ValueError:  # a NUL in the path itself
        raise UserError(f"{path!r}: not a file name (it holds a NUL character)") from None
    too_large = (f"{path}: larger than {MAX_BYTES:,} bytes (1 MB), the most a sweep or budgets "
                 "file may be")
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise UserError(f"{path}: is a directory, not a YAML file")
        if not stat.S_ISREG(info.st_mode):
            kind = next((name for test, name in _FILE_KINDS.items() if test(info.st_mode)),
                        "special")
            raise UserError(f"{path}: not a regular file ({kind}); give a YAML file")
        if info.st_size > MAX_BYTES:
            raise UserError(too_large)
        chunks, size = [], 0
        while size <= MAX_BYTES:  # the file may have grown since fstat
            chunk = os.read(fd, MAX_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as e:
        raise UserError(f"{path}: cannot be read ({e.strerror})") from None
    finally:
        os.close(fd)
    if size > MAX_BYTES:
        raise UserError(too_large)
    content = b"".join(chunks)
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None


def _describe_yaml_error(e: yaml.MarkedYAMLError) -> str:
    mark = e.problem_mark or e.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
    problem = e.problem or e.context or "invalid YAML"
    tag = re.search(r"constructor for the tag '([^']+)'", problem)
    if tag:
        name = tag.group(1).replace("tag:yaml.org,2002:", "!!")
        return f"{where}: YAML tag {name} is not allowed (greenbench reads plain YAML only)"
    if "appears twice" in problem or isinstance(e, _Refused):
        return f"{where}: {problem}"
    return f"{where}: invalid YAML ({problem})"


def validate(schema: type[Schema], data: Any, path: Path) -> Schema:
    """Check parsed YAML against ``schema``; the first problem becomes a one-line ``UserError``."""
    if data is None:
        raise UserError(f"{path}: the file is empty")
    if not isinstance(data, dict):
        raise UserError(f"{path}: the top level must be a mapping of keys to values, "
                        f"not a {_yaml_type(data)}")
    nul = _find_nul(data)
    if nul is not None:
        raise UserError(f"{path}: {nul}")
    try:
        return schema.model_validate(data)
    except ValidationError as e:
        errors = e.errors()
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise UserError(f"{path}: {describe_error(errors[0], schema)}{more}") from None


def _find_nul(data: Any) -> str | None:
    """Where a text (key or value) of ``data`` holds a NUL character, as ``field: what``; None
    when none does. No greenbench value may: a path or name with a NUL names no file."""
    seen: set[int] = set()  # aliases make values shared: look at each object once
    stack: list[tuple[tuple, Any]] = [((), data)]  # in file order: the first NUL is named
    while stack:
        loc, value = stack.pop()
        if id(value) in seen:
            continue
        seen.add(id(value))
        if isinstance(value, str) and "\0" in value:
            return f"{format_loc(loc) or 'the file'}: {_short_repr(value)} holds a NUL character"
        if isinstance(value, dict):
            for key in value:
                if isinstance(key, str) and "\0" in key:
                    where = format_loc(loc) or "the top level"
                    return f"{where}: the key {_short_repr(key)} holds a NUL character"
            stack.extend(((*loc, key), item) for key, item in reversed(value.items()))
        elif isinstance(value, list):
            stack.extend(((*loc, i), value[i]) for i in reversed(range(len(value))))
    return None


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
        if message[:1] in (".", "["):  # the message names a field below the location
            below, _, message = message.partition(": ")
            field += below
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
    """``('grid', 'precision', 1)`` -> ``grid.precision[1]``; a union's tag (``<class>``) is not
    a field and is left out."""
    out = ""
    for part in loc:
        if isinstance(part, str) and part.startswith("<"):
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _plain(msg: str) -> str:
    msg = msg.removeprefix("Value error, ")
    msg = re.sub(r"^Input should be", "should be", msg)
    return msg[:1].lower() + msg[1:]


class _ShortRepr(reprlib.Repr):
    """reprlib's bounded repr, keeping a mapping's keys in the order they were written."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel, self.maxlist, self.maxdict = 4, 8, 8
        self.maxstring = self.maxother = 60

    def repr_dict(self, x: dict, level: int) -> str:
        if not x:
            return "{}"
        if level <= 0:
            return "{...}"
        pieces = [f"{self.repr1(key, level - 1)}: {self.repr1(value, level - 1)}"
                  for key, value in itertools.islice(x.items(), self.maxdict)]
        if len(x) > self.maxdict:
            pieces.append(self.fillvalue)
        return "{" + ", ".join(pieces) + "}"


_BOUNDED = _ShortRepr()


def _short_repr(value: Any, limit: int = 60) -> str:
    # Collections through reprlib, which stops early: repr() of a large list (aliases repeat
    # values) would build all of it only to cut it to `limit` characters.
    text = _BOUNDED.repr(value) if isinstance(value, (list, dict)) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _yaml_type(value: Any) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}.get(
        type(value), type(value).__name__
    )


def _field_names(schema: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the (sub-)schema that ``loc`` points into; [] if it is not a schema."""
    current: Any = schema
    for part in loc:
        if isinstance(part, int) or part.startswith("<"):
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
