"""The Beam stages as a distributed runner runs them: the evaluator's pass and calibration
sampling under the DirectRunner's multi_processing mode (two worker processes, every DoFn
pickled to them, nothing shared with the launching process but the object store) give the
same results as under the default in-process runner, with their inputs and outputs on a
real S3-compatible server. TensorFlow touches S3 only in a subprocess (tests/conftest.py)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

RUNNERS = {"default": ["--direct_num_workers=1"],
           "multi_processing": ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]}
# Runs both stages under each runner on s3:// and prints what they produced.
SCRIPT = r"""
import json, sys
from tfx_quantization import fsutil
fsutil.register_filesystems()
import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from tfx_quantization.quantization.model_spec import ModelSpec
from tfx_quantization.representative_dataset_gen import sampling
from tfx_quantization.settings import CalibrationSettings
from tfx_quantization.tflite_evaluator import beam_pass
from tests.helpers import DIGITS_CONTRACT

args = json.loads(sys.argv[1])
from tfx_quantization.quantization import data
# With the examples' storage dtypes, as the evaluator takes it (int64 pixels here).
spec = data.check_examples(data.split_files(args["eval_split"]), ModelSpec.read(args["float_model"], DIGITS_CONTRACT))
out = {}
for name, runner_args in args["runners"].items():
    options = runner_args + args["s3_args"]
    root = f"{args['root']}/{name}"
    counts = beam_pass.run_evaluation(
        lambda: beam.Pipeline(options=PipelineOptions(options)), eval_pattern=args["eval_pattern"],
        tflite_models=args["tflite"], float_model_dir=args["float_model"], spec_json=spec.to_json(),
        output_path=f"{root}/evaluation/{beam_pass.COUNTS_FILE}", batch_size=64)
    stats = sampling.run_sampling(args["train_split"], f"{root}/calibration",
                                  CalibrationSettings(num_samples=60, strategy="stratified", label_key="label", seed=3),
                                  beam_pipeline_args=options)
    sample = fsutil.read_bytes(f"{root}/calibration/Split-calibration/data_tfrecord-00000-of-00001.gz")
    out[name] = {"counts": counts, "stats": stats, "sample_sha256": fsutil.sha256_bytes(sample)}
print("RESULT" + json.dumps(out, sort_keys=True))
sys.stdout.flush()
fsutil.exit_process(0)
"""


def _differences(a, b, path="") -> list:
    """Where two nested results differ: integers and text exactly, reals beyond 1e-4 relative
    (a batch's sums of reals are float32, metrics.fidelity_counts, and the runners batch the
    examples differently: 6e-6 relative seen on a sum of 38,336 small |differences|; 1e-4
    of an SQNR is 4e-4 dB)."""
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{path}: keys {sorted(set(a) ^ set(b))}"]
        return [d for k in a for d in _differences(a[k], b[k], f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: lengths {len(a)} != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _differences(x, y, f"{path}[{i}]")]
    if isinstance(a, float) or isinstance(b, float):
        return [] if a == pytest.approx(b, rel=1e-4, abs=1e-9) else [f"{path}: {a} != {b}"]
    return [] if a == b and type(a) is type(b) else [f"{path}: {a!r} != {b!r}"]


def _upload(s3_server, bucket, local: Path, prefix: str) -> str:
    client = s3_server.client()
    for f in sorted(local.rglob("*")):
        if f.is_file():
            client.upload_file(str(f), bucket, f"{prefix}/{f.relative_to(local).as_posix()}")
    return f"s3://{bucket}/{prefix}"


def test_evaluation_and_calibration_match_under_multi_processing_with_everything_on_s3(
        s3_server, digits_examples, trained_digits, digits_quantized):
    bucket = "beam-dist"
    s3_server.bucket(bucket)
    examples = _upload(s3_server, bucket, Path(digits_examples.uri), "examples")
    tflite = {p.parent.name: str(p) for p in sorted(Path(digits_quantized).rglob("model.tflite"))}
    tflite = dict(sorted(tflite.items())[:2])  # two variants: the subject is the runner, not the variants
    assert len(tflite) == 2
    args = {"runners": RUNNERS, "s3_args": s3_server.beam_args, "root": f"s3://{bucket}/root",
            "eval_pattern": f"{examples}/Split-eval/*", "eval_split": f"{examples}/Split-eval", "train_split": f"{examples}/Split-train",
            "float_model": trained_digits["float"], "tflite": tflite}
    result = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(args)], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=900, env=s3_server.subprocess_env())
    assert result.returncode == 0, result.stderr[-4000:]
    out = json.loads(result.stdout.split("RESULT", 1)[1])
    default, multi = out["default"], out["multi_processing"]
    assert default["counts"]["__labels__"]["n"] == 599  # every eval example, once
    # Integer counts are identical; sums of reals (fidelity) to float32 summation's precision.
    assert _differences(multi["counts"], default["counts"]) == []
    assert multi["sample_sha256"] == default["sample_sha256"] and multi["stats"] == default["stats"]
    assert default["stats"]["num_samples_taken"] == 60
    # The counts travelled through the object store and are gone once read; the calibration
    # sample and its statistics are where the artifact's URI says.
    keys = s3_server.keys(bucket, "root/")
    assert not any(k.endswith("beam_counts.json") for k in keys)
    for name in RUNNERS:
        assert f"root/{name}/calibration/Split-calibration/data_tfrecord-00000-of-00001.gz" in keys
