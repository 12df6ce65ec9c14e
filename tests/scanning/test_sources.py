"""A version's files as the scan reads them, from a local destination and from S3 (moto's server)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hokusai_registry.scanning.sources import ModelFiles, StoredFile
from tests.services import S3Server, answered_s3_requests, s3_client, s3_server

BUCKET = "registry-artifacts"
FILES = {"MLmodel": b"flavors: {}\n", "model.pkl": b"\x80\x04N.", "code/util.py": b"x = 1\n"}


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server(BUCKET) as server:
        client = s3_client(server.env)
        for name, data in FILES.items():
            client.put_object(Bucket=BUCKET, Key=f"root/1/models/m-1/artifacts/{name}", Body=data)
        client.put_object(Bucket=BUCKET, Key="root/1/loose/weights.bin", Body=b"\0" * 10)
        yield server


@pytest.fixture
def s3_env(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in s3.env.items():
        monkeypatch.setenv(name, value)


def read_all(files: ModelFiles) -> dict[str, bytes]:
    return {stored.path: path.read_bytes() for stored, path in files.open_each()}


def expected_listing() -> list[StoredFile]:
    return sorted((StoredFile(name, len(data)) for name, data in FILES.items()), key=lambda f: f.path)


@pytest.mark.usefixtures("s3_env")
def test_a_scan_of_s3_lists_the_files_once_and_downloads_each_once() -> None:
    files = ModelFiles(f"s3://{BUCKET}/root", "1/models/m-1/artifacts")
    requests: list[str] = []
    with answered_s3_requests(requests.append):
        assert files.listing() == expected_listing()  # the size check before an inline scan
        assert files.listing() == expected_listing()  # the scan's own check
        assert read_all(files) == FILES
    listings = [line for line in requests if "list-type=2" in line]
    downloads = [line for line in requests if '"GET /' in line and "list-type" not in line]
    assert len(listings) == 2, "\n".join(requests)  # the prefix and its one subdirectory, once each
    assert len(requests) == 2 + 2 * len(FILES), "\n".join(requests)  # and a HEAD and a GET per file
    assert len(downloads) == len(FILES), requests


@pytest.mark.usefixtures("s3_env")
def test_a_version_registered_from_one_s3_file_is_that_file() -> None:
    files = ModelFiles(f"s3://{BUCKET}/root", "1/loose/weights.bin")
    assert files.listing() == [StoredFile("weights.bin", 10)]
    assert read_all(files) == {"weights.bin": b"\0" * 10}


@pytest.mark.usefixtures("s3_env")
def test_nothing_under_an_s3_prefix_lists_nothing() -> None:
    files = ModelFiles(f"s3://{BUCKET}/root", "1/models/m-missing/artifacts")
    assert files.listing() == [] and read_all(files) == {}


def test_local_files_are_read_where_they_lie(tmp_path: Path) -> None:
    root = tmp_path / "1" / "models" / "m-1" / "artifacts"
    for name, data in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    files = ModelFiles(str(tmp_path), "1/models/m-1/artifacts")
    assert files.listing() == expected_listing()
    assert {stored.path: path for stored, path in files.open_each()} == {n: root / n for n in FILES}
    single = ModelFiles(str(tmp_path), "1/models/m-1/artifacts/model.pkl")
    assert read_all(single) == {"model.pkl": FILES["model.pkl"]}
