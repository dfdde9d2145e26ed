"""The file backend against the conformance suite: a local directory and a ``memory://`` fsspec URL."""

import uuid

import pytest

from omniq.backends.file import FileEventStorage, FileResultStorage, FileTaskQueue
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


class TestFileTaskQueue(TaskQueueSuite):
    @pytest.fixture
    def task_queue_factory(self, file_url):
        return lambda: FileTaskQueue(file_url)

    @pytest.fixture
    def fused_result_storage_factory(self, file_url):
        return lambda: FileResultStorage(file_url)


class TestFileResultStorage(ResultStorageSuite):
    @pytest.fixture
    def result_storage_factory(self, file_url):
        return lambda: FileResultStorage(file_url)


class TestFileEventStorage(EventStorageSuite):
    @pytest.fixture
    def event_storage_factory(self, file_url):
        return lambda: FileEventStorage(file_url)
