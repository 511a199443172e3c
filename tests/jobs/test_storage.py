"""DirectoryStorage: keys stay inside the root, writes are all-or-nothing, prefixes delete whole jobs."""

from __future__ import annotations

import pytest

from dalston.jobs.storage import DirectoryStorage, StorageError, storage_from


def test_put_get_local_copy_and_delete_prefix(tmp_path) -> None:
    storage = DirectoryStorage(tmp_path / "root")
    storage.put("jobs/job_a/chunks/0000.wav", b"one")
    storage.put("jobs/job_a/chunks/0000.wav", b"two")  # overwritten whole (a re-run chunk)
    assert storage.get("jobs/job_a/chunks/0000.wav") == b"two"
    with storage.local_copy("jobs/job_a/chunks/0000.wav") as path:
        assert path.read_bytes() == b"two"
    storage.put("jobs/job_a/result.json", b"{}")
    storage.delete_prefix("jobs/job_a/chunks")
    assert not storage.exists("jobs/job_a/chunks/0000.wav") and storage.exists("jobs/job_a/result.json")
    with pytest.raises(StorageError, match="not found"):
        storage.get("jobs/job_a/chunks/0000.wav")


def test_a_failed_write_leaves_no_object_and_no_temp_file(tmp_path) -> None:
    storage = DirectoryStorage(tmp_path)
    with pytest.raises(RuntimeError):
        with storage.open_writer("jobs/job_b/input") as out:
            out.write(b"partial upload")
            raise RuntimeError("client went away")
    assert not storage.exists("jobs/job_b/input")
    assert list((tmp_path / "jobs" / "job_b").iterdir()) == []


@pytest.mark.parametrize("key", ["", "/etc/passwd", "jobs/../../etc/passwd", "jobs//x", "jobs/./x"])
def test_keys_cannot_leave_the_root(tmp_path, key) -> None:
    with pytest.raises(StorageError, match="invalid storage key"):
        DirectoryStorage(tmp_path).put(key, b"x")


def test_storage_from_flag_then_environment(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("DALSTON_STORAGE_DIR", raising=False)
    assert storage_from(None) is None
    monkeypatch.setenv("DALSTON_STORAGE_DIR", str(tmp_path / "env"))
    assert storage_from(None).root == tmp_path / "env"  # type: ignore[union-attr]
    assert storage_from(tmp_path / "flag").root == tmp_path / "flag"  # type: ignore[union-attr]
