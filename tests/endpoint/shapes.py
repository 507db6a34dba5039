"""Checks a response body against botocore's own service model, so the endpoint cannot drift from
the real API: botocore's ParamValidator (unknown members, required members, types, minimum lengths,
no nulls) plus the checks it leaves out on purpose (enums, maximum lengths, patterns)."""

from __future__ import annotations

import functools
import re
from typing import Any

import botocore.session
from botocore.validate import ParamValidator

try:  # the model's patterns use Unicode classes (\p{L}) that only the regex module understands
    import regex as _pattern_re
except ImportError:  # then those patterns go unchecked; the others are still checked with re
    _pattern_re = re


@functools.lru_cache(maxsize=None)
def service_model(service: str):
    return botocore.session.get_session().get_service_model(service)


def check_output(service: str, operation: str, body: Any) -> list[str]:
    """Problems of a successful response body of `operation`; [] when it matches the model."""
    if operation not in service_model(service).operation_names:
        return [f"{operation}: not an operation of {service}"]
    op = service_model(service).operation_model(operation)
    if op.output_shape is None:
        return [] if body in ({}, None) else [f"{operation}: the model has no output, got {sorted(body)}"]
    return _check(body, op.output_shape, f"{operation} output")


def check_error(service: str, operation: str, status: int, body: Any) -> list[str]:
    """Problems of an error response body: its __type must be one of the operation's modelled errors
    and the rest of the body that error's shape."""
    if not isinstance(body, dict) or not isinstance(body.get("__type"), str):
        return [f"{operation} error: no __type in {body!r}"]
    code = body["__type"].rsplit("#", 1)[-1]
    if operation not in service_model(service).operation_names:
        return [f"{operation}: not an operation of {service}"]
    op = service_model(service).operation_model(operation)
    shapes = {shape.name: shape for shape in op.error_shapes}
    if code not in shapes:
        return [f"{operation} error: {code} is not an error of {operation} ({', '.join(sorted(shapes))})"]
    problems = []
    # identitystore's model gives no status for its errors (the service sends 400, and 500 for
    # InternalServerException); check it where a model states one, and that it is an error status.
    expected = shapes[code].metadata.get("error", {}).get("httpStatusCode")
    if expected is None and shapes[code].metadata.get("fault"):
        expected = 500
    if expected is not None and status != expected:
        problems.append(f"{operation} error {code}: HTTP {status}, the model says {expected}")
    if status < 400:
        problems.append(f"{operation} error {code}: HTTP {status} is not an error status")
    rest = {k: v for k, v in body.items() if k != "__type"}
    return problems + _check(rest, shapes[code], f"{operation} error {code}")


def _check(value: Any, shape: Any, name: str) -> list[str]:
    report = ParamValidator().validate(value, shape)
    problems = [line.strip() for line in report.generate_report().splitlines() if line.strip()] if report.has_errors() else []
    _walk(value, shape, name, problems)
    return [f"{name}: {p}" if not p.startswith(name) else p for p in problems]


def _walk(value: Any, shape: Any, name: str, problems: list[str]) -> None:
    kind = shape.type_name
    if kind == "structure" and isinstance(value, dict) and not getattr(shape, "is_document_type", False):
        for key, member in shape.members.items():
            if key in value:
                _walk(value[key], member, f"{name}.{key}", problems)
    elif kind == "list" and isinstance(value, list):
        _limit(len(value), shape, name, "items", problems)
        for index, item in enumerate(value):
            _walk(item, shape.member, f"{name}[{index}]", problems)
    elif kind == "map" and isinstance(value, dict):
        _limit(len(value), shape, name, "entries", problems)
        for key, item in value.items():
            _walk(key, shape.key, f"{name} key {key!r}", problems)
            _walk(item, shape.value, f"{name}[{key!r}]", problems)
    elif kind == "string" and isinstance(value, str):
        if shape.enum and value not in shape.enum:
            problems.append(f"{name}: {value!r} is not one of {', '.join(shape.enum)}")
        _limit(len(value), shape, name, "characters", problems)
        pattern = _compiled(shape.metadata.get("pattern"))
        if pattern is not None and not pattern.fullmatch(value):
            problems.append(f"{name}: {value!r} does not match {pattern.pattern}")


@functools.lru_cache(maxsize=None)
def _compiled(pattern: str | None) -> Any:
    if not pattern:
        return None
    try:
        return _pattern_re.compile(pattern)
    except Exception:  # re.error or regex.error: a pattern this interpreter cannot read
        return None


def _limit(size: int, shape: Any, name: str, unit: str, problems: list[str]) -> None:
    maximum = shape.metadata.get("max")
    if maximum is not None and size > maximum:
        problems.append(f"{name}: {size} {unit}, the model allows at most {maximum}")
