"""MovieLens-100K loader: small hand-written folders, plus the real files when they are present."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from recindex.data.movielens import load_movielens_100k
from recindex.errors import DataFormatError, RecIndexError

GENRES = ["unknown", "Action", "Comedy", "Drama"]
REAL = Path(os.environ.get("RECINDEX_DATA_DIR") or Path(__file__).resolve().parents[3] / "shared" / "data")


def write_folder(folder: Path, data: str, items: str | None = None, users: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "u.data").write_text(data)
    (folder / "u.genre").write_text("".join(f"{g}|{i}\n" for i, g in enumerate(GENRES)) + "\n")
    if items is not None:
        (folder / "u.item").write_bytes(items.encode("latin-1"))
    if users is not None:
        (folder / "u.user").write_text(users)
    return folder


# user item rating timestamp; user 7 has a timestamp tie (items 20 and 10 at t=100, in that file order).
DATA = "7\t30\t4\t300\n7\t20\t5\t100\n3\t10\t1\t50\n7\t10\t3\t100\n3\t30\t2\t40\n"
ITEMS = (
    "10|Café Society (1995)|01-Jan-1995||http://x|0|1|1|0\n"
    "20|Nameless (1997)|||http://y|1|0|0|0\n"
    "25|Never Rated (1990)|05-Feb-1990||http://z|0|0|0|1\n"
    "30|Drama Time (1988)|12-Mar-1988||http://w|0|0|0|1\n"
)
USERS = "3|17|F|student|12345\n7|50|M|other|54321\n9|30|M|writer|00000\n"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return write_folder(tmp_path / "ml", DATA, ITEMS, USERS)


def test_sequences_are_sorted_by_time_with_stable_ties(folder: Path) -> None:
    data = load_movielens_100k(folder)
    assert data.name == "ml-100k"
    assert data.user_ids.tolist() == [3, 7]
    assert data.item_ids.tolist() == [10, 20, 30]  # item 25 has no rating: dropped
    assert (data.n_users, data.n_items, data.n_interactions) == (2, 3, 5)
    raw = data.item_ids
    assert raw[data.sequence(0)].tolist() == [30, 10]
    assert raw[data.sequence(1)].tolist() == [20, 10, 30]  # the t=100 tie keeps file order
    assert data.timestamps.tolist() == [40, 50, 100, 100, 300]


def test_item_titles_and_feature_tokens(folder: Path) -> None:
    data = load_movielens_100k(folder)
    assert data.extra["item_titles"] == ["Café Society (1995)", "Nameless (1997)", "Drama Time (1988)"]
    features = data.item_features
    tokens = [sorted(features.names[t] for t in features.of(i)) for i in range(data.n_items)]
    assert tokens[0] == ["genre=Action", "genre=Comedy", "year=1995"]
    assert tokens[1] == ["genre=unknown"]  # no release date: no year token
    assert tokens[2] == ["genre=Drama", "year=1988"]
    assert "year=1990" not in features.names  # only the dropped item had it


def test_user_features_buckets_and_unknown_codes(folder: Path) -> None:
    features = load_movielens_100k(folder).user_features
    ages = [features.vocab["age"][c] for c in features.codes["age"]]
    assert ages == ["<18", "50-55"]
    assert [features.vocab["gender"][c] for c in features.codes["gender"]] == ["F", "M"]
    assert [features.vocab["occupation"][c] for c in features.codes["occupation"]] == ["student", "other"]
    assert features.vocab["gender"][0] == "unknown"


def test_user_missing_from_u_user_gets_unknown(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "ml", DATA, ITEMS, "3|60|F|student|1\n")
    features = load_movielens_100k(folder).user_features
    assert features.codes["age"].tolist() == [7, 0]  # 56+, then unknown for user 7
    assert features.codes["gender"].tolist()[1] == 0


def test_only_u_data_is_required(tmp_path: Path) -> None:
    data = load_movielens_100k(write_folder(tmp_path / "ml", DATA))
    assert data.item_features is None and data.user_features is None
    assert data.n_interactions == 5


@pytest.mark.parametrize(
    ("name", "content", "line"),
    [
        ("u.data", "1\t2\t3\t4\n1\t2\t3\n", 2),
        ("u.data", "1\t2\t3\t4\n\n1\tx\t3\t4\n", 3),
        ("u.item", ITEMS.replace("|0|0|0|1\n30", "|0|0|1\n30"), 3),
        ("u.item", ITEMS.replace("12-Mar-1988", "1988/03/12"), 4),
        ("u.item", ITEMS.replace("|1|0|0|0\n", "|2|0|0|0\n"), 2),
        ("u.item", ITEMS + ITEMS.splitlines(keepends=True)[0], 5),
        ("u.user", "3|17|F|student|1\n7|old|M|x|1\n", 2),
    ],
)
def test_malformed_lines_name_file_and_line(folder: Path, name: str, content: str, line: int) -> None:
    (folder / name).write_bytes(content.encode("latin-1"))
    with pytest.raises(DataFormatError) as caught:
        load_movielens_100k(folder)
    assert caught.value.path.endswith(name)
    assert caught.value.line == line
    assert f"{name}, line {line}: expected" in str(caught.value)


def test_rated_item_missing_from_u_item(folder: Path) -> None:
    (folder / "u.item").write_bytes(ITEMS.splitlines(keepends=True)[0].encode("latin-1"))
    with pytest.raises(DataFormatError, match=r"u\.item: expected a line for item 20.*u\.data line 2"):
        load_movielens_100k(folder)


def test_missing_or_empty_files(tmp_path: Path) -> None:
    with pytest.raises(RecIndexError, match="no u.data"):
        load_movielens_100k(tmp_path)
    with pytest.raises(DataFormatError, match="at least one rating"):
        load_movielens_100k(write_folder(tmp_path / "empty", "\n"))
    folder = write_folder(tmp_path / "nogenre", DATA, ITEMS)
    (folder / "u.genre").unlink()
    with pytest.raises(RecIndexError, match="u.genre"):
        load_movielens_100k(folder)


@pytest.mark.skipif(not (REAL / "ml-100k" / "u.data").exists(), reason="MovieLens-100K files not present")
def test_real_movielens_100k() -> None:
    data = load_movielens_100k(REAL / "ml-100k")
    assert (data.n_users, data.n_items, data.n_interactions) == (943, 1682, 100_000)
    assert data.item_ids.tolist() == list(range(1, 1683))
    stamps = data.timestamps
    assert all(np.all(np.diff(stamps[data.offsets[u] : data.offsets[u + 1]]) >= 0) for u in range(943))
    assert data.lengths().min() >= 20
    titles = data.extra["item_titles"]
    assert titles[0] == "Toy Story (1995)"
    assert "Misérables, Les (1995)" in titles  # Latin-1 decoded
    features = data.item_features
    toy_story = sorted(features.names[t] for t in features.of(0))
    assert toy_story == ["genre=Animation", "genre=Children's", "genre=Comedy", "year=1995"]
    assert [features.names[t] for t in features.of(266)] == ["genre=unknown"]  # item 267: no date
    users = data.user_features
    assert users.vocab["age"][users.codes["age"][0]] == "18-24"  # user 1 is 24
    assert users.vocab["gender"][users.codes["gender"][0]] == "M"
    assert users.vocab["occupation"][users.codes["occupation"][0]] == "technician"
    assert all((codes > 0).all() for codes in users.codes.values())


def test_html_entities_in_titles_are_decoded(tmp_path: Path) -> None:
    items = ITEMS.replace("Drama Time (1988)", "Cats &amp; Dogs&#39; Time (1988)")
    data = load_movielens_100k(write_folder(tmp_path / "ml", DATA, items, USERS))
    assert data.extra["item_titles"][2] == "Cats & Dogs' Time (1988)"
