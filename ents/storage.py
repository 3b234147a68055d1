"""File storage: ``ctx.storage`` and the ``_storage`` system table.

Blobs live in a directory (beside the database file by default), one file per stored
id; the ``_storage`` row (sha256, size, content type) is written in the caller's
transaction. A blob is written to a temporary file, flushed and renamed into place, so a
half-written file is never visible; it is removed again if the transaction rolls back,
and a deleted blob is unlinked only once the deleting transaction commits.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import EntNotFoundError, InvalidIdError, StorageError, ValidationError
from .values import check_str

if TYPE_CHECKING:
    from .app import App
    from .transaction import Transaction

TABLE = "_storage"
log = logging.getLogger("ents.storage")

# The store's layout: <dir>/<rid % 256 as 2 hex digits>/<rid>.blob, uploads in <dir>/.upload-*.tmp
_BLOB_SUFFIX = ".blob"
_UPLOAD_PREFIX, _UPLOAD_SUFFIX = ".upload-", ".tmp"
_HEX_DIGITS = set("0123456789abcdef")


class BlobStore:
    """Where blob bytes live for one App."""

    def __init__(self, directory: str | os.PathLike[str], url_base: str | None = None, *, temporary: bool = False) -> None:
        self.directory = Path(directory)
        self.url_base = url_base.rstrip("/") if url_base else None
        self.temporary = temporary
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None

    @classmethod
    def temporary_store(cls, url_base: str | None = None) -> BlobStore:
        tmp = tempfile.TemporaryDirectory(prefix="ents-files-")
        store = cls(tmp.name, url_base, temporary=True)
        store._tmpdir = tmp
        return store

    def path(self, rid: int) -> Path:
        return self.directory / f"{rid % 256:02x}" / f"{rid}{_BLOB_SUFFIX}"

    def write_temp(self, data: bytes) -> Path:
        """Write ``data`` to a new temporary file in the store (same filesystem as the
        blobs, so that :meth:`place` is an atomic rename)."""
        name: str | None = None
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            # Not mkstemp: its 0600 mode would ignore the umask, and a blob is meant to be
            # readable by whatever serves storage_url.
            candidate = str(self.directory / f"{_UPLOAD_PREFIX}{uuid.uuid4().hex}{_UPLOAD_SUFFIX}")
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
            name = candidate
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            if name is not None:
                Path(name).unlink(missing_ok=True)
            raise StorageError(f"Cannot write a blob in {self.directory}: {exc}", table=TABLE) from exc
        return Path(name)

    def place(self, temp: Path, rid: int) -> Path:
        """Rename a complete temporary file to the blob's final path."""
        final = self.path(rid)
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(temp, final)
        except OSError as exc:
            raise StorageError(f"Cannot store blob {final}: {exc}", table=TABLE) from exc
        _sync_directory(final.parent)
        return final

    def remove(self, rid: int) -> None:
        try:
            self.path(rid).unlink()
        except FileNotFoundError:
            pass

    def read(self, rid: int) -> bytes | None:
        try:
            return self.path(rid).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"Cannot read blob {self.path(rid)}: {exc}", table=TABLE) from exc

    def url(self, id: str, rid: int) -> str:
        if self.url_base:
            return f"{self.url_base}/{id}"
        return self.path(rid).resolve().as_uri()

    def aged_files(self, cutoff: float) -> Iterator[tuple[Path, int | None]]:
        """Blobs (with their row key) and uploads (None) last modified before ``cutoff``
        (seconds since the epoch); any other file is not the store's and is not listed."""
        try:
            top = list(os.scandir(self.directory))
        except OSError:  # no directory yet, or unreadable
            return
        for entry in top:
            try:
                if entry.name.startswith(_UPLOAD_PREFIX) and entry.name.endswith(_UPLOAD_SUFFIX) and entry.is_file():
                    if entry.stat().st_mtime < cutoff:
                        yield Path(entry.path), None
                    continue
                if len(entry.name) != 2 or not set(entry.name) <= _HEX_DIGITS or not entry.is_dir():
                    continue
                with os.scandir(entry.path) as blobs:
                    for blob in blobs:
                        stem = blob.name[: -len(_BLOB_SUFFIX)]
                        if not blob.name.endswith(_BLOB_SUFFIX) or not stem.isdigit():
                            continue
                        if self.path(int(stem)) == Path(blob.path) and blob.is_file() and blob.stat().st_mtime < cutoff:
                            yield Path(blob.path), int(stem)
            except OSError:
                continue  # removed meanwhile, or unreadable

    def close(self) -> None:
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None


def _sync_directory(directory: Path) -> None:
    # Make the rename itself durable before the row that names it commits.
    if not hasattr(os, "O_DIRECTORY"):
        return  # pragma: no cover - Windows has no directory fsync
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:  # pragma: no cover - best effort
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some filesystems refuse
        pass
    finally:
        os.close(fd)


def _decode(tx: Transaction, id: Any) -> int:
    try:
        return tx.app.codec.decode_for(TABLE, id, what="a storage id")
    except InvalidIdError as exc:
        raise StorageError(exc.message, table=TABLE, id=exc.id) from None


def store(tx: Transaction, data: Any, content_type: str | None = None) -> str:
    tx.require_write("store files")
    if isinstance(data, (bytearray, memoryview)):
        data = bytes(data)
    if not isinstance(data, bytes):
        raise ValidationError(f"ctx.storage.store() takes bytes, got {type(data).__name__}")
    if content_type is not None:
        # Validated like any stored string: the same value must be accepted (or refused)
        # on SQLite and PostgreSQL, and before a blob is written.
        if not isinstance(content_type, str):
            raise ValidationError(
                f"ctx.storage.store(): content_type must be a string, got {type(content_type).__name__}",
                table=TABLE,
                field="content_type",
            )
        try:
            check_str(content_type, "content_type")
        except ValidationError as exc:
            raise ValidationError(f"ctx.storage.store(): {exc.message}", table=TABLE, field="content_type") from None
    blobs: BlobStore = tx.app.blobs
    temp = blobs.write_temp(data)
    try:
        rt = tx.rt(TABLE)
        rid = tx.insert_row(rt, ("sha256", "size", "content_type"), (hashlib.sha256(data).hexdigest(), len(data), content_type))
        assert rid is not None
        blobs.place(temp, rid)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    tx.after_rollback.append(partial(blobs.remove, rid))
    tx.touched()
    return rt.encode_rid(rid)


def get_metadata(tx: Transaction, id: Any) -> dict[str, Any] | None:
    rid = _decode(tx, id)
    rt = tx.rt(TABLE)
    row = tx.fetchone(rt.sql_get, (rid,))
    return rt.doc(row) if row is not None else None


def get(tx: Transaction, id: Any) -> bytes | None:
    rid = _decode(tx, id)
    rt = tx.rt(TABLE)
    if tx.fetchone(rt.sql_exists, (rid,)) is None:
        return None
    data: bytes | None = tx.app.blobs.read(rid)
    return data


def get_url(tx: Transaction, id: Any) -> str | None:
    rid = _decode(tx, id)
    rt = tx.rt(TABLE)
    if tx.fetchone(rt.sql_exists, (rid,)) is None:
        return None
    url: str = tx.app.blobs.url(str(id), rid)
    return url


def delete(tx: Transaction, id: Any) -> None:
    tx.require_write("delete files")
    rid = _decode(tx, id)
    if not delete_files(tx, [rid]):
        raise EntNotFoundError(f'File not found with id `{id}` in table "{TABLE}"', table=TABLE, id=str(id))


def delete_files(tx: Transaction, rids: list[int]) -> int:
    """Delete ``_storage`` rows now and their blobs once the transaction commits."""
    q = tx.dialect.q
    gone = [r[0] for r in tx.in_chunks(f"DELETE FROM {q(TABLE)}", q("_rid"), rids, suffix=f" RETURNING {q('_rid')}")]
    blobs: BlobStore = tx.app.blobs
    for rid in gone:
        tx.after_commit.append(partial(blobs.remove, rid))
    tx.touched()
    return len(gone)


class Storage:
    """``ctx.storage`` bound to one transaction (queries and mutations)."""

    def __init__(self, tx: Transaction) -> None:
        self._tx = tx

    def _open(self) -> Transaction:
        self._tx.check_open("ctx.storage")
        return self._tx

    def store(self, data: bytes, content_type: str | None = None) -> str:
        """Store bytes; returns the id of the new ``_storage`` document."""
        return store(self._open(), data, content_type)

    def get(self, id: str) -> bytes | None:
        """The stored bytes, or None if there is no such file."""
        return get(self._open(), id)

    def get_url(self, id: str) -> str | None:
        """A URL for the file (``file://`` unless the App was given ``storage_url``)."""
        return get_url(self._open(), id)

    def get_metadata(self, id: str) -> dict[str, Any] | None:
        """``{"_id", "_creation_time", "sha256", "size", "content_type"}`` or None."""
        return get_metadata(self._open(), id)

    def delete(self, id: str) -> None:
        """Delete the file. Ents referencing it are not deleted (as in Convex Ents)."""
        delete(self._open(), id)


# -- strays ------------------------------------------------------------------------------

#: how old a blob file or an upload must be before a sweep may remove it: far longer than
#: any transaction that writes a blob stays open before it commits
STRAY_AGE_S = 24 * 3600
_SWEEP_BATCH = 500


def sweep_strays(app: App, *, older_than_s: float = STRAY_AGE_S, stop: Callable[[], bool] = lambda: False) -> int:
    """Remove blob files that no ``_storage`` row names, and abandoned uploads, once they
    are ``older_than_s`` seconds old; returns how many files went (``stop()`` ends it early).

    They are what a crash leaves behind: a blob renamed into place by a transaction that
    never committed, an upload cut off half-way, or the blob of a deleted file whose unlink
    (after the delete committed) never happened. The age limit keeps the sweep clear of
    transactions still running. A blob whose row key is above every stored one is left
    alone: SQLite hands out again the key of an insert that rolled back, so a new file may
    take that path (and replaces the stray when it does). Rows are looked up in batches.
    """
    cutoff = time.time() - older_than_s
    q = app.backend.dialect.q
    removed = 0
    batch: list[tuple[Path, int]] = []

    def known(tx: Transaction, rids: list[int]) -> tuple[set[int], int]:
        top = tx.fetchone(f"SELECT MAX({q('_rid')}) FROM {q(TABLE)}")
        found = {r[0] for r in tx.in_chunks(f"SELECT {q('_rid')} FROM {q(TABLE)}", q("_rid"), rids)}
        return found, (top[0] if top and top[0] is not None else 0)

    def flush() -> int:
        alive, top = app._transact(lambda tx: known(tx, [rid for _, rid in batch]), write=False, function="storage sweep")
        n = 0
        for path, rid in batch:
            if rid not in alive and rid < top:
                path.unlink(missing_ok=True)
                n += 1
        batch.clear()
        return n

    for path, rid in app.blobs.aged_files(cutoff):
        if stop():
            break
        if rid is None:
            path.unlink(missing_ok=True)
            removed += 1
            continue
        batch.append((path, rid))
        if len(batch) >= _SWEEP_BATCH:
            removed += flush()
    if batch:
        removed += flush()
    if removed:
        log.info("removed %d stray file(s) from %s", removed, app.blobs.directory)
    return removed
