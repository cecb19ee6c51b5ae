"""One home for file IO on artifact URIs: local paths, s3:// and gs:// alike.

Every read and write goes through TensorFlow's file API (tf.io.gfile), so the same code
works on a local disk and on object storage. What "appears complete or not at all" means
differs: on a local disk a file or folder is written beside its final name and renamed
into place; object stores have no rename, but one object is written whole, so a file is
written in one put and a folder's files are uploaded with its commit file (e.g. the
manifest) last. Readers of a folder look for the commit file.

Local paths are served by the standard library (fast, and the registry CLI needs no
TensorFlow); object-store URIs by tf.io.gfile, imported on first use.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import posixpath
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Iterator, List, Sequence


_S3_IN_USE = False  # set once TensorFlow may have touched s3:// (see exit_process)


def register_filesystems() -> None:
    """Makes TensorFlow (and so TFX's fileio) read and write s3:// URIs: the S3 filesystem
    ships in tensorflow-io. gs:// is built into TensorFlow. Safe to call more than once."""
    global _S3_IN_USE
    _S3_IN_USE = True
    try:
        import tensorflow_io  # noqa: F401  (registers s3:// with tf.io.gfile)
    except ImportError:  # only s3:// needs it; the error then names the scheme
        pass


def gfile(uri: str | Path = ""):
    """tf.io.gfile, with the S3 filesystem registered when `uri` is on S3."""
    import tensorflow as tf

    if str(uri).startswith("s3://"):
        register_filesystems()
    return tf.io.gfile


def exit_process(code: int) -> None:
    """Ends an entry point with `code`. Once tensorflow-io's S3 filesystem has been used,
    the interpreter's teardown can abort ("pure virtual method called") and turn a success
    into exit 134; so, after S3 use, flush everything and leave without the teardown.
    Otherwise a normal exit (atexit handlers run: the TFX CLI relies on them)."""
    import logging
    import sys

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    if _S3_IN_USE:
        os._exit(code)
    sys.exit(code)


def s3_client():
    """A boto3 S3 client configured like TensorFlow's S3 filesystem: the endpoint from
    S3_ENDPOINT (or AWS_ENDPOINT_URL), credentials and region from the usual AWS variables."""
    import boto3

    endpoint = os.environ.get("S3_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL") or None
    if endpoint and "://" not in endpoint:
        use_https = os.environ.get("S3_USE_HTTPS", "1") not in ("0", "false")
        endpoint = f"{'https' if use_https else 'http'}://{endpoint}"
    return boto3.client("s3", endpoint_url=endpoint, region_name=os.environ.get("AWS_REGION") or None)


def _bucket_key(uri: str) -> tuple:
    bucket, _, key = uri.split("://", 1)[1].partition("/")
    return bucket, key


def create_exclusive(uri: str | Path, content: bytes) -> bool:
    """Creates the file only if it does not exist; False when it already did.

    Local: O_CREAT|O_EXCL. s3://: a conditional put (If-None-Match: *), atomic on the
    server. Other object stores: a check, then a put: safe only when writers are
    serialised (documented in components/pusher/README.md).
    """
    uri = str(uri)
    if not is_remote(uri):
        make_folders(os.path.dirname(uri))
        try:
            fd = os.open(uri, os.O_CREAT | os.O_EXCL | os.O_WRONLY, FILE_MODE)
        except FileExistsError:
            return False
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        return True
    if uri.startswith("s3://"):
        from botocore.exceptions import ClientError

        bucket, key = _bucket_key(uri)
        try:
            s3_client().put_object(Bucket=bucket, Key=key, Body=content, IfNoneMatch="*")
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            raise
        return True
    if exists(uri):
        return False
    write_bytes_atomic(uri, content)
    return True


def is_remote(uri: str | Path) -> bool:
    """True for object-store URIs (s3://, gs://, ...), False for local paths."""
    return "://" in str(uri)


def join(base: str | Path, *parts: str) -> str:
    base = str(base)
    return posixpath.join(base, *parts) if is_remote(base) else os.path.join(base, *parts)


def exists(uri: str | Path) -> bool:
    return gfile(uri).exists(str(uri)) if is_remote(uri) else os.path.exists(uri)


def isdir(uri: str | Path) -> bool:
    return gfile(uri).isdir(str(uri)) if is_remote(uri) else os.path.isdir(uri)


def listdir(uri: str | Path) -> List[str]:
    """Entry names of a folder (no trailing slashes), sorted; [] when it does not exist."""
    if not isdir(uri):
        return []
    names = gfile(uri).listdir(str(uri)) if is_remote(uri) else os.listdir(uri)
    return sorted(name.rstrip("/") for name in names)


FOLDER_MODE, FILE_MODE = 0o755, 0o644  # what the registry writes, whatever the umask


def make_folders(path: str | Path) -> None:
    """Creates a local folder and its missing parents, each made 0755 explicitly: os.makedirs'
    mode is masked by the umask (077 would make them 0700, unreadable to a serving process
    running as another user). Folders that already exist keep their mode."""
    path = os.path.abspath(str(path))
    missing = []
    while not os.path.isdir(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, FOLDER_MODE)
        except FileExistsError:
            if os.path.isdir(folder):
                continue  # another writer made it meanwhile
            raise
        os.chmod(folder, FOLDER_MODE)


def makedirs(uri: str | Path) -> None:
    if is_remote(uri):
        gfile(uri).makedirs(str(uri))
    else:
        make_folders(uri)


def _open(uri: str | Path, mode: str):
    return gfile(uri).GFile(str(uri), mode) if is_remote(uri) else open(uri, mode)


def read_bytes(uri: str | Path) -> bytes:
    with _open(uri, "rb") as f:
        return f.read()


def read_text(uri: str | Path) -> str:
    return read_bytes(uri).decode("utf-8")


def read_json(uri: str | Path):
    return json.loads(read_text(uri))


def sha256_bytes(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def sha256_file(uri: str | Path) -> str:
    h = hashlib.sha256()
    with _open(uri, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def size(uri: str | Path) -> int:
    return int(gfile(uri).stat(str(uri)).length) if is_remote(uri) else os.path.getsize(uri)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes_atomic(uri: str | Path, content: bytes) -> None:
    """The file at `uri` holds `content` whole, or keeps what it held before.

    Local: written to a hidden sibling, fsynced, made 0644 (readable by a serving process
    running as another user) and renamed over the target. Object store: one put.
    """
    uri = str(uri)
    if is_remote(uri):
        with gfile(uri).GFile(uri, "wb") as f:
            f.write(content)
        return
    folder = os.path.dirname(os.path.abspath(uri))
    make_folders(folder)
    tmp = os.path.join(folder, f".{os.path.basename(uri)}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, uri)
        _fsync_dir(folder)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def to_json(obj) -> bytes:
    return json.dumps(obj, indent=2, sort_keys=True).encode("utf-8")


def write_json_atomic(uri: str | Path, obj) -> None:
    write_bytes_atomic(uri, to_json(obj))


def _local_files(root: Path) -> List[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def upload_tree(local: Path, remote: str, commit_last: Sequence[str] = ()) -> None:
    """Copies a local folder's files to `remote`, the `commit_last` names (relative paths)
    after every other file, so a reader that waits for them sees a complete folder."""
    files = _local_files(local)
    rel = [p.relative_to(local).as_posix() for p in files]
    order = sorted(range(len(files)), key=lambda i: (rel[i] in commit_last, rel[i]))
    for i in order:
        target = join(remote, rel[i])
        gfile(target).makedirs(posixpath.dirname(target))
        gfile(target).copy(str(files[i]), target, overwrite=True)


@contextlib.contextmanager
def staged_dir(final: str | Path, commit_last: Sequence[str] = ()) -> Iterator[Path]:
    """Yields an empty local folder to write into; on success its entries appear in `final`.

    Local `final`: the staging folder is a hidden sibling, renamed into place (or its
    entries renamed in, when `final` exists; they may not overwrite anything there).
    Object-store `final`: the staging folder is a local temporary folder whose files are
    uploaded on success, `commit_last` last. On error nothing is written to `final`.
    """
    final_s = str(final)
    if is_remote(final_s):
        staging = Path(tempfile.mkdtemp(prefix="qp-staging-"))
        try:
            yield staging
            clashes = [p.name for p in staging.iterdir() if exists(join(final_s, p.name))]
            if clashes:
                raise FileExistsError(f"{final_s} already holds {clashes}: refusing to overwrite")
            upload_tree(staging, final_s, commit_last)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return
    final_p = Path(final_s)
    make_folders(final_p.parent)
    staging = Path(tempfile.mkdtemp(prefix=f".{final_p.name}.staging-", dir=final_p.parent))
    try:
        yield staging
        # Readable by a serving process running as another user; durable before the rename.
        for p in sorted(staging.rglob("*"), reverse=True) + [staging]:
            os.chmod(p, FOLDER_MODE if p.is_dir() else FILE_MODE)
            if p.is_file():
                with open(p, "rb") as f:
                    os.fsync(f.fileno())
            else:
                _fsync_dir(str(p))
        if not final_p.exists():
            os.rename(staging, final_p)
            _fsync_dir(str(final_p.parent))
            return
        clashes = [p.name for p in staging.iterdir() if (final_p / p.name).exists()]
        if clashes:
            raise FileExistsError(f"{final_p} already holds {clashes}: refusing to overwrite")
        for entry in sorted(staging.iterdir()):
            os.rename(entry, final_p / entry.name)
        staging.rmdir()
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
