"""The storage layer against real backends: a temp directory and Azurite (no mocks).

Both ResultStore implementations run the same contract tests, so a run behaves the same on a laptop and
in Azure. Memory bounds are checked with tracemalloc, which sees every bytes object Python allocates.
"""

from __future__ import annotations

import functools
import hashlib
import io
import multiprocessing
import os
import sys
import threading
import tracemalloc
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from azure.identity import DefaultAzureCredential
from azure.storage.blob import BlobServiceClient, ContainerClient

from exporter.blobfiles import BlobFiles
from exporter.errors import ConfigError
from exporter.storage import (
    BlobResultStore,
    ConditionalResultStore,
    LocalResultStore,
    blob_service_client,
)

MIB = 1024 * 1024
BIG = 20 * MIB

StoreFactory = Callable[[], ConditionalResultStore]


# ---------------------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A 20 MiB file of random bytes (incompressible, so nothing can shortcut it) and its SHA-256."""
    path = tmp_path_factory.mktemp("big") / "rejects.csv"
    data = os.urandom(BIG)
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


@pytest.fixture(params=["local", "blob", "blob-prefixed"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    """Builds store instances on one shared location: two instances act like two independent writers."""
    if request.param == "local":
        return lambda: LocalResultStore(tmp_path / "results")
    service: BlobServiceClient = request.getfixturevalue("blob_service")
    name: str = request.getfixturevalue("container_name")
    prefix = "exports/run-1" if request.param == "blob-prefixed" else ""
    return lambda: BlobResultStore(service.get_container_client(name), prefix=prefix)


@pytest.fixture
def store(make_store: StoreFactory) -> ConditionalResultStore:
    return make_store()


@pytest.fixture
def container(blob_service: BlobServiceClient, container_name: str) -> ContainerClient:
    client = blob_service.get_container_client(container_name)
    client.create_container()
    return client


def _peak_during(action: Callable[[], object]) -> int:
    """Peak bytes newly allocated by Python while ``action`` runs."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        action()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


# ---------------------------------------------------------------------------------------------------------
# ResultStore contract: every implementation


def test_put_get_roundtrip_and_location(store: ConditionalResultStore) -> None:
    where = store.put_bytes("report.json", b'{"ok": true}', content_type="application/json")
    assert where == store.location("report.json")
    assert store.get_bytes("report.json") == b'{"ok": true}'
    assert store.get_bytes("missing.json") is None

    store.put_bytes("report.json", b"v2")
    assert store.get_bytes("report.json") == b"v2", "put_bytes must replace"

    if isinstance(store, LocalResultStore):
        assert Path(where).is_absolute() and Path(where).read_bytes() == b"v2"
    else:
        assert isinstance(store, BlobResultStore)
        assert where == f"{store.container.url}/{store.prefix}report.json"
        assert where.startswith("http://127.0.0.1:")


def test_nested_paths_and_sorted_listing(store: ConditionalResultStore) -> None:
    for path in [
        "runs/b/report.json",
        "runs/a/rejects.csv",
        "runs/a/report.json",
        "runs-old/x",
        "state.json",
    ]:
        store.put_bytes(path, path.encode())
    assert store.get_bytes("runs/a/rejects.csv") == b"runs/a/rejects.csv"

    assert store.list("runs/") == ["runs/a/rejects.csv", "runs/a/report.json", "runs/b/report.json"]
    assert store.list("runs/a/rep") == ["runs/a/report.json"]
    # A plain string prefix, as Blob Storage has it: "runs" also matches "runs-old/...".
    assert store.list("runs") == [
        "runs-old/x",
        "runs/a/rejects.csv",
        "runs/a/report.json",
        "runs/b/report.json",
    ]
    assert store.list("") == sorted([*store.list("runs"), "state.json"])
    assert store.list("nothing/") == []


def test_delete(store: ConditionalResultStore) -> None:
    store.put_bytes("runs/a/report.json", b"x")
    store.put_bytes("runs/a/keep.json", b"y")
    store.delete("runs/a/report.json")
    assert store.get_bytes("runs/a/report.json") is None
    assert store.list("runs/") == ["runs/a/keep.json"]
    store.delete("runs/a/report.json")  # already gone: no error
    store.delete("never/existed.json")
    assert store.get_bytes("runs/a/keep.json") == b"y"


@pytest.mark.parametrize("bad", ["", "/abs.json", "a//b.json", "a/../b.json", "./a.json", "a\\b.json", "a/"])
def test_paths_that_could_escape_are_refused(store: ConditionalResultStore, bad: str) -> None:
    with pytest.raises(ValueError):
        store.put_bytes(bad, b"x")
    with pytest.raises(ValueError):
        store.get_bytes(bad)


def test_put_file_streams_a_large_file(store: ConditionalResultStore, big_file: tuple[Path, str]) -> None:
    path, digest = big_file
    where: list[str] = []
    peak = _peak_during(
        lambda: where.append(store.put_file("runs/1/rejects.csv", path, content_type="text/csv"))
    )
    assert where == [store.location("runs/1/rejects.csv")]
    assert peak < 12 * MIB, f"put_file held {peak / MIB:.1f} MiB for a {BIG / MIB:.0f} MiB file"

    data = store.get_bytes("runs/1/rejects.csv")
    assert data is not None and len(data) == BIG
    assert hashlib.sha256(data).hexdigest() == digest

    if isinstance(store, BlobResultStore):
        props = store.container.get_blob_client(store.prefix + "runs/1/rejects.csv").get_blob_properties()
        assert props.content_settings.content_type == "text/csv"


def test_put_file_small_file_and_missing_source(store: ConditionalResultStore, tmp_path: Path) -> None:
    small = tmp_path / "small.csv"
    small.write_bytes(b"email,reason\n")
    store.put_file("r.csv", small)
    assert store.get_bytes("r.csv") == b"email,reason\n"

    with pytest.raises(FileNotFoundError):
        store.put_file("r.csv", tmp_path / "absent.csv")
    assert store.get_bytes("r.csv") == b"email,reason\n", "a failed put_file must leave the old content"
    assert store.list("") == ["r.csv"], "no temp or lock files may show"


# ---------------------------------------------------------------------------------------------------------
# conditional writes


def test_create_only_and_etags(store: ConditionalResultStore) -> None:
    assert store.get_with_etag("state.json") is None
    etag1 = store.put_bytes_if("state.json", b"v1", etag=None, content_type="application/json")
    assert etag1
    assert store.get_with_etag("state.json") == (b"v1", etag1)

    assert store.put_bytes_if("state.json", b"other", etag=None) is None, "create-only must not overwrite"
    assert store.get_bytes("state.json") == b"v1"

    etag2 = store.put_bytes_if("state.json", b"v2", etag=etag1)
    assert etag2 and etag2 != etag1
    assert store.get_with_etag("state.json") == (b"v2", etag2)

    assert store.put_bytes_if("state.json", b"stale", etag=etag1) is None, "a stale etag must be refused"
    assert store.get_bytes("state.json") == b"v2"

    store.put_bytes("state.json", b"v3")  # an unconditional write also invalidates the etag
    assert store.put_bytes_if("state.json", b"stale", etag=etag2) is None
    assert store.get_bytes("state.json") == b"v3"

    store.delete("state.json")
    assert store.put_bytes_if("state.json", b"gone", etag=etag2) is None, "if-match on an absent path fails"
    assert store.get_bytes("state.json") is None


def _race(writers: list[Callable[[], str | None]], *, processes: bool) -> list[str | None]:
    """Start the writers at the same moment; their results in order.

    Threads suffice for Blob Storage (the service decides), but the local store's lock must hold between
    processes, and the GIL would serialize threads too well to prove it: there, each writer is a process.
    """
    if processes:
        ctx = multiprocessing.get_context("fork")  # fork: the writers are closures, nothing to pickle
        barrier, queue = ctx.Barrier(len(writers)), ctx.SimpleQueue()

        def child(i: int) -> None:
            barrier.wait(timeout=30)
            try:
                queue.put((i, writers[i](), None))
            except BaseException as exc:
                queue.put((i, None, repr(exc)))

        procs = [ctx.Process(target=child, args=(i,)) for i in range(len(writers))]
        for proc in procs:
            proc.start()
        answers = [queue.get() for _ in procs]
        for proc in procs:
            proc.join(timeout=30)
        assert [e for _, _, e in answers if e] == []
        return [etag for _, etag, _ in sorted(answers)]

    results: list[str | None] = [None] * len(writers)
    errors: list[BaseException] = []
    thread_barrier = threading.Barrier(len(writers))

    def run(i: int) -> None:
        try:
            thread_barrier.wait()
            results[i] = writers[i]()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(writers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors, errors
    return results


def test_create_only_race_has_exactly_one_winner(make_store: StoreFactory) -> None:
    stores = [make_store() for _ in range(8)]  # independent writers (separate clients / instances)
    for round_ in range(5):
        path = f"locks/run-{round_}.json"
        payloads = [f"writer-{i}".encode() for i in range(len(stores))]
        results = _race(
            [
                functools.partial(s.put_bytes_if, path, p, etag=None)
                for s, p in zip(stores, payloads, strict=True)
            ],
            processes=isinstance(stores[0], LocalResultStore),
        )
        winners = [i for i, etag in enumerate(results) if etag is not None]
        assert len(winners) == 1, f"round {round_}: {results}"
        assert stores[0].get_with_etag(path) == (payloads[winners[0]], results[winners[0]])


def test_update_race_with_the_same_etag_has_exactly_one_winner(make_store: StoreFactory) -> None:
    stores = [make_store() for _ in range(8)]
    etag = stores[0].put_bytes_if("state.json", b"start", etag=None)
    assert etag
    for round_ in range(5):
        payloads = [f"round-{round_}-writer-{i}".encode() for i in range(len(stores))]
        results = _race(
            [
                functools.partial(s.put_bytes_if, "state.json", p, etag=etag)
                for s, p in zip(stores, payloads, strict=True)
            ],
            processes=isinstance(stores[0], LocalResultStore),
        )
        winners = [i for i, new in enumerate(results) if new is not None]
        assert len(winners) == 1, f"round {round_}: {results}"
        etag = results[winners[0]]
        assert stores[1].get_with_etag("state.json") == (payloads[winners[0]], etag)


@pytest.mark.skipif(sys.platform == "win32", reason="takes the lock with fcntl, as the store does on POSIX")
def test_local_conditional_write_checks_under_the_lock(tmp_path: Path) -> None:
    """Deterministic where the races above are probabilistic: the check must wait for another lock holder."""
    import fcntl

    store = LocalResultStore(tmp_path)
    etag = store.put_bytes_if("state.json", b"v1", etag=None)
    result: list[str | None] = []
    done = threading.Event()

    def write() -> None:
        result.append(store.put_bytes_if("state.json", b"v2", etag=etag))
        done.set()

    with open(tmp_path / ".~lock", "a+b") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # another process in the middle of a write
        writer = threading.Thread(target=write)
        writer.start()
        assert not done.wait(0.3), "put_bytes_if went ahead while another writer held the lock"
        (tmp_path / "state.json").write_bytes(b"written by the lock holder")
        fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
    writer.join(timeout=5)
    assert result == [None], "the ETag check must see what the lock holder wrote"
    assert store.get_bytes("state.json") == b"written by the lock holder"


# ---------------------------------------------------------------------------------------------------------
# implementation specifics


def test_local_store_leaves_no_temp_files(tmp_path: Path) -> None:
    store = LocalResultStore(tmp_path / "out")
    assert store.list("") == [] and store.get_bytes("a.json") is None  # root not created yet: still fine
    store.put_bytes("a/b.json", b"1")
    store.put_bytes_if("a/c.json", b"2", etag=None)
    store.put_bytes_if("a/c.json", b"3", etag='"sha256-wrong"')
    on_disk = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*"))
    assert on_disk == [".~lock", "a", "a/b.json", "a/c.json"]
    assert store.list("") == ["a/b.json", "a/c.json"]


def test_blob_store_prefix_isolates_and_creates_container(
    blob_service: BlobServiceClient, container_name: str
) -> None:
    client = blob_service.get_container_client(container_name)
    assert not client.exists()
    store = BlobResultStore(client, prefix="/exports/")
    assert client.exists(), "the store creates its container"
    BlobResultStore(client, prefix="exports")  # a second store on an existing container: no error

    client.upload_blob("outside.json", b"not mine")
    client.upload_blob("exports-other/x.json", b"not mine either")
    store.put_bytes("report.json", b"{}", content_type="application/json")
    assert store.list("") == ["report.json"]
    assert sorted(client.list_blob_names()) == ["exports-other/x.json", "exports/report.json", "outside.json"]
    props = client.get_blob_client("exports/report.json").get_blob_properties()
    assert props.content_settings.content_type == "application/json"


def test_blob_store_from_settings(azurite, container_name: str) -> None:
    store = BlobResultStore.from_settings(
        container=container_name, connection_string=azurite.connection_string, prefix="p"
    )
    store.put_bytes("x.json", b"1")
    assert store.location("x.json") == f"{azurite.blob_endpoint}/{container_name}/p/x.json"
    with pytest.raises(ConfigError):
        BlobResultStore.from_settings(container=container_name)


# ---------------------------------------------------------------------------------------------------------
# blob_service_client


def test_blob_service_client_needs_settings() -> None:
    with pytest.raises(ConfigError, match="connection string"):
        blob_service_client()
    with pytest.raises(ConfigError):
        blob_service_client(connection_string="", account_name="")
    with pytest.raises(ConfigError, match="invalid"):
        blob_service_client(account_name="Not_Valid")


def test_blob_service_client_identity_url_without_calling_azure() -> None:
    client = blob_service_client(account_name="segmentsprod")
    try:
        assert client.url == "https://segmentsprod.blob.core.windows.net/"
        assert client.account_name == "segmentsprod"
        assert isinstance(client.credential, DefaultAzureCredential)
    finally:
        client.close()
        client.credential.close()

    custom = blob_service_client(account_url="https://segmentsprod.privatelink.blob.core.windows.net")
    try:
        assert custom.url == "https://segmentsprod.privatelink.blob.core.windows.net/"
    finally:
        custom.close()
        custom.credential.close()


def test_blob_service_client_connection_string_wins(azurite, container_name: str) -> None:
    with blob_service_client(connection_string=azurite.connection_string, account_name="ignored") as client:
        assert client.url.startswith(azurite.blob_endpoint)
        client.create_container(container_name)
        client.get_container_client(container_name).upload_blob("a", b"b")
        assert client.get_container_client(container_name).download_blob("a").readall() == b"b"


# ---------------------------------------------------------------------------------------------------------
# BlobFiles


@pytest.fixture(scope="module")
def big_blob(azurite, big_file: tuple[Path, str]) -> tuple[ContainerClient, str]:
    """The 20 MiB file as a blob, uploaded once for the streaming tests."""
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    client = service.create_container(f"big-{uuid.uuid4().hex}")
    with open(big_file[0], "rb") as src:
        client.upload_blob("segments/big.csv", src, length=BIG)
    return client, big_file[1]


def _stream(files: BlobFiles, path: str) -> tuple[int, str]:
    sha, total = hashlib.sha256(), 0
    with files.open(path) as fh:
        while piece := fh.read(256 * 1024):
            sha.update(piece)
            total += len(piece)
    return total, sha.hexdigest()


def test_blobfiles_open_streams_with_bounded_memory(big_blob: tuple[ContainerClient, str]) -> None:
    client, digest = big_blob
    # The client has the SDK defaults (a 32 MiB first GET would take the whole blob): BlobFiles must not care.
    files = BlobFiles(client, chunk_size=MIB)
    result: list[tuple[int, str]] = []
    peak = _peak_during(lambda: result.append(_stream(files, "segments/big.csv")))
    assert result == [(BIG, digest)]
    # tracemalloc also counts a list the SDK preallocates per GET (8 bytes per byte of the range, never
    # touched, so not resident): ~9 MiB here. Reading the whole blob at once would show ~180 MiB.
    assert peak < 12 * MIB, f"open() held {peak / MIB:.1f} MiB while streaming a {BIG / MIB:.0f} MiB blob"


_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _rss_mib(field: str) -> float:
    line = next(x for x in _STATUS.read_text().splitlines() if x.startswith(field + ":"))
    return int(line.split()[1]) / 1024


@pytest.mark.skipif(not os.access(_CLEAR_REFS, os.W_OK), reason="needs Linux /proc/self/clear_refs")
def test_blobfiles_default_chunks_keep_resident_memory_bounded(big_blob: tuple[ContainerClient, str]) -> None:
    """The default 4 MiB ranges, measured where tracemalloc overstates: the resident high-water mark."""
    client, digest = big_blob
    files = BlobFiles(client)
    _CLEAR_REFS.write_text("5")  # resets VmHWM to the current RSS
    before = _rss_mib("VmRSS")
    assert _stream(files, "segments/big.csv") == (BIG, digest)
    grew = _rss_mib("VmHWM") - before
    assert grew < 14, f"streaming a {BIG / MIB:.0f} MiB blob raised resident memory by {grew:.1f} MiB"


def test_blobfiles_seek_and_reads_across_chunks(container: ContainerClient) -> None:
    data = bytes(range(256)) * (3 * 4096 + 7)  # ~3 MiB, not a multiple of the chunk size
    container.upload_blob("s.csv", data)
    with BlobFiles(container, chunk_size=MIB).open("s.csv") as fh:
        assert fh.readable() and fh.seekable()
        assert fh.read(10) == data[:10]
        fh.seek(MIB - 5)
        assert fh.read(10) == data[MIB - 5 : MIB + 5], "a read spanning two ranges"
        fh.seek(-3, io.SEEK_END)
        assert fh.read() == data[-3:]
        assert fh.read(1) == b""
        fh.seek(0)
        assert fh.read() == data
        fh.seek(len(data) + 100)
        assert fh.read(1) == b""


def test_blobfiles_replaced_mid_read_fails_loudly(container: ContainerClient) -> None:
    container.upload_blob("seg.csv", b"a" * (3 * MIB))
    with BlobFiles(container, chunk_size=MIB).open("seg.csv") as fh:
        assert fh.read(10) == b"a" * 10
        container.upload_blob("seg.csv", b"b" * (3 * MIB), overwrite=True)
        with pytest.raises(OSError, match="replaced or deleted"):
            fh.read()


def test_blobfiles_list_is_dir_exists(container: ContainerClient) -> None:
    for name in ["seg/2024/b.csv", "seg/2024/a.csv", "seg/top.csv", "segx.csv"]:
        container.upload_blob(name, b"email\nx@example.com\n")
    container.upload_blob("seg/empty.csv", b"")
    # What an ADLS Gen2 (hierarchical namespace) account lists for a folder: must not look like a file.
    container.upload_blob("seg/2025", b"", metadata={"hdi_isfolder": "true"})
    files = BlobFiles(container)

    assert files.list("seg/") == ["seg/2024/a.csv", "seg/2024/b.csv", "seg/empty.csv", "seg/top.csv"]
    assert files.list("seg/2024/") == ["seg/2024/a.csv", "seg/2024/b.csv"]
    assert files.list("") == ["seg/2024/a.csv", "seg/2024/b.csv", "seg/empty.csv", "seg/top.csv", "segx.csv"]
    assert files.list("nothing/") == []

    assert files.is_dir("seg") and files.is_dir("seg/") and files.is_dir("seg/2024")
    assert files.is_dir("")
    assert not files.is_dir("seg/2024/a.csv")
    assert not files.is_dir("segx.csv")
    assert not files.is_dir("se")
    assert not files.is_dir("nothing")
    assert not files.is_dir("seg/2025"), "a folder placeholder alone is an empty folder"

    assert files.exists("seg/2024/a.csv") and files.exists("seg/empty.csv")
    assert not files.exists("seg") and not files.exists("seg/2024/c.csv")


def test_blobfiles_zero_length_and_missing(container: ContainerClient) -> None:
    container.upload_blob("empty.csv", b"")
    files = BlobFiles(container)
    with files.open("empty.csv") as fh:
        assert fh.read() == b""
        assert fh.read(10) == b""
    with pytest.raises(FileNotFoundError):
        files.open("missing.csv")


def test_blobfiles_turns_storage_errors_into_oserror(azurite, container_name: str) -> None:
    """The files protocol promises OSError, which the readers report as a SegmentError."""
    missing = BlobFiles(
        BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client(
            container_name
        )
    )
    for call in (lambda: missing.open("a.csv"), lambda: missing.list("seg/"), lambda: missing.is_dir("seg")):
        with pytest.raises(OSError, match="container does not exist") as caught:
            call()
        assert not isinstance(caught.value, FileNotFoundError), "a missing container is not a missing file"
    assert missing.exists("a.csv") is False

    wrong_key = azurite.connection_string.replace("AccountKey=Eby8", "AccountKey=AAAA")
    denied = BlobFiles(
        BlobServiceClient.from_connection_string(wrong_key).get_container_client(container_name)
    )
    with pytest.raises(
        OSError,
        match=r"^listing '' in container '[^']+': Server failed to authenticate .*\(AuthorizationFailure\)$",
    ):
        denied.list("")


def test_azurite_harness_explains_a_missing_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import tests.azurite as harness

    monkeypatch.setattr(harness, "AZURITE_BLOB", tmp_path / "node_modules" / ".bin" / "azurite-blob")
    with pytest.raises(harness.AzuriteNotInstalledError, match="run `make test`"):
        harness.start_azurite(tmp_path / "ws")
