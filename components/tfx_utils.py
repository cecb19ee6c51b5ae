"""Glue shared by the component wrappers: artifacts and their properties. The real work
lives in the plain libraries (components/quantization, components/trainer/training.py, ...)."""
from __future__ import annotations

import json
import logging
from typing import Any, Dict, List, Optional, Sequence

from tfx.types import artifact_utils

from tfx_quantization import contracts
from tfx_quantization.keras2 import require_keras2
from tfx_quantization.model_contract import ModelContract

PACKAGE_LOGGER = "tfx_quantization"


def begin_executor(stage: str) -> None:
    """What every executor does first: stops (KerasVersionError, one line) unless Keras 2 is
    in force, and lets our progress lines show wherever TFX's do.

    TFX logs through absl's logger, whose verbosity users set (`absl.logging.set_verbosity`,
    or TFX's own runners); our modules log through `logging.getLogger(__name__)` under
    `tfx_quantization`, which would otherwise inherit the root logger's WARNING. Our package
    logger takes absl's level unless the user has set one on it."""
    require_keras2(f"the {stage} executor")
    ours = logging.getLogger(PACKAGE_LOGGER)
    if ours.level == logging.NOTSET:
        ours.setLevel(logging.getLogger("absl").getEffectiveLevel())


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


# ---- the model contract on artifacts (model_contract.py: where a stage gets it) ------------
def write_contract(artifact, contract: ModelContract) -> None:
    """Records the resolved contract on a Model artifact (custom property MODEL_CONTRACT)."""
    artifact.set_string_custom_property(contracts.MODEL_CONTRACT, contract.to_json())


def read_contract(artifact) -> Optional[ModelContract]:
    """The contract recorded on `artifact`, or None (no artifact, or none recorded)."""
    text = get_property(artifact, contracts.MODEL_CONTRACT)
    return ModelContract.from_json(text) if text else None


def resolve_contract(explicit: Optional[str], *models) -> Optional[ModelContract]:
    """The contract a stage reads its models with: its explicit `contract` execution
    parameter (JSON) when given, else the one recorded on the first of `models` (Model
    artifacts, None skipped) that carries one. None when neither: ModelSpec.read then reads
    the file next to the model, or names the fix."""
    if explicit:
        return ModelContract.from_json(explicit)
    return next((c for c in map(read_contract, models) if c is not None), None)
