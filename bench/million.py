"""Section 8 of `make bench`, or alone: `make bench-million` (`python -m bench.million`), which
trains and quantizes the digits CNN as section 1(a) does and replaces section 8 of
BENCHMARKS.md in place.

One million synthetic eval examples (bench.common.digits_like_records, seed 0: shaped as
CsvExampleGen writes the digits CSV, 64 int64 pixel columns and a label, 8 gzipped shards)
through every variant the digits CNN has:
- the data check (data.check_examples) over the million;
- the evaluator's pass (the check, then beam_pass.run_evaluation with every built variant
  and the float SavedModel, as evaluate.evaluate_models runs them) on 1 DirectRunner worker,
  in a fresh process, at 100k (the million's first 100k examples) and at 1M: wall time,
  examples per second per core, peak resident memory of the process;
- the bare loop the pass cannot beat, on the first 100k in batches of the evaluator's
  batch (GateSettings.eval_batch_size): each variant's tf.lite.Interpreter with
  inputs prepared beforehand (set_tensor, invoke, get_tensor; nothing else), and the float
  SavedModel's signature called on each batch; against the pass's time per example past its
  start (the difference between its 1M and 100k runs);
- calibration sampling (run_sampling, stratified, 1,000 samples) over the same 100k and 1M.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

from bench.common import REPO, digits_like_records, md_table, peak_rss, replace_section, write_records

log = logging.getLogger("bench")
MILLION = 1_000_000
SMALL = 100_000
SHARDS = 8
SEED = 0
ONE_WORKER = ["--direct_num_workers=1"]
TITLE = "## 8. One million examples"


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _contract():
    from bench.common import PIXEL_KEYS
    from tfx_quantization.model_contract import ModelContract

    return ModelContract(inputs={"image": {"features": PIXEL_KEYS, "shape": [8, 8, 1]}}, num_classes=10)


def _built(quantized_dir: str) -> Dict[str, str]:
    from tfx_quantization.contracts import read_manifest, variant_path

    manifest = read_manifest(quantized_dir)
    return {n: variant_path(quantized_dir, manifest, n) for n in manifest.built()}


# ---- in a fresh process: `python -m bench.million pass|sample ...` ----------------------------
def pass_worker(split_dir: str, float_dir: str, quantized_dir: str, out: str) -> None:
    """The evaluator's data check and Beam pass over `split_dir`; writes their seconds, the
    peak RSS and each model's accuracy to `out`."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from tfx_quantization import fsutil
    from tfx_quantization.quantization import data
    from tfx_quantization.quantization.model_spec import ModelSpec
    from tfx_quantization.settings import GateSettings
    from tfx_quantization.tflite_evaluator import beam_pass

    params = GateSettings()
    with peak_rss() as peak:
        start = time.perf_counter()
        spec = data.check_examples(data.split_files(split_dir), ModelSpec.read(float_dir, _contract()))
        checked = time.perf_counter()
        counts = beam_pass.run_evaluation(
            lambda: beam.Pipeline(options=PipelineOptions(ONE_WORKER)), eval_pattern=fsutil.join(split_dir, "*"),
            tflite_models=_built(quantized_dir), float_model_dir=float_dir, spec_json=spec.to_json(),
            output_path=out + ".counts", num_threads=params.num_threads, top_k=params.top_k,
            batch_size=params.eval_batch_size)
        done = time.perf_counter()
    accuracy = {n: c["top1"] / c["n"] for n, c in counts.items() if "top1" in c}
    Path(out).write_text(json.dumps({"check_s": checked - start, "pass_s": done - checked, "n": counts["__labels__"]["n"],
                                     "peak_rss_mb": peak[0] / 2 ** 20, "accuracy": accuracy}))


def sample_worker(split_dir: str, out_dir: str, out: str) -> None:
    """Stratified calibration sampling of `split_dir`; writes seconds and peak RSS to `out`."""
    from tfx_quantization.representative_dataset_gen.sampling import run_sampling
    from tfx_quantization.settings import CalibrationSettings

    with peak_rss() as peak:
        start = time.perf_counter()
        stats = run_sampling(split_dir, out_dir, CalibrationSettings(num_samples=1000, strategy="stratified",
                                                                     label_key="label", seed=0), ONE_WORKER)
        seconds = time.perf_counter() - start
    Path(out).write_text(json.dumps({"seconds": seconds, "peak_rss_mb": peak[0] / 2 ** 20,
                                     "taken": stats["num_samples_taken"], "n": stats["num_examples_in_split"]}))


def _in_process(*args: str) -> dict:
    out = args[-1]
    before = load_average()
    subprocess.run([sys.executable, "-m", "bench.million", *args], cwd=REPO, check=True)
    result = json.loads(Path(out).read_text())
    return dict(result, load=f"{before} → {load_average()}")


# ---- in this process: the bare loops ------------------------------------------------------------
def bare_loops(split_dir: str, float_dir: str, quantized_dir: str, batch_size: int) -> Dict[str, dict]:
    """Seconds of each variant's interpreter (and of the float SavedModel's signature) over
    every example of `split_dir` in batches of `batch_size`, inputs parsed and prepared
    (quantized, for an integer input) before the clock starts."""
    import tensorflow as tf

    from tfx_quantization.quantization import data
    from tfx_quantization.quantization.interpreter import TFLiteRunner
    from tfx_quantization.quantization.model_spec import ModelSpec

    files = data.split_files(split_dir)
    spec = data.check_examples(files, ModelSpec.read(float_dir, _contract()))
    batches, labels = [], []
    for path in files:
        for records in data.record_batches(path, batch_size):
            x, y = data.parse_batch(records, spec)
            batches.append(x["image"].numpy())
            labels.append(y.numpy())
    out = {}
    for name, path in _built(quantized_dir).items():
        runner = TFLiteRunner.for_spec(path, spec)
        interp, index, output = runner.interpreter, runner.input["index"], runner.output["index"]
        prepared = [runner.prepare_input(b) for b in batches]
        size, outputs = None, []
        start = time.perf_counter()
        for b in prepared:
            if len(b) != size:
                interp.resize_tensor_input(index, [len(b), 8, 8, 1])
                interp.allocate_tensors()
                size = len(b)
            interp.set_tensor(index, b)
            interp.invoke()
            outputs.append(interp.get_tensor(output))
        seconds = time.perf_counter() - start
        # After the clock: that the loop computed what the pass does (argmax is unchanged by
        # the output's dequantization: its scale is positive).
        right = sum(int((np.argmax(o, -1) == y).sum()) for o, y in zip(outputs, labels))
        out[name] = {"seconds": seconds, "accuracy": right / sum(len(y) for y in labels)}
        log.info("bare %s: %.1f s", name, seconds)
    fn = tf.saved_model.load(float_dir).signatures[spec.signature]
    tensors = [tf.constant(b) for b in batches]
    start = time.perf_counter()
    for t in tensors:
        fn(**{"image": t})
    out["float SavedModel"] = {"seconds": time.perf_counter() - start}
    return out


def section(tmp: Path, float_dir: str, quantized_dir: str, n: int = MILLION, small: int = SMALL,
            sample_up_to: int = MILLION) -> List[str]:
    """Section 8's lines: writes the examples, runs the evaluator's pass at `small` and `n`,
    the bare loops on the `small` split, calibration sampling on each size up to `sample_up_to`."""
    from tfx_quantization.settings import GateSettings

    batch_size = GateSettings().eval_batch_size
    small = min(small, n // 10)
    start = time.perf_counter()
    big = tmp / "million" / "Split-eval"
    write_records(big, digits_like_records(n, SEED), SHARDS)
    little = tmp / "million_small" / "Split-eval"
    write_records(little, digits_like_records(small, SEED), SHARDS)  # the million's first `small` examples
    written = time.perf_counter() - start
    log.info("8. wrote %d + %d examples in %.0f s", n, small, written)

    runs = {}
    for label, split in ((small, little), (n, big)):
        runs[label] = _in_process("pass", str(split), float_dir, quantized_dir, str(tmp / f"pass_{label}.json"))
        log.info("8. pass over %d: %s", label, runs[label])
    load = load_average()
    bare = bare_loops(str(little), float_dir, quantized_dir, batch_size)
    bare_load = f"{load} → {load_average()}"
    sampled = {label: _in_process("sample", str(split), str(tmp / f"cal_{label}"), str(tmp / f"sample_{label}.json"))
               for label, split in ((small, little), (n, big)) if label <= sample_up_to}
    log.info("8. sampling: %s", sampled)

    rows = [[f"{label:,}", f"{r['check_s']:.1f}", f"{label / r['check_s']:,.0f}", f"{r['pass_s']:.1f}",
             f"{label / r['pass_s']:,.0f}", f"{r['peak_rss_mb']:,.0f}", r["load"]] for label, r in runs.items()]
    variants = [k for k in bare if k != "float SavedModel"]
    tflite_s = sum(bare[k]["seconds"] for k in variants)
    all_s = tflite_s + bare["float SavedModel"]["seconds"]
    bare_rows = [[k, f"{bare[k]['seconds']:.1f}", f"{small / bare[k]['seconds']:,.0f}",
                  f"{bare[k]['accuracy']:.4f}" if "accuracy" in bare[k] else "",
                  f"{runs[small]['accuracy'].get(k if k in variants else 'float_model', float('nan')):.4f}"]
                 for k in [*variants, "float SavedModel"]]
    bare_rows.append(["**all TFLite variants**", f"{tflite_s:.1f}", f"{small / tflite_s:,.0f}", "", ""])
    bare_rows.append(["**all of them + float SavedModel**", f"{all_s:.1f}", f"{small / all_s:,.0f}", "", ""])
    # The pass's own rate per example past its fixed start (loading ten models, Beam's set-up):
    # the extra examples over the extra seconds between the two runs.
    marginal = (runs[n]["pass_s"] - runs[small]["pass_s"]) / (n - small)
    sample_rows = [[f"{label:,}", f"{r['seconds']:.1f}", f"{label / r['seconds']:,.0f}", r["taken"],
                    f"{r['peak_rss_mb']:,.0f}", r["load"]] for label, r in sampled.items()]
    not_sampled = [f"{label:,}" for label in (small, n) if label not in sampled]
    return [TITLE, "",
            f"{n:,} synthetic eval examples generated from seed {SEED} (`bench/common.py:digits_like_records`: the "
            "digits eval rows in a seeded random order, each pixel moved by rounded Gaussian noise, sd 1, clipped to "
            f"0..16), stored as CsvExampleGen stores the digits CSV (64 int64 pixel columns and an int64 label, "
            f"{SHARDS} gzipped TFRecord shards; {written:.0f} s to write with the {small:,}-example copy of their "
            f"start). The digits CNN of section 1(a), all {len(variants)} built variants. The machine has 2 cores and "
            "was shared with other jobs during the run: the load average (1, 5, 15 min) before → after each run is "
            "given, and absolute rates move with it. One DirectRunner worker throughout, so examples per second are "
            "per core. Run alone: `make bench-million` (trains and quantizes the CNN first, then rewrites this "
            "section).", "",
            "**Evaluator.** Each run in a fresh process: the data check (`data.check_examples`, vectorised: one "
            "`tf.io.parse_example` per 1,024 records), then the Beam pass (`beam_pass.run_evaluation`) with every "
            "variant and the float SavedModel, as `evaluate_models` runs them. Peak RSS: the process and any worker "
            "it starts, sampled every 0.25 s. Both Beam pipelines here (the pass, calibration sampling) read the "
            "records with `beam_records.ReadRecords`, in 64 KiB compressed reads; Beam's `ReadFromTFRecord`, which "
            "they used before, holds a gzipped shard of up to 16 MiB compressed whole, decompressed, so their peak "
            "grew with the shards (this section's history in git has the figures).", "",
            md_table(["examples", "check s", "check examples/s", "pass s", "pass examples/s (1 core)",
                      "peak RSS MB", "load average"], rows), "",
            f"**Against the bare interpreter loop** on the first {small:,} of these examples in batches of "
            f"{batch_size} (the evaluator's batch), inputs parsed and quantized before the clock starts, nothing but "
            "`set_tensor`/`invoke`/`get_tensor` in the loop; the float SavedModel's signature likewise (load average "
            f"{bare_load}). Accuracy: the bare loop's (checked after the clock) and the pass's on the same examples.",
            "", md_table(["model", "bare loop s", "examples/s", "accuracy (bare)", "accuracy (pass)"], bare_rows), "",
            f"Past its fixed start, the pass spends {1e3 * marginal:.3f} ms per example (the extra seconds over the "
            f"extra examples between its two runs) where the bare loops spend {1e3 * all_s / small:.3f} ms: "
            f"**{all_s / small / marginal:.2f}** of the bare throughput, with the float reference the pass must also "
            f"run ({tflite_s / small / marginal:.2f} counting the TFLite interpreters alone). Start-up included, over "
            f"the {small:,}: {all_s / runs[small]['pass_s']:.2f}. The rest is reading and parsing the records, "
            "quantizing inputs, the metrics' counts and Beam.", "",
            "**Calibration sampling** (`run_sampling`, stratified on the label, 1,000 samples, seed 0), each in a "
            "fresh process" + (f"; not run on {', '.join(not_sampled)} examples in this run (time: at the rate "
                               "below it takes tens of minutes; `make bench-million` runs it)" if not_sampled else "")
            + ":", "",
            md_table(["examples", "seconds", "examples/s (1 core)", "samples taken", "peak RSS MB", "load average"],
                     sample_rows), ""]


def main() -> None:
    from bench.common import write_digits_splits
    from bench.run import train_and_quantize
    from tfx_quantization.representative_dataset_gen.sampling import run_sampling
    from tfx_quantization.settings import CalibrationSettings, TrainSettings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("tensorflow", "apache_beam", "absl"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    # QP_BENCH_WORKDIR: a folder kept between runs, whose trained and quantized CNN is reused.
    keep = os.environ.get("QP_BENCH_WORKDIR")
    tmp = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="qp-million-"))
    float_dir, quantized_dir = str(tmp / "cnn" / "float"), str(tmp / "cnn" / "q")
    try:
        if not (tmp / "cnn" / "q").is_dir():
            splits = write_digits_splits(tmp / "digits")
            run_sampling(splits["train"], str(tmp / "cal"),
                         CalibrationSettings(num_samples=200, strategy="stratified", label_key="label", seed=0))
            train_and_quantize(tmp, splits, "cnn", TrainSettings(epochs=10, qat_epochs=2, seed=42), _contract(),
                               tmp / "cal")
        # QP_BENCH_EXAMPLES / QP_BENCH_SAMPLE_UP_TO: fewer examples, or calibration sampling
        # on the smaller split only (sampling runs at about 1 ms an example on one core).
        lines = section(tmp, float_dir, quantized_dir, int(os.environ.get("QP_BENCH_EXAMPLES", MILLION)),
                        sample_up_to=int(os.environ.get("QP_BENCH_SAMPLE_UP_TO", MILLION)))
        path = REPO / "BENCHMARKS.md"
        path.write_text(replace_section(path.read_text(), TITLE, lines))
        log.info("wrote section 8 of %s", path)
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "pass":
        pass_worker(*sys.argv[2:6])
    elif len(sys.argv) > 1 and sys.argv[1] == "sample":
        sample_worker(*sys.argv[2:5])
    else:
        main()
