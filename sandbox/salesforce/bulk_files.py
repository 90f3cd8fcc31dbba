"""Where Bulk API 2.0 jobs keep their data: files on disk, one set per job, so that any number of
jobs stays pollable (Salesforce keeps a job until it is deleted or for about a week) without the
sandbox holding their results in memory. A query job keeps the rowids it matched (8 bytes each,
read back a page at a time); an ingest job its upload and its result CSVs."""

from __future__ import annotations

import shutil
import tempfile
from array import array
from pathlib import Path

ROWID_BYTES = array("q").itemsize


class JobFiles:
    """Job data in `directory` (emptied at start: jobs are not remembered across restarts), or
    in a temporary directory of its own, removed with it."""

    def __init__(self, directory: Path | None = None):
        self._scratch = None
        if directory is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="leadsync-sandbox-bulk-")
            directory = Path(self._scratch.name)
        else:
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir(parents=True)
        self.directory = directory

    def write_rowids(self, job_id: str, rowids: array) -> None:
        with self._path(job_id, "rowids").open("wb") as file:
            rowids.tofile(file)

    def read_rowids(self, job_id: str, start: int, count: int) -> array:
        """Up to `count` rowids from position `start`."""
        rowids = array("q")
        with self._path(job_id, "rowids").open("rb") as file:
            file.seek(start * ROWID_BYTES)
            data = file.read(count * ROWID_BYTES)
        rowids.frombytes(data[: len(data) - len(data) % ROWID_BYTES])
        return rowids

    def write(self, job_id: str, kind: str, data: bytes) -> None:
        self._path(job_id, kind).write_bytes(data)

    def read(self, job_id: str, kind: str) -> bytes:
        path = self._path(job_id, kind)
        return path.read_bytes() if path.exists() else b""

    def take(self, job_id: str, kind: str) -> bytes:
        """What `read` gives, removed from disk."""
        data = self.read(job_id, kind)
        self._path(job_id, kind).unlink(missing_ok=True)
        return data

    def has(self, job_id: str, kind: str) -> bool:
        return self._path(job_id, kind).exists()

    def delete(self, job_id: str) -> None:
        for path in self.directory.glob(f"{job_id}.*"):
            path.unlink(missing_ok=True)

    def _path(self, job_id: str, kind: str) -> Path:
        return self.directory / f"{job_id}.{kind}"
