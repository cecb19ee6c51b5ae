"""Every input and every failure explained (issue #33): each case asserts the exact one-line
message (the problem and the fix) and, where the registry is involved, that its files are
byte for byte what they were after the bad input."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from tfx_quantization import fsutil, signing
from tfx_quantization.contracts import MANIFEST_FILE
from tfx_quantization.registry import Registry, RegistryWriteError, open_registry
from tfx_quantization.settings import SettingsError
from tfx_quantization.pipeline import preflight
from tfx_quantization.pipeline.config import PipelineConfig
from tests.conftest import REPO_ROOT
from tests.helpers import PIXEL_KEYS, digits_rows

pytestmark = pytest.mark.fast

DIGITS_JOB = str(REPO_ROOT / "data" / "examples" / "digits.yaml")
HEADER = ",".join(PIXEL_KEYS + ["label"])


def snapshot(root: Path):
    """Every file under root with its bytes' sha256, and every folder: the registry's whole state."""
    if not root.exists():
        return {}
    return {p.relative_to(root).as_posix(): fsutil.sha256_file(p) if p.is_file() else "folder"
            for p in sorted(root.rglob("*"))}


def _model(path: Path, size: int = 1000, seed: int = 0) -> str:
    path.write_bytes(b"TFL3" + np.random.default_rng(seed).bytes(size))
    return str(path)


@pytest.fixture
def registry(tmp_path):
    """A registry holding one version; after the test its files are byte for byte the same."""
    root = tmp_path / "serving"
    Registry(str(root), "digits").push(_model(tmp_path / "m.tflite"), {"variant": "integer_only"})
    before = snapshot(root)
    yield root
    assert snapshot(root) == before, "the bad input changed the registry"


def _config(tmp_path, registry_root, **env):
    base = {"QP_CONFIG": DIGITS_JOB, "QP_OUTPUT_ROOT": str(tmp_path / "out"), "QP_PUSH__DESTINATION": str(registry_root)}
    return PipelineConfig.from_env({**base, **env})


def _digits_csv(folder: Path, prefix: bytes = b"") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [",".join(str(r[k]) for k in PIXEL_KEYS + ["label"]) for r in digits_rows()[:30]]
    (folder / "digits.csv").write_bytes(prefix + (HEADER + "\n" + "\n".join(rows) + "\n").encode())
    return folder


# ---- 1. a CSV saved with a UTF-8 byte-order mark ---------------------------------------------
def test_a_csv_with_a_byte_order_mark_is_named_with_a_one_line_fix(tmp_path, registry):
    """CsvExampleGen keeps the BOM in the first column's name (tried with TFX 1.16: its
    examples hold '\\ufeffpixel_00'), so the preflight names the mark and the command that
    removes it; after that command the same file passes."""
    data = _digits_csv(tmp_path / "data", prefix=b"\xef\xbb\xbf")
    path = data / "digits.csv"
    config = _config(tmp_path, registry, QP_DATA_ROOT=str(data))
    with pytest.raises(preflight.PreflightError) as e:
        preflight.check(config)
    assert str(e.value) == (
        f"{path} starts with a UTF-8 byte-order mark (BOM), which CsvExampleGen keeps in the first column's name "
        f"('\\ufeffpixel_00', not 'pixel_00'): re-save it as UTF-8 without BOM, e.g. "
        f"sed -i '1s/^\\xEF\\xBB\\xBF//' {path}")
    fix = str(e.value).split("e.g. ", 1)[1]
    subprocess.run(fix, shell=True, check=True)
    assert path.read_bytes().startswith(HEADER.encode())
    preflight.check(config)  # the message's own command fixed it


def test_a_csv_that_is_not_utf8_is_named(tmp_path, registry):
    data = _digits_csv(tmp_path / "data", prefix=b"\xff\xfe")  # a UTF-16 mark: not UTF-8 text
    with pytest.raises(preflight.PreflightError) as e:
        preflight.check(_config(tmp_path, registry, QP_DATA_ROOT=str(data)))
    assert str(e.value) == (f"{data / 'digits.csv'} is not UTF-8 text (byte 0 of its header line: b'\\xff'): "
                            "CsvExampleGen reads UTF-8 CSV; re-save it as UTF-8, e.g. iconv -f LATIN1 -t UTF-8")


# ---- 2. every unreadable input named by file, record and feature, with the fix ----------------
def _records(folder: Path, compress: bool, n: int = 50):
    from tfx_quantization.quantization import data

    examples = [data.to_example({"a": i, "label": i % 2}) for i in range(n)]
    return Path(data.write_split(folder, examples, shards=1, compress=compress)[0])


def _truncate(path: Path):
    path.write_bytes(path.read_bytes()[:-40])


def _flip(path: Path):
    content = bytearray(path.read_bytes())
    content[len(content) // 2] ^= 0xFF
    path.write_bytes(bytes(content))


def _drop_trailer(path: Path):
    path.write_bytes(path.read_bytes()[:-8])  # a gzip stream without its CRC and length


FIX = "; write the file again or remove it from the input"


@pytest.mark.parametrize("compress, damage, message", [
    # Where a cut gzip stream fails depends on where its blocks end (the writer's output varies by a
    # few bytes from run to run); TensorFlow's reader sometimes ends such a stream without a word.
    (True, _truncate, r"{f} is not a valid gzipped TFRecord file: record 4\d \(counting from 0\) is (corrupt or "
                      r"truncated \(truncated record at \d+: EOF reached\)|truncated \(the compressed stream ends "
                      r"early, after 4\d complete record\(s\)\))"),
    (True, _drop_trailer, r"{f} is not a valid gzipped TFRecord file: record 50 \(counting from 0\) is truncated \(the "
                          r"compressed stream ends early, after 50 complete record\(s\)\)"),
    (True, _flip, r"{f} is not a valid gzipped TFRecord file: record \d+ \(counting from 0\) is corrupt or truncated "
                  r"\((inflate\(\) failed with error -3: .*|corrupted record at \d+)\)"),
    # TensorFlow's reader drops a truncated last record of an uncompressed file without a word.
    (False, _truncate, r"{f} is not a valid TFRecord file: record 49 \(counting from 0\) is truncated \(6 trailing "
                       r"bytes after 49 complete record\(s\)\)"),
    (False, _flip, r"{f} is not a valid TFRecord file: record 25 \(counting from 0\) is corrupt or truncated "
                   r"\(corrupted record at 1150\)"),
])
def test_a_corrupt_or_truncated_record_file_is_named_with_the_record(tmp_path, compress, damage, message):
    import re

    from tfx_quantization.quantization import data

    path = _records(tmp_path / "split", compress)
    damage(path)
    with pytest.raises(ValueError) as e:
        list(data.iter_serialized([str(path)]))
    assert re.fullmatch(message.format(f=re.escape(str(path))) + re.escape(FIX), str(e.value)), str(e.value)


def test_a_missing_record_file_is_named(tmp_path):
    from tfx_quantization.quantization import data

    with pytest.raises(ValueError) as e:
        list(data.iter_serialized([str(tmp_path / "gone.gz")]))
    assert str(e.value) == (f"{tmp_path / 'gone.gz'} does not exist (removed while the run read its folder?): restore "
                            "it or run the stage that wrote it again")


def test_a_corrupt_image_is_named_by_feature_record_and_file(tmp_path):
    import tensorflow as tf

    from tfx_quantization.model_contract import ModelContract
    from tfx_quantization.quantization import data
    from tfx_quantization.quantization.model_spec import ModelSpec

    images = [tf.io.encode_png(np.full((8, 8, 1), i, np.uint8)).numpy() for i in range(6)]
    images[3] = images[3][:len(images[3]) // 2]  # a truncated PNG: its magic is right, its data is not
    files = data.write_split(tmp_path / "Split-train", [data.to_example({"img": b, "label": 0}) for b in images],
                             shards=1)
    contract = ModelContract(inputs={"img": {"shape": [8, 8, 1], "image": {}}}, num_classes=2)
    with pytest.raises(ValueError) as e:
        data.check_examples(files, ModelSpec.of_contract(contract))
    assert str(e.value) == (
        f"the examples in {tmp_path / 'Split-train'} are not usable: input feature 'img' holds a corrupt or truncated "
        "image (Invalid PNG. Failed to initialize decoder.): encode it again or drop the example: 1 of 6 example(s), first at record 3 "
        "of Split-train/data_tfrecord-00000-of-00001.gz (positions are records of the split's files as the pipeline "
        "wrote them from your input, counted from 0: not lines of your input file)")


def test_a_data_error_says_whether_its_position_is_in_your_file_or_in_the_pipelines_split(tmp_path, registry):
    from tfx_quantization.quantization import data
    from tfx_quantization.quantization.model_spec import ModelSpec
    from tests.helpers import DIGITS_CONTRACT

    # The user's file, read before any stage runs: the message names that file and its line.
    folder = _digits_csv(tmp_path / "data")
    with pytest.raises(preflight.PreflightError) as e:
        preflight.check(_config(tmp_path, registry, QP_DATA_ROOT=str(folder), QP_LABEL_KEY="target"))
    assert f"label key ['target'] is not in {folder / 'digits.csv'} (it has ['pixel_00'" in str(e.value)
    # ExampleGen's split, read by the stages: a record of the split's file, and not a line of the input.
    rows = [dict(r) for r in digits_rows()[:10]]
    rows[4].pop("pixel_05")  # an empty cell in the user's CSV: ExampleGen writes the example without the feature
    files = data.write_split(tmp_path / "Split-train", [data.to_example(r) for r in rows], shards=1)
    message = str(pytest.raises(ValueError, data.check_examples, files, ModelSpec.of_contract(DIGITS_CONTRACT)).value)
    assert "1 of 10 example(s), first at record 4 of Split-train/data_tfrecord-00000-of-00001.gz" in message
    assert message.endswith(" (positions are records of the split's files as the pipeline wrote them from your input, "
                            "counted from 0: not lines of your input file)")


# ---- 3. a misspelt key in a configuration file --------------------------------------------------
@pytest.mark.parametrize("text, message", [
    ("gate: {max_acuracy_drop: 0.02}\n",
     "{f}: gate.max_acuracy_drop is not a setting: did you mean gate.max_accuracy_drop, gate.max_relative_drop, "
     "gate.min_accuracy? Fix the file; every setting: python -m tfx_quantization.pipeline.config --help"),
    ("max_acuracy_drop: 0.02\n",  # a stage's field at the top: the same suggestion as QP_MAX_ACCURACY_DROP's
     "{f}: max_acuracy_drop is not a setting: did you mean gate.max_accuracy_drop? Fix the file; every setting: "
     "python -m tfx_quantization.pipeline.config --help"),
    ("contract: {inputs: {image: {featurs: [a], shape: [1]}}, num_classes: 2}\n"
     "gate: {targets: [{name: mcu, runtime: tflm, max_arena_byte: 9000}]}\n",  # inside dicts and lists of models
     "{f}: contract.inputs.image.featurs is not a setting: did you mean contract.inputs.image.features? Also unknown: "
     "gate.targets[0].max_arena_byte. Fix the file; every setting: python -m tfx_quantization.pipeline.config --help"),
])
def test_a_misspelt_key_in_a_configuration_file_gets_the_close_match(tmp_path, text, message):
    path = tmp_path / "job.yaml"
    path.write_text("pipeline_name: p\ndata_root: /d\n" + text)
    with pytest.raises(SettingsError) as e:
        PipelineConfig.from_env({"QP_CONFIG": str(path)})
    assert str(e.value) == message.format(f=f"QP_CONFIG={path}")
    as_json = tmp_path / "job.json"  # JSON is read the same way
    as_json.write_text(json.dumps({"pipeline_name": "p", "data_root": "/d", "gate": {"max_acuracy_drop": 0.02}}))
    with pytest.raises(SettingsError, match=r"job.json: gate.max_acuracy_drop is not a setting: did you mean "
                                            r"gate.max_accuracy_drop"):
        PipelineConfig.from_env({"QP_CONFIG": str(as_json)})


# ---- 4. registry writes: no space, no permission, any umask ------------------------------------
@pytest.fixture
def tiny_disk():
    """A 64 KiB tmpfs: a real full disk (root may mount; skipped where it cannot)."""
    mount = tempfile.mkdtemp(prefix="qp-tiny-disk-")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs", mount], capture_output=True)
    if done.returncode:
        os.rmdir(mount)
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield Path(mount)
    finally:
        subprocess.run(["umount", mount], check=True)
        os.rmdir(mount)


def test_a_full_disk_names_the_destination_the_version_and_what_was_removed(tmp_path, tiny_disk):
    root = tiny_disk / "serving"
    registry = Registry(str(root), "digits")
    assert registry.push(_model(tmp_path / "small.tflite", 1000), {"variant": "integer_only"}) == (1, True)
    before = snapshot(root)
    with pytest.raises(RegistryWriteError) as e:
        registry.push(_model(tmp_path / "big.tflite", 100_000), {"variant": "float32"})
    assert str(e.value) == (
        f"push to {root / 'digits'} failed while writing version 2 (model.tflite, 100,004 bytes): [Errno 28] No space "
        "left on device; removed the unfinished version 2 (its hidden staging folder; it was never visible); LATEST "
        f"still 1: free space on the filesystem of {root / 'digits'} (or set QP_PUSH__DESTINATION to another disk) and "
        "push again")
    assert snapshot(root) == before
    assert registry.push(_model(tmp_path / "next.tflite", 1000, seed=1), {"variant": "x"}) == (2, True)


def test_latest_that_cannot_be_written_removes_the_new_version(tmp_path, registry, monkeypatch):
    """The version is complete and renamed into place, then LATEST's write fails (a real
    ENOSPC from /dev/full): the version is removed, so no reader sees a version LATEST skips."""
    real = fsutil.write_bytes_atomic

    def latest_on_a_full_disk(uri, content):
        if os.path.basename(str(uri)) == "LATEST":
            with open("/dev/full", "wb") as f:
                f.write(content)
                f.flush()
        return real(uri, content)

    monkeypatch.setattr(fsutil, "write_bytes_atomic", latest_on_a_full_disk)
    with pytest.raises(RegistryWriteError) as e:
        Registry(str(registry), "digits").push(_model(tmp_path / "new.tflite", seed=3), {"variant": "float32"})
    assert str(e.value) == (
        f"push to {registry / 'digits'} failed while pointing LATEST to version 2: [Errno 28] No space left on device; "
        f"removed version 2, which LATEST could not point to; LATEST still 1: free space on the filesystem of "
        f"{registry / 'digits'} (or set QP_PUSH__DESTINATION to another disk) and push again")


PUSH_AS_UNPRIVILEGED = """
import sys
from tfx_quantization.registry import Registry, RegistryWriteError
try:
    Registry(sys.argv[1], "digits").push(sys.argv[2], {"variant": "float32"})
except RegistryWriteError as e:
    print(e)
"""


def test_no_permission_names_the_destination_and_the_fix(tmp_path, registry):
    """EACCES for real: the pusher runs without root's capabilities (setpriv drops them all)
    against a registry folder owned by another user."""
    if shutil.which("setpriv") is None or os.getuid() != 0:
        pytest.skip("needs root and setpriv to take a writer's permission away")
    root = registry / "digits"
    owner = (os.stat(root).st_uid, os.stat(root).st_gid)
    os.chown(root, 65534, 65534)
    try:
        before = snapshot(registry)
        done = subprocess.run(["setpriv", "--inh-caps=-all", "--bounding-set=-all", sys.executable, "-c",
                               PUSH_AS_UNPRIVILEGED, str(registry), _model(tmp_path / "new.tflite", seed=4)],
                              capture_output=True, text=True, cwd=REPO_ROOT)
        assert done.stdout.strip() == (
            f"push to {root} failed while writing version 2: [Errno 13] Permission denied; nothing was written; LATEST "
            f"still 1: make {root} writable by this user (uid 0) (or set QP_PUSH__DESTINATION to a folder it can "
            "write) and push again"), done.stdout + done.stderr[-2000:]
        assert snapshot(registry) == before
    finally:
        os.chown(root, *owner)


def test_every_folder_the_registry_creates_is_readable_by_others_under_umask_077(tmp_path):
    old = os.umask(0o077)
    try:
        dest = tmp_path / "a" / "serving"
        Registry(str(dest), "digits").push(_model(tmp_path / "m.tflite"), {"variant": "integer_only"})
        open_registry(str(dest), "digits", "mcu").push(_model(tmp_path / "m.tflite"), {"variant": "integer_only"})
    finally:
        os.umask(old)
    entries = [dest.parent, dest] + sorted(dest.rglob("*"))
    modes = {p.relative_to(tmp_path).as_posix(): oct(p.stat().st_mode & 0o777) for p in entries}
    assert modes == {p: "0o755" if (tmp_path / p).is_dir() else "0o644" for p in modes}, modes
    assert "a/serving/digits/targets/mcu/1/model.tflite" in modes and "a/serving/digits/.lock" in modes


# ---- 5. a target budget no variant meets is named ---------------------------------------------
def _figures():
    tflm = lambda arena: {"runs": True, "arena_bytes": arena, "reason": ""}  # noqa: E731
    common = {"accuracy": 0.97, "latency_ms_median": 0.05, "integer_compute_fraction": 1.0}
    return {
        "integer_only": dict(common, size_bytes=9000, integer_io=True, tflm=tflm(5232)),
        "full_integer": dict(common, size_bytes=9100, integer_io=False, tflm=tflm(6400)),
        "float16": dict(common, size_bytes=20000, integer_compute_fraction=0.0,
                        tflm={"runs": False, "reason": "DEQUANTIZE"}),
    }


TARGET_SHORTFALL = "target mcu: no variant meets max_arena_bytes=1024 (smallest arena: integer_only 5,232 B)"


def test_a_target_budget_no_variant_meets_is_named_in_the_decision(tmp_path):
    from tfx_quantization import contracts
    from tfx_quantization.settings import GateSettings
    from tfx_quantization.tflite_evaluator import evaluate, gate

    cfg = GateSettings(targets=[{"name": "mcu", "runtime": "tflm", "max_arena_bytes": 1024}], allow_float32=True)
    figures = _figures()
    verdicts = {n: {"passed": True, "reasons": ["all bounds hold"]} for n in figures}
    targets = gate.judge_targets(figures, verdicts, cfg)
    assert targets["mcu"]["selected"] is None and targets["mcu"]["selection"]["why"] == TARGET_SHORTFALL
    evaluation = contracts.Evaluation.model_validate({
        "blessed": False, "selected_variant": None, "selection": dict(targets["mcu"]["selection"], target="mcu"),
        "variants": figures, "verdicts": verdicts, "targets": targets})
    why = evaluate.decision(evaluation).why
    assert why[0] == TARGET_SHORTFALL
    assert why[1] == "integer_only: tensor arena 5232 bytes > max_arena_bytes 1024"
    assert not any("all bounds hold" in line for line in why)
    # More than one budget: each one no variant meets is named.
    both = GateSettings(targets=[{"name": "mcu", "runtime": "tflm", "max_arena_bytes": 1024, "integer_io": True,
                                  "max_model_bytes": 8000}])
    assert gate.judge_targets(figures, verdicts, both)["mcu"]["selection"]["why"] == (
        "target mcu: no variant meets max_arena_bytes=1024 (smallest arena: integer_only 5,232 B); no variant meets "
        "max_model_bytes=8000 (smallest file: integer_only 9,000 B)")


def test_the_summary_names_the_target_budget_that_decided(tmp_path):
    """The end of `make run` reads ML Metadata and the evaluator's outcome.json."""
    from tfx_quantization import contracts
    from tests.helpers import run_summary

    evaluation_dir = tmp_path / "evaluation"
    evaluation_dir.mkdir()
    verdicts = {n: {"passed": True, "reasons": ["all bounds hold"]} for n in _figures()}
    contracts.write_decision(evaluation_dir, contracts.Decision(
        blessed=False, why=[TARGET_SHORTFALL, "integer_only: tensor arena 5232 bytes > max_arena_bytes 1024"],
        targets={"mcu": None}))
    lines = run_summary(tmp_path / "metadata.sqlite", evaluation_dir, {
        contracts.SELECTED_VARIANT: "", contracts.VERDICTS: json.dumps(verdicts),
        contracts.TARGET_SELECTIONS: json.dumps({"mcu": None})})
    assert lines[:3] == ["Selected variant : none passed the gate and target mcu's checks, so nothing was pushed",
                         f"  {TARGET_SHORTFALL}", "  integer_only: tensor arena 5232 bytes > max_arena_bytes 1024"]
    assert not any("all bounds hold" in line for line in lines)


# ---- 6. any setting printed, nested ones included ----------------------------------------------
def _config_cli(*args, **env):
    return subprocess.run([sys.executable, "-m", "tfx_quantization.pipeline.config", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "QP_CONFIG": DIGITS_JOB, **env})


def test_the_config_command_prints_nested_settings_as_json():
    target = {"name": "mcu", "runtime": "tflm", "max_arena_bytes": 1024}
    shown = _config_cli("gate.targets", QP_GATE__TARGETS=json.dumps([target]))
    assert shown.returncode == 0 and "Traceback" not in shown.stderr, shown.stderr
    assert json.loads(shown.stdout) == [{"name": "mcu", "runtime": "tflm", "integer_only": False, "integer_io": False,
                                         "max_model_bytes": None, "max_arena_bytes": 1024, "max_latency_ms": None,
                                         "selection": None}]
    inputs = _config_cli("contract.inputs")
    assert inputs.returncode == 0, inputs.stderr
    assert json.loads(inputs.stdout) == {"image": {"features": PIXEL_KEYS, "shape": [8, 8, 1], "image": None}}
    section = _config_cli("contract")
    assert section.returncode == 0 and json.loads(section.stdout)["num_classes"] == 10, section.stderr


# ---- 7. a signed registry verified whenever its state is used ----------------------------------
def test_an_edited_deployed_manifest_changes_the_evaluators_cache_key_and_is_refused(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from tfx_quantization.pipeline.dag import create_components
    from tfx_quantization.settings import PushSettings
    from tfx_quantization.tflite_evaluator.executor import deployed_model

    key = ed25519.Ed25519PrivateKey.generate()
    private, public = tmp_path / "key.pem", tmp_path / "key.pub.pem"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    dest = tmp_path / "serving"
    Registry(str(dest), "digits").push(_model(tmp_path / "m.tflite"), {"variant": "integer_only",
                                                                       "metrics": {"accuracy": 0.9}},
                                       signing_key=str(private))
    config = _config(tmp_path, dest, QP_DATA_ROOT=str(tmp_path), QP_PUSH__SIGNING_KEY=str(private),
                     QP_PUSH__PUBLIC_KEY=str(public))

    def cache_key():  # what the local orchestrator's cache compares: the evaluator's parameters
        return {c.id: c for c in create_components(config)}["TFLiteEvaluator"].exec_properties["deployed_state"]

    first = cache_key()
    assert cache_key() == first  # nothing changed: the evaluation may come from the cache
    manifest = dest / "digits" / "1" / MANIFEST_FILE
    edited = json.loads(manifest.read_text())
    edited["metrics"]["accuracy"] = 0.99  # the hashes still hold: only the signature can tell
    manifest.write_text(json.dumps(edited, indent=2, sort_keys=True))
    assert Registry(str(dest), "digits").verify(1) == []
    assert cache_key() != first  # so the evaluator runs again, and verifies the deployed version:
    with pytest.raises(ValueError) as e:
        deployed_model(PushSettings(destination=str(dest), model_name="digits", public_key=str(public)).to_json())
    assert str(e.value) == (
        f"the deployed version 1 in {dest / 'digits'} does not verify (manifest was edited after signing (it differs "
        "from the signed payload)): refusing to use it as the no-regression baseline; roll back to an intact version "
        "(tfx-quantization-registry ... rollback N) or repair the registry")
    # A replaced signature changes the key too.
    manifest_state = cache_key()
    (dest / "digits" / "1" / signing.SIGNATURE_FILE).write_bytes(b"{}")
    assert cache_key() != manifest_state
