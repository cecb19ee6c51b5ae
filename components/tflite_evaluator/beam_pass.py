"""One Beam pass over the eval split: every TFLite variant, the float SavedModel and the
deployed baseline, evaluated batch by batch; metrics are sums of counts combined with a
CombineFn (the task's accumulators: quantization/metrics.py), so memory does not grow with
the eval set and any number of workers gives the same figures."""
from __future__ import annotations

import json
import logging
import math
from typing import Callable, Dict, List, Optional

import apache_beam as beam
import numpy as np

from tfx_quantization.quantization.beam_records import ReadRecords

log = logging.getLogger(__name__)
PROGRESS_EVERY = 5000  # examples between progress lines
FLOAT_MODEL = "float_model"  # the float SavedModel (the reference)
BASELINE = "deployed_baseline"  # the currently deployed TFLite model, re-evaluated here
LABELS = "__labels__"
TRAINING_MEAN = "training_mean"  # regression's sanity reference: predicts the training labels' mean
COUNTS_FILE = ".beam_counts.json"  # the pass's combined counts, in the artifact until read (run_evaluation)
# A multi-output model's secondary outputs are counted under "<model>@<output>" (the primary
# output under the model's name alone, as for a one-output model): split_outputs regroups them.
OUTPUT_SEP = "@"


def output_key(model: str, output: str, primary: bool) -> str:
    """The counts key of one model's one output (OUTPUT_SEP)."""
    return model if primary else f"{model}{OUTPUT_SEP}{output}"


def split_outputs(measured: Dict[str, dict]) -> Dict[str, dict]:
    """metrics_from_counts' figures with each secondary output's moved under its model:
    {model: {...primary figures, "outputs": {output: figures}}}."""
    out = {name: dict(figures) for name, figures in measured.items() if OUTPUT_SEP not in name}
    for key, figures in measured.items():
        if OUTPUT_SEP in key:
            model, output = key.split(OUTPUT_SEP, 1)
            out.setdefault(model, {}).setdefault("outputs", {})[output] = figures
    return out


MAX_CONFUSION_CLASSES = 100  # a confusion matrix is counted up to this many classes
METRIC_COUNTS = {"accuracy": "top1", "top_k_accuracy": "topk"}  # metric -> its correctness counts


def outcomes(probs: np.ndarray, labels: np.ndarray, k: int, threshold: Optional[float] = None) -> Dict[str, np.ndarray]:
    """Per-example outcomes of one model on one batch (non-finite rows count as wrong);
    with `threshold` (binary task) class 1 is predicted when its probability reaches it."""
    finite = np.all(np.isfinite(probs), axis=-1)
    top1 = np.argmax(np.where(np.isfinite(probs), probs, -np.inf), axis=-1)
    if threshold is not None:
        top1 = (np.nan_to_num(probs[:, 1], nan=-np.inf) >= threshold).astype(top1.dtype)
    k = min(k, probs.shape[-1])
    topk = np.argsort(-np.nan_to_num(probs, nan=-np.inf), axis=-1, kind="stable")[:, :k]
    return {"finite": finite, "pred": top1, "top1": (top1 == labels) & finite,
            "topk": np.any(topk == labels[:, None], axis=-1) & finite}


def paired_table(reference: np.ndarray, variant: np.ndarray) -> np.ndarray:
    """[both right, reference right only, variant right only, both wrong] (components/quantization/stats.py)."""
    return np.array([(reference & variant).sum(), (reference & ~variant).sum(),
                     (~reference & variant).sum(), (~reference & ~variant).sum()], dtype=np.int64)


def batch_counts(out: Dict[str, np.ndarray], labels: np.ndarray, references: Dict[str, Dict[str, np.ndarray]],
                 num_classes: int) -> dict:
    """Integer counts for one model on one batch: totals, per class, the confusion matrix,
    and the paired tables against each reference model (the float model, the deployed one)."""
    counts = {
        "n": np.int64(len(labels)),
        "top1": np.int64(out["top1"].sum()),
        "topk": np.int64(out["topk"].sum()),
        "non_finite": np.int64((~out["finite"]).sum()),
        "class_total": np.bincount(labels, minlength=num_classes).astype(np.int64),
        "class_correct": np.bincount(labels[out["top1"]], minlength=num_classes).astype(np.int64),
    }
    if FLOAT_MODEL in references:
        counts["agree"] = np.int64(((out["pred"] == references[FLOAT_MODEL]["pred"]) & out["finite"]).sum())
    if num_classes <= MAX_CONFUSION_CLASSES:
        cells = labels * num_classes + np.clip(out["pred"], 0, num_classes - 1)
        counts["confusion"] = np.bincount(cells, minlength=num_classes * num_classes).astype(np.int64)
    for ref_name, ref in references.items():
        counts[f"paired_vs_{ref_name}"] = np.stack([paired_table(ref[c], out[c]) for c in METRIC_COUNTS.values()])
    return counts


class SumCounts(beam.CombineFn):
    """Adds count dicts key by key; keys starting with `max_` take the maximum."""

    def create_accumulator(self):
        return None

    def add_input(self, acc, counts):
        if acc is None:
            return counts
        return {k: np.maximum(acc[k], counts[k]) if k.startswith("max_") else acc[k] + counts[k] for k in acc}

    def merge_accumulators(self, accs):
        out = None
        for acc in accs:
            if acc is not None:
                out = self.add_input(out, acc)
        return out

    def extract_output(self, acc):
        return acc


class Predict(beam.DoFn):
    """One interpreter per TFLite model and the float SavedModel, created once in setup."""

    def __init__(self, tflite_models: Dict[str, str], float_model_dir: str, spec_json: str,
                 num_threads: int, top_k: int, constant_prediction: Optional[List[float]] = None):
        self._paths, self._float_dir, self._spec_json = tflite_models, float_model_dir, spec_json
        self._threads, self._k, self._constant = num_threads, top_k, constant_prediction

    def setup(self):
        import tensorflow as tf

        from tfx_quantization.quantization import data
        from tfx_quantization.quantization.interpreter import TFLiteRunner, take
        from tfx_quantization.quantization.model_spec import ModelSpec

        self._data, self._take, self._tf = data, take, tf
        self._spec = ModelSpec.from_json(self._spec_json)
        spec = self._spec
        self._output_specs = spec.output_specs()  # one per output, the primary first: once, not per batch
        # One traced parse per batch (tf.io.parse_example, casts, reshapes in one call), not an
        # eager op per feature: with 64 columns that was ~10 % of the pass.
        self._parse = tf.function(lambda s: data.parse_batch(s, spec, all_labels=True),
                                  input_signature=[tf.TensorSpec([None], tf.string)])
        self._runners = {n: TFLiteRunner.for_spec(p, self._spec, num_threads=self._threads)
                         for n, p in self._paths.items()}
        # The float reference is optional (benchmarks evaluate a TFLite model alone).
        self._float = data.Serving(self._float_dir, self._spec) if self._float_dir else None

    def start_bundle(self):
        self._seen, self._next_report = 0, PROGRESS_EVERY

    def finish_bundle(self):
        if self._seen:
            log.info("Beam evaluation: %d example(s) evaluated in this bundle", self._seen)

    def process(self, batch: List[bytes]):
        self._seen += len(batch)
        if self._seen >= self._next_report:
            log.info("Beam evaluation: %d examples evaluated so far in this bundle", self._seen)
            self._next_report += PROGRESS_EVERY
        spec, specs = self._spec, self._output_specs
        x, labels = self._parse(self._tf.constant(batch))
        x, labels = {k: v.numpy() for k, v in x.items()}, {k: v.numpy() for k, v in labels.items()}
        valid = np.ones(len(batch), bool)
        for o in specs:  # a class label outside its output's classes: the example is counted invalid
            if o.is_classifier:
                valid &= (labels[o.output_name] >= 0) & (labels[o.output_name] < o.num_classes)
        yield LABELS, {"n": np.int64(len(batch)), "invalid": np.int64((~valid).sum())}
        x, labels = self._take(x, valid), {k: v[valid] for k, v in labels.items()}
        if not valid.any():
            return
        names = spec.output_names
        raw = {}  # model -> output name -> raw outputs: one invoke per model for every output
        if self._float is not None:
            raw[FLOAT_MODEL] = self._float.outputs(x)
        for name, runner in self._runners.items():
            raw[name] = runner.predict_outputs(x, names)
        for position, o in enumerate(specs):
            y = labels[o.output_name]
            outputs = {name: o.scores(values[o.output_name]) for name, values in raw.items()}
            if self._constant is not None and not position:  # the primary output's sanity reference
                outputs[TRAINING_MEAN] = np.broadcast_to(np.asarray(self._constant, np.float32), y.shape)
            for name, counts in task_counts(outputs, y, o, self._k).items():
                yield output_key(name, o.output_name, not position), counts


def task_counts(outputs: Dict[str, np.ndarray], y: np.ndarray, spec, k: int) -> Dict[str, dict]:
    """Each model's counts on one batch: the task's (metrics.TASKS), paired with the float
    and deployed models where the task's interval needs it, and fidelity to the float
    model for every output (labels or not)."""
    from tfx_quantization.quantization import metrics

    refs = lambda name: [r for r in (FLOAT_MODEL, BASELINE) if r in outputs and r != name]  # noqa: E731
    counts = {name: {"n": np.int64(len(y)), "non_finite": np.int64(
        (~np.all(np.isfinite(out.reshape(len(out), -1)), axis=1)).sum())} for name, out in outputs.items()}
    if spec.is_classifier:
        threshold = spec.threshold if spec.task == metrics.BINARY else None
        results = {name: outcomes(probs, y, k, threshold) for name, probs in outputs.items()}
        for name, out in results.items():
            counts[name].update(batch_counts(out, y, {r: results[r] for r in refs(name)}, spec.num_classes))
    for name, out in outputs.items():
        if spec.task == metrics.BINARY:
            counts[name].update(metrics.auc_counts(out[:, 1], y, {r: outputs[r][:, 1] for r in refs(name)}))
        elif spec.task == metrics.REGRESSION:
            counts[name].update(metrics.regression_counts(out, y, {r: outputs[r] for r in refs(name)}))
        elif spec.task == metrics.MULTILABEL:
            counts[name].update(metrics.multilabel_counts(out, y, spec.threshold,
                                                          {r: outputs[r] for r in refs(name)}))
        if FLOAT_MODEL in outputs and name not in (FLOAT_MODEL, TRAINING_MEAN):
            counts[name].update(metrics.fidelity_counts(outputs[FLOAT_MODEL], out))
    return counts


def build_evaluation(
    pipeline: beam.Pipeline,
    eval_pattern: str,
    tflite_models: Dict[str, str],
    float_model_dir: Optional[str],
    spec_json: str,
    output_path: str,
    num_threads: int = 1,
    top_k: int = 5,
    batch_size: int = 256,
    constant_prediction: Optional[List[float]] = None,
) -> None:
    """Adds the evaluation to `pipeline`; on run, the summed counts land in output_path.
    `constant_prediction` (regression): the values a trivial model predicting the training
    mean returns, evaluated as TRAINING_MEAN beside the others."""
    _ = (
        pipeline
        # In fixed memory: Beam's ReadFromTFRecord holds a gzipped shard whole (beam_records).
        | "Read" >> ReadRecords(eval_pattern)
        # Fixed-size batches: each change of size re-allocates every interpreter's tensors
        # (and XNNPACK's plan); BatchElements' adaptive sizes (32 to 256) change it as it tunes.
        | "Batch" >> beam.BatchElements(min_batch_size=batch_size, max_batch_size=batch_size)
        | "Predict" >> beam.ParDo(Predict(tflite_models, float_model_dir, spec_json, num_threads, top_k,
                                            constant_prediction))
        | "Sum" >> beam.CombinePerKey(SumCounts())
        | "Gather" >> beam.combiners.ToDict()
        | "Write" >> beam.Map(_write_counts, output_path)
    )


def _write_counts(counts: Dict[str, dict], path: str) -> None:
    """On the worker that holds the combined counts: one file through Beam's filesystems
    (local, s3:// with the pipeline's S3 options, gs://), which the launching process reads."""
    from apache_beam.io.filesystems import FileSystems

    serializable = {name: {k: np.asarray(v).tolist() for k, v in c.items()} for name, c in counts.items()}
    with FileSystems.create(path) as f:
        f.write(json.dumps(serializable, sort_keys=True).encode("utf-8"))


def metrics_from_counts(counts: Dict[str, dict], top_k: int) -> Dict[str, dict]:
    """Each model's figures: its task's metrics (classifiers: accuracy, top-k accuracy,
    agreement with the float model, per-class accuracy, confusion; binary: + ROC AUC and its curve;
    regression: MAE, RMSE; multilabel: micro and macro F1) and, against the float model,
    fidelity (SQNR dB, cosine similarity, mean and max absolute error)."""
    from tfx_quantization.quantization import metrics

    out = {}
    for name, c in counts.items():
        if name == LABELS:
            continue
        n = c["n"]
        figures = {"num_examples": n, "non_finite_outputs": c["non_finite"]}
        if "fid_n" in c:
            figures.update(metrics.fidelity_figures(c))
        if "auc_hist" in c:
            figures["auc"] = metrics.auc_from_histogram(c["auc_hist"])
            figures["roc"] = metrics.roc_from_histogram(c["auc_hist"])  # the report's ROC curve
        if "reg_n" in c:
            figures.update(metrics.regression_figures(c))
        if "ml_counts" in c:
            figures.update(metrics.multilabel_figures(c))
        out[name] = figures
        if "top1" not in c:
            continue
        div = lambda a: a / n if n else math.nan  # noqa: E731
        per_class = [cc / ct if ct else None for cc, ct in zip(c["class_correct"], c["class_total"])]
        figures.update({
            "accuracy": div(c["top1"]),
            "top_k_accuracy": div(c["topk"]),
            "top_k": top_k,
            "agreement_with_float": div(c["agree"]) if "agree" in c else None,
            "per_class_accuracy": per_class,
            "class_total": list(c["class_total"]),
        })
        if "confusion" in c:
            k = len(c["class_total"])
            out[name]["confusion"] = np.asarray(c["confusion"]).reshape(k, k).tolist()
        for ref in (FLOAT_MODEL, BASELINE):
            if f"paired_vs_{ref}" in c:
                tables = np.asarray(c[f"paired_vs_{ref}"])
                out[name][f"paired_vs_{ref}"] = {m: tables[i].tolist() for i, m in enumerate(METRIC_COUNTS)}
    return out


def run_evaluation(pipeline_factory: Callable[[], beam.Pipeline], **kwargs) -> Dict[str, dict]:
    """Runs build_evaluation on a fresh pipeline and returns the raw counts."""
    with pipeline_factory() as p:
        build_evaluation(p, **kwargs)
    # output_path is on storage every worker and this process share (the artifact's URI): on
    # Dataflow or Flink the worker that writes it is another machine. Read, then removed.
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(kwargs["output_path"]) as f:
        counts = json.loads(f.read().decode("utf-8"))
    FileSystems.delete([kwargs["output_path"]])
    return counts
