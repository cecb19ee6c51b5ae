"""Pusher: versioned, atomic, blessed-only, idempotent; verify, rollback, list; crash safety."""
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
from tfx.types import standard_artifacts

from tfx_quantization.contracts import LATEST_FILE, read_manifest
from tfx_quantization.fsutil import sha256_file as file_sha256
from tfx_quantization.pusher import __main__ as cli
from tfx_quantization.pusher.component import QuantizedModelPusher
from tfx_quantization.pusher.executor import Executor
from tfx_quantization.registry import LOCK_FILE, Registry
from tfx_quantization.settings import PushSettings
from tests.conftest import REPO_ROOT
from tests.helpers import artifact


def _blessing(tmp_path, blessed, variant, name="blessing", evaluated_registry=None):
    b = artifact(standard_artifacts.ModelBlessing, tmp_path / name)
    if evaluated_registry is not None:
        b.set_string_custom_property("evaluated_registry", evaluated_registry)
    b.set_int_custom_property("blessed", int(blessed))
    b.set_string_custom_property("selected_variant", variant if blessed else "")
    b.set_int_custom_property("current_model_id", 11)  # the quantized models
    b.set_int_custom_property("float_model_id", 7)
    return b


def _push(tmp_path, quantized_dir, blessed, variant, dest, tag="p", evaluated_registry=None):
    q = standard_artifacts.Model()
    q.uri = quantized_dir
    q.id = 11
    out = artifact(standard_artifacts.PushedModel, tmp_path / f"pushed_{tag}")
    Executor().Do({"quantized_models": [q], "blessing": [_blessing(tmp_path, blessed, variant, f"b_{tag}", evaluated_registry)]},
                  {"pushed_model": [out]}, {"settings": PushSettings(destination=str(dest), model_name="digits").to_json()})
    return out


def test_blessed_pushes_version_1_then_2_with_manifests(tmp_path, digits_quantized):
    dest = tmp_path / "registry"
    first = _push(tmp_path, digits_quantized, True, "integer_only", dest, "1")
    second = _push(tmp_path, digits_quantized, True, "qat_int8", dest, "2")
    assert first.get_int_custom_property("pushed") == 1 and first.get_string_custom_property("pushed_version") == "1"
    assert second.get_string_custom_property("pushed_version") == "2"
    assert second.get_string_custom_property("pushed_destination") == str(dest / "digits" / "2")
    registry = Registry(dest, "digits")
    assert registry.versions() == [1, 2] and registry.latest() == 2
    assert (dest / "digits" / LATEST_FILE).read_text() == "2\n"
    manifest = registry.manifest(1)
    source = os.path.join(digits_quantized, read_manifest(digits_quantized).variants["integer_only"].file)
    assert manifest["variant"] == "integer_only" and manifest["version"] == 1
    assert manifest["sha256"] == file_sha256(source) == file_sha256(dest / "digits" / "1" / "model.tflite")
    assert manifest["lineage"]["quantized_models_id"] == 11 and manifest["lineage"]["float_model_id"] == 7
    assert "tensorflow" in manifest["library_versions"] and manifest["created_at"]
    assert registry.verify(1) == [] and registry.verify(2) == []


def test_a_pusher_on_another_registry_than_the_evaluators_baseline_is_refused_before_writing(tmp_path,
                                                                                             digits_quantized):
    dest = tmp_path / "registry"
    with pytest.raises(ValueError, match=r"the evaluator compared against the deployed model of .*/elsewhere/digits, "
                                         r"but this pusher pushes to .*/registry/digits: give TFLiteEvaluator"):
        _push(tmp_path, digits_quantized, True, "integer_only", dest, "x", str(tmp_path / "elsewhere" / "digits"))
    assert not dest.exists()
    # The same registry (what create_pipeline wires) pushes.
    same = _push(tmp_path, digits_quantized, True, "integer_only", dest, "y", str(dest / "digits"))
    assert same.get_int_custom_property("pushed") == 1


def test_not_blessed_writes_nothing(tmp_path, digits_quantized):
    dest = tmp_path / "registry"
    out = _push(tmp_path, digits_quantized, False, "", dest)
    assert out.get_int_custom_property("pushed") == 0
    assert "did not bless" in out.get_string_custom_property("reason")
    assert not dest.exists()


def test_same_model_twice_is_one_version(tmp_path, digits_quantized):
    dest = tmp_path / "registry"
    _push(tmp_path, digits_quantized, True, "integer_only", dest, "a")
    again = _push(tmp_path, digits_quantized, True, "integer_only", dest, "b")
    assert Registry(dest, "digits").versions() == [1]
    assert again.get_int_custom_property("pushed") == 0
    assert "already holds the same model" in again.get_string_custom_property("reason")
    assert again.get_string_custom_property("deployed_version_dir") == str(dest / "digits" / "1")


def test_verify_detects_a_flipped_byte_and_rollback_and_list(tmp_path, digits_quantized, capsys):
    dest = tmp_path / "registry"
    for i, variant in enumerate(("integer_only", "qat_int8", "full_integer")):
        _push(tmp_path, digits_quantized, True, variant, dest, str(i))
    args = ["--destination", str(dest), "--model-name", "digits"]
    assert cli.main(args + ["verify", "2"]) == 0
    model = dest / "digits" / "2" / "model.tflite"
    content = bytearray(model.read_bytes())
    content[len(content) // 2] ^= 0x01
    model.write_bytes(bytes(content))
    assert cli.main(args + ["verify", "2"]) == 1
    assert "version 2: FAILED: sha256" in capsys.readouterr().out
    assert cli.main(args + ["rollback", "2"]) == 2  # refuses a damaged version
    assert cli.main(args + ["rollback", "1"]) == 0
    assert Registry(dest, "digits").latest() == 1
    capsys.readouterr()
    assert cli.main(args + ["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["version", "variant", "accuracy", "bytes", "sha256", "created"]
    assert lines[1].startswith("*       1  integer_only") and lines[3].startswith("        3  full_integer")
    # The module entry point works as documented.
    out = subprocess.run([sys.executable, "-m", "tfx_quantization.pusher"] + args + ["list"], cwd=REPO_ROOT,
                         capture_output=True, text=True, check=True)
    assert out.stdout.splitlines()[1].startswith("*       1")
    # The options may also follow the command, as --help shows it.
    assert cli.main(["list"] + args) == 0
    # An unknown model name is an error that names what the destination holds.
    assert cli.main(["--destination", str(dest), "--model-name", "digitz", "list"]) == 2
    assert "no model 'digitz' in" in capsys.readouterr().err


PUSH_LOOP = """
import itertools, sys
from tfx_quantization.registry import Registry
registry = Registry(sys.argv[1], "digits")
files = sys.argv[2:]
print("ready", flush=True)
for i in itertools.count():
    registry.push(files[i % len(files)], {"variant": "loop", "i": i})
"""


def _check_registry_is_consistent(dest):
    registry = Registry(dest, "digits")
    for v in registry.versions():
        assert registry.verify(v) == [], (v, registry.verify(v))
    latest = registry.latest()
    if latest is not None:
        assert latest in registry.versions()
    return registry


def test_killing_a_pusher_at_random_moments_never_leaves_a_partial_version(tmp_path, digits_quantized):
    manifest = read_manifest(digits_quantized)
    files = [os.path.join(digits_quantized, v.file) for v in manifest.variants.values()]
    dest = tmp_path / "registry"
    rng = random.Random(0)
    for _ in range(12):
        proc = subprocess.Popen([sys.executable, "-c", PUSH_LOOP, str(dest)] + files, cwd=REPO_ROOT,
                                stdout=subprocess.PIPE, env=dict(os.environ))
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        _check_registry_is_consistent(dest)
    registry = _check_registry_is_consistent(dest)
    assert len(registry.versions()) > 12  # the loop really pushed between kills
    # A later push cleans the staging left by the kills and continues numbering.
    version, created = registry.push(files[0] if registry.manifest(registry.latest())["sha256"] != file_sha256(
        files[0]) else files[1], {"variant": "after"})
    assert created and version == max(registry.versions())
    assert [p for p in os.listdir(dest / "digits") if p.startswith(".")] == [LOCK_FILE]


CONCURRENT = """
import os, sys, time
from tfx_quantization.registry import Registry
while not os.path.exists(sys.argv[3]):
    time.sleep(0.001)
print(Registry(sys.argv[1], "digits").push(sys.argv[2], {"variant": "concurrent"}))
"""


def test_two_concurrent_pushers_make_two_distinct_complete_versions(tmp_path, digits_quantized):
    manifest = read_manifest(digits_quantized)
    a = os.path.join(digits_quantized, manifest.variants["integer_only"].file)
    b = os.path.join(digits_quantized, manifest.variants["qat_int8"].file)
    dest, go = tmp_path / "registry", tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT, str(dest), f, str(go)], cwd=REPO_ROOT,
                              stdout=subprocess.PIPE, text=True) for f in (a, b)]
    time.sleep(0.5)
    go.touch()
    outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert sorted(outs) == ["(1, True)", "(2, True)"]
    registry = _check_registry_is_consistent(dest)
    assert {registry.manifest(v)["sha256"] for v in (1, 2)} == {file_sha256(a), file_sha256(b)}


@pytest.mark.fast
def test_bad_destinations_are_rejected_early():
    from tfx.types import channel_utils

    ch = lambda t: channel_utils.as_channel([t()])  # noqa: E731
    with pytest.raises(ValueError, match="destination is empty"):
        QuantizedModelPusher(ch(standard_artifacts.Model), ch(standard_artifacts.ModelBlessing), PushSettings())
    # No demo default for the model's name: a standalone Pusher names it.
    with pytest.raises(ValueError, match=r"PushSettings: model_name is empty: name the model's folder"):
        QuantizedModelPusher(ch(standard_artifacts.Model), ch(standard_artifacts.ModelBlessing), {"destination": "/r"})
    with pytest.raises(ValueError, match="must be a plain folder name"):
        Registry("/tmp", "../escape")
