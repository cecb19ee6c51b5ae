"""Builds every requested TFLite variant, validates each, writes a manifest.

Plain functions over local folders; the executor only resolves artifacts. A variant that
cannot be built is recorded as failed with its reason; `quantize_all` raises only when
nothing was built or a variant the caller asked for explicitly failed.
"""
from __future__ import annotations

import datetime
import json
import logging
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import tensorflow as tf

from components.fsutil import staged_dir, write_json_atomic
from components.quantization import convert, data
from components.quantization.model_spec import ModelSpec

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
MODEL_FILE = "model.tflite"
OK, FAILED = "ok", "failed"


class QuantizationError(RuntimeError):
    """Raised when no variant was built or an explicitly requested one failed."""


def check_saved_model(path: str, what: str) -> None:
    if not path or not os.path.isdir(path):
        raise ValueError(f"{what} SavedModel folder {path!r} does not exist")
    try:
        tf.saved_model.load(path).signatures["serving_default"]
    except Exception as e:  # noqa: BLE001 - any load failure means the same thing here
        raise ValueError(
            f"{what} SavedModel at {path} cannot be loaded ({type(e).__name__}: {str(e)[:300]}); "
            "re-run the Trainer to produce it again"
        ) from None


def plan(requested: Optional[Sequence[str]]) -> List[str]:
    return convert.check_variant_names(requested) if requested else list(convert.VARIANTS)


def quantize_all(
    float_model_dir: str,
    out_dir: str,
    qat_model_dir: Optional[str] = None,
    calibration_files: Optional[List[str]] = None,
    variants: Optional[Sequence[str]] = None,
    io_type: str = "int8",
    max_calibration_samples: Optional[int] = None,
    source_uris: Optional[Dict[str, str]] = None,
) -> Dict[str, object]:
    """Converts, validates and writes every variant into out_dir; returns the manifest."""
    names = plan(variants)
    explicit = bool(variants)
    convert.check_io_type(io_type)
    check_saved_model(float_model_dir, "float model")
    if qat_model_dir:
        check_saved_model(qat_model_dir, "QAT model")
    spec = ModelSpec.read(float_model_dir)

    calibration = None
    example = np.zeros(spec.input_shape, np.float32)
    if calibration_files:
        calibration = data.representative_dataset(calibration_files, spec, max_calibration_samples)
        first = next(iter(calibration()), None)
        if first is None:
            raise ValueError(f"calibration files {calibration_files} hold no examples")
        example = first[0][0]

    entries: Dict[str, Dict[str, object]] = {}
    with staged_dir(out_dir) as staging:
        for i, name in enumerate(names, 1):
            log.info("Variant %d/%d: %s", i, len(names), name)
            entries[name] = _build_one(name, float_model_dir, qat_model_dir, calibration, io_type, example, staging)
        float_size = entries.get(convert.FLOAT32, {}).get("size_bytes")
        for entry in entries.values():
            if float_size and entry.get("size_bytes"):
                entry["size_ratio_to_float32"] = entry["size_bytes"] / float_size
        manifest = {
            "variants": entries,
            "model_spec": json.loads(spec.to_json()),
            "integer_io_type": io_type,
            "tensorflow_version": tf.__version__,
            "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "sources": dict(source_uris or {}, float_model=float_model_dir, qat_model=qat_model_dir or ""),
            "calibration": {"files": list(calibration_files or []), "max_samples": max_calibration_samples},
        }
        built = [n for n, e in entries.items() if e["status"] == OK]
        failed = {n: e["reason"] for n, e in entries.items() if e["status"] != OK}
        if not built:
            raise QuantizationError(f"no variant could be built: {failed}")
        if explicit and failed:
            raise QuantizationError(f"requested variant(s) failed: {failed}")
        write_json_atomic(staging / MANIFEST, manifest)
    log.info("Built %s; failed %s", built, sorted(failed))
    return manifest


def _build_one(name, float_dir, qat_dir, calibration, io_type, example, staging: Path) -> Dict[str, object]:
    source = "qat_model" if name in convert.NEEDS_QAT_MODEL else "model"
    entry: Dict[str, object] = {
        "name": name,
        "source_model": source,
        "converter_settings": convert.converter_settings(name, io_type),
        "device_class": convert.DEVICE_CLASS[name],
    }
    if name in convert.NEEDS_QAT_MODEL and not qat_dir:
        return dict(entry, status=FAILED, reason="no qat_model input: the QAT variant needs the Trainer's qat_model")
    if name in convert.NEEDS_CALIBRATION and calibration is None:
        return dict(entry, status=FAILED, reason="no calibration data: pass the representative_dataset input")
    try:
        content = convert.convert(name, qat_dir if source == "qat_model" else float_dir, calibration, io_type)
        info = convert.validate(name, content, example)
    except Exception as e:  # noqa: BLE001 - recorded per variant; the stage decides below
        log.warning("Variant %s failed: %s", name, e)
        return dict(entry, status=FAILED, reason=f"{type(e).__name__}: {str(e)[:500]}")
    folder = staging / name
    folder.mkdir()
    (folder / MODEL_FILE).write_bytes(content)
    return dict(
        entry, status=OK, reason="", file=f"{name}/{MODEL_FILE}", size_bytes=len(content),
        sha256=convert.sha256(content), **info,
    )


def read_manifest(models_dir: str) -> Dict[str, object]:
    path = Path(models_dir) / MANIFEST
    if not path.exists():
        raise ValueError(f"{path} is missing: {models_dir} is not a PostTrainingQuantizer output")
    return json.loads(path.read_text())
