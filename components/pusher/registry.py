"""A versioned model registry on a filesystem: <base>/<model_name>/<version>/ + LATEST.

    <base>/<model_name>/1/model.tflite
    <base>/<model_name>/1/manifest.json
    <base>/<model_name>/2/...
    <base>/<model_name>/LATEST          the current version number, one line
    <base>/<model_name>/.lock           serializes writers (fcntl.flock)

A version is staged in a hidden sibling folder, written with fsync, and renamed into place
only when complete; LATEST is replaced atomically (components/fsutil.py). A crash at any
moment leaves either no new version or a complete one, and LATEST naming a complete version. Writers
hold an exclusive lock from choosing the version number to updating LATEST, so concurrent
pushers never share or lose a version. Readers need no lock. Local (POSIX) filesystems.
"""
from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import shutil
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

from components import fsutil
from components.contracts import LATEST_FILE, MANIFEST_FILE, MODEL_FILE
from components.settings import PushSettings

LOCK_FILE = ".lock"


class Registry:
    def __init__(self, base: str | Path, model_name: str):
        base = str(base)
        if "://" in base:
            raise ValueError(
                f"push destination {base!r} is not a local path: atomic versioning needs POSIX rename "
                "and file locks; push to a local or mounted filesystem (e.g. a gcsfuse mount)"
            )
        PushSettings.build(destination=base, model_name=model_name)  # the name's rules live there
        self.root = Path(base) / model_name

    # ---- reading -------------------------------------------------------------------
    def versions(self) -> List[int]:
        if not self.root.is_dir():
            return []
        return sorted(int(p.name) for p in self.root.iterdir() if p.name.isdigit() and p.is_dir())

    def latest(self) -> Optional[int]:
        path = self.root / LATEST_FILE
        if not path.exists():
            return None
        text = path.read_text().strip()
        if not text.isdigit():
            raise ValueError(f"{path} holds {text!r}, not a version number")
        return int(text)

    def version_dir(self, version: int) -> Path:
        return self.root / str(int(version))

    def manifest(self, version: int) -> Dict:
        path = self.version_dir(version) / MANIFEST_FILE
        if not path.exists():
            raise ValueError(f"version {version} of {self.root} has no {MANIFEST_FILE}")
        return json.loads(path.read_text())

    def verify(self, version: int) -> List[str]:
        """Problems with a version (empty when it is intact)."""
        folder = self.version_dir(version)
        if not folder.is_dir():
            return [f"version {version} does not exist in {self.root}"]
        try:
            manifest = self.manifest(version)
        except (ValueError, json.JSONDecodeError) as e:
            return [f"manifest unreadable: {e}"]
        model = folder / MODEL_FILE
        if not model.exists():
            return [f"{MODEL_FILE} is missing"]
        problems = []
        size, sha = model.stat().st_size, fsutil.sha256_file(model)
        if size != manifest.get("size_bytes"):
            problems.append(f"size {size} != manifest size_bytes {manifest.get('size_bytes')}")
        if sha != manifest.get("sha256"):
            problems.append(f"sha256 {sha} != manifest sha256 {manifest.get('sha256')}")
        if manifest.get("version") != version:
            problems.append(f"manifest says version {manifest.get('version')}, folder is {version}")
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
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / LOCK_FILE, "a+") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def _set_latest(self, version: int) -> None:
        fsutil.write_bytes_atomic(self.root / LATEST_FILE, f"{version}\n".encode())

    def _remove_stale_staging(self) -> None:
        # Under the lock no other writer is staging: a hidden entry is left from a crash
        # (a version's staging folder, LATEST's temporary file); the lock file stays.
        for p in self.root.iterdir():
            if p.name.startswith(".") and p.name != LOCK_FILE:
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)

    def push(self, model_path: str | Path, manifest: Dict) -> Tuple[int, bool]:
        """Publishes model_path as a new version unless LATEST already has the same bytes.

        Returns (version, created). `manifest` is extended with version, sha256, size and
        creation time.
        """
        content = fsutil.read_bytes(model_path)
        sha = fsutil.sha256_bytes(content)
        with self._locked():
            self._remove_stale_staging()
            latest = self.latest()
            if latest is not None and not self.verify(latest) and self.manifest(latest).get("sha256") == sha:
                return latest, False
            version = max(self.versions(), default=0) + 1
            full = dict(
                manifest, version=version, sha256=sha, size_bytes=len(content), model_file=MODEL_FILE,
                created_at=datetime.datetime.now(datetime.timezone.utc).isoformat(),
            )
            with fsutil.staged_dir(self.version_dir(version), commit_last=[MANIFEST_FILE]) as staging:
                (staging / MODEL_FILE).write_bytes(content)
                (staging / MANIFEST_FILE).write_bytes(fsutil.to_json(full))
            self._set_latest(version)
            return version, True

    def rollback(self, version: int) -> int:
        """Points LATEST at an earlier, intact version. Writes nothing else."""
        with self._locked():
            if version not in self.versions():
                raise ValueError(f"version {version} does not exist in {self.root} (versions: {self.versions()})")
            problems = self.verify(version)
            if problems:
                raise ValueError(f"version {version} is damaged, not rolling back to it: {problems}")
            self._set_latest(version)
        return version
