import os
import sys
from pathlib import Path

# The tests are a user of the library: like any pipeline file, they put Keras 2 in force
# before anything imports TensorFlow (the library checks it and never sets it).
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # the `tests` package (the library comes from the install)

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def digits_examples(tmp_path_factory):
    """The real digits data as an Examples artifact (train: 1198, eval: 599)."""
    from tests.helpers import write_examples

    return write_examples(tmp_path_factory.mktemp("digits_examples"))


def _once_per_run(tmp_path_factory, worker_id: str, name: str, build):
    """The value of `build(folder)` for a session fixture, built once per test run.

    Under pytest-xdist (`make test`) each worker is its own session, so a session fixture is
    built once per worker: the two workers each trained the digits models (about a minute
    each). Here the first worker to ask builds into a folder both share (the run's base
    temporary folder) under a file lock and pickles the value; the other reads it. Fixtures
    built so must not be written to by tests. Without xdist it is a plain session fixture."""
    if worker_id == "master":
        return build(tmp_path_factory.mktemp(name))
    import pickle

    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp().parent  # this run's folder; one popen-gw<N> inside per worker
    folder, value_file = shared / f"shared-{name}", shared / f"shared-{name}.pickle"
    with FileLock(str(shared / f"shared-{name}.lock")):
        if value_file.exists():
            return pickle.loads(value_file.read_bytes())
        folder.mkdir()
        value = build(folder)
        value_file.write_bytes(pickle.dumps(value))
        return value


@pytest.fixture(scope="session")
def trained_digits(tmp_path_factory, worker_id, digits_examples):
    """Float and QAT digits CNNs, trained once per test run through the trainer library."""
    from tfx_quantization.settings import TrainSettings
    from tfx_quantization import training
    from tests.helpers import DIGITS_CONTRACT

    def build(out):
        cfg = TrainSettings(epochs=6, qat_epochs=1, seed=7)
        float_dir, qat_dir = out / "model" / "Format-Serving", out / "qat_model" / "Format-Serving"
        result = training.train(
            f"{digits_examples.uri}/Split-train", f"{digits_examples.uri}/Split-eval",
            str(float_dir), str(qat_dir), str(out / "logs"), cfg, DIGITS_CONTRACT,
        )
        return {
            "float": str(float_dir), "qat": str(qat_dir), "result": result, "root": out,
            "model_uri": str(out / "model"), "qat_model_uri": str(out / "qat_model"),
        }

    return _once_per_run(tmp_path_factory, worker_id, "trained_digits", build)


@pytest.fixture(scope="session")
def digits_calibration(tmp_path_factory, worker_id, digits_examples):
    """A 100-example stratified calibration sample of the digits train split."""
    from tfx_quantization.representative_dataset_gen import sampling
    from tfx_quantization.settings import CalibrationSettings

    def build(out):
        sampling.run_sampling(f"{digits_examples.uri}/Split-train", str(out),
                              CalibrationSettings(num_samples=100, strategy="stratified", label_key="label", seed=0))
        return str(out)

    return _once_per_run(tmp_path_factory, worker_id, "digits_calibration", build)


@pytest.fixture(scope="session")
def digits_quantized(tmp_path_factory, worker_id, trained_digits, digits_calibration):
    """All six TFLite variants of the session's digits models."""
    from tfx_quantization.post_training_quantizer import build as ptq
    from tfx_quantization.quantization import data

    def build(folder):
        out = folder / "out"
        ptq.quantize_all(
            trained_digits["float"], str(out), qat_model_dir=trained_digits["qat"],
            calibration_files=data.split_files(f"{digits_calibration}/Split-calibration"),
        )
        return str(out)

    return _once_per_run(tmp_path_factory, worker_id, "digits_quantized", build)


class S3Server:
    """A real S3-compatible server (moto's server mode) on 127.0.0.1.

    `env` configures TensorFlow's S3 filesystem (tensorflow-io), boto3 and so the registry
    for a subprocess; `beam_args` configures Beam's S3 filesystem. The pytest process itself
    uses s3:// only through boto3: once tensorflow-io's S3 client has been used, the
    interpreter can abort at exit (components/fsutil.py:exit_process), which would turn a
    green pytest run into exit 134, so TensorFlow touches S3 in subprocesses only.
    """

    def __init__(self, port: int):
        self.endpoint = f"http://127.0.0.1:{port}"
        creds = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}
        self.env = dict(creds, S3_ENDPOINT=self.endpoint, S3_USE_HTTPS="0", S3_VERIFY_SSL="0",
                        AWS_ENDPOINT_URL=self.endpoint)
        self.beam_args = [f"--s3_endpoint_url={self.endpoint}", "--s3_access_key_id=testing",
                          "--s3_secret_access_key=testing", "--s3_region_name=us-east-1"]

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return f"s3://{name}"

    def keys(self, bucket: str, prefix: str = ""):
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def read(self, bucket: str, key: str) -> bytes:
        return self.client().get_object(Bucket=bucket, Key=key)["Body"].read()

    def subprocess_env(self, **extra):
        env = {k: v for k, v in os.environ.items() if not k.startswith("QP_")}
        env.update(self.env, **extra)
        return env


@pytest.fixture(scope="session")
def s3_server():
    """Starts the server on a free loopback port, waits until it answers, stops it at the end."""
    import socket
    import subprocess
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    raise RuntimeError("the S3 test server (moto) did not start") from None
                time.sleep(0.2)
        yield S3Server(port)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
