"""The base every settings model shares: strict about unknown keys, validated on assignment,
JSON in and out, and bad values reported as one line per setting (`SettingsError`).

Below both the stage settings (settings.py) and the model contract (model_contract.py), so
that neither imports the other. Imports nothing of this package and no TensorFlow.
"""
from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Type, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

S = TypeVar("S", bound="StageSettings")


class SettingsError(ValueError):
    """A setting has a bad value; the message names the setting, the value and the fix."""


def describe_errors(error: ValidationError, name_of=None) -> str:
    """pydantic's errors as one line per setting: `name = value: what is wrong`."""
    lines: Dict[str, List[str]] = {}
    for e in error.errors():
        # Drop list indexes and the union member tags pydantic adds ("literal[...]", "list[str]").
        loc = [str(p) for p in e["loc"] if isinstance(p, str) and p.isidentifier()]
        message = e["msg"].removeprefix("Value error, ")
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

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls: Type[S], text: str) -> S:
        try:
            return cls.model_validate_json(text)
        except ValidationError as e:
            raise SettingsError(f"{cls.__name__}: {describe_errors(e)}") from None

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
        """Like the constructor, but a bad value raises SettingsError with a one-line message."""
        try:
            return cls(**values)
        except ValidationError as e:
            raise SettingsError(f"{cls.__name__}: {describe_errors(e)}") from None
