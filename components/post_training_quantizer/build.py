"""Builds every requested TFLite variant, validates each, writes a manifest.

Plain functions over local folders; the executor only resolves artifacts. A variant that
cannot be built is recorded as failed with its reason (a QAT stage that failed: its
variants, with the stage's reason), even when it was asked for by name; `quantize_all`
raises only when nothing was built. What the run should hear about (a requested variant
that failed, QAT that failed, training's warnings) is in the manifest's `warnings`.
"""
from __future__ import annotations

import datetime
import itertools
import json
import logging
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tfx_quantization import contracts, fsutil, training
from tfx_quantization.contracts import (
    FAILED, MANIFEST_FILE, MODEL_FILE, OK, SKIPPED, DataFiles, Manifest, RangeSweep, VariantEntry, WeightCorrections,
)
from tfx_quantization.quantization import convert, data, litert, selective, variants, weight_corrections
from tfx_quantization.quantization.model_spec import ModelSpec
from tfx_quantization.settings import ModelContract, QuantizeSettings

log = logging.getLogger(__name__)


class QuantizationError(RuntimeError):
    """Raised when no variant was built."""


def check_saved_model(path: str, what: str, spec: ModelSpec) -> data.Serving:
    """Loads the SavedModel's signature as a function, or raises a clear ValueError."""
    if not path or not fsutil.isdir(path):
        raise ValueError(f"{what} SavedModel folder {path!r} does not exist")
    try:
        return data.Serving(path, spec)
    except Exception as e:  # noqa: BLE001 - any load failure means the same thing here
        raise ValueError(
            f"{what} SavedModel at {path} cannot be loaded ({type(e).__name__}: {str(e)[:300]}); "
            "re-run the Trainer to produce it again"
        ) from None


def plan(requested: List[str], has_validation: bool = False) -> List[str]:
    """The requested variants, or every variant but the ones built on request only (int4);
    selective_integer by default only when validation data is given."""
    if requested:
        return list(requested)
    return [v for v in (contracts.ALL_VARIANTS if has_validation else contracts.VARIANTS)
            if v not in contracts.ON_REQUEST_VARIANTS]


def _validation_arrays(files: List[str], spec: ModelSpec, limit: int, serving: data.Serving):
    """Up to `limit` validation examples, and the float model's accuracy on them."""
    records = list(itertools.islice(data.iter_serialized(files), limit))
    if not records:
        raise ValueError(f"validation files {files} hold no examples")
    x, y = data.parse_numpy(records, spec)
    return x, y, float(np.mean(np.argmax(spec.scores(serving(x)), axis=-1) == y))


EQUALIZATION_TOLERANCE = 1e-4  # largest |float output change| / largest |output| equalization may cause
CORRECTION_BATCH = 64


def _batches(calibration, model, spec: ModelSpec, size: int = CORRECTION_BATCH) -> List:
    """The calibration sample in batches of `size`, as the Keras model takes them."""
    samples = list(calibration())
    out = []
    for start in range(0, len(samples), size):
        chunk = samples[start:start + size]
        x = {k: np.concatenate([s[k] for s in chunk]) for k in chunk[0]}
        out.append(training.model_inputs(model, x, spec))
    return out


def correct_weights(float_model_dir: str, out_dir: str, spec: ModelSpec, settings: QuantizeSettings, calibration,
                    names: List[str]) -> Optional[WeightCorrections]:
    """Cross-layer equalization and/or empirical bias correction (as `settings` ask) of the
    float Keras model, saved to `out_dir` with the same signature for the variants whose
    recipe takes corrected weights (weight_corrections.py describes both). None when no
    correction is asked or no planned variant takes one. A correction that cannot be applied
    is recorded in `not_applied` with the reason (the variants then convert from the model
    as trained when nothing was applied); it raises nothing."""
    wc = weight_corrections
    requested = [n for n, on in ((wc.CROSS_LAYER_EQUALIZATION, settings.cross_layer_equalization),
                                 (wc.BIAS_CORRECTION, settings.bias_correction)) if on]
    takers = [n for n in names if variants.recipe(n).weight_corrections]
    if not requested or not takers:
        return None
    record = WeightCorrections(requested=requested, variants=takers, weight_scheme=dict(wc.WEIGHT_SCHEME))
    try:
        loaded = training.load_keras_model(float_model_dir)
        model = keras.Model(loaded.inputs, loaded.outputs, name=loaded.name)
        batches = _batches(calibration, model, spec) if calibration is not None else []
        if wc.CROSS_LAYER_EQUALIZATION in requested:
            reference = keras.models.clone_model(model)
            reference.set_weights(model.get_weights())
            record.equalized_pairs, record.skipped_pairs, record.equalization_sweeps = wc.equalize(model)
            if batches:
                record.output_change = wc.output_change(lambda x: reference(x, training=False),
                                                        lambda x: model(x, training=False), batches)
                if record.output_change > EQUALIZATION_TOLERANCE:
                    raise ValueError(f"equalization changed the float outputs by {record.output_change:.2e} of their "
                                     f"largest value (tolerance {EQUALIZATION_TOLERANCE}): turn "
                                     "cross_layer_equalization off for this model")
            record.applied.append(wc.CROSS_LAYER_EQUALIZATION)
        if wc.BIAS_CORRECTION in requested:
            if batches:
                record.corrected_layers, record.skipped_layers = wc.correct_biases(model, batches)
                record.applied.append(wc.BIAS_CORRECTION)
            else:
                record.not_applied[wc.BIAS_CORRECTION] = "no calibration data: pass the representative_dataset input"
        if record.applied:
            training.save_serving_model(model, out_dir, spec)
    except Exception as e:  # noqa: BLE001 - an optional path: recorded, the variants convert from the model as trained
        log.warning("Weight corrections failed: %s", e)
        reason = convert.one_line(e)
        record.not_applied.update({n: reason for n in requested if n not in record.not_applied})
        record.applied = []
    return record


def quantize_all(
    float_model_dir: str,
    out_dir: str,
    settings: Optional[QuantizeSettings] = None,
    qat_model_dir: Optional[str] = None,
    calibration_files: Optional[List[str]] = None,
    source_uris: Optional[Dict[str, str]] = None,
    validation_files: Optional[List[str]] = None,
    contract: Optional[ModelContract] = None,
    no_validation_reason: str = "",
) -> Manifest:
    """Converts, validates and writes every variant into out_dir; returns the manifest.

    validation_files: examples for the selective_integer search (never the gate's eval split).
    contract: how the model meets the examples; None: the one recorded next to the model.
    no_validation_reason: why validation examples were given but hold no usable split (a
    stock ExampleGen's train/eval output): selective_integer is then recorded as skipped
    (contracts.SKIPPED: not built, not an error) with this reason, even when requested by
    name, and the other variants are built as usual.
    Raises QuantizationError when nothing could be built; a variant that failed (requested
    or not) is recorded with its reason, and a requested one is also a manifest warning.
    """
    settings = settings or QuantizeSettings()
    names = plan(settings.variants, has_validation=bool(validation_files))
    explicit = bool(settings.variants)
    io_type, max_calibration_samples = settings.integer_io_type, settings.max_calibration_samples
    spec = ModelSpec.read(float_model_dir, contract)
    if not spec.is_classifier and validation_files and not no_validation_reason:
        # The search ranks conversions by validation accuracy: a class label's (#30).
        no_validation_reason = (f"the selective search judges conversions by validation accuracy, which task "
                                f"{spec.task!r} does not have: it runs for multiclass and binary models only")
        validation_files = None
    # Training's warnings and RepresentativeDatasetGen's (a sample far below its size).
    warnings = contracts.read_training_warnings(float_model_dir) + contracts.read_calibration_warnings(
        calibration_files or [])
    qat_failure = contracts.read_qat_failure(qat_model_dir) if qat_model_dir else ""
    if qat_failure:  # the QAT stage recorded why it has no model: its variants fail with that reason
        log.warning("The QAT stage produced no model (%s): the QAT variants are recorded as failed", qat_failure)
        failed_qat = [n for n in names if variants.recipe(n).needs_qat_model]
        if failed_qat:
            warnings.append(f"quantization-aware training failed, so {', '.join(failed_qat)} "
                            f"{'was' if len(failed_qat) == 1 else 'were'} not built: {qat_failure}")
    if qat_model_dir and not qat_failure:
        qat_spec = ModelSpec.read(qat_model_dir, contract)
        if [(i.name, i.shape) for i in qat_spec.inputs] != [(i.name, i.shape) for i in spec.inputs]:
            raise ValueError(f"the QAT model's inputs {qat_spec.input_names} differ from the float model's "
                             f"{spec.input_names}: fine-tune the same model")
    calibration = None
    example = {i.name: np.zeros([1, *i.shape], i.dtype) for i in spec.inputs}
    if calibration_files:
        spec = data.check_examples(calibration_files, spec)
        calibration = data.representative_dataset(calibration_files, spec, max_calibration_samples)
        example = next(iter(calibration()))
    float_serving = check_saved_model(float_model_dir, "float model", spec)
    if qat_model_dir and not qat_failure:
        check_saved_model(qat_model_dir, "QAT model", spec)

    validation = None
    if validation_files and (convert.SELECTIVE_INTEGER in names or _sweeps_ranges(names, settings)):
        spec = data.check_examples(validation_files, spec)
        validation = _validation_arrays(validation_files, spec, settings.validation_samples, float_serving)
    if no_validation_reason and convert.SELECTIVE_INTEGER not in names:
        names.append(convert.SELECTIVE_INTEGER)  # recorded as skipped, with the reason, in the manifest
    search = dict(settings=settings, validation=validation, io_type=io_type if settings.selective_integer_io else None,
                  spec=spec, no_validation_reason=no_validation_reason, qat_failure=qat_failure)

    entries: Dict[str, VariantEntry] = {}
    with fsutil.staged_dir(out_dir, commit_last=[MANIFEST_FILE]) as staging, \
            tempfile.TemporaryDirectory(prefix="qp-corrected-") as corrected_dir:
        corrections = correct_weights(float_model_dir, corrected_dir, spec, settings, calibration, names)
        search["corrected"] = (corrected_dir, corrections.applied) if corrections and corrections.applied else None
        if corrections and corrections.not_applied:
            warnings += [f"{n} was not applied: {r}" for n, r in corrections.not_applied.items()]
        for i, name in enumerate(names, 1):
            log.info("Variant %d/%d: %s", i, len(names), name)
            entries[name] = _build_one(name, float_model_dir, qat_model_dir, calibration, io_type, example, staging,
                                       search)
        float_size = entries[convert.FLOAT32].size_bytes if convert.FLOAT32 in entries else None
        for entry in entries.values():
            if float_size and entry.size_bytes:
                entry.size_ratio_to_float32 = entry.size_bytes / float_size
        manifest = Manifest(
            variants=entries,
            model_spec=json.loads(spec.to_json()),
            integer_io_type=io_type,
            tensorflow_version=tf.__version__,
            created_at=datetime.datetime.now(datetime.timezone.utc).isoformat(),
            sources=dict(source_uris or {}, float_model=str(float_model_dir), qat_model=str(qat_model_dir or "")),
            calibration=DataFiles(files=list(calibration_files or []), max_samples=max_calibration_samples),
            validation=DataFiles(files=list(validation_files or []), max_samples=settings.validation_samples),
            settings=settings.model_dump(),
            **({"weight_corrections": corrections} if corrections else {}),
        )
        built, failed = manifest.built(), manifest.with_status(FAILED)
        if not built:
            raise QuantizationError(f"no variant could be built: {failed or manifest.with_status(SKIPPED)}")
        refused = {n: r for n, r in failed.items()
                   if not (qat_failure and variants.recipe(n).needs_qat_model)}  # already warned about
        if explicit and refused:  # recorded, and the run goes on with what was built
            warnings += [f"requested variant {n} failed: {r}" for n, r in refused.items()]
        sweeps = _sweep_records(names, search)
        manifest.activation_ranges, manifest.activation_ranges_int16 = sweeps.get("int8"), sweeps.get("int16")
        warnings += search.get("range_warnings", [])
        manifest.warnings = warnings
        contracts.write_manifest(staging, manifest)
    log.info("Built %s; failed %s; skipped %s", built, sorted(failed), sorted(manifest.with_status(SKIPPED)))
    return manifest


def _build_one(name, float_dir, qat_dir, calibration, io_type, example, staging: Path, search) -> VariantEntry:
    """One variant built from its recipe, or recorded as failed with the reason."""
    recipe = variants.recipe(name)
    searched = recipe.backend == variants.SELECTIVE_SEARCH
    io = search["io_type"] if searched else io_type  # the search's integer I/O is opt-in
    corrected = search.get("corrected") if recipe.weight_corrections else None
    source = qat_dir if recipe.needs_qat_model else (corrected[0] if corrected else float_dir)
    common = dict(name=name, source_model=recipe.source, converter_settings=recipe.converter_settings(io),
                  device_class=recipe.device_class,
                  **({"weight_corrections": list(corrected[1])} if corrected else {}))

    def failed(reason: str, **extra) -> VariantEntry:
        return VariantEntry(**common, status=FAILED, reason=reason, **extra)

    if recipe.needs_qat_model and search["qat_failure"]:
        return failed(f"no QAT model: quantization-aware training failed: {search['qat_failure']}")
    if recipe.needs_qat_model and not qat_dir:
        return failed("no qat_model input: the QAT variant needs the Trainer's qat_model")
    if recipe.needs_calibration and calibration is None:
        return failed("no calibration data: pass the representative_dataset input")
    if searched and search["validation"] is None:
        if search["no_validation_reason"]:
            return VariantEntry(**common, status=SKIPPED, reason=search["no_validation_reason"])
        return failed("no validation data: pass validation_examples (a split other than the gate's eval)")
    swept = _swept(recipe, source, calibration, search) if recipe.takes_calibration_methods else None
    ranged = _with_ranges(name, recipe, swept, io_type, example) if swept and not searched else None
    extra: Dict[str, object] = {}
    try:
        if searched:
            x_val, y_val, float_acc = search["validation"]
            content, record = selective.search(source, calibration, x_val, y_val, float_acc, search["settings"],
                                               io, spec=search["spec"], ranged=swept[0] if swept else None)
            extra["selective"] = record
            if swept and content is not None:  # the search quantized the chosen ranges at every step
                extra["calibration_method"] = swept[1].chosen
                swept[1].applied_to.append(name)
            if content is None:
                best = record.best_step
                return failed(
                    f"no model within the budget passed: best validation drop {best.accuracy_drop:.4f} with "
                    f"{best.num_float_layers} float layer(s), allowed {search['settings'].effective_search_max_drop}",
                    selective=record)
        elif recipe.backend == variants.LITERT_QUANTIZER:
            float_model = convert.convert(convert.FLOAT32, source, signature=search["spec"].signature)
            content = litert.quantize(recipe, float_model, calibration, search["spec"].signature)
        elif ranged is not None:
            content, extra["calibration_method"] = ranged
        else:
            content = convert.convert(name, source, calibration, io_type, signature=search["spec"].signature)
        info = convert.validate(name, content, example)
    except Exception as e:  # noqa: BLE001 - recorded per variant; the stage decides below
        log.warning("Variant %s failed: %s", name, e)
        return failed(f"{type(e).__name__}: {str(e)[:500]}")
    folder = staging / name
    folder.mkdir()
    (folder / MODEL_FILE).write_bytes(content)
    return VariantEntry(
        **common, status=OK, reason="", file=f"{name}/{MODEL_FILE}", size_bytes=len(content),
        sha256=fsutil.sha256_bytes(content), integer_compute_fraction=convert.integer_compute_fraction(content), **info,
        **extra,
    )


def _sweeps_ranges(names: List[str], settings: QuantizeSettings) -> bool:
    """Whether a planned variant may take swept activation ranges (ranges.py): the settings
    name a method besides min/max and a variant's recipe takes them
    (VariantRecipe.takes_calibration_methods)."""
    return (any(m != contracts.MINMAX for m in settings.calibration_methods)
            and any(variants.recipe(n).takes_calibration_methods for n in names))


def _swept(recipe, source, calibration, search):
    """(the calibrated model holding the activation ranges the sweep chose for the recipe's
    activation type, the sweep's record), or None: the converter's min/max stays (no method
    besides min/max asked, no calibration or validation data, or min/max chosen). The model
    is calibrated and its statistics collected once per source model (ranges.prepare); the
    sweep runs once per source model and activation type (ranges.sweep_model). A sweep that
    fails is a manifest warning and the variants keep min/max."""
    from tfx_quantization.quantization import ranges

    settings = search["settings"]
    if calibration is None or search["validation"] is None or not _sweeps_ranges([recipe.name], settings):
        return None
    sweeps = search.setdefault("range_sweeps", {})
    key = (source, recipe.activations)
    if key not in sweeps:
        x_val, y_val, float_acc = search["validation"]
        prepared = search.setdefault("range_statistics", {})  # source -> (calibrated, statistics); None: failed
        sweeps[key] = (None, None)
        try:
            if source not in prepared:
                prepared[source] = None  # stays None when prepare raises: the next activation type does not retry
                prepared[source] = ranges.prepare(source, calibration, search["spec"])
            if prepared[source] is not None:  # else the first sweep's warning says why
                sweeps[key] = ranges.sweep_model(prepared[source], calibration, x_val, y_val, float_acc, settings,
                                                 search["spec"], recipe.activations)
        except Exception as e:  # noqa: BLE001 - an optional path: recorded, min/max stays
            log.warning("The activation-range sweep (%s activations) failed: %s", recipe.activations, e)
            search.setdefault("range_warnings", []).append(
                f"the activation-range sweep ({recipe.activations} activations) failed, min/max kept: "
                f"{convert.one_line(e)}")
    ranged, record = sweeps[key]
    return None if ranged is None else (ranged, record)


def _with_ranges(name, recipe, swept, io_type, example):
    """(the converter variant built from the calibrated model holding the chosen ranges, the
    method), or None: this variant's conversion with the ranges failed, which the sweep's
    record lists under not_applied, and it is built with min/max."""
    from tfx_quantization.quantization import ranges

    ranged, record = swept
    io = recipe.io_type(io_type)
    try:
        content = ranges.build_variant(ranged, None if io == "float32" else io, recipe.activations)
        convert.validate(name, content, example)
    except Exception as e:  # noqa: BLE001 - this variant keeps min/max; the reason is recorded
        log.warning("Variant %s with %s ranges failed (%s): built with min/max", name, record.chosen, e)
        record.not_applied[name] = convert.one_line(e)
        return None
    record.applied_to.append(name)
    return content, record.chosen


def _sweep_records(names: List[str], search) -> Dict[str, RangeSweep]:
    """{activation type: the sweep's record} of the sweeps that ran, with each planned variant
    whose recipe takes no swept ranges listed under not_applied with the recipe's reason."""
    records = {activations: record for (_, activations), (_, record) in search.get("range_sweeps", {}).items()
               if record is not None}
    for name in names:
        recipe = variants.recipe(name)
        if recipe.no_range_methods and recipe.activations in records:
            records[recipe.activations].not_applied[name] = recipe.no_range_methods
    return records
