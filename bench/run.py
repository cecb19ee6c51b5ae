"""`make bench`: regenerates BENCHMARKS.md and bench/plots/*.png from real runs.

Every comparison is made inside one run (absolute timings drift on this machine; ratios
hold). Figures are medians of several repetitions with min–max. The project's own library
does the work (training, conversion, interpreter runner, Beam evaluation); TFMA is TFMA.
"""
from __future__ import annotations

import datetime
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Dict, List, Optional

import apache_beam as beam
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402
from apache_beam.options.pipeline_options import PipelineOptions  # noqa: E402

from bench import comparisons, million  # noqa: E402
from bench.common import (REPO, PIXEL_KEYS, fmt_range, md_table, mixed_scale_rows, summary,  # noqa: E402
                          write_digits_splits, write_image_eval_set, write_splits)
from tfx_quantization.models import mobilenet_v2  # noqa: E402
from tfx_quantization.contracts import read_manifest  # noqa: E402
from tfx_quantization.post_training_quantizer.build import quantize_all  # noqa: E402
from tfx_quantization.model_contract import ModelContract  # noqa: E402
from tfx_quantization.settings import CalibrationSettings, GateSettings, QuantizeSettings, TrainSettings  # noqa: E402
from tfx_quantization.quantization import data, host  # noqa: E402
from tfx_quantization.quantization.model_spec import ModelSpec  # noqa: E402
from tfx_quantization.quantization.interpreter import TFLiteRunner, accuracy  # noqa: E402
from tfx_quantization.representative_dataset_gen.sampling import run_sampling  # noqa: E402
from tfx_quantization.tflite_evaluator import beam_pass, evaluate  # noqa: E402
from tfx_quantization import training  # noqa: E402

log = logging.getLogger("bench")
PLOTS = REPO / "bench" / "plots"
ONE_WORKER = ["--direct_num_workers=1"]
REPS = 3


def machine() -> List[str]:
    cpu = host.describe(host.cpu_info())
    mem = next((l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal")), "0")
    libs = ", ".join(f"{d} {metadata.version(d)}" for d in (
        "tensorflow", "tfx", "tensorflow-model-optimization", "tensorflow-model-analysis", "apache-beam"))
    return [f"- CPU: {cpu}; {int(mem) / 1024 / 1024:.0f} GiB",
            f"- Python {platform.python_version()}; {libs}",
            f"- Run: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, `make bench`"]


# ---- 1. variants --------------------------------------------------------------------------
def latencies(quantized_dir: str, example: np.ndarray, runs: int) -> Dict[str, Dict[str, dict]]:
    """REPS rounds; in each, every variant is timed in turn (alternating, so drift hits all)."""
    manifest = read_manifest(quantized_dir)
    built = manifest.built()
    runners = {n: TFLiteRunner(os.path.join(quantized_dir, manifest.variants[n].file), num_threads=1)
               for n in built}
    med, p90 = {n: [] for n in built}, {n: [] for n in built}
    for _ in range(REPS):
        for n in built:
            t = runners[n].time_single_example(example, runs=runs, warmup=20)
            med[n].append(t["latency_ms_median"])
            p90[n].append(t["latency_ms_p90"])
    return {n: {"median": summary(med[n]), "p90": summary(p90[n])} for n in built}


def variant_rows(quantized_dir, lat, accuracies: Optional[dict]):
    manifest = read_manifest(quantized_dir).variants
    base = manifest["float32"].size_bytes
    base_lat = lat["float32"]["median"]["median"]
    rows, raw = [], {}
    for name, v in manifest.items():
        if v.status != "ok":
            rows.append([name, "not built: " + v.reason[:60], "", "", "", "", "", ""])
            continue
        l = lat[name]
        acc = accuracies.variants[name] if accuracies else None
        raw[name] = {"bytes": v.size_bytes, "ratio": v.size_bytes / base, "latency": l,
                     "speedup": base_lat / l["median"]["median"],
                     "accuracy": acc["accuracy"] if acc else None, "drop": acc["accuracy_drop"] if acc else None}
        rows.append([
            name, v.size_bytes, f"{v.size_bytes / base:.3f}", fmt_range(l["median"]),
            f"{l['p90']['median']:.4f}", f"{base_lat / l['median']['median']:.2f}×",
            f"{acc['accuracy']:.4f}" if acc else "n/a", f"{100 * acc['accuracy_drop']:+.2f}" if acc else "n/a",
        ])
    return rows, raw


HEADER = ["variant", "bytes", "× float32 size", "latency median ms (min–max of 3)", "p90 ms",
          "speed-up vs float32", "accuracy", "drop vs float (pp)"]


def evaluate_all(eval_dir, float_dir, quantized_dir, out):
    params = GateSettings(max_accuracy_drop=1.0, allow_float32=True, latency_runs=10)
    return evaluate.evaluate_models(eval_dir, float_dir, quantized_dir, str(out), params,
                                    lambda: beam.Pipeline(options=PipelineOptions(ONE_WORKER)))


def train_and_quantize(tmp: Path, splits, name, cfg: TrainSettings, contract: ModelContract, calibration_dir):
    result = training.train(splits["train"], splits["eval"], str(tmp / name / "float"), str(tmp / name / "qat"),
                            str(tmp / name / "logs"), cfg, contract)
    quantize_all(str(tmp / name / "float"), str(tmp / name / "q"), QuantizeSettings(validation_samples=1000),
                 qat_model_dir=str(tmp / name / "qat"),
                 calibration_files=data.split_files(f"{calibration_dir}/Split-calibration"),
                 validation_files=data.split_files(splits["validation"]))
    return result, str(tmp / name / "float"), str(tmp / name / "q")


def fine_tuned_float(tmp: Path, name: str, splits, cfg: TrainSettings, float_dir: str, calibration_dir) -> dict:
    """The float model trained on for as long as QAT fine-tunes (same epochs, learning rate,
    seed), without fake quantization: what the extra training alone is worth. Accuracy of its
    float32 and integer_only conversions on the eval split."""
    train_files, eval_files = data.split_files(splits["train"]), data.split_files(splits["eval"])
    spec = data.spec_for(float_dir, train_files)
    model = training.load_keras_model(float_dir)
    keras.utils.set_random_seed(cfg.seed)
    training.fit_phase(model, "float_more", cfg.qat_learning_rate, cfg.qat_epochs, cfg.qat_steps_per_epoch,
                       train_files, eval_files, spec, cfg, str(tmp / name / "logs_more"))
    more = tmp / name / "float_more"
    training.save_serving_model(model, more, spec)
    quantize_all(str(more), str(tmp / name / "q_more"), QuantizeSettings(variants=["float32", "integer_only"]),
                 calibration_files=data.split_files(f"{calibration_dir}/Split-calibration"))
    acc = evaluate_all(splits["eval"], str(more), str(tmp / name / "q_more"), tmp / name / "ev_more")
    return {n: acc.variants[n]["accuracy"] for n in ("float32", "integer_only")}


def qat_section(models: Dict[str, tuple]) -> List[str]:
    """QAT against float and PTQ for each trained model: {label: (evaluation, qat variant,
    fine-tuned float reference or None)}."""
    rows = []
    for label, (acc, qat, more) in models.items():
        f, v = acc.float_model["accuracy"], acc.variants
        ptq, q = v["integer_only"]["accuracy"], v[qat]["accuracy"]
        rows.append([label, f"{f:.4f}", f"{ptq:.4f}", f"`{qat}` {q:.4f}", f"{100 * (q - f):+.2f}",
                     f"{100 * (q - ptq):+.2f}",
                     f"{more['float32']:.4f} / {more['integer_only']:.4f}" if more else "n/a"])
    return ["## 7. Quantization-aware training", "",
            "QAT fine-tunes a quantization-aware copy of the trained float model (`qat_epochs` 2, learning rate 1e-4, "
            "BatchNormalization statistics still updated), starting from activation ranges calibrated on 8 train "
            "batches. Measured once while choosing (MobileNetV2-style digits, seed 42, 599 eval examples): with "
            "tfmot's own start at [-6, 6], which a short fine-tuning barely moves, `qat_int8` was 1.7 pp below float "
            "and 2.5 pp below PTQ; with calibrated ranges 5.8 pp above float; freezing BatchNormalization on top "
            "cost 2.2 pp of that. Accuracy on the eval split; drops in pp. The last column trains the float "
            "model on for the same epochs without fake quantization, then converts it to float32 / integer_only: when "
            "it gains, the float model was not converged and QAT's gain over float is that training, not "
            "quantization.", "",
            md_table(["model", "float", "PTQ integer_only", "QAT variant", "QAT − float", "QAT − PTQ",
                      "float trained on as long (float32 / integer_only)"], rows), ""]


# ---- 2. evaluator vs TFMA ------------------------------------------------------------------
def run_tfma(tflite_path: str, eval_file: str, out: Path) -> float:
    import tensorflow_model_analysis as tfma

    model_dir = out / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(tflite_path, model_dir / "tflite")  # TFMA's tf_lite loader reads <dir>/tflite
    config = tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(label_key="label", model_type="tf_lite")],
        metrics_specs=[tfma.MetricsSpec(metrics=[tfma.MetricConfig(class_name="SparseCategoricalAccuracy")])],
        slicing_specs=[tfma.SlicingSpec()])
    shared = tfma.default_eval_shared_model(eval_saved_model_path=str(model_dir), eval_config=config)
    result = tfma.run_model_analysis(eval_shared_model=shared, eval_config=config, data_location=eval_file,
                                     output_path=str(out / "result"), pipeline_options=PipelineOptions(ONE_WORKER))
    metrics = result.slicing_metrics[0][1][""][""]
    return float(metrics["sparse_categorical_accuracy"]["doubleValue"])


def run_ours(tflite_path: str, eval_file: str, out: Path) -> float:
    spec = ModelSpec.single(["image"], [8, 8, 1], "label", 10, feature_dtypes={"image": "float32"})
    out.mkdir(parents=True, exist_ok=True)
    counts = beam_pass.run_evaluation(lambda: beam.Pipeline(options=PipelineOptions(ONE_WORKER)),
                                       eval_pattern=eval_file, tflite_models={"m": tflite_path}, float_model_dir=None,
                                       spec_json=spec.to_json(), output_path=str(out / "counts.json"))
    return counts["m"]["top1"] / counts["m"]["n"]


def truncating_accuracy(tflite_path: str, eval_file: str) -> float:
    """Accuracy when inputs are quantized the way TFMA does it: (x / scale + zero_point).astype(int)."""
    spec = ModelSpec.single(["image"], [8, 8, 1], "label", 10, feature_dtypes={"image": "float32"})
    x, y = data.parse_numpy(list(data.iter_serialized([eval_file])), spec)
    x = x["image"]
    runner = TFLiteRunner(tflite_path)
    scale, zp = runner.input["quantization"]
    if not np.issubdtype(runner.input["dtype"], np.integer):
        return accuracy(runner.predict(x), y)
    interp = runner.interpreter
    preds = []
    for i in range(0, len(x), 512):
        batch = x[i:i + 512]
        interp.resize_tensor_input(runner.input["index"], [len(batch), 8, 8, 1])
        interp.allocate_tensors()
        interp.set_tensor(runner.input["index"], (batch / scale + zp).astype(runner.input["dtype"]))
        interp.invoke()
        preds.append(np.argmax(interp.get_tensor(runner.output["index"]), -1))
    return float(np.mean(np.concatenate(preds) == y))


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("tensorflow", "apache_beam", "absl", "components"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    PLOTS.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="qp-bench-"))
    started = time.perf_counter()
    md: List[str] = ["# Benchmarks", "", "Regenerated by `make bench` (`bench/run.py`); every figure below comes from "
                     "that run. Latency is single-example `invoke()` on this host's CPU, 1 thread, XNNPACK on, after "
                     "warm-up: host figures, not device figures. Medians of 3 alternating rounds, min–max in brackets.",
                     "", "## Machine", *machine(), ""]

    # 1a. digits CNN
    log.info("1a. digits CNN")
    splits = write_digits_splits(tmp / "digits")
    run_sampling(splits["train"], str(tmp / "cal"),
                 CalibrationSettings(num_samples=200, strategy="stratified", label_key="label", seed=0))
    cfg = TrainSettings(epochs=10, qat_epochs=2, seed=42)
    digits = ModelContract(inputs={"image": {"features": PIXEL_KEYS, "shape": [8, 8, 1]}}, num_classes=10)
    _, cnn_float, cnn_q = train_and_quantize(tmp, splits, "cnn", cfg, digits, tmp / "cal")
    cnn_acc = evaluate_all(splits["eval"], cnn_float, cnn_q, tmp / "cnn" / "ev")
    eval_files = data.split_files(splits["eval"])
    x_eval, _ = data.parse_numpy([next(data.iter_serialized(eval_files))], data.spec_for(cnn_float, eval_files))
    x_eval = x_eval["image"]
    cnn_rows, cnn_raw = variant_rows(cnn_q, latencies(cnn_q, x_eval[0], 2000), cnn_acc)

    # 1b. MobileNetV2 224x224x3, width 1.0, random weights
    log.info("1b. MobileNetV2 224")
    keras.utils.set_random_seed(0)
    spec224 = ModelSpec.single(["image"], [224, 224, 3], "label", 1000)
    training.save_serving_model(mobilenet_v2([224, 224, 3], 1000, alpha=1.0, image_size=224), tmp / "mnv2", spec224)
    rng = np.random.RandomState(0)
    data.write_split(tmp / "mnv2cal" / "Split-calibration", (data.to_example(
        {"image": rng.uniform(0, 1, 224 * 224 * 3).astype(np.float32), "label": 0}) for _ in range(8)), shards=1)
    quantize_all(str(tmp / "mnv2"), str(tmp / "mnv2q"),
                 QuantizeSettings(variants=["float32", "dynamic_range", "float16", "full_integer", "integer_only"]),
                 calibration_files=data.split_files(tmp / "mnv2cal" / "Split-calibration"))
    mn_rows, mn_raw = variant_rows(str(tmp / "mnv2q"), latencies(
        str(tmp / "mnv2q"), rng.uniform(0, 1, (224, 224, 3)).astype(np.float32), 30), None)

    # 1c. MobileNetV2-style on digits (alpha 0.35, 8x8 upsampled to 32x32)
    log.info("1c. MobileNetV2-style on digits")
    mcfg = TrainSettings(model="mobilenet_v2", model_kwargs={"alpha": 0.35, "image_size": 32},
                         epochs=15, qat_epochs=2, seed=42)
    _, mfloat, mq = train_and_quantize(tmp, splits, "mnd", mcfg, digits, tmp / "cal")
    mnd_acc = evaluate_all(splits["eval"], mfloat, mq, tmp / "mnd" / "ev")
    mnd_rows, mnd_raw = variant_rows(mq, latencies(mq, x_eval[0], 300), mnd_acc)

    md += ["## 1. Variants", "",
           f"### (a) digits CNN (trained; float model accuracy {cnn_acc.float_model['accuracy']:.4f} on "
           f"{cnn_acc.num_eval_examples} eval examples)", "", md_table(HEADER, cnn_rows), "",
           "### (b) MobileNetV2, 224×224×3, width 1.0, 1000 classes, random weights (size and latency only)", "",
           md_table(HEADER, mn_rows), "",
           f"### (c) MobileNetV2-style (alpha 0.35, 8×8 input upsampled to 32×32) trained on digits (float "
           f"accuracy {mnd_acc.float_model['accuracy']:.4f})", "", md_table(HEADER, mnd_rows), ""]
    md += variant_notes(cnn_raw, mn_raw, mnd_raw, read_manifest(cnn_q), read_manifest(mq))

    log.info("1d. TFLite Micro")
    md += tflm_section({"digits CNN": (cnn_q, x_eval), "MobileNetV2 224": (str(tmp / "mnv2q"), None),
                        "MobileNetV2-style digits": (mq, x_eval)})
    plot_variants({"digits CNN": cnn_raw, "MobileNetV2 224": mn_raw, "MobileNetV2-style digits": mnd_raw})

    # 1e. the hard workload: mixed-scale tabular features
    log.info("1e. hard workload")
    hsplits = write_splits(tmp / "mixed", mixed_scale_rows())
    run_sampling(hsplits["train"], str(tmp / "hcal"),
                 CalibrationSettings(num_samples=200, strategy="stratified", label_key="label", seed=0))
    hcfg = TrainSettings(model="tabular_mlp", epochs=30, seed=42)
    mixed = ModelContract(inputs={"features": {"features": [f"f{i:02d}" for i in range(8)], "shape": [8]}},
                          num_classes=4)
    hres, hfloat, hq = train_and_quantize(tmp, hsplits, "mixed", hcfg, mixed, tmp / "hcal")
    hacc = evaluate_all(hsplits["eval"], hfloat, hq, tmp / "mixed" / "ev")
    heval = data.split_files(hsplits["eval"])
    hx, _ = data.parse_numpy([next(data.iter_serialized(heval))], data.spec_for(hfloat, heval))
    hrows, _ = variant_rows(hq, latencies(hq, hx["features"][0], 2000), hacc)
    md += comparisons.hard_workload_section(tmp / "mixed", hfloat, hq, hsplits, hrows, HEADER,
                                            hacc.float_model["accuracy"], hres.float_layers)
    mnd_more = fine_tuned_float(tmp, "mnd", splits, mcfg, mfloat, tmp / "cal")
    qat_md = qat_section({"digits CNN": (cnn_acc, "qat_int8", None),
                          "MobileNetV2-style digits": (mnd_acc, "qat_int8", mnd_more),
                          "hard workload (mixed scale)": (hacc, "qat_mixed", None)})

    # 2. our evaluator vs TFMA
    log.info("2. evaluator vs TFMA")
    n_tfma = 30000
    eval_file = write_image_eval_set(tmp / "tfma_eval", n_tfma)
    manifest = read_manifest(cnn_q).variants
    md += tfma_section(tmp, cnn_q, manifest, eval_file, n_tfma)

    # 3. scale
    log.info("3. scale")
    md += scale_section(tmp, os.path.join(cnn_q, manifest["integer_only"].file))

    # 4. pipeline
    log.info("4. pipeline")
    md += pipeline_section(tmp)

    # 5-6. our files vs the raw converter's; our variants vs LiteRT Quantizer
    log.info("5. raw converter")
    cal_files = data.split_files(f"{tmp / 'cal'}/Split-calibration")
    md += comparisons.raw_converter_section(cnn_float, cnn_q, cal_files)
    log.info("6. LiteRT Quantizer")
    md += comparisons.litert_quantizer_section({
        "digits CNN": dict(float_dir=cnn_float, quantized_dir=cnn_q, calibration_files=cal_files,
                           eval_files=eval_files),
        "MobileNetV2-style digits": dict(float_dir=mfloat, quantized_dir=mq, calibration_files=cal_files,
                                         eval_files=eval_files),
        "mixed-scale (hard workload)": dict(float_dir=hfloat, quantized_dir=hq, calibration_files=data.split_files(
            f"{tmp / 'hcal'}/Split-calibration"), eval_files=heval)})
    md += qat_md

    # 8. one million eval examples through every variant (alone: make bench-million)
    log.info("8. one million examples")
    md += million.section(tmp, cnn_float, cnn_q)

    # 9. activation outliers: range methods without retraining (alone: python -m bench.outliers)
    log.info("9. activation outliers")
    from bench.outliers import outlier_section
    md += outlier_section(tmp / "outliers")

    # 10. weight-side corrections and int4 weights (alone: python -m bench.weight_side)
    log.info("10. weight-side corrections and int4")
    from bench.weight_side import section as weight_side_section
    md += weight_side_section(tmp / "weight_side", "digits CNN", cnn_float, cal_files, eval_files)

    # 11. the activation-range method chosen on validation, checked on eval (alone: make bench-choice)
    log.info("11. activation-range choice on validation vs eval")
    from bench.range_choice import section as choice_section
    md += choice_section(tmp / "choice", {"digits CNN": cnn_float, "MobileNetV2-style digits": mfloat}, cal_files,
                         data.split_files(splits["validation"]), eval_files, splits["train"])

    md += ["", f"Total `make bench` time: {(time.perf_counter() - started) / 60:.1f} min."]
    (REPO / "BENCHMARKS.md").write_text("\n".join(md) + "\n")
    shutil.rmtree(tmp, ignore_errors=True)
    log.info("wrote %s", REPO / "BENCHMARKS.md")


def tflm_section(models: Dict[str, tuple]) -> List[str]:
    """Per variant: does TFLite Micro allocate it (and run one example, where given), the
    smallest tensor arena (RAM) and the file size (flash)."""
    from tfx_quantization.quantization import micro

    md = ["### (d) TFLite Micro on the host: tensor arena (RAM) and file (flash) per variant", "",
          "The smallest arena in which the `tflite-micro` interpreter allocates the model (bisection to 16 bytes), "
          "and the file size, which a microcontroller keeps in flash. Where a model does not allocate, the "
          "runtime's own reason. The digits models also ran one eval example; MobileNetV2 224 was only "
          "allocated (TFLM's reference kernels take too long on it for a benchmark).", ""]
    rows = []
    for label, (quantized_dir, example) in models.items():
        manifest = read_manifest(quantized_dir).variants
        for name, entry in manifest.items():
            if entry.status != "ok":
                continue
            path = str(Path(quantized_dir, entry.file))
            arena, reason = micro.smallest_arena(path)
            ran = "–"
            if arena is not None and example is not None:
                try:
                    ran = "yes" if np.all(np.isfinite(micro.run(path, arena, example[:1]))) else "non-finite outputs"
                except RuntimeError as e:
                    ran, reason = "no", str(e)
            rows.append([label, name, f"{entry.size_bytes:,}", f"{arena:,}" if arena else "does not allocate", ran,
                         (reason or "").replace("|", "\\|")])
    return md + [md_table(["model", "variant", "flash (file bytes)", "arena bytes", "ran an example", "runtime's reason"],
                          rows), ""]


def variant_notes(cnn, mn, mnd, cnn_manifest, mnd_manifest) -> List[str]:
    notes = ["Observations from this run:"]
    for label, raw in (("digits CNN", cnn), ("MobileNetV2 224", mn), ("MobileNetV2-style digits", mnd)):
        if "dynamic_range" in raw:
            s = raw["dynamic_range"]["speedup"]
            notes.append(f"- {label}: dynamic_range runs at {s:.2f}× the float32 speed"
                         + (" (slower than float: on x86 with XNNPACK the float kernels win)" if s < 1 else "") + ".")
        if "integer_only" in raw:
            notes.append(f"- {label}: integer_only is {raw['integer_only']['ratio']:.3f}× the float32 size and "
                         f"{raw['integer_only']['speedup']:.2f}× its speed.")
    for label, manifest in (("digits CNN", cnn_manifest), ("MobileNetV2-style digits", mnd_manifest)):
        sel = manifest.variants.get("selective_integer")
        if sel and sel.selective:
            rec = sel.selective
            k = len(rec.float_layers) if rec.float_layers is not None else None
            notes.append(f"- {label}: selective_integer "
                         + (f"kept {k} layer(s) float after {len(rec.steps)} search step(s)" if k is not None
                            else "found no model within its budget")
                         + " (judged on the validation split; neither training nor the eval split above saw it).")
    notes.append("- The published reference (TensorFlow model-optimization table, ImageNet MobileNetV2): float top-1 "
                 ".719, post-training quantized .637, quantization-aware .709, 14 → 3.6 MB. Table (b) reproduces the "
                 "size side only (no ImageNet here); accuracy comparisons are on digits.")
    return notes + [""]


def plot_variants(models: Dict[str, dict]) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for label, raw in models.items():
        names = list(raw)
        axes[0].plot(names, [raw[n]["ratio"] for n in names], "o-", label=label)
        axes[1].plot(names, [raw[n]["speedup"] for n in names], "o-", label=label)
    axes[0].set_title("size relative to float32")
    axes[1].set_title("speed-up over float32 (1 thread, XNNPACK)")
    axes[1].axhline(1.0, color="grey", lw=1, ls="--")
    for ax in axes:
        ax.tick_params(axis="x", rotation=30)
        ax.legend(fontsize=8)
    _save_plot(fig, "variants.png")


def tfma_section(tmp: Path, cnn_q: str, manifest: dict, eval_file: str, n: int) -> List[str]:
    rows, plot = [], {}
    for variant in ("float32", "integer_only"):
        path = os.path.join(cnn_q, manifest[variant].file)
        ours_t, tfma_t, ours_acc, tfma_acc = [], [], None, None
        for rep in range(REPS):  # alternate: ours, TFMA, ours, TFMA, ...
            ours_t.append(_time_store(lambda: run_ours(path, eval_file, tmp / f"o{variant}{rep}"), "ours"))
            ours_acc = _LAST["ours"]
            tfma_t.append(_time_store(lambda: run_tfma(path, eval_file, tmp / f"t{variant}{rep}"), "tfma"))
            tfma_acc = _LAST["tfma"]
        ours_eps = summary([n / t for t in ours_t])
        tfma_eps = summary([n / t for t in tfma_t])
        trunc = truncating_accuracy(path, eval_file)
        plot[variant] = (ours_eps["median"], tfma_eps["median"])
        rows.append([variant, fmt_range(ours_eps, "{:,.0f}"), fmt_range(tfma_eps, "{:,.0f}"),
                     f"{ours_eps['median'] / tfma_eps['median']:.2f}×", f"{ours_acc:.4f}", f"{tfma_acc:.4f}",
                     f"{trunc:.4f}"])
    fig, ax = plt.subplots(figsize=(6, 3.5))
    xs = np.arange(len(plot))
    ax.bar(xs - 0.2, [v[0] for v in plot.values()], 0.4, label="TFLiteEvaluator (ours)")
    ax.bar(xs + 0.2, [v[1] for v in plot.values()], 0.4, label="TFMA tf_lite")
    ax.set_xticks(xs, list(plot))
    ax.set_ylabel("eval examples / second")
    ax.legend(fontsize=8)
    _save_plot(fig, "evaluator_vs_tfma.png")
    return ["## 2. Our evaluator vs TFMA (`model_type='tf_lite'`)", "",
            f"The digits CNN's variants over {n:,} eval examples (the digits eval split replicated with Gaussian noise "
            "σ=0.5, one float `image` feature as TFMA requires), DirectRunner with 1 worker for both, wall time of the "
            "whole Beam pipeline (start-up included), 3 alternating rounds.", "",
            md_table(["model", "ours: examples/s", "TFMA: examples/s", "ratio", "ours: accuracy", "TFMA: accuracy",
                      "accuracy with TFMA-style truncating input quantization (plain loop)"], rows), "",
            "Accuracies agree exactly for float32. For the int8 model, TFMA's figure equals the plain loop that "
            "quantizes inputs the way TFMA does (`(x / scale + zero_point).astype(int8)`: truncation, no clipping), "
            "while ours rounds and clips; any difference between the two columns is that rounding. TFMA also runs "
            "with XNNPACK off and re-allocates tensors on every batch.", "",
            "![evaluator vs TFMA](bench/plots/evaluator_vs_tfma.png)", ""]


def _save_plot(fig, name: str) -> None:
    fig.tight_layout()
    fig.savefig(PLOTS / name, dpi=100)
    plt.close(fig)


_LAST: Dict[str, float] = {}


def _time_store(fn, key) -> float:
    start = time.perf_counter()
    _LAST[key] = fn()
    return time.perf_counter() - start


def scale_section(tmp: Path, tflite: str) -> List[str]:
    rows, series = [], {1: [], 2: []}
    for n in (1000, 10000, 100000):
        eval_file = write_image_eval_set(tmp / f"scale{n}", n, seed=1)
        for workers in (1, 2):
            secs, mem = [], []
            for rep in range(REPS):
                out = tmp / f"scale_{n}_{workers}_{rep}.json"
                subprocess.run([sys.executable, "-m", "bench.scale_worker", eval_file, tflite, str(workers), str(out)],
                               cwd=REPO, check=True, capture_output=True)
                r = json.loads(out.read_text())
                secs.append(r["seconds"])
                mem.append(r["peak_rss_mb"])
            s, m = summary(secs), summary(mem)
            series[workers].append((n, s["median"]))
            rows.append([f"{n:,}", workers, fmt_range(s, "{:.1f}"), f"{n / s['median']:,.0f}", fmt_range(m, "{:.0f}")])
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for workers, pts in series.items():
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=f"{workers} worker(s)")
    ax.set_xscale("log")
    ax.set_xlabel("eval examples")
    ax.set_ylabel("wall time (s)")
    ax.legend(fontsize=8)
    _save_plot(fig, "scale.png")
    return ["## 3. Evaluator scale", "",
            "The Beam evaluation of the digits CNN's integer_only model alone, each run in a fresh process "
            "(start-up included). Peak memory: the summed resident set of that process and the Beam worker "
            "processes it started, sampled every 20 ms (it includes TensorFlow and Beam themselves, about 0.6 GB "
            "per process).", "",
            md_table(["eval examples", "DirectRunner workers", "wall time s", "examples/s", "peak RSS MB"], rows), "",
            "![scale](bench/plots/scale.png)", ""]


def pipeline_section(tmp: Path) -> List[str]:
    from tfx_quantization.pipeline import summary as mlmd

    per_stage: Dict[str, Dict[str, List[float]]] = {}
    walls = {"cold": [], "cached": []}
    for rep in range(2):
        # The bundled digits job, as `make run` takes it (the stages' own defaults know no data).
        env = dict(os.environ, QP_OUTPUT_ROOT=str(tmp / f"pipe{rep}"), QP_PIPELINE_NAME="bench-digits",
                   QP_CONFIG=os.environ.get("QP_CONFIG", "data/examples/digits.yaml"))
        for kind in ("cold", "cached"):
            start = time.perf_counter()
            subprocess.run([sys.executable, str(REPO / "pipeline" / "local_runner.py")], env=env, cwd=REPO,
                           check=True, capture_output=True)
            walls[kind].append(time.perf_counter() - start)
        store = mlmd.open_store(str(tmp / f"pipe{rep}" / "metadata.sqlite"))
        execs = sorted(mlmd.executions(store), key=lambda e: e["id"])
        half = len(execs) // 2
        for kind, part in (("cold", execs[:half]), ("cached", execs[half:])):
            for e in part:
                per_stage.setdefault(e["component"], {"cold": [], "cached": []})[kind].append(e["seconds"])
    rows = []
    for comp, t in per_stage.items():
        rows.append([comp, fmt_range(summary(t["cold"]), "{:.1f}") if t["cold"] else "",
                     fmt_range(summary(t["cached"]), "{:.1f}") if t["cached"] else ""])
    rows.append(["**whole run (process wall time)**", fmt_range(summary(walls["cold"]), "{:.1f}"),
                 fmt_range(summary(walls["cached"]), "{:.1f}")])
    return ["## 4. Pipeline", "",
            "`python pipeline/local_runner.py` (what `make run` starts through the TFX CLI) on the default digits "
            "configuration, in a fresh output folder (cold), then again unchanged (cached: ExampleGen, trainer, "
            "calibration and quantizer come from the cache; the evaluator re-evaluates against the model pushed by "
            "the cold run; the pusher finds the same bytes). Per-stage seconds from ML Metadata execution "
            "timestamps; median of 2 (min–max).", "",
            md_table(["stage", "cold s", "cached s"], rows), ""]


if __name__ == "__main__":
    main()
