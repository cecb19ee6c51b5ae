"""A versioned model registry: <base>/<model_name>/<version>/ + LATEST, on a local disk
or on object storage (s3://, gs://).

    <base>/<model_name>/1/model.tflite
    <base>/<model_name>/1/manifest.json   written last: the version's commit marker
    <base>/<model_name>/2/...
    <base>/<model_name>/LATEST            the current version number, one line, written last

A version counts only once its manifest exists: `versions()`, `list`, `verify`, the
evaluator's deployed baseline and any poller must ignore a numbered folder without one.

Local disk: a version is staged in a hidden sibling folder (fsynced, 0644 files, 0755
folders) and renamed into place whole; LATEST is replaced atomically; writers hold an
exclusive flock from choosing the number to updating LATEST.

Object storage has no rename and no lock. A writer first claims the version number by
creating `<version>/.claim` only if it does not exist (a conditional put: S3's
If-None-Match; on stores where this module cannot make one, a check before the write,
which is safe only with one pusher at a time: run one pipeline at a time, as the Kubeflow
schedule does with max_concurrency=1). A claim that is taken makes the writer try the next
number. It then writes model.tflite, then manifest.json, then LATEST (one object each; a
put is all-or-nothing). A writer killed at any point leaves at most a claimed folder
without a manifest, which readers ignore and the next number skips. LATEST never moves
back: a writer that finds a higher LATEST leaves it.
"""
from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

from tfx_quantization import fsutil, signing
from tfx_quantization.contracts import LATEST_FILE, MANIFEST_FILE, MODEL_FILE
from tfx_quantization.settings import PushSettings

LOCK_FILE = ".lock"
CLAIM_FILE = ".claim"
MAX_CLAIM_ATTEMPTS = 20


# The fields every version's manifest.json carries, and their types.
MANIFEST_SCHEMA = {"version": int, "sha256": str, "size_bytes": int, "model_file": str, "variant": str,
                   "created_at": str}


def manifest_schema_problems(manifest) -> List[str]:
    if not isinstance(manifest, dict):
        return ["not a JSON object"]
    problems = []
    for key, kind in MANIFEST_SCHEMA.items():
        if key not in manifest:
            problems.append(f"{key!r} is missing")
        elif not isinstance(manifest[key], kind) or isinstance(manifest[key], bool):
            problems.append(f"{key!r} is {type(manifest[key]).__name__}, not {kind.__name__}")
    sha = manifest.get("sha256")
    if isinstance(sha, str) and (len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha)):
        problems.append("'sha256' is not 64 hex digits")
    return problems


class VersionTaken(RuntimeError):
    """Another writer holds the version number this writer tried to claim."""


class RegistryWriteError(OSError):
    """A push that could not be written (no space, no permission): the message names the
    registry, the version being written, what was cleaned up and the fix."""


def _write_fix(error: OSError, root: str) -> str:
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"free space on the filesystem of {root} (or set QP_PUSH__DESTINATION to another disk) and push again"
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (f"make {root} writable by this user (uid {os.getuid()}) (or set QP_PUSH__DESTINATION to a folder it "
                "can write) and push again")
    return "fix the destination and push again"


class Registry:
    def __init__(self, base: str | Path, model_name: str):
        base = str(base)
        PushSettings.build(destination=base, model_name=model_name)  # the name's rules live there
        self.base = base
        self.remote = fsutil.is_remote(base)
        self.root = fsutil.join(base, model_name)

    # ---- reading -------------------------------------------------------------------
    def _path(self, *parts: str) -> str:
        return fsutil.join(self.root, *parts)

    def _numbered(self) -> List[int]:
        """Every numbered folder, committed or not."""
        return sorted(int(n) for n in fsutil.listdir(self.root) if n.isdigit())

    def versions(self) -> List[int]:
        """The committed versions: numbered folders that hold a manifest."""
        return [v for v in self._numbered() if fsutil.exists(self._path(str(v), MANIFEST_FILE))]

    def exists(self) -> bool:
        return fsutil.isdir(self.root)

    def latest(self) -> Optional[int]:
        path = self._path(LATEST_FILE)
        if not fsutil.exists(path):
            return None
        text = fsutil.read_text(path).strip()
        if not text.isdigit():
            raise ValueError(f"{path} holds {text!r}, not a version number")
        return int(text)

    def version_dir(self, version: int) -> str:
        return self._path(str(int(version)))

    def manifest(self, version: int) -> Dict:
        path = self._path(str(int(version)), MANIFEST_FILE)
        if not fsutil.exists(path):
            raise ValueError(f"version {version} of {self.root} has no {MANIFEST_FILE}")
        return fsutil.read_json(path)

    def state(self) -> str:
        """What is deployed, as one string ('none' when nothing is): LATEST, its model's
        sha256 (as its manifest records it) and the sha256 of the exact bytes of its
        manifest and of its signature. The evaluator's cache key (pipeline/dag.py): any
        change to the deployed version, an edited manifest or a replaced signature included,
        makes the evaluator run again, and so verify that version again."""
        latest = self.latest()
        if latest is None:
            return "none"
        parts = [str(latest)]
        try:
            parts.append(str(self.manifest(latest).get("sha256", "")))
        except (ValueError, json.JSONDecodeError, AttributeError):
            parts.append("unreadable")
        for name in (MANIFEST_FILE, signing.SIGNATURE_FILE):
            path = self._path(str(latest), name)
            parts.append(fsutil.sha256_file(path) if fsutil.exists(path) else "-")
        return ":".join(parts)

    def signature_status(self, version: int) -> str:
        """'signed' when the version has a signature file, else 'unsigned'."""
        return "signed" if fsutil.exists(self._path(str(version), signing.SIGNATURE_FILE)) else "unsigned"

    def verify(self, version: int, public_key: str = "") -> List[str]:
        """Problems with a version (empty when it is intact): the manifest's schema, the
        model's size and sha256 against it, and, with a public key, the manifest's signature
        (an unsigned version then fails). Without a key the signature is not checked:
        `signature_status` says whether there is one."""
        if not fsutil.isdir(self.version_dir(version)):
            return [f"version {version} does not exist in {self.root}"]
        manifest_path = self._path(str(version), MANIFEST_FILE)
        if not fsutil.exists(manifest_path):
            return [f"version {version} has no {MANIFEST_FILE}: it was never committed"]
        manifest_bytes = fsutil.read_bytes(manifest_path)
        try:
            manifest = json.loads(manifest_bytes)
        except json.JSONDecodeError as e:
            return [f"manifest unreadable: {e}"]
        problems = [f"manifest schema: {p}" for p in manifest_schema_problems(manifest)]
        model = self._path(str(version), MODEL_FILE)
        if not fsutil.exists(model):
            problems.append(f"{MODEL_FILE} is missing")
        else:
            size, sha = fsutil.size(model), fsutil.sha256_file(model)
            if size != manifest.get("size_bytes"):
                problems.append(f"size {size} != manifest size_bytes {manifest.get('size_bytes')}")
            if sha != manifest.get("sha256"):
                problems.append(f"sha256 {sha} != manifest sha256 {manifest.get('sha256')}")
        if manifest.get("version") != version:
            problems.append(f"manifest says version {manifest.get('version')}, folder is {version}")
        if public_key:
            sig_path = self._path(str(version), signing.SIGNATURE_FILE)
            envelope = fsutil.read_bytes(sig_path) if fsutil.exists(sig_path) else None
            problems += signing.verify(manifest_bytes, envelope, public_key)
        return problems

    def list(self) -> List[Dict]:
        latest = self.latest()
        rows = []
        for v in self.versions():
            try:
                m = self.manifest(v)
            except (ValueError, json.JSONDecodeError) as e:
                rows.append({"version": v, "latest": v == latest, "error": str(e)})
                continue
            metrics = m.get("metrics", {})
            rows.append({
                "version": v, "latest": v == latest, "variant": m.get("variant"),
                "accuracy": metrics.get("accuracy"), "accuracy_drop": metrics.get("accuracy_drop"),
                "size_bytes": m.get("size_bytes"), "sha256": m.get("sha256"), "created_at": m.get("created_at"),
            })
        return rows

    # ---- writing ---------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Local disks: an exclusive flock. Object stores: nothing (see the module doc)."""
        if self.remote:
            yield
            return
        fsutil.make_folders(self.root)
        fd = os.open(self._path(LOCK_FILE), os.O_CREAT | os.O_RDWR, fsutil.FILE_MODE)
        with contextlib.suppress(PermissionError):  # another user's lock file keeps its mode
            os.fchmod(fd, fsutil.FILE_MODE)  # whatever the umask
        with os.fdopen(fd, "a+") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def _set_latest(self, version: int) -> None:
        if self.remote:
            current = self.latest()
            if current is not None and current > version:
                return  # a later version was committed meanwhile: LATEST never moves back
        fsutil.write_bytes_atomic(self._path(LATEST_FILE), f"{version}\n".encode())

    def _remove_stale_staging(self) -> None:
        # Local, under the lock: no other writer is staging, so a hidden entry is left from
        # a crash (a version's staging folder, LATEST's temporary file); the lock file stays.
        for p in Path(self.root).iterdir():
            if p.name.startswith(".") and p.name != LOCK_FILE:
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)

    def _same_as_latest(self, sha: str) -> Optional[int]:
        latest = self.latest()
        if latest is not None and not self.verify(latest) and self.manifest(latest).get("sha256") == sha:
            return latest
        return None

    def push(self, model_path: str, manifest: Dict, signing_key: str = "") -> Tuple[int, bool]:
        """Publishes model_path as a new version unless LATEST already has the same bytes.

        Returns (version, created). `manifest` is extended with version, sha256, size and
        creation time. With a signing key, a DSSE signature over the manifest's bytes is
        written beside it, before the manifest (which stays the commit marker).
        """
        content = fsutil.read_bytes(model_path)
        sha = fsutil.sha256_bytes(content)

        def full(version: int) -> Dict:
            return dict(manifest, version=version, sha256=sha, size_bytes=len(content), model_file=MODEL_FILE,
                        created_at=datetime.datetime.now(datetime.timezone.utc).isoformat())

        if not self.remote:
            return self._push_local(content, sha, full, signing_key)
        # Object storage (see the module doc): claim, model, signature, manifest, LATEST.
        same = self._same_as_latest(sha)
        if same is not None:
            return same, False
        version = self._claim_next()
        manifest_bytes = fsutil.to_json(full(version))
        fsutil.write_bytes_atomic(self._path(str(version), MODEL_FILE), content)
        if signing_key:
            fsutil.write_bytes_atomic(self._path(str(version), signing.SIGNATURE_FILE),
                                      signing.sign(manifest_bytes, signing_key))
        fsutil.write_bytes_atomic(self._path(str(version), MANIFEST_FILE), manifest_bytes)
        self._set_latest(version)
        return version, True

    def _push_local(self, content: bytes, sha: str, full, signing_key: str) -> Tuple[int, bool]:
        """The local push: staged, renamed into place, then LATEST. A write that fails (no
        space, no permission) leaves the registry as it was: the staging folder is removed,
        and a version already renamed into place is removed when LATEST cannot point to it;
        the RegistryWriteError says so."""
        version: Optional[int] = None
        step = f"creating {self.root}"
        latest_before: Optional[int] = None
        staged = committed = False
        try:
            with self._locked():
                latest_before = self.latest()
                same = self._same_as_latest(sha)
                if same is not None:
                    return same, False
                self._remove_stale_staging()
                version = max(self._numbered(), default=0) + 1
                manifest_bytes = fsutil.to_json(full(version))
                step = f"writing version {version}"
                with fsutil.staged_dir(self.version_dir(version), commit_last=[MANIFEST_FILE]) as staging:
                    staged = True
                    step = f"writing version {version} ({MODEL_FILE}, {len(content):,} bytes)"
                    (staging / MODEL_FILE).write_bytes(content)
                    if signing_key:
                        step = f"writing version {version} ({signing.SIGNATURE_FILE})"
                        (staging / signing.SIGNATURE_FILE).write_bytes(signing.sign(manifest_bytes, signing_key))
                    step = f"writing version {version} ({MANIFEST_FILE})"
                    (staging / MANIFEST_FILE).write_bytes(manifest_bytes)
                    step = f"committing version {version} (fsync and rename into place)"
                committed = True
                step = f"pointing {LATEST_FILE} to version {version}"
                self._set_latest(version)
                return version, True
        except RegistryWriteError:
            raise
        except OSError as e:
            cleaned = self._clean_failed_push(version if staged else None, committed)
            shown = f"[Errno {e.errno}] {e.strerror}" if e.strerror else str(e)
            # The file that failed, unless it is a hidden staging or temporary name (now removed).
            where = e.filename if e.filename and not os.path.basename(str(e.filename)).startswith(".") else ""
            error = RegistryWriteError(
                f"push to {self.root} failed while {step}: {shown}{f' ({where})' if where else ''}; "
                f"{cleaned}; LATEST still {latest_before if latest_before is not None else 'absent'}: "
                f"{_write_fix(e, self.root)}")
            error.errno = e.errno
            raise error from e

    def _clean_failed_push(self, version: Optional[int], committed: bool) -> str:
        """After a failed local write (under the lock): removes any staging left behind (the
        staging folder removes itself on error) and a version that was renamed into place
        but that LATEST could not point to. Says what was removed, and what could not be."""
        if version is None or not os.path.isdir(self.root):
            return "nothing was written"  # failed before a version's staging folder existed
        self._remove_stale_staging()
        if committed:
            shutil.rmtree(self.version_dir(version), ignore_errors=True)
            done = f"removed version {version}, which LATEST could not point to"
        else:
            done = f"removed the unfinished version {version} (its hidden staging folder; it was never visible)"
        left = [p.name for p in Path(self.root).iterdir() if p.name.startswith(".") and p.name != LOCK_FILE]
        if os.path.exists(self.version_dir(version)):
            left.append(str(version))
        return done + (f" (could not remove {left} in {self.root}: remove them by hand)" if left else "")

    def _claim_next(self) -> int:
        """Object stores: the next free version number, claimed by a conditional create."""
        version = max(self._numbered(), default=0) + 1
        token = uuid.uuid4().hex.encode()
        for _ in range(MAX_CLAIM_ATTEMPTS):
            if fsutil.create_exclusive(self._path(str(version), CLAIM_FILE), token):
                return version
            version += 1
        raise VersionTaken(
            f"could not claim a version number in {self.root} after {MAX_CLAIM_ATTEMPTS} attempts: other pushers "
            "are writing; run one pipeline at a time against one registry")

    def rollback(self, version: int, public_key: str = "") -> int:
        """Points LATEST at an earlier version that verifies (with the public key, when given:
        then its signature too). Writes nothing else."""
        with self._locked():
            if version not in self.versions():
                raise ValueError(f"version {version} does not exist in {self.root} (versions: {self.versions()})")
            problems = self.verify(version, public_key)
            if problems:
                raise ValueError(f"version {version} is damaged, not rolling back to it: {problems}")
            fsutil.write_bytes_atomic(self._path(LATEST_FILE), f"{version}\n".encode())
        return version


TARGETS_FOLDER = "targets"  # <base>/<model>/targets/<target>/<version>/: one registry per deployment target


def open_registry(base: str | Path, model_name: str, target: str = "") -> Registry:
    """The model's registry (`<base>/<model>/`), or a deployment target's
    (`<base>/<model>/targets/<target>/`: the same layout, its own versions and LATEST).
    The main registry's `versions()` ignores the `targets` folder (not a number)."""
    if not target:
        return Registry(base, model_name)
    return Registry(fsutil.join(str(base), model_name, TARGETS_FOLDER), target)
