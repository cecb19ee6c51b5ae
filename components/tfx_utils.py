"""Glue shared by the component wrappers: artifacts and their properties. The real work
lives in the plain libraries (components/quantization, components/trainer/training.py, ...)."""
from __future__ import annotations

import json
from typing import Any, Dict, List, Sequence

from tfx.types import artifact_utils


def single(input_dict: Dict[str, List], key: str, optional: bool = False):
    artifacts = input_dict.get(key) or []
    if not artifacts:
        if optional:
            return None
        raise ValueError(f"input {key!r} is missing")
    return artifact_utils.get_single_instance(artifacts)


def require_splits(examples, splits: Sequence[str]) -> None:
    """A ValueError naming the missing split and the splits there are."""
    have = artifact_utils.decode_split_names(examples.split_names)
    for split in splits:
        if split not in have:
            raise ValueError(f"the examples at {examples.uri} have no {split!r} split (they have {have})")


def split_uri(examples, split: str) -> str:
    require_splits(examples, [split])
    return artifact_utils.get_split_uri([examples], split)


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


def get_property(artifact, key: str, default: Any = None) -> Any:
    """A custom property of any kind, or `default` when the artifact has none."""
    if artifact is None or not artifact.has_custom_property(key):
        return default
    return artifact.get_custom_property(key)
