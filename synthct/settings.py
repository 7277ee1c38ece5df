"""Typed settings on pydantic: the base of the training config and the dose-evaluation settings.

A settings class is a :class:`Settings` (pydantic, ``extra="forbid"``) whose scalar fields use the types below:
:data:`Float`, :data:`Int`, :data:`Bool`, :data:`Str` accept what a YAML file or a ``--set`` override gives
(``1e-5`` read by YAML 1.1 as a string is a number, ``3.0`` is an integer) and nothing else (``"yes"`` is not a
bool, ``true`` is not a number); :func:`in_range` and :func:`length` add limits. :func:`validate` builds an instance
and turns every pydantic error into one line naming the dotted key (``optim.lr_generator: -1.0 is out of range (must
be > 0.0)``, ``unknown config key 'optim.lr_generatr'; did you mean 'optim.lr_generator'? …``) in the caller's
error class. :func:`read_yaml_mapping` reads a file naming it in errors; :func:`parse_override` and
:func:`apply_overrides` handle ``key.sub=value`` assignments (values parsed as YAML).

No torch: the core.
"""

from __future__ import annotations

import difflib
import math
import os
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, ValidationError, model_validator

SettingsT = TypeVar("SettingsT", bound="Settings")


class SettingsError(ValueError):
    """A settings problem; the message names the key (dotted path) and what is wrong."""


# ------------------------------------------------------------------------------------------------------------------
# field types


def _as_float(value: Any) -> float:
    if isinstance(value, str):  # YAML 1.1 reads "1e-5" (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"expected a number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {value!r}")
    return float(value)


def _as_int(value: Any) -> int:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, got {value!r}")
    return int(value)


def _as_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def _as_str(value: Any) -> str:
    if isinstance(value, os.PathLike):
        return str(os.fspath(value))
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    return value


Float = Annotated[float, BeforeValidator(_as_float)]
"""A finite number (an int, a float, or a string YAML 1.1 left unparsed such as ``1e-5``); not a bool."""
Int = Annotated[int, BeforeValidator(_as_int)]
"""An integer (``3.0`` is 3); not a bool."""
Bool = Annotated[bool, BeforeValidator(_as_bool)]
"""``true`` or ``false`` only."""
Str = Annotated[str, BeforeValidator(_as_str)]
"""A string (a path is taken as its string)."""


def in_range(low: float | None = None, high: float | None = None, *, low_open: bool = False,
             multiple_of: int | None = None) -> AfterValidator:
    """Field metadata: the value must lie in [low, high] (``low_open``: above ``low``) and be a multiple of
    ``multiple_of``."""

    def check(value: Any) -> Any:
        if low is not None and (value <= low if low_open else value < low):
            raise ValueError(f"{value!r} is out of range (must be {'>' if low_open else '≥'} {low})")
        if high is not None and value > high:
            raise ValueError(f"{value!r} is out of range (must be ≤ {high})")
        if multiple_of and int(value) % multiple_of:
            raise ValueError(f"{value!r} must be a multiple of {multiple_of}")
        return value

    return AfterValidator(check)


def length(count: int | None = None, *, at_least: int = 1) -> AfterValidator:
    """Field metadata for a list: exactly ``count`` items, or (``count`` None) at least ``at_least``."""

    def check(value: list[Any]) -> list[Any]:
        if count is not None and len(value) != count:
            raise ValueError(f"expected {count} values, got {len(value)} ({list(value)!r})")
        if count is None and len(value) < at_least:
            raise ValueError(f"expected at least {at_least} value(s), got {list(value)!r}")
        return value

    return AfterValidator(check)


# ------------------------------------------------------------------------------------------------------------------
# the base class


def _unwrap(tp: Any) -> Any:
    """``Annotated[T, …]`` → T, ``T | None`` → T."""
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(members) != 1:
                return tp
            tp = members[0]
        else:
            return tp


def _choices(tp: Any) -> tuple[Any, ...]:
    """The values of a ``Literal`` annotation (after unwrapping), else ()."""
    tp = _unwrap(tp)
    return typing.get_args(tp) if typing.get_origin(tp) is Literal else ()


class Settings(BaseModel):
    """Base of every settings section: unknown keys are errors, an empty section (YAML ``key:``) takes the defaults,
    and a bare ``off`` that YAML 1.1 read as ``false`` is the choice ``'off'`` where a field offers it."""

    model_config = ConfigDict(extra="forbid", validate_default=False)
    unknown_key_label: ClassVar[str] = "config key"
    """How an unknown-key message names a key (``unknown config key 'x'``)."""

    @model_validator(mode="before")
    @classmethod
    def _yaml_values(cls, values: Any) -> Any:
        if values is None:
            return {}
        if isinstance(values, Mapping):
            fixed = dict(values)
            for name, field in cls.model_fields.items():
                if fixed.get(name, True) is False and "off" in _choices(field.annotation):
                    fixed[name] = "off"
            return fixed
        return values

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (lists, not tuples): YAML/JSON/torch.load(weights_only=True) safe."""
        return self.model_dump(mode="json")


def _section(model: type[BaseModel], loc: Sequence[Any]) -> Any:
    """The annotation at ``loc`` inside ``model`` (a settings class for a section, Literal for a choice), or None."""
    tp: Any = model
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(part, str) and isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(part)
            if field is None:
                return None
            tp = field.annotation
        elif isinstance(part, int) and typing.get_origin(tp) in (list, tuple):
            tp = typing.get_args(tp)[0]
        else:
            return None
    return _unwrap(tp)


def _dotted(loc: Sequence[Any]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _message(model: type[Settings], error: Mapping[str, Any]) -> str:
    loc = [part for part in error["loc"] if not (isinstance(part, str) and "[" in part)]  # drop pydantic's tags
    where = _dotted(loc)
    kind, value = error["type"], error.get("input")
    if kind == "extra_forbidden":
        section = _section(model, loc[:-1])
        known = list(section.model_fields) if isinstance(section, type) and issubclass(section, BaseModel) else []
        prefix = _dotted(loc[:-1])
        prefix = prefix + "." if prefix else ""
        close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.5)
        hint = f"; did you mean {prefix + close[0]!r}?" if close else ""
        return (f"unknown {model.unknown_key_label} {where!r}{hint} "
                f"(valid keys in {_dotted(loc[:-1]) or 'the top level'}: {', '.join(known)})")
    if kind == "value_error":
        text = str(error["ctx"]["error"])
    elif kind == "literal_error":
        allowed = [str(a) for a in _choices(_section(model, loc))]
        close = difflib.get_close_matches(str(value), allowed, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        text = f"{value!r} is not one of {', '.join(repr(a) for a in allowed) or error['msg']}{hint}"
    elif kind in ("model_type", "model_attributes_type", "dict_type"):
        text = f"expected a mapping of keys, got {value!r}"
    elif kind in ("list_type", "tuple_type"):
        text = f"expected a list, got {value!r}"
    elif kind == "missing":
        text = "missing"
    else:
        text = f"{error['msg']} (got {value!r})"
    return f"{where}: {text}" if where else text


def validate(model: type[SettingsT], values: Any, error: type[SettingsError] = SettingsError,
             what: str = "config") -> SettingsT:
    """``model`` built from ``values`` (a mapping; None: every default). Raises ``error`` with one line per
    problem, each naming its dotted key."""
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise error(f"{what}: expected a mapping of keys, got {values!r}")
    try:
        return model.model_validate(dict(values))
    except ValidationError as exc:
        raise error("; ".join(_message(model, e) for e in exc.errors(include_url=False))) from None


# ------------------------------------------------------------------------------------------------------------------
# files and overrides


def read_yaml_mapping(path: str | os.PathLike[str], error: type[SettingsError] = SettingsError,
                      what: str = "config") -> dict[str, Any]:
    """The mapping in a YAML file (empty file: ``{}``). Raises ``error`` naming the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise error(f"{path}: {what} file not found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: cannot read the {what} ({exc})") from exc
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML ({exc})") from exc
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise error(f"{path}: the {what} must be a mapping of keys, got {type(values).__name__}")
    return values


def parse_override(text: str, error: type[SettingsError] = SettingsError,
                   flag: str = "--set") -> tuple[list[str], Any]:
    """``"optim.lr_generator=2e-4"`` → (["optim", "lr_generator"], "2e-4"): the value parsed with
    ``yaml.safe_load`` (typed fields convert it). Raises ``error`` naming ``flag``."""
    if "=" not in text:
        raise error(f"{flag} {text!r}: expected KEY=VALUE")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise error(f"{flag} {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise error(f"{flag} {text!r}: value is not valid YAML ({exc})") from exc
    return parts, value


def deep_copy(values: Any) -> Any:
    """Plain copy of nested mappings and sequences (keys as strings, tuples as lists)."""
    if isinstance(values, Mapping):
        return {str(k): deep_copy(v) for k, v in values.items()}
    if isinstance(values, list | tuple):
        return [deep_copy(v) for v in values]
    return values


def assign(values: dict[str, Any], parts: Sequence[str], value: Any,
           fail: Callable[[str], Exception] | None = None) -> None:
    """Set ``values[parts[0]][parts[1]]… = value``, creating sections; ``fail(part)`` when a part is not a section."""
    node = values
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            if fail is None:
                raise SettingsError(f"{part!r} is not a section")
            raise fail(part)
        node = child
    node[parts[-1]] = value


def _not_a_section(error: type[SettingsError], where: str) -> Callable[[str], Exception]:
    return lambda part: error(f"{where}: {part!r} is not a section")


def apply_overrides(values: Mapping[str, Any], overrides: Sequence[str], error: type[SettingsError] = SettingsError,
                    flag: str = "--set") -> dict[str, Any]:
    """A deep copy of ``values`` with each ``a.b=value`` override applied (keys are checked at validation)."""
    result: dict[str, Any] = deep_copy(values)
    for text in overrides:
        parts, value = parse_override(text, error, flag)
        assign(result, parts, value, _not_a_section(error, f"{flag} {text!r}"))
    return result


def merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``update``, nested sections merged key by key."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = deep_copy(value)
    return merged


def diff(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested settings dicts."""
    differences: list[str] = []
    for key in sorted(set(old) | set(new)):
        path = f"{prefix}.{key}" if prefix else str(key)
        a, b = old.get(key), new.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            differences += diff(a, b, path)
        elif a != b:
            differences.append(path)
    return differences
