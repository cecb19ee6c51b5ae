"""Glue shared by the component wrappers: parameters and artifacts. The real work lives in
the plain libraries (components/quantization, components/trainer/training.py, ...)."""
from __future__ import annotations

import json
from typing import Any, Dict, List, Optional

from tfx.types import artifact_utils


def to_json_param(value: Any) -> Optional[str]:
    """Lists and dicts travel as JSON strings (portable through IR and Kubeflow)."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True)


def from_json_param(value: Optional[str], default: Any = None) -> Any:
    if value in (None, ""):
        return default
    return json.loads(value)


def single(input_dict: Dict[str, List], key: str, optional: bool = False):
    artifacts = input_dict.get(key) or []
    if not artifacts:
        if optional:
            return None
        raise ValueError(f"input {key!r} is missing")
    return artifact_utils.get_single_instance(artifacts)


def set_properties(artifact, properties: Dict[str, Any]) -> None:
    """Records numbers, strings and JSON-able values as custom properties."""
    for key, value in properties.items():
        if value is None:
            continue
        if isinstance(value, bool):
            artifact.set_int_custom_property(key, int(value))
        elif isinstance(value, int):
            artifact.set_int_custom_property(key, value)
        elif isinstance(value, float):
            artifact.set_float_custom_property(key, value)
        elif isinstance(value, str):
            artifact.set_string_custom_property(key, value)
        else:
            artifact.set_string_custom_property(key, json.dumps(value, sort_keys=True))
