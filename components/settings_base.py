"""The base every settings model shares: strict about unknown keys, validated on assignment,
JSON in and out, and bad values reported as one line per setting (`SettingsError`).

Below both the stage settings (settings.py) and the model contract (model_contract.py), so
that neither imports the other. Imports nothing of this package and no TensorFlow.
"""
from __future__ import annotations

import difflib
import json
import typing
from typing import Any, Dict, List, Optional, Type, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

S = TypeVar("S", bound="StageSettings")


class SettingsError(ValueError):
    """A setting has a bad value; the message names the setting, the value and the fix."""


def models_in(annotation) -> List[type]:
    """The settings models a field's annotation holds: the model itself, or inside
    Optional, List or Dict (a contract's inputs, the gate's targets)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in models_in(arg)]


def _is_mapping(annotation) -> bool:
    """A Dict[...] annotation, or Optional[Dict[...]]."""
    origin = typing.get_origin(annotation)
    if origin is typing.Union:
        return any(_is_mapping(a) for a in typing.get_args(annotation) if a is not type(None))
    return origin in (dict, Dict)


def _model_at(model: Optional[type], path: List[str]) -> Optional[type]:
    """The settings model that holds the last key of `path` (list indexes already dropped;
    the key after a Dict field is a name, not a setting), or None when the path leaves the
    settings models."""
    skip = False
    for part in path:
        if skip:
            skip = False
            continue
        if model is None or part not in model.model_fields:
            return None
        annotation = model.model_fields[part].annotation
        inner = models_in(annotation)
        model, skip = (inner[0] if inner else None), _is_mapping(annotation)
    return model


def close_settings(model: Optional[type], path: List[str]) -> List[str]:
    """The settings beside the unknown key at the end of `path` whose names are close to it."""
    holder = _model_at(model, path[:-1])
    return difflib.get_close_matches(path[-1], list(holder.model_fields), n=3) if holder and path else []


def describe_errors(error: ValidationError, name_of=None, model: Optional[type] = None) -> str:
    """pydantic's errors as one line per setting: `name = value: what is wrong`; an unknown
    key gets the close matches among the settings of `model` beside it."""
    lines: Dict[str, List[str]] = {}
    for e in error.errors():
        # Drop list indexes and the union member tags pydantic adds ("literal[...]", "list[str]").
        loc = [str(p) for p in e["loc"] if isinstance(p, str) and p.isidentifier()]
        message = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            close = close_settings(model, loc)
            message = "is not a setting" + (f": did you mean {' or '.join(close)}?" if close else "")
        if not loc:  # a rule across several settings: the message names them
            lines.setdefault(message, [])
            continue
        where = name_of(loc) if name_of else ".".join(loc)
        value = e.get("input")
        shown = "" if isinstance(value, dict) or e["type"] == "missing" else f" = {value!r}"
        lines.setdefault(f"{where}{shown}", []).append(message)
    return "; ".join(f"{k}: {' or '.join(v)}" if v else k for k, v in lines.items())


class StageSettings(BaseModel):
    """Base: strict about unknown keys, validated on assignment, JSON in and out."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_default=True)

    def __init__(self, **values: Any) -> None:
        # Built directly, from a dict, or nested: a bad value is a SettingsError with one line
        # per setting (never pydantic's multi-line ValidationError).
        try:
            super().__init__(**values)
        except ValidationError as e:
            raise SettingsError(f"{type(self).__name__}: {describe_errors(e, model=type(self))}") from None

    # This __init__ validates exactly as pydantic's does and only translates the error: marked
    # as pydantic's own, nested settings are validated without it, so an outer model (the
    # pipeline's configuration) still reports the full path of a bad nested setting.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    def __setattr__(self, name: str, value: Any) -> None:
        try:
            super().__setattr__(name, value)
        except ValidationError as e:
            raise SettingsError(f"{type(self).__name__}: {describe_errors(e, model=type(self))}") from None

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls: Type[S], text: str) -> S:
        try:
            return cls.model_validate_json(text)
        except ValidationError as e:
            raise SettingsError(f"{cls.__name__}: {describe_errors(e, model=cls)}") from None

    def with_overrides(self: S, overrides: Optional[str]) -> S:
        """A copy with the fields of a JSON object replaced (validated); '' or None: self."""
        if not overrides or not overrides.strip():
            return self
        try:
            changes = json.loads(overrides)
        except json.JSONDecodeError as e:
            raise SettingsError(f"{type(self).__name__} overrides {overrides!r} are not JSON: {e}") from None
        if not isinstance(changes, dict):
            raise SettingsError(f"{type(self).__name__} overrides must be a JSON object, not {overrides!r}")
        return type(self).build(**{**self.model_dump(), **changes})

    @classmethod
    def coerce(cls: Type[S], value: Any, where: str = "") -> S:
        """`value` as these settings: an instance as it is; an instance of a subclass (e.g.
        TrainSettings for FineTuneSettings) narrowed to these settings' fields; a dict
        validated (a SettingsError with one line per bad setting); None as the defaults.
        where: who takes them, for the message (a component's name)."""
        if value is None:
            return cls.build()
        if isinstance(value, cls):
            return value if type(value) is cls else cls.build(**value.model_dump(include=set(cls.model_fields)))
        if isinstance(value, dict):
            return cls.build(**value)
        raise SettingsError(f"{where + ': ' if where else ''}settings must be a {cls.__name__} or a dict of its "
                            f"fields, not {type(value).__name__}")

    @classmethod
    def build(cls: Type[S], **values: Any) -> S:
        """The constructor (kept for callers that name it): a bad value raises SettingsError."""
        return cls(**values)
