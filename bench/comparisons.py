"""Benchmark sections that compare: our bytes against the raw converter's, our variants
against Google's LiteRT Quantizer, and the hard workload where int8 PTQ loses accuracy."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List

import apache_beam as beam
import numpy as np
import tensorflow as tf
from apache_beam.options.pipeline_options import PipelineOptions

from bench.common import fmt_range, md_table, summary
from tfx_quantization.contracts import read_manifest
from tfx_quantization.quantization import data, litert
from tfx_quantization.quantization.interpreter import TFLiteRunner, accuracy
from tfx_quantization.settings import GateSettings
from tfx_quantization.tflite_evaluator import evaluate

RAW_VARIANTS = ("float32", "dynamic_range", "float16", "full_integer", "integer_only", "int16x8")


def raw_convert(variant: str, saved_model_dir: str, calibration) -> bytes:
    """The variant as a user would write it with tf.lite.TFLiteConverter directly (written
    here on its own, not through components/quantization/convert.py)."""
    c = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
    if variant != "float32":
        c.optimizations = [tf.lite.Optimize.DEFAULT]
    if variant == "float16":
        c.target_spec.supported_types = [tf.float16]
    if variant in ("full_integer", "integer_only", "int16x8"):
        c.representative_dataset = calibration
    if variant == "integer_only":
        c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        c.inference_input_type = c.inference_output_type = tf.int8
    if variant == "int16x8":
        c.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    return c.convert()


def raw_converter_section(float_dir: str, quantized_dir: str, calibration_files: List[str]) -> List[str]:
    spec = data.spec_for(float_dir, calibration_files)
    calibration = data.representative_dataset(calibration_files, spec)
    manifest = read_manifest(quantized_dir).variants
    rows = []
    for name in RAW_VARIANTS:
        ours = manifest[name].size_bytes
        raw = len(raw_convert(name, float_dir, calibration))
        rows.append([name, f"{ours:,}", f"{raw:,}", f"{100 * (ours - raw) / raw:+.2f} %"])
    return ["## 5. Our files vs the raw converter's", "",
            "The digits CNN of section 1(a): each variant as the PostTrainingQuantizer wrote it, and the same "
            "variant converted by `tf.lite.TFLiteConverter` called directly with the same options and calibration "
            "sample (`bench/comparisons.py:raw_convert`, written apart from the pipeline's converter code). The "
            "pipeline adds nothing to the flatbuffer: validation, the manifest and the signature live beside it.",
            "", md_table(["variant", "our bytes", "raw converter bytes", "difference"], rows), ""]


def _time(content: bytes, example) -> Dict[str, float]:
    meds = [TFLiteRunner(content).time_single_example(example, runs=300, warmup=20)["latency_ms_median"]
            for _ in range(3)]
    return summary(meds)


def litert_quantizer(float_tflite: bytes, samples: List[Dict[str, np.ndarray]], recipe_name: str) -> bytes:
    """Google's LiteRT Quantizer (PyPI ai-edge-quantizer) on a float .tflite: the pipeline's
    own backend for it (quantization/litert.py), calibrated with `samples`."""
    return litert.apply(float_tflite, recipe_name, lambda: samples)


def litert_quantizer_section(models: Dict[str, dict]) -> List[str]:
    """models: label -> {float_dir, quantized_dir, calibration_files, eval_files}."""
    rows = []
    for label, m in models.items():
        spec = data.spec_for(m["float_dir"], m["eval_files"])
        x, y = data.parse_numpy(list(data.iter_serialized(m["eval_files"])), spec)
        example = {k: v[:1] for k, v in x.items()}
        samples = list(data.representative_dataset(m["calibration_files"], spec)())
        manifest = read_manifest(m["quantized_dir"]).variants
        float_tflite = Path(m["quantized_dir"], manifest["float32"].file).read_bytes()
        candidates = {f"ours: {n}": Path(m["quantized_dir"], manifest[n].file).read_bytes()
                      for n in ("float32", "full_integer", "integer_only", "int16x8") if manifest[n].status == "ok"}
        for recipe_name in ("static_wi8_ai8", "static_wi8_ai16"):
            try:
                candidates[f"LiteRT Quantizer: {recipe_name}"] = litert_quantizer(float_tflite, samples, recipe_name)
            except Exception as e:  # noqa: BLE001 - recorded in the table
                rows.append([label, f"LiteRT Quantizer: {recipe_name}", f"failed: {type(e).__name__}: {str(e)[:80]}",
                             "", ""])
        for name, content in candidates.items():
            acc = accuracy(spec.scores(TFLiteRunner(content).predict(x)), y)
            rows.append([label, name, f"{len(content):,}", f"{acc:.4f}", fmt_range(_time(content, example))])
    return ["## 6. Our variants vs Google's LiteRT Quantizer", "",
            "`ai-edge-quantizer` 0.10 (a runtime dependency: the int4 variants' backend) applied to our float32 .tflite "
            "with the same calibration sample: `static_wi8_ai8` (int8 weights and activations, float I/O: compare "
            "with our `full_integer`) and `static_wi8_ai16` (int16 activations: compare with our `int16x8`). "
            "Accuracy on the eval split, size, and single-example latency (median of 3 rounds of 300 runs).", "",
            md_table(["model", "variant", "bytes", "accuracy", "latency median ms (min–max)"], rows), ""]


def hard_workload_section(tmp: Path, float_dir: str, quantized_dir: str, splits: Dict[str, str],
                          rows: List[List[object]], header: List[str], float_accuracy: float,
                          qat_float_layers: List[str]) -> List[str]:
    """The mixed-scale workload: the variants table, then the default gate's decision."""
    gate = evaluate.evaluate_models(splits["eval"], float_dir, quantized_dir, str(tmp / "gate"),
                                    GateSettings(latency_runs=20),
                                    lambda: beam.Pipeline(options=PipelineOptions(["--direct_num_workers=1"])))
    selective = read_manifest(quantized_dir).variants["selective_integer"]
    record = selective.selective
    lines = [f"- `{n}`: {'passes' if v.passed else 'fails: ' + '; '.join(v.reasons)}" for n, v in gate.verdicts.items()]
    return [
        f"### (e) The hard workload: mixed-scale tabular features (float accuracy {float_accuracy:.4f} on "
        f"{gate.num_eval_examples} eval examples)", "",
        "`data/mixed_scale/mixed_scale.csv` (`data/export_mixed_scale.py`, a fixed seed): 8 raw features, four on the "
        "scale of hundreds and four on the scale of one, 4 classes that depend on both groups. The built-in "
        "`tabular_mlp` normalizes its input inside the graph (a Normalization layer adapted on the train split), as "
        "users feed raw columns. Why PTQ struggles: an int8 input tensor has one scale for all eight features, set "
        "by the largest (hundreds); the unit-scale features then span a few int8 steps and most of what they carry "
        "is rounded away before the first layer runs. 16-bit activations (`int16x8`) have 256× finer steps. "
        "`selective_integer` keeps the normalization's two elementwise ops float (it tries the ops that scale the "
        "input first), which moves the QUANTIZE after them; the three fully-connected layers stay int8. QAT: the "
        "quantization-aware copy keeps the normalization float too (layers tfmot left float: "
        f"{qat_float_layers}; its output gets the int8 range) and starts from calibrated activation ranges; "
        "`qat_mixed` converts it as trained (float normalization, int8 layers, float I/O). `qat_int8` cannot help: "
        "its input is int8 by definition, the same single scale for all eight raw features.", "",
        md_table(header, rows), "",
        f"selective_integer kept float: {record.float_layers if record else None} (integer-compute fraction "
        f"{selective.integer_compute_fraction or 0:.4f}, after {len(record.steps) if record else 0} "
        "search step(s) on the validation split).", "",
        f"The default gate (1 pp bound on the upper end of the paired 90 % interval, integer-compute floor 0.8 for "
        f"mixed variants, smallest passing) selected **{gate.selected_variant}**:", "", *lines, ""]
