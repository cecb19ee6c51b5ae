"""Signed versions: the pusher signs each version's manifest (a DSSE envelope made with
securesystemslib); verify, rollback and the evaluator's deployed baseline check it; one
edited byte of the model or the manifest, a replaced signature, or another key each fail
with the version and what failed; an unsigned registry still verifies its hashes."""
import json
import os
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from tfx_quantization import signing
from tfx_quantization.contracts import MANIFEST_FILE, MODEL_FILE
from tfx_quantization.pusher import __main__ as cli
from tfx_quantization.registry import Registry
from tfx_quantization.settings import PushSettings
from tests.conftest import REPO_ROOT


def _keypair(folder, name):
    key = ed25519.Ed25519PrivateKey.generate()
    private = folder / f"{name}.pem"
    public = folder / f"{name}.pub.pem"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return str(private), str(public)


@pytest.fixture
def signed(tmp_path):
    private, public = _keypair(tmp_path, "key")
    other_private, other_public = _keypair(tmp_path, "other")
    models = []
    for i in range(2):
        path = tmp_path / f"m{i}.tflite"
        path.write_bytes(f"TFL3 model {i}".encode())
        models.append(str(path))
    registry = Registry(str(tmp_path / "serving"), "digits")
    for i, model in enumerate(models):
        registry.push(model, {"variant": "integer_only", "metrics": {"accuracy": 0.98 - i / 100}}, signing_key=private)
    return dict(registry=registry, private=private, public=public, other_private=other_private,
                other_public=other_public, root=tmp_path / "serving" / "digits")


def _args(s, *more):
    return ["--destination", str(s["root"].parent), "--model-name", "digits", *more]


def test_a_signed_push_verifies(signed, capsys):
    registry = signed["registry"]
    assert registry.signature_status(1) == "signed"
    assert registry.verify(1, public_key=signed["public"]) == [] and registry.verify(2, signed["public"]) == []
    assert cli.main(_args(signed, "verify", "1", "--public-key", signed["public"])) == 0
    assert "version 1: OK (signature verified" in capsys.readouterr().out
    assert cli.main(_args(signed, "verify", "1")) == 0
    assert "signed, signature not checked: pass --public-key" in capsys.readouterr().out


def test_one_flipped_model_byte_fails(signed, capsys):
    model = signed["root"] / "2" / MODEL_FILE
    content = bytearray(model.read_bytes())
    content[3] ^= 0x01
    model.write_bytes(bytes(content))
    assert cli.main(_args(signed, "verify", "2", "--public-key", signed["public"])) == 1
    out = capsys.readouterr().out
    assert out.startswith("version 2: FAILED: sha256 ") and "!= manifest sha256" in out


def test_one_edited_manifest_field_fails(signed, capsys):
    path = signed["root"] / "1" / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    manifest["metrics"]["accuracy"] = 0.9999
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    assert cli.main(_args(signed, "verify", "1", "--public-key", signed["public"])) == 1
    assert "version 1: FAILED: manifest was edited after signing" in capsys.readouterr().out
    # Without the key, an edit that keeps the hashes is not visible: that is what the key is for.
    assert signed["registry"].verify(1) == []


def test_a_replaced_signature_or_another_key_fails(signed, capsys):
    manifest = (signed["root"] / "1" / MANIFEST_FILE).read_bytes()
    (signed["root"] / "1" / signing.SIGNATURE_FILE).write_bytes(signing.sign(manifest, signed["other_private"]))
    assert cli.main(_args(signed, "verify", "1", "--public-key", signed["public"])) == 1
    assert "version 1: FAILED: signature does not verify with" in capsys.readouterr().out
    assert cli.main(_args(signed, "verify", "2", "--public-key", signed["other_public"])) == 1
    assert "version 2: FAILED: signature does not verify with" in capsys.readouterr().out


def test_rollback_refuses_a_version_that_does_not_verify(signed, capsys):
    path = signed["root"] / "1" / MANIFEST_FILE
    path.write_text(path.read_text().replace("integer_only", "float32"))
    assert cli.main(_args(signed, "rollback", "1", "--public-key", signed["public"])) == 2
    err = capsys.readouterr().err
    assert "version 1 is damaged, not rolling back to it" in err and "edited after signing" in err
    assert signed["registry"].latest() == 2


def test_the_deployed_baseline_must_verify(signed):
    from tfx_quantization.tflite_evaluator.executor import deployed_model

    push = PushSettings(destination=str(signed["root"].parent), model_name="digits", public_key=signed["public"])
    path, info = deployed_model(push.to_json())
    assert path.endswith(f"2/{MODEL_FILE}") and info["version"] == "2"
    (signed["root"] / "2" / signing.SIGNATURE_FILE).unlink()
    with pytest.raises(ValueError, match=r"deployed version 2 in .* does not verify \(unsigned: no signature"):
        deployed_model(push.to_json())


@pytest.mark.fast
def test_an_unsigned_registry_lists_and_verifies_hashes_and_says_unsigned(tmp_path, capsys):
    model = tmp_path / "m.tflite"
    model.write_bytes(b"TFL3 model")
    registry = Registry(str(tmp_path / "serving"), "digits")
    registry.push(str(model), {"variant": "integer_only"})
    assert registry.signature_status(1) == "unsigned" and registry.verify(1) == []
    args = ["--destination", str(tmp_path / "serving"), "--model-name", "digits"]
    assert cli.main(args + ["verify"]) == 0
    assert "version 1: OK (hashes and schema; unsigned)" in capsys.readouterr().out
    assert cli.main(args + ["list"]) == 0


@pytest.mark.fast
def test_bad_keys_are_refused_before_anything_is_written(tmp_path):
    model = tmp_path / "m.tflite"
    model.write_bytes(b"TFL3 model")
    (tmp_path / "not-a-key.pem").write_text("hello")
    registry = Registry(str(tmp_path / "serving"), "digits")
    with pytest.raises(signing.SigningError, match="not-a-key.pem is not an unencrypted PEM private key"):
        registry.push(str(model), {"variant": "integer_only"}, signing_key=str(tmp_path / "not-a-key.pem"))
    assert registry.versions() == [] and registry.latest() is None


def test_signing_works_on_object_storage(s3_server, tmp_path):
    private, public = _keypair(tmp_path, "key")
    model = tmp_path / "m.tflite"
    model.write_bytes(b"TFL3 model on s3")
    dest = s3_server.bucket("signed-registry") + "/models"
    code = ("import sys\nfrom tfx_quantization import fsutil\nfrom tfx_quantization.registry import Registry\n"
            "Registry(sys.argv[1], 'digits').push(sys.argv[2], {'variant': 'integer_only'}, signing_key=sys.argv[3])\n"
            "fsutil.exit_process(0)\n")
    env = s3_server.subprocess_env()
    subprocess.run([sys.executable, "-c", code, dest, str(model), private], cwd=REPO_ROOT, env=env, check=True)
    verify = [sys.executable, "-m", "tfx_quantization.pusher", "--destination", dest, "--model-name", "digits", "verify"]
    ok = subprocess.run(verify + ["--public-key", public], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert ok.returncode == 0 and "signature verified" in ok.stdout, ok.stderr[-2000:]
    manifest = s3_server.read("signed-registry", "models/digits/1/manifest.json").replace(b"integer_only", b"float32")
    s3_server.client().put_object(Bucket="signed-registry", Key="models/digits/1/manifest.json", Body=manifest)
    bad = subprocess.run(verify + ["--public-key", public], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert bad.returncode == 1 and "manifest was edited after signing" in bad.stdout
