"""Fetch the public benchmark datasets into a data directory, checking every file's sha256.

URLs are pinned to a commit, and each file to the hash recorded in `shared/data/*/PROVENANCE.md`, so a
download gives byte-for-byte the files the results were measured on (or fails loudly). Files are
fetched into a temporary folder beside the dataset's folder and moved into place only once every one
of them is there with the right hash: an interrupted, offline or corrupt download leaves the data
directory as it found it, never a folder that looks like a dataset but is not one.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from recindex.data.registry import KNOWN_DATASETS
from recindex.errors import RecIndexError
from recindex.hashing import sha256_file

_CHUNK = 1 << 16
_TIMEOUT_S = 30


@dataclass(frozen=True)
class Source:
    filename: str  # name inside the dataset folder
    url: str  # http(s):// or file://
    sha256: str


_RAW = "https://raw.githubusercontent.com"
_S3REC = f"{_RAW}/aHuiWang/CIKM2020-S3Rec/49a890dcb516c9ed3126564495234ea74d5cd566/data"
_MFC_GODE = f"{_RAW}/XiQier/MFC-GODE/f338be075bf241e965b1a11f3163690fb11c4ed5/data"
_ML100K = f"{_RAW}/Raffaello/scala-spark-movie-demo/7af16a4ee23edcd7ce3cd9acc1f8961729bfabc2/ml-100k"

SOURCES: dict[str, list[Source]] = {
    "beauty": [
        Source(
            "Beauty.txt",
            f"{_S3REC}/Beauty.txt",
            "226cce9c3105299ca0db9615d7d3fb32b3175e90da43100ae352599f0f0107b8",
        ),
        Source(
            "Beauty_item2attributes.json",
            f"{_S3REC}/Beauty_item2attributes.json",
            "129e40f67486f6877eff0f5318cfa8530ee8ac23d8b0d1de04e1bb7a2ba0b2d4",
        ),
    ],
    "sports": [
        Source(
            "Sports_and_Outdoors.txt",
            f"{_S3REC}/Sports_and_Outdoors.txt",
            "2a095e0648872beb9982408958290f5d655db5be2911c3756b5446de9f0b8de2",
        ),
        Source(
            "Sports_and_Outdoors_item2attributes.json",
            f"{_S3REC}/Sports_and_Outdoors_item2attributes.json",
            "7fb10733ac4f1811384a52144cdefa7fcc7536fa80a7232c5da9bd789155c34b",
        ),
    ],
    "lastfm": [
        Source(
            "LastFM.txt",
            f"{_S3REC}/LastFM.txt",
            "9ded486adb5b0fe9dc761950afa0a9a05e93ff018992e0c52bf11afec529f802",
        ),
        Source(
            "LastFM_item2attributes.json",
            f"{_S3REC}/LastFM_item2attributes.json",
            "a4ccd678dc9ff6d43fe5073f491db5c9b02eb98dfa4f8c0382913a784be217ef",
        ),
    ],
    "home-kitchen": [
        Source(
            "Home_and_Kitchen.txt",
            f"{_MFC_GODE}/Home_and_Kitchen.txt",
            "e3bc2aef0da5c960a198abb7a421a0a67b516cbf71fb3aa95560b1f4836b4c4c",
        ),
    ],
    "ml-100k": [
        Source(name, f"{_ML100K}/{name}", digest)
        for name, digest in [
            ("README", "4883b8cf340ed0059971b33f56ad3adc88a40792108ebca3d24aafc4c82e8b52"),
            ("u.data", "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490"),
            ("u.item", "553841ebc7de3a0fd0d6b62a204ea30c1e651aacfb2814c7a6584ac52f2c5701"),
            ("u.user", "f120e114da2e8cf314fd28f99417c94ae9ddf1cb6db8ce0e4b5995d40e90e62c"),
            ("u.genre", "9757e0d3e6b298159a80dd48eaf938114690e911e39af97a76949ef1663610bb"),
            ("u.info", "5b0a40b2e47a729ee6203063f6dcf8790c2e63f5a18663e6ee318a72c5f3c27b"),
            ("u.occupation", "cd5fbec9afe345d993a62fc7817df1a4a9079c4feb267b3118763b8fd942137d"),
        ]
    ],
}


def dataset_folder(name: str) -> str:
    """The folder a dataset lives in under the data directory (as `registry.load_dataset` expects)."""
    known = KNOWN_DATASETS.get(name)
    return known.folder if known is not None else name


def download(
    name: str, data_dir: str | Path, *, sources: list[Source] | None = None, progress: bool = True
) -> Path:
    """Fetch dataset `name` into `data_dir/<folder>/` and return that folder.

    Files already there with the right hash are kept; the others are fetched into a temporary folder
    beside it and moved in only when all of them arrived with the right hash. `sources` overrides the
    built-in list (tests, mirrors).
    """
    if sources is None:
        if name not in SOURCES:
            raise RecIndexError(f"no download known for {name!r}; known: {', '.join(SOURCES)}")
        sources = SOURCES[name]
    data_dir = Path(data_dir)
    folder = data_dir / dataset_folder(name)
    for source in sources:
        if Path(source.filename).name != source.filename or source.filename in ("", ".", ".."):
            raise RecIndexError(f"download source file name {source.filename!r} must be a plain file name")
    wanted = [s for s in sources if not _present(folder / s.filename, s.sha256)]
    if not wanted:
        return folder
    created = _missing_parents(data_dir)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".part", dir=data_dir))
    except OSError as error:
        raise RecIndexError(f"cannot write in {data_dir}: {error.strerror or error}") from None
    try:
        with _progress_bar(progress) as bar:
            for source in wanted:
                _fetch(source, staging / source.filename, bar, name, sources, folder)
        _move_into_place(staging, folder, [s.filename for s in wanted])
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        for parent in created:  # folders made for this download alone go if it failed
            if parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
    return folder


def _present(path: Path, sha256: str) -> bool:
    return path.is_file() and sha256_file(path) == sha256


def _missing_parents(path: Path) -> list[Path]:
    """`path` and its parents that do not exist yet, deepest first."""
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


def _move_into_place(staging: Path, folder: Path, names: list[str]) -> None:
    """Make the complete, verified files in `staging` the contents of `folder`: a new folder by one
    rename, or in a folder that exists (a partial copy, or one holding other files too) file by file."""
    try:
        if not folder.exists():
            os.rename(staging, folder)  # atomic: the folder appears complete or not at all
            return
        for name in names:
            os.replace(staging / name, folder / name)
    except OSError as error:
        raise RecIndexError(f"could not move the downloaded files into {folder}: {error}") from None


def _fetch(source: Source, target: Path, bar, name: str, sources: list[Source], folder: Path) -> None:
    """Download one file to `target` (in the staging folder, removed by the caller whatever happens)
    and check its hash. `folder` is where the files will go, for the message on installing by hand."""
    try:
        digest = hashlib.sha256()
        with (
            open(target, "wb") as out,
            urllib.request.urlopen(source.url, timeout=_TIMEOUT_S) as response,
        ):
            size = response.headers.get("Content-Length")
            task = bar.add_task(source.filename, total=int(size) if size and size.isdigit() else None)
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                out.write(chunk)
                digest.update(chunk)
                bar.advance(task, len(chunk))
        actual = digest.hexdigest()
        if actual != source.sha256:
            raise RecIndexError(
                f"{source.filename}: checksum mismatch for {source.url}: expected sha256 {source.sha256}, "
                f"got {actual}. The file was not kept; the source may have changed or the download was "
                "corrupted"
            )
    except urllib.error.HTTPError as error:
        raise RecIndexError(
            f"{source.filename}: {source.url} answered HTTP {error.code} ({error.reason}). "
            + _by_hand(name, folder, sources)
        ) from None
    except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as error:
        reason = getattr(error, "reason", error)
        raise RecIndexError(
            f"{source.filename}: could not fetch {source.url} ({reason}); the network seems unreachable. "
            + _by_hand(name, folder, sources)
        ) from None
    except OSError as error:
        raise RecIndexError(f"{source.filename}: could not write {target}: {error}") from None


def _by_hand(name: str, folder: Path, sources: list[Source]) -> str:
    files = "; ".join(f"{s.filename} from {s.url} (sha256 {s.sha256})" for s in sources)
    return f"To install {name!r} by hand, place these files in {folder}: {files}"


class _NoBar:
    """Stands in for a rich progress bar when progress is off."""

    def add_task(self, *args, **kwargs) -> int:
        return 0

    def advance(self, *args, **kwargs) -> None:
        pass


@contextmanager
def _progress_bar(enabled: bool) -> Iterator:
    if not enabled:
        yield _NoBar()
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, console=Console(stderr=True)) as bar:
        yield bar
