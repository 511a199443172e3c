"""Where job audio and results live: one small interface, and a directory implementation of it.

Every process of a job deployment (gateway, orchestrator, queue workers) opens the same storage:
a directory shared through a compose volume or a ReadWriteMany PVC (`DALSTON_STORAGE_DIR` /
`--storage-dir`). Keys are `/`-separated relative paths such as `jobs/<id>/chunks/0003.wav`.

WHY this interface and no more: five operations are all the job code uses, and each maps to one
object-store call, so an S3/GCS backend is one more class with no change to its callers:
`put` -> PutObject (multipart above ~100 MB), `open_writer` -> a temp file uploaded on commit,
`get` -> GetObject, `local_copy` -> download to a temp file (decoders want a path or seekable
file), `delete_prefix` -> ListObjectsV2 + DeleteObjects. What it would add: credentials, a bucket
lifecycle rule in place of `delete_prefix` for expired jobs, and eventual-consistency-free reads
(all current major stores are read-after-write consistent, which is what `put` then `get` assumes).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

STORAGE_DIR_ENV = "DALSTON_STORAGE_DIR"


class StorageError(RuntimeError):
    """A key is malformed or missing; the message names it."""


class Storage(Protocol):
    """Blobs by key. Writes are atomic: a reader sees the whole old object or the whole new one."""

    def put(self, key: str, data: bytes) -> None: ...

    def open_writer(self, key: str) -> contextlib.AbstractContextManager[BinaryIO]:
        """A binary file to write; the object appears under `key` only when the block exits cleanly."""
        ...

    def get(self, key: str) -> bytes: ...

    def local_copy(self, key: str) -> contextlib.AbstractContextManager[Path]:
        """A local path holding the object for the duration of the block (decoders want a path)."""
        ...

    def exists(self, key: str) -> bool: ...

    def delete_prefix(self, prefix: str) -> None: ...


class DirectoryStorage:
    """Storage in a local or shared directory (NFS, a ReadWriteMany volume, a compose volume)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"DirectoryStorage({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise StorageError(f"invalid storage key {key!r}")
        return self.root.joinpath(*parts)

    def put(self, key: str, data: bytes) -> None:
        with self.open_writer(key) as out:
            out.write(data)

    @contextlib.contextmanager
    def open_writer(self, key: str) -> Iterator[BinaryIO]:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                yield out
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)  # atomic on one filesystem: readers never see a partial object
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise StorageError(f"storage object {key!r} not found under {self.root}") from None

    @contextlib.contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        path = self._path(key)
        if not path.is_file():
            raise StorageError(f"storage object {key!r} not found under {self.root}")
        yield path

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete_prefix(self, prefix: str) -> None:
        path = self._path(prefix.rstrip("/"))
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def storage_from(arg: str | Path | None) -> DirectoryStorage | None:
    """`--storage-dir`, else $DALSTON_STORAGE_DIR, else None (jobs are then unavailable)."""
    chosen = arg or os.environ.get(STORAGE_DIR_ENV)
    return DirectoryStorage(chosen) if chosen else None
