"""Load a mapping file: YAML composed once, validated into ``MappingConfig``.

Every fault becomes one ``MappingFileError`` whose message has a line per
problem, ``<file>:<line>: <key path>: <what is wrong>``. Lines come from the
composed YAML node tree, followed along each pydantic error's ``loc``.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from adapter.errors import MappingFileError
from adapter.mapping.models import MappingConfig

_Loc = tuple[int | str, ...]
_MERGE_TAG = "tag:yaml.org,2002:merge"


def load_mapping(path: Path) -> MappingConfig:
    """Read and validate the mapping file at ``path``; ``MappingFileError`` on any fault."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MappingFileError(f"{path}: cannot read the mapping file: {exc}") from exc
    return load_mapping_text(text, str(path))


def load_mapping_text(text: str, source_name: str = "<mapping>") -> MappingConfig:
    """Validate mapping YAML given as text; ``source_name`` stands for the file in errors."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            raise MappingFileError(f"{source_name}:1: the mapping file is empty")
        problems = list(_duplicate_keys(root, ()))
        if problems:
            raise MappingFileError(_report(source_name, problems))
        data = loader.construct_document(root)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        problem = exc.problem or exc.context or "syntax error"
        raise MappingFileError(f"{source_name}:{line}: invalid YAML: {problem}") from exc
    except yaml.YAMLError as exc:
        raise MappingFileError(f"{source_name}: invalid YAML: {exc}") from exc
    finally:
        loader.dispose()

    try:
        return MappingConfig.model_validate(data)
    except ValidationError as exc:
        problems = [_problem(root, error) for error in exc.errors(include_url=False)]
        raise MappingFileError(_report(source_name, problems)) from exc


def _report(source_name: str, problems: Sequence[tuple[int, str, str]]) -> str:
    return "\n".join(
        f"{source_name}:{line}: {path}: {message}" for line, path, message in sorted(problems)
    )


def _problem(root: yaml.Node, error: ErrorDetails) -> tuple[int, str, str]:
    ctx = error.get("ctx") or {}
    loc: _Loc = tuple(error["loc"]) + tuple(ctx.get("at", ()))
    if "text_line" in ctx:
        line = _template_line(root, loc, ctx["text_line"])
    else:
        line = _walk(root, loc)[1]
    kind = error["type"]
    message = error["msg"].removeprefix("Value error, ")
    if kind == "missing":
        message = "required key is missing"
    elif kind == "extra_forbidden":
        message = _unknown_key(loc)
    elif kind.endswith("_type") or kind == "literal_error":
        message = f"{message}, got {_describe(error['input'])}"
    return line, _path(loc), message


def _path(loc: _Loc) -> str:
    path = ""
    for step in loc:
        if step == "[key]":
            continue
        path += f"[{step}]" if isinstance(step, int) else f".{step}" if path else str(step)
    return path or "(top level)"


def _walk(root: yaml.Node, loc: _Loc) -> tuple[yaml.Node | None, int]:
    """The node at ``loc`` (``None`` if absent) and the line of the deepest one reached.

    A mapping entry's line is its key's, so a fault in a nested block is
    reported where its key is written.
    """
    node = root
    line = root.start_mark.line + 1
    for step in loc:
        if step == "[key]":
            return None, line
        if isinstance(node, yaml.MappingNode) and (pair := _entry(node, step)) is not None:
            line = pair[0].start_mark.line + 1
            node = pair[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int):
            if not 0 <= step < len(node.value):
                return None, line
            node = node.value[step]
            line = node.start_mark.line + 1
        else:
            return None, line
    return node, line


def _template_line(root: yaml.Node, loc: _Loc, text_line: int) -> int:
    """The file line of a template's ``text_line``, when a block scalar makes it knowable."""
    node, line = _walk(root, loc)
    if isinstance(node, yaml.ScalarNode) and node.style == "|":
        # A literal block's text starts on the line after its ``|`` indicator.
        return node.start_mark.line + 2 + text_line
    if isinstance(node, yaml.ScalarNode) and text_line == 0:
        return node.start_mark.line + 1
    return line


def _entry(node: yaml.MappingNode, key: int | str) -> tuple[yaml.Node, yaml.Node] | None:
    merged: list[yaml.Node] = []
    for key_node, value_node in reversed(node.value):
        if key_node.tag == _MERGE_TAG:
            merged.extend(
                value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            )
        elif isinstance(key_node, yaml.ScalarNode) and key_node.value == str(key):
            return key_node, value_node
    for source in merged:
        if isinstance(source, yaml.MappingNode) and (pair := _entry(source, key)) is not None:
            return pair
    return None


def _duplicate_keys(
    node: yaml.Node, loc: _Loc, seen: frozenset[int] = frozenset()
) -> list[tuple[int, str, str]]:
    """PyYAML keeps the last of two equal keys silently; a mapping file must not."""
    if id(node) in seen:  # an alias back to an ancestor
        return []
    seen = seen | {id(node)}
    problems: list[tuple[int, str, str]] = []
    if isinstance(node, yaml.MappingNode):
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != _MERGE_TAG:
                if key in first_line:
                    message = f"duplicate key (first on line {first_line[key]})"
                    problems.append((line, _path((*loc, key)), message))
                first_line.setdefault(key, line)
            problems.extend(_duplicate_keys(value_node, (*loc, key), seen))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            problems.extend(_duplicate_keys(item, (*loc, index), seen))
    return problems


def _unknown_key(loc: _Loc) -> str:
    key = str(loc[-1]) if loc else "?"
    allowed = _allowed_keys(loc[:-1])
    if not allowed:
        return f"unknown key {key!r}"
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown key {key!r} ({hint}allowed: {', '.join(allowed)})"


def _allowed_keys(loc: _Loc) -> list[str]:
    """The keys the schema accepts at ``loc``, found by walking the model's annotations."""
    kind: Any = MappingConfig
    for step in loc:
        kind = _unwrap(kind)
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            field = kind.model_fields.get(str(step))
            if field is None:
                return []
            kind = field.annotation
        elif get_origin(kind) in (list, tuple) and isinstance(step, int):
            kind = get_args(kind)[0]
        elif get_origin(kind) is dict:
            kind = get_args(kind)[1]
        else:
            return []
    kind = _unwrap(kind)
    if isinstance(kind, type) and issubclass(kind, BaseModel):
        return list(kind.model_fields)
    return []


def _unwrap(kind: Any) -> Any:
    while True:
        origin = get_origin(kind)
        if origin is Annotated:
            kind = get_args(kind)[0]
        elif origin in (Union, types.UnionType):
            kind = next(arg for arg in get_args(kind) if arg is not type(None))
        else:
            return kind


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, date):
        return f"the date {value.isoformat()}"
    return type(value).__name__
