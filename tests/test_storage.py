"""File storage: ``ctx.storage``, the ``_storage`` table, blobs on disk, and edges to files."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

import pytest

from ents import (
    App,
    EntNotFoundError,
    ReadOnlyError,
    StorageError,
    ValidationError,
    define_ent,
    define_ent_schema,
)
from ents.testing import FakeClock
from tests.pg import wait_for


def storage_schema() -> Any:
    return define_ent_schema(
        {
            "users": define_ent({"name": str}).edges("photos", ref=True),
            "photos": define_ent({"caption": str}).edge("user").edge("photo", to="_storage", deletion="hard"),
            # No deletion option: the file outlives the attachment.
            "attachments": define_ent({"name": str}).edge("file", to="_storage"),
        }
    )


@pytest.fixture
def blob_dir(tmp_path: Path) -> Path:
    return tmp_path / "blobs"


@pytest.fixture
def app(make_app: Any, blob_dir: Path) -> Any:
    app = make_app(storage_schema(), storage_dir=str(blob_dir))

    @app.internal_action
    def upload(ctx: Any, text: str, fail: bool = False) -> str:
        file_id = ctx.storage.store(text.encode(), content_type="text/plain")
        if fail:
            raise RuntimeError("after storing")
        return str(file_id)

    @app.query
    def read(ctx: Any, id: str) -> Any:
        return ctx.storage.get(id)

    app.f = {"upload": upload, "read": read}
    return app


def files(directory: Path) -> list[Path]:
    """Every regular file under ``directory`` (blobs and any temporary file)."""
    if not directory.exists():
        return []
    return sorted(p for p in directory.rglob("*") if p.is_file())


def url_path(url: str) -> Path:
    parsed = urlparse(url)
    assert parsed.scheme == "file", url
    return Path(url2pathname(parsed.path))


def store(app: Any, data: bytes, content_type: str | None = None) -> str:
    return str(app.run(lambda ctx: ctx.storage.store(data, content_type=content_type)))


def storage_rows(app: Any) -> int:
    return len(app.run(lambda ctx: ctx.table("_storage").collect()))


# -- the API ----------------------------------------------------------------------------


def test_store_then_read_the_bytes_and_the_metadata(app: Any, clock: FakeClock) -> None:
    data = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40
    file_id = store(app, data, "image/png")

    def read(ctx: Any) -> None:
        assert ctx.storage.get(file_id) == data
        meta = ctx.storage.get_metadata(file_id)
        assert meta == {
            "_id": file_id,
            "_creation_time": clock.now(),
            "sha256": hashlib.sha256(data).hexdigest(),
            "size": len(data),
            "content_type": "image/png",
        }
        # The same document through the system table.
        assert ctx.table("_storage").get(file_id).doc() == meta
        assert ctx.db.system.get(file_id) == meta
        assert ctx.table("_storage").normalize_id(file_id) == file_id

    app.run(read)
    assert app.run_query(app.f["read"], {"id": file_id}) == data


def test_content_type_is_optional_and_any_bytes_like_value_is_stored(app: Any) -> None:
    plain = store(app, b"")
    assert app.run(lambda ctx: ctx.storage.get_metadata(plain)) == {
        "_id": plain,
        "_creation_time": app.clock.now(),
        "sha256": hashlib.sha256(b"").hexdigest(),
        "size": 0,
        "content_type": None,
    }
    assert app.run(lambda ctx: ctx.storage.get(plain)) == b""
    from_array = app.run(lambda ctx: ctx.storage.store(bytearray(b"abc")))
    from_view = app.run(lambda ctx: ctx.storage.store(memoryview(b"xyz")))
    assert app.run(lambda ctx: [ctx.storage.get(from_array), ctx.storage.get(from_view)]) == [b"abc", b"xyz"]


@pytest.mark.parametrize(("data", "content_type"), [("text", None), (123, None), (b"x", 5)])
def test_store_rejects_what_is_not_bytes(app: Any, blob_dir: Path, data: Any, content_type: Any) -> None:
    with pytest.raises(ValidationError):
        app.run(lambda ctx: ctx.storage.store(data, content_type=content_type))
    assert storage_rows(app) == 0 and files(blob_dir) == []


def test_get_url_points_at_the_blob(app: Any) -> None:
    file_id = store(app, b"hello")
    url = app.run(lambda ctx: ctx.storage.get_url(file_id))
    assert url_path(url).read_bytes() == b"hello"


def test_get_url_uses_storage_url_when_given(make_app: Any, tmp_path: Path) -> None:
    app = make_app(storage_schema(), storage_dir=str(tmp_path / "b"), storage_url="https://files.example.com/f/")
    file_id = store(app, b"hello")
    assert app.run(lambda ctx: ctx.storage.get_url(file_id)) == f"https://files.example.com/f/{file_id}"


def test_delete_then_everything_reads_none(app: Any, blob_dir: Path) -> None:
    file_id = store(app, b"bye")
    keep = store(app, b"stay")
    app.run(lambda ctx: ctx.storage.delete(file_id))

    def read(ctx: Any) -> None:
        assert ctx.storage.get(file_id) is None
        assert ctx.storage.get_url(file_id) is None
        assert ctx.storage.get_metadata(file_id) is None
        assert ctx.table("_storage").get(file_id) is None
        assert ctx.storage.get(keep) == b"stay"

    app.run(read)
    assert len(files(blob_dir)) == 1


def test_deleting_a_missing_file_raises_naming_it(app: Any) -> None:
    file_id = store(app, b"once")
    app.run(lambda ctx: ctx.storage.delete(file_id))
    with pytest.raises(EntNotFoundError) as info:
        app.run(lambda ctx: ctx.storage.delete(file_id))
    assert (info.value.table, info.value.id) == ("_storage", file_id)
    assert file_id in str(info.value) and "_storage" in str(info.value)


def test_an_id_of_another_table_is_refused(app: Any) -> None:
    user = app.run(lambda ctx: ctx.table("users").insert({"name": "ada"}))
    for call in (
        lambda ctx: ctx.storage.get(user),
        lambda ctx: ctx.storage.get_metadata(user),
        lambda ctx: ctx.storage.get_url(user),
        lambda ctx: ctx.storage.delete(user),
        lambda ctx: ctx.storage.get("not an id"),
    ):
        with pytest.raises(StorageError) as info:
            app.run(call)
        assert info.value.table == "_storage"
    assert app.run(lambda ctx: ctx.table("users").get(user)) is not None


def test_queries_read_files_but_cannot_store_or_delete_them(app: Any) -> None:
    file_id = store(app, b"data")

    @app.query
    def write_in_query(ctx: Any, what: str) -> None:
        if what == "store":
            ctx.storage.store(b"nope")
        else:
            ctx.storage.delete(file_id)

    for what in ("store", "delete"):
        with pytest.raises(ReadOnlyError):
            app.run_query(write_in_query, {"what": what})
    assert storage_rows(app) == 1
    assert app.run_query(app.f["read"], {"id": file_id}) == b"data"


def test_the_storage_table_is_read_only(app: Any) -> None:
    file_id = store(app, b"data")
    with pytest.raises(ReadOnlyError) as info:
        app.run(lambda ctx: ctx.table("_storage").insert({"sha256": "x", "size": 1}))
    assert "ctx.storage" in str(info.value)
    with pytest.raises(ReadOnlyError):
        app.run(lambda ctx: ctx.db.patch(file_id, {"size": 2}))


def test_actions_store_at_once_and_keep_what_they_stored_when_they_fail(app: Any) -> None:
    file_id = app.run_action(app.f["upload"], {"text": "from an action"})
    assert app.run(lambda ctx: ctx.storage.get(file_id)) == b"from an action"
    with pytest.raises(RuntimeError):
        app.run_action(app.f["upload"], {"text": "kept", "fail": True})
    kept = app.run(lambda ctx: [ctx.storage.get(d._id) for d in ctx.table("_storage")])
    assert kept == [b"from an action", b"kept"]

    @app.internal_action
    def round_trip(ctx: Any, id: str) -> dict[str, Any]:
        meta = ctx.storage.get_metadata(id)
        data = ctx.storage.get(id)
        url = ctx.storage.get_url(id)
        ctx.storage.delete(id)
        return {"size": meta["size"], "data": data.decode(), "has_url": url is not None}

    assert app.run_action(round_trip, {"id": file_id}) == {"size": 14, "data": "from an action", "has_url": True}
    assert app.run(lambda ctx: ctx.storage.get(file_id)) is None


# -- blobs on disk ----------------------------------------------------------------------


def test_blobs_live_beside_the_database_file_by_default(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    with App(storage_schema(), f"sqlite:///{db}", clock=FakeClock()) as app:
        file_id = store(app, b"on disk")
        path = url_path(app.run(lambda ctx: ctx.storage.get_url(file_id)))
        assert path.parent.parent == Path(f"{db}.files")
        assert path.read_bytes() == b"on disk"
    # Reopening the database finds the file again.
    with App(storage_schema(), f"sqlite:///{db}", clock=FakeClock()) as app:
        assert app.run(lambda ctx: ctx.storage.get(file_id)) == b"on disk"


def test_an_in_memory_database_keeps_blobs_in_a_temporary_directory(tmp_path: Path) -> None:
    app = App(storage_schema(), "sqlite://", clock=FakeClock())
    file_id = store(app, b"scratch")
    path = url_path(app.run(lambda ctx: ctx.storage.get_url(file_id)))
    assert path.read_bytes() == b"scratch"
    app.close()
    assert not path.exists()


def test_storage_dir_chooses_where_blobs_go(app: Any, blob_dir: Path) -> None:
    file_id = store(app, b"here")
    path = url_path(app.run(lambda ctx: ctx.storage.get_url(file_id)))
    assert blob_dir in path.parents
    assert files(blob_dir) == [path]


def test_a_blob_appears_only_complete(app: Any, blob_dir: Path, monkeypatch: Any) -> None:
    """The blob's final path only ever holds the whole file: it is renamed into place."""
    data = os.urandom(256 * 1024)
    seen: list[tuple[bool, bytes]] = []
    real_replace = os.replace

    def watching_replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        seen.append((Path(dst).exists(), Path(src).read_bytes()))
        real_replace(src, dst, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(os, "replace", watching_replace)
        file_id = store(app, data)
    assert seen == [(False, data)]
    assert app.run(lambda ctx: ctx.storage.get(file_id)) == data
    assert len(files(blob_dir)) == 1  # no temporary file is left behind


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_blobs_get_ordinary_file_permissions(app: Any) -> None:
    """Readable by whatever serves storage_url, as the umask allows (not 0600)."""
    old = os.umask(0o022)
    try:
        file_id = store(app, b"public")
    finally:
        os.umask(old)
    path = url_path(app.run(lambda ctx: ctx.storage.get_url(file_id)))
    assert path.stat().st_mode & 0o777 == 0o644


def test_a_failed_write_leaves_no_row_and_no_file(app: Any, blob_dir: Path, monkeypatch: Any) -> None:
    store(app, b"first")

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(os, "fsync", disk_full)
        with pytest.raises(StorageError) as info:
            store(app, b"second")
    assert "No space left on device" in str(info.value)
    assert storage_rows(app) == 1
    assert len(files(blob_dir)) == 1


def test_a_rolled_back_store_removes_the_blob(app: Any, blob_dir: Path) -> None:
    store(app, b"kept")
    paths: list[Path] = []

    def body(ctx: Any) -> None:
        file_id = ctx.storage.store(b"rolled back")
        paths.append(url_path(ctx.storage.get_url(file_id)))
        assert paths[0].read_bytes() == b"rolled back"
        ctx.table("photos").insert({"caption": "c", "user_id": ctx.table("users").insert({"name": "u"}), "photo_id": file_id})
        raise RuntimeError("abort")

    with pytest.raises(RuntimeError):
        app.run(body)
    assert not paths[0].exists()
    assert storage_rows(app) == 1 and len(files(blob_dir)) == 1
    assert app.run(lambda ctx: ctx.table("photos").collect()) == []


def test_a_blob_is_removed_only_once_its_delete_commits(app: Any, blob_dir: Path) -> None:
    file_id = store(app, b"precious")
    path = url_path(app.run(lambda ctx: ctx.storage.get_url(file_id)))

    def delete_then_fail(ctx: Any) -> None:
        ctx.storage.delete(file_id)
        assert ctx.storage.get(file_id) is None  # gone for this transaction...
        assert path.exists()  # ...but still on disk until the commit
        raise RuntimeError("abort")

    with pytest.raises(RuntimeError):
        app.run(delete_then_fail)
    assert path.read_bytes() == b"precious"
    assert app.run(lambda ctx: ctx.storage.get(file_id)) == b"precious"

    def delete(ctx: Any) -> None:
        ctx.storage.delete(file_id)
        assert path.exists()

    app.run(delete)
    assert not path.exists()
    assert files(blob_dir) == []


# -- what a crash leaves behind -------------------------------------------------------------


def _age(path: Path, seconds: float) -> None:
    old = path.stat().st_mtime - seconds
    os.utime(path, (old, old))


def _drop_rows(app: Any, *ids: str) -> None:
    """Delete ``_storage`` rows and leave their blobs, as a crash would (the row of a
    transaction that never committed, or a delete whose unlink never happened)."""
    q, p = app.backend.dialect.q, app.backend.dialect.param
    for id in ids:
        rid = app.codec.decode(id)[1]
        app._transact(lambda tx, rid=rid: tx.execute(f"DELETE FROM {q('_storage')} WHERE {q('_rid')} = {p}", (rid,)), write=True)


def test_a_sweep_removes_old_strays_and_nothing_else(app: Any, blob_dir: Path) -> None:
    """Blobs whose row never committed (or whose delete committed without the unlink) and
    abandoned uploads go once old; live blobs, young strays, blobs whose row key may still be
    handed out, and foreign files stay."""
    from ents.storage import STRAY_AGE_S, sweep_strays

    never_committed = store(app, b"placed, then the transaction died")
    doomed = store(app, b"deleted, then the process died before the unlink")
    young = store(app, b"a transaction may still commit this one")
    kept = store(app, b"kept")
    paths = {i: url_path(app.run(lambda ctx, i=i: ctx.storage.get_url(i))) for i in (never_committed, doomed, young, kept)}
    _drop_rows(app, never_committed, doomed, young)
    above = app.blobs.path(app.codec.decode(kept)[1] + 1)  # a key the next store may take
    above.parent.mkdir(parents=True, exist_ok=True)
    above.write_bytes(b"stray with a key not handed out yet")
    upload = blob_dir / ".upload-0123abcd.tmp"
    upload.write_bytes(b"half an up")
    foreign = [blob_dir / "README.txt", blob_dir / "zz" / "1.blob", paths[kept].parent / "notes.blob"]
    for f in foreign:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"not ents'")
    for f in [paths[never_committed], paths[doomed], paths[kept], above, upload, *foreign]:
        _age(f, STRAY_AGE_S + 60)
    _age(paths[young], STRAY_AGE_S - 60)

    assert sweep_strays(app) == 3
    assert not paths[never_committed].exists() and not paths[doomed].exists() and not upload.exists()
    assert paths[young].exists() and above.exists()
    assert all(f.exists() for f in foreign)
    assert app.run_query(app.f["read"], {"id": kept}) == b"kept"
    assert sweep_strays(app) == 0


def test_a_sweep_checks_rows_in_batches(app: Any, blob_dir: Path, monkeypatch: Any) -> None:
    from ents.storage import STRAY_AGE_S, sweep_strays
    from tests.schemas import SqlLog

    ids = [store(app, f"file {i}".encode()) for i in range(1203)]
    _drop_rows(app, *ids[:1200])
    for f in files(blob_dir):
        _age(f, STRAY_AGE_S + 1)
    log = SqlLog(monkeypatch)
    log.on = True
    assert sweep_strays(app) == 1200
    lookups = [sql for sql in log.starting_with("SELECT") if "IN" in sql or "ANY" in sql]
    assert len(lookups) == 3  # 1203 files, 500 per lookup
    assert [app.run_query(app.f["read"], {"id": i}) for i in ids[1200:]] == [b"file 1200", b"file 1201", b"file 1202"]
    assert files(blob_dir) == sorted(url_path(app.run(lambda ctx, i=i: ctx.storage.get_url(i))) for i in ids[1200:])


def test_a_worker_sweeps_strays_as_housekeeping(make_app: Any, blob_dir: Path, backend: str) -> None:
    if backend == "memory":
        pytest.skip("a worker runs beside other connections: it needs a database they can share")
    from ents.storage import STRAY_AGE_S

    app = make_app(storage_schema(), storage_dir=str(blob_dir))
    strays = [store(app, b"stray"), store(app, b"stray, later")]
    kept = store(app, b"kept")
    paths = [url_path(app.run(lambda ctx, i=i: ctx.storage.get_url(i))) for i in strays]
    _drop_rows(app, *strays)
    _age(paths[0], STRAY_AGE_S + 1)
    worker = app.worker(housekeeping_interval=0.05, storage_sweep_interval=3600)
    # Count the rounds of housekeeping (each one purges old jobs).
    rounds = [0]
    purge = worker.executor.purge

    def counted_purge() -> int:
        rounds[0] += 1
        return purge()

    worker.executor.purge = counted_purge  # type: ignore[method-assign]
    worker.start()
    try:
        assert wait_for(lambda: not paths[0].exists()), "the first housekeeping never swept the old stray"
        # The next sweep is an hour away: a stray that becomes old now stays meanwhile,
        # though housekeeping runs every 50 ms.
        _age(paths[1], STRAY_AGE_S + 1)
        after = rounds[0]
        assert wait_for(lambda: rounds[0] >= after + 3), "housekeeping stopped running"
        assert paths[1].exists()
    finally:
        worker.stop()
    assert app.run(lambda ctx: ctx.storage.get(kept)) == b"kept"


# -- edges to _storage ------------------------------------------------------------------


@pytest.fixture
def photo(app: Any) -> dict[str, str]:
    def seed(ctx: Any) -> dict[str, str]:
        user = ctx.table("users").insert({"name": "ada"})
        file_id = ctx.storage.store(b"JPEG...", content_type="image/jpeg")
        photo = ctx.table("photos").insert({"caption": "sunset", "user_id": user, "photo_id": file_id})
        return {"user": str(user), "file": str(file_id), "photo": str(photo)}

    return dict(app.run(seed))


def test_the_edge_returns_the_file_metadata(app: Any, photo: dict[str, str]) -> None:
    def read(ctx: Any) -> None:
        p = ctx.table("photos").get_x(photo["photo"])
        meta = p.edge("photo")
        assert meta.doc() == ctx.storage.get_metadata(photo["file"])
        assert meta.content_type == "image/jpeg" and meta.size == 7
        assert meta == p.edge_x("photo")
        assert ctx.storage.get(meta._id) == b"JPEG..."

    app.run(read)


def test_hard_deleting_the_ent_deletes_its_file(app: Any, photo: dict[str, str]) -> None:
    path = url_path(app.run(lambda ctx: ctx.storage.get_url(photo["file"])))
    app.run(lambda ctx: ctx.table("photos").get_x(photo["photo"]).delete())
    assert app.run(lambda ctx: ctx.storage.get_metadata(photo["file"])) is None
    assert not path.exists()


def test_a_cascading_delete_deletes_every_linked_file(app: Any, photo: dict[str, str], blob_dir: Path) -> None:
    def more(ctx: Any) -> list[str]:
        ids = [ctx.storage.store(f"p{i}".encode()) for i in range(5)]
        ctx.table("photos").insert_many([{"caption": f"p{i}", "user_id": photo["user"], "photo_id": f} for i, f in enumerate(ids)])
        bob = ctx.table("users").insert({"name": "bob"})
        bobs = ctx.storage.store(b"bob's")
        ctx.table("photos").insert({"caption": "bob", "user_id": bob, "photo_id": bobs})
        return [str(bobs)]

    (bobs,) = app.run(more)
    assert len(files(blob_dir)) == 7
    app.run(lambda ctx: ctx.table("users").get_x(photo["user"]).delete())
    assert [d["_id"] for d in app.run(lambda ctx: ctx.table("_storage").docs())] == [bobs]
    assert len(files(blob_dir)) == 1


def test_without_hard_deletion_the_file_outlives_the_ent(app: Any) -> None:
    def seed(ctx: Any) -> tuple[str, str]:
        file_id = ctx.storage.store(b"contract")
        return str(ctx.table("attachments").insert({"name": "a", "file_id": file_id})), str(file_id)

    attachment, file_id = app.run(seed)
    app.run(lambda ctx: ctx.table("attachments").get_x(attachment).delete())
    assert app.run(lambda ctx: ctx.storage.get(file_id)) == b"contract"


def test_storage_delete_does_not_cascade_to_the_ents(app: Any, photo: dict[str, str]) -> None:
    app.run(lambda ctx: ctx.storage.delete(photo["file"]))

    def read(ctx: Any) -> None:
        p = ctx.table("photos").get_x(photo["photo"])  # still there
        assert p.photo_id == photo["file"]  # still naming the deleted file
        assert p.edge("photo") is None
        with pytest.raises(EntNotFoundError):
            p.edge_x("photo")

    app.run(read)
    # Deleting the ent later is fine: there is no file left to delete.
    app.run(lambda ctx: ctx.table("photos").get_x(photo["photo"]).delete())
    assert app.run(lambda ctx: ctx.table("photos").collect()) == []


def test_a_rolled_back_ent_delete_keeps_the_file(app: Any, photo: dict[str, str]) -> None:
    path = url_path(app.run(lambda ctx: ctx.storage.get_url(photo["file"])))

    def body(ctx: Any) -> None:
        ctx.table("users").get_x(photo["user"]).delete()
        raise RuntimeError("abort")

    with pytest.raises(RuntimeError):
        app.run(body)
    assert path.read_bytes() == b"JPEG..."
    assert app.run(lambda ctx: ctx.table("photos").get_x(photo["photo"]).edge("photo").size) == 7
