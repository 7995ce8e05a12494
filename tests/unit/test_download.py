"""Dataset download: local file:// sources, checksum checks, offline failure, and the pinned hashes."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import pytest

from recindex.data.download import SOURCES, Source, download
from recindex.data.registry import KNOWN_DATASETS, load_dataset
from recindex.errors import RecIndexError

REAL = Path(os.environ.get("RECINDEX_DATA_DIR") or Path(__file__).resolve().parents[3] / "shared" / "data")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def remote(tmp_path: Path) -> tuple[Path, bytes]:
    """A 'remote' file served from a local folder through a file:// URL."""
    payload = b"1 2 3 4\n2 3 4 5 6\n" * 5000  # several read chunks
    path = tmp_path / "remote" / "data.txt"
    path.parent.mkdir()
    path.write_bytes(payload)
    return path, payload


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_download_file_url(tmp_path: Path, remote: tuple[Path, bytes]) -> None:
    path, payload = remote
    sources = [Source("Beauty.txt", path.as_uri(), sha256(payload))]
    folder = download("beauty", tmp_path / "data", sources=sources, progress=False)
    assert folder == tmp_path / "data" / "amazon-beauty"  # the folder the registry looks in
    assert (folder / "Beauty.txt").read_bytes() == payload
    assert leftovers(folder) == []


def test_download_with_progress_bar(tmp_path: Path, remote: tuple[Path, bytes]) -> None:
    path, payload = remote
    folder = download("custom", tmp_path, sources=[Source("x.txt", path.as_uri(), sha256(payload))])
    assert folder == tmp_path / "custom" and (folder / "x.txt").read_bytes() == payload


def test_present_files_with_right_hash_are_kept(tmp_path: Path, remote: tuple[Path, bytes]) -> None:
    path, payload = remote
    sources = [Source("data.txt", path.as_uri(), sha256(payload))]
    folder = download("lastfm", tmp_path, sources=sources, progress=False)
    path.unlink()  # the source is gone: a second download must not need it
    assert download("lastfm", tmp_path, sources=sources, progress=False) == folder
    assert (folder / "data.txt").read_bytes() == payload


def test_present_file_with_wrong_hash_is_replaced(tmp_path: Path, remote: tuple[Path, bytes]) -> None:
    path, payload = remote
    folder = tmp_path / "lastfm"
    folder.mkdir()
    (folder / "data.txt").write_bytes(b"truncated")
    download("lastfm", tmp_path, sources=[Source("data.txt", path.as_uri(), sha256(payload))], progress=False)
    assert (folder / "data.txt").read_bytes() == payload


def test_checksum_mismatch(tmp_path: Path, remote: tuple[Path, bytes]) -> None:
    path, payload = remote
    wrong = "0" * 64
    with pytest.raises(RecIndexError) as caught:
        download("lastfm", tmp_path, sources=[Source("LastFM.txt", path.as_uri(), wrong)], progress=False)
    message = str(caught.value)
    assert "LastFM.txt" in message and "checksum mismatch" in message
    assert wrong in message and sha256(payload) in message
    assert list(tmp_path.iterdir()) == [path.parent]  # no dataset folder, no file, no temporary part


def test_checksum_mismatch_keeps_an_existing_good_name_free(
    tmp_path: Path, remote: tuple[Path, bytes]
) -> None:
    path, _ = remote
    folder = tmp_path / "lastfm"
    folder.mkdir()
    (folder / "LastFM.txt").write_bytes(b"old")
    with pytest.raises(RecIndexError, match="checksum mismatch"):
        download("lastfm", tmp_path, sources=[Source("LastFM.txt", path.as_uri(), "f" * 64)], progress=False)
    assert (folder / "LastFM.txt").read_bytes() == b"old"  # not overwritten by an unverified file
    assert leftovers(folder) == []


def test_unreachable_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(variable, raising=False)  # a proxy would answer for the closed port
    sources = [Source("u.data", "http://127.0.0.1:9/x", "a" * 64)]
    with pytest.raises(RecIndexError) as caught:
        download("ml-100k", tmp_path, sources=sources, progress=False)
    message = str(caught.value)
    assert "network seems unreachable" in message
    assert "by hand" in message and str(tmp_path / "ml-100k") in message and "http://127.0.0.1:9/x" in message
    assert list(tmp_path.iterdir()) == []


def test_a_failed_download_leaves_no_dataset_folder(tmp_path: Path, remote: tuple[Path, bytes]) -> None:
    """Offline after the first file: the data directory is left as it was, and loading the dataset
    says it is not there and how to fetch it (not a traceback from a half-filled folder)."""
    path, payload = remote
    sources = [
        Source("Beauty.txt", path.as_uri(), sha256(payload)),
        Source("Beauty_item2attributes.json", (tmp_path / "offline.json").as_uri(), "b" * 64),
    ]
    data_dir = tmp_path / "data"
    with pytest.raises(RecIndexError, match="Beauty_item2attributes.json"):
        download("beauty", data_dir, sources=sources, progress=False)
    assert not data_dir.exists()  # made for this download alone: gone with it
    with pytest.raises(RecIndexError, match=r"dataset .beauty. not found: no folder .*data download"):
        load_dataset("beauty", data_dir)


def test_an_existing_folder_gets_the_files_only_when_all_arrived(
    tmp_path: Path, remote: tuple[Path, bytes]
) -> None:
    path, payload = remote
    folder = tmp_path / "amazon-beauty"
    folder.mkdir()
    (folder / "notes.md").write_text("mine")
    sources = [
        Source("Beauty.txt", path.as_uri(), sha256(payload)),
        Source("Beauty_item2attributes.json", path.as_uri(), "c" * 64),  # will not verify
    ]
    with pytest.raises(RecIndexError, match="checksum mismatch"):
        download("beauty", tmp_path, sources=sources, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["amazon-beauty", "remote"]
    assert [p.name for p in folder.iterdir()] == ["notes.md"]  # not Beauty.txt alone
    download("beauty", tmp_path, sources=sources[:1], progress=False)
    assert sorted(p.name for p in folder.iterdir()) == ["Beauty.txt", "notes.md"]


@pytest.mark.parametrize(("name", "folder", "required"), [("beauty", "amazon-beauty", "Beauty.txt"),
                                                          ("ml-100k", "ml-100k", "u.data")])
def test_an_incomplete_dataset_folder_is_reported_as_missing(
    tmp_path: Path, name: str, folder: str, required: str
) -> None:
    from typer.testing import CliRunner

    from recindex.cli import app

    (tmp_path / folder).mkdir()
    (tmp_path / folder / "README").write_text("an interrupted copy")
    expected = f"dataset {name!r} not found: the folder {tmp_path / folder} lacks {required}"
    with pytest.raises(RecIndexError, match=re.escape(expected)):
        load_dataset(name, tmp_path)
    result = CliRunner().invoke(app, ["data", "stats", name, "--data-dir", str(tmp_path)])
    assert isinstance(result.exception, RecIndexError), result.exception  # the CLI prints it in one line
    assert f"recindex data download {name}" in str(result.exception)


def test_unknown_dataset_and_bad_file_name(tmp_path: Path) -> None:
    with pytest.raises(RecIndexError, match="no download known for 'nope'; known: beauty"):
        download("nope", tmp_path)
    with pytest.raises(RecIndexError, match="plain file name"):
        download("x", tmp_path, sources=[Source("../evil", "file:///dev/null", "0" * 64)], progress=False)


def test_every_known_dataset_has_pinned_sources() -> None:
    assert set(SOURCES) == set(KNOWN_DATASETS)
    for sources in SOURCES.values():
        for source in sources:
            assert source.url.startswith("https://raw.githubusercontent.com/")
            assert source.url.endswith("/" + source.filename)
            assert len(source.sha256) == 64 and int(source.sha256, 16) >= 0
    assert SOURCES["beauty"][0].url == (
        "https://raw.githubusercontent.com/aHuiWang/CIKM2020-S3Rec/"
        "49a890dcb516c9ed3126564495234ea74d5cd566/data/Beauty.txt"
    )
    assert {s.filename for s in SOURCES["ml-100k"]} >= {"u.data", "u.item", "u.user", "u.genre"}


@pytest.mark.skipif(not REAL.is_dir(), reason="shared benchmark data not present")
def test_pinned_hashes_match_the_shared_copies() -> None:
    checked = 0
    for name, sources in SOURCES.items():
        for source in sources:
            path = REAL / KNOWN_DATASETS[name].folder / source.filename
            if path.is_file():
                assert sha256(path.read_bytes()) == source.sha256, path
                checked += 1
    assert checked > 0
