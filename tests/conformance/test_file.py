"""The file backend against the conformance suite: a local directory and a ``memory://`` fsspec URL."""

import uuid
from pathlib import Path

import msgspec
import pytest

from omniq.backends.file import FileEventStorage, FileResultStorage, FileTaskQueue, layout
from omniq.testing import EventStorageSuite, ResultStorageSuite, TaskQueueSuite


@pytest.fixture(params=["local", "memory"])
def file_url(request, tmp_path):
    """A fresh root for one test: a tmp directory, or a unique in-process fsspec memory root."""
    if request.param == "local":
        yield str(tmp_path / "files")
        return
    pytest.importorskip("fsspec")
    name = f"omniq-test-{uuid.uuid4().hex}"
    yield f"memory://{name}"
    import fsspec

    fs = fsspec.filesystem("memory")
    if fs.exists(f"/{name}"):
        fs.rm(f"/{name}", recursive=True)


#: a value per corruptible field that a task envelope can hold but no task can have
#: (a naive datetime is what msgspec writes as a string without an offset).
_CORRUPT = {"expires_at": "2030-01-01T00:00:00", "result_ttl": float("inf"), "error": "not an error", "depends_on": 7}


class TestFileTaskQueue(TaskQueueSuite):
    @pytest.fixture
    def task_queue_factory(self, file_url):
        return lambda: FileTaskQueue(file_url)

    @pytest.fixture
    def corrupt_record(self, file_url):
        """Rewrites a pending task's file with one field corrupted (a valid envelope otherwise)."""
        if file_url.startswith("memory://"):
            import fsspec

            fs, root = fsspec.filesystem("memory"), "/" + file_url.removeprefix("memory://")
            listdir, read, write = (lambda d: [p.rsplit("/", 1)[1] for p in fs.ls(d, detail=False)]), fs.cat, fs.pipe
        else:
            root = file_url
            listdir = lambda d: [p.name for p in Path(d).iterdir()]  # noqa: E731
            read, write = (lambda p: Path(p).read_bytes()), (lambda p, data: Path(p).write_bytes(data))

        async def corrupt(task_id, field):
            folder = f"{root}/{layout.queue_dir('default')}"
            [name] = [n for n in listdir(folder) if task_id in n]
            fields = msgspec.msgpack.decode(read(f"{folder}/{name}"))
            fields[field] = _CORRUPT[field]
            write(f"{folder}/{name}", msgspec.msgpack.encode(fields))

        return corrupt

    @pytest.fixture
    def fused_result_storage_factory(self, file_url):
        return lambda: FileResultStorage(file_url)

    @pytest.fixture(autouse=True)
    def _one_process_root(self, request, file_url):
        """The class says MULTI_PROCESS, but an fsspec ``memory://`` root lives in one process."""
        if (
            file_url.startswith("memory://")
            and request.node.originalname == "test_a_worker_in_another_process_is_listed"
        ):
            pytest.skip("an fsspec memory:// root lives in one process")


class TestFileResultStorage(ResultStorageSuite):
    @pytest.fixture
    def result_storage_factory(self, file_url):
        return lambda: FileResultStorage(file_url)


class TestFileEventStorage(EventStorageSuite):
    @pytest.fixture
    def event_storage_factory(self, file_url):
        return lambda: FileEventStorage(file_url)
