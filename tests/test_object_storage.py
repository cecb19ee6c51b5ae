"""Object storage: the registry's protocol on a real S3-compatible server (moto's server
mode on 127.0.0.1), a pusher killed at random moments there, the registry's file modes on
a local disk, and the whole default pipeline with its pipeline root and push destination
in a bucket (ML Metadata stays a local sqlite file).

Everything that touches s3:// through TensorFlow runs in a subprocess (see S3Server)."""
import json
import os
import random
import stat
import subprocess
import sys
import time

import pytest

from tfx_quantization import fsutil
from tfx_quantization.contracts import LATEST_FILE, MANIFEST_FILE, MODEL_FILE, read_manifest
from tfx_quantization.registry import CLAIM_FILE, Registry
from tests.conftest import REPO_ROOT

REGISTRY_SCRIPT = """
import json, sys
from tfx_quantization import fsutil
from tfx_quantization.registry import Registry
dest, files = sys.argv[1], sys.argv[2:]
registry = Registry(dest, "digits")
out = {"first": registry.push(files[0], {"variant": "a"}), "again": registry.push(files[0], {"variant": "a"}),
       "second": registry.push(files[1], {"variant": "b"})}
# A claimed folder with no manifest (a pusher killed after its claim) is not a version...
fsutil.create_exclusive(registry.version_dir(3) + "/.claim", b"x")
fsutil.write_bytes_atomic(registry.version_dir(3) + "/model.tflite", b"partial")
out["versions_with_partial"] = registry.versions()
# ...and the next push skips its number.
out["third"] = registry.push(files[2], {"variant": "c"})
out["verify"] = {v: registry.verify(v) for v in registry.versions()}
out["latest"] = registry.latest()
out["rollback"] = registry.rollback(1)
out["latest_after_rollback"] = registry.latest()
print(json.dumps(out))
fsutil.exit_process(0)
"""


def _variant_files(digits_quantized, names=("integer_only", "qat_int8", "full_integer")):
    manifest = read_manifest(digits_quantized)
    return [os.path.join(digits_quantized, manifest.variants[n].file) for n in names]


def _run(args, env, **kwargs):
    result = subprocess.run([sys.executable, *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                            timeout=kwargs.pop("timeout", 600), **kwargs)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_registry_protocol_on_s3(s3_server, digits_quantized):
    dest = s3_server.bucket("registry-protocol") + "/models"
    files = _variant_files(digits_quantized)
    out = json.loads(_run(["-c", REGISTRY_SCRIPT, dest, *files], s3_server.subprocess_env()).stdout)
    assert out["first"] == [1, True] and out["again"] == [1, False] and out["second"] == [2, True]
    assert out["versions_with_partial"] == [1, 2]
    assert out["third"] == [4, True]
    assert out["verify"] == {"1": [], "2": [], "4": []}
    assert out["latest"] == 4 and out["rollback"] == 1 and out["latest_after_rollback"] == 1
    keys = s3_server.keys("registry-protocol", "models/digits/")
    assert f"models/digits/1/{MANIFEST_FILE}" in keys and f"models/digits/{LATEST_FILE}" in keys
    assert json.loads(s3_server.read("registry-protocol", f"models/digits/4/{MANIFEST_FILE}"))["variant"] == "c"
    # The CLI works against the bucket, with an honest exit code.
    env = s3_server.subprocess_env()
    listed = _run(["-m", "tfx_quantization.pusher", "--destination", dest, "--model-name", "digits", "list"], env)
    rows = [line.split() for line in listed.stdout.splitlines()[1:]]
    assert rows[0][:3] == ["*", "1", "a"] and rows[1][:2] == ["2", "b"] and rows[2][:2] == ["4", "c"], listed.stdout
    verified = _run(["-m", "tfx_quantization.pusher", "--destination", dest, "--model-name", "digits", "verify", "4"], env)
    assert verified.stdout.strip().startswith("version 4: OK (hashes and schema; unsigned)")
    missing = subprocess.run([sys.executable, "-m", "tfx_quantization.pusher", "--destination", dest, "--model-name",
                              "digits", "rollback", "3"], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert missing.returncode == 2 and "version 3 does not exist" in missing.stderr


def test_a_claimed_number_sends_the_next_pusher_to_the_next_number(s3_server, digits_quantized):
    dest = s3_server.bucket("registry-claims") + "/models"
    s3_server.client().put_object(Bucket="registry-claims", Key=f"models/digits/1/{CLAIM_FILE}", Body=b"other")
    code = ("import sys, json\nfrom tfx_quantization import fsutil\nfrom tfx_quantization.registry import Registry\n"
            "print(json.dumps(Registry(sys.argv[1], 'digits').push(sys.argv[2], {})))\nfsutil.exit_process(0)\n")
    out = _run(["-c", code, dest, _variant_files(digits_quantized)[0]], s3_server.subprocess_env())
    assert json.loads(out.stdout) == [2, True]


PUSH_LOOP = """
import itertools, sys
from tfx_quantization.registry import Registry
registry = Registry(sys.argv[1], "digits")
registry.latest()  # load TensorFlow and the S3 filesystem before saying ready
files = sys.argv[2:]
print("ready", flush=True)
for i in itertools.count():
    registry.push(files[i % len(files)], {"variant": "loop", "i": i})
    print("pushed", flush=True)
"""

CHECK = """
import json, sys
from tfx_quantization import fsutil
from tfx_quantization.registry import Registry
registry = Registry(sys.argv[1], "digits")
print(json.dumps({"versions": registry.versions(), "latest": registry.latest(),
                  "problems": {v: registry.verify(v) for v in registry.versions()}}))
fsutil.exit_process(0)
"""


def test_killing_a_pusher_on_s3_never_leaves_a_version_a_poller_would_serve(s3_server, digits_quantized):
    dest = s3_server.bucket("registry-kills") + "/models"
    files = _variant_files(digits_quantized)
    env = s3_server.subprocess_env()
    rng = random.Random(1)
    state = {"versions": []}
    for _ in range(4):  # each round starts two interpreters (~8 s each): four kills are enough to vary
        proc = subprocess.Popen([sys.executable, "-c", PUSH_LOOP, dest, *files], cwd=REPO_ROOT, env=env,
                                stdout=subprocess.PIPE)
        assert proc.stdout.readline().strip() == b"ready"
        # One push completes first (under CPU load a fixed sleep could kill before any), then
        # the kill lands at a random moment of the following pushes.
        assert proc.stdout.readline().strip() == b"pushed"
        time.sleep(rng.uniform(0.0, 1.5))
        proc.kill()
        proc.wait()
        state = json.loads(_run(["-c", CHECK, dest], env).stdout)
        assert all(p == [] for p in state["problems"].values()), state
        assert state["latest"] is None or state["latest"] in state["versions"], state
    assert len(state["versions"]) >= 3, state  # the loop really pushed between kills
    # The next push works and takes a number above every folder a killed pusher claimed.
    code = ("import sys, json\nfrom tfx_quantization import fsutil\nfrom tfx_quantization.registry import Registry\n"
            "r = Registry(sys.argv[1], 'digits')\nprint(json.dumps([r.push(f, {'variant': 'after'}) for f in sys.argv[2:]]))\n"
            "fsutil.exit_process(0)\n")
    pushed = json.loads(_run(["-c", code, dest, *files[:2]], env).stdout)
    numbered = {int(k.split("/")[2]) for k in s3_server.keys("registry-kills", "models/digits/")
                if k.split("/")[2].isdigit()}
    created = [v for v, c in pushed if c]
    assert created and created[-1] == max(numbered)
    final = json.loads(_run(["-c", CHECK, dest], env).stdout)
    assert final["latest"] == created[-1] and all(p == [] for p in final["problems"].values())


def test_local_registry_files_are_readable_by_other_users(tmp_path, digits_quantized):
    registry = Registry(str(tmp_path / "registry"), "digits")
    registry.push(_variant_files(digits_quantized)[0], {"variant": "a"})
    root = tmp_path / "registry" / "digits"
    modes = {p.relative_to(root).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in root.rglob("*")}
    assert modes["1"] == 0o755 and modes[f"1/{MODEL_FILE}"] == 0o644 and modes[f"1/{MANIFEST_FILE}"] == 0o644
    assert modes[LATEST_FILE] == 0o644


def test_create_exclusive_and_staged_dir_on_a_local_disk(tmp_path):
    target = tmp_path / "a" / "claim"
    assert fsutil.create_exclusive(str(target), b"1") and not fsutil.create_exclusive(str(target), b"2")
    assert target.read_bytes() == b"1"
    with pytest.raises(RuntimeError, match="boom"):
        with fsutil.staged_dir(tmp_path / "out") as staging:
            (staging / "f").write_bytes(b"x")
            raise RuntimeError("boom")
    assert not (tmp_path / "out").exists() and [p.name for p in tmp_path.iterdir()] == ["a"]


@pytest.mark.e2e
def test_whole_pipeline_with_root_and_registry_in_a_bucket(s3_server, tmp_path):
    bucket = s3_server.bucket("pipeline-e2e")
    env = s3_server.subprocess_env(
        QP_CONFIG=str(REPO_ROOT / "data" / "examples" / "digits.yaml"), QP_DATA_ROOT=str(REPO_ROOT / "data" / "digits"),
        QP_PIPELINE_NAME="s3-digits", QP_OUTPUT_ROOT=str(tmp_path / "out"), QP_PIPELINE_ROOT=f"{bucket}/root",
        QP_PUSH__DESTINATION=f"{bucket}/serving", QP_EPOCHS="3", QP_QAT_EPOCHS="1", QP_LATENCY_RUNS="5",
        QP_CALIBRATION__NUM_SAMPLES="100",
        # The subject is storage: two variants (a float reference and the int8 one that ships)
        # cross the bucket as the bundled job's nine do (tests/test_pipeline_e2e.py runs those).
        QP_VARIANTS='["dynamic_range", "integer_only"]',
        QP_BEAM_PIPELINE_ARGS=json.dumps(["--direct_num_workers=1", *s3_server.beam_args]))
    first = _run([str(REPO_ROOT / "pipeline" / "local_runner.py")], env, timeout=1200)
    assert "Pushed           : version 1 at s3://pipeline-e2e/serving/digits/1" in first.stdout, first.stdout[-2000:]
    keys = s3_server.keys("pipeline-e2e")
    assert "serving/digits/1/model.tflite" in keys and "serving/digits/LATEST" in keys
    assert any(k.startswith("root/CsvExampleGen/examples/") for k in keys)
    assert any(k.startswith("root/QATTrainer/model/") and k.endswith("saved_model.pb") for k in keys)
    assert any(k.endswith("/report.html") for k in keys)
    assert os.path.exists(tmp_path / "out" / "metadata.sqlite")  # ML Metadata stays local

    cli = ["-m", "tfx_quantization.pusher", "--destination", f"{bucket}/serving", "--model-name", "digits"]
    assert _run([*cli, "verify"], env).stdout.strip().startswith("version 1: OK")

    # A second run reading the deployed model back from the bucket as its baseline is
    # tests/test_kubeflow.py's launcher test (root and registry on this server too).
    listed = _run([*cli, "list"], env)
    assert listed.stdout.splitlines()[1].split()[:2] == ["*", "1"]
