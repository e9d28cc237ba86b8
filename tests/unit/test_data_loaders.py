"""Loading MovieLens-100K (RecBole's atomic files from PyPI, or the GroupLens layout) and user catalogs."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from driftrec.config import Settings
from driftrec.data import Dataset, DatasetError, load_catalog, load_grouplens_100k, load_movielens_100k
from driftrec.data.movielens import GROUPLENS_GENRES, movielens_100k_dir
from driftrec.models import Action


@pytest.fixture(scope="module")
def ml100k(settings: Settings) -> Dataset:
    return load_movielens_100k(settings.cache_dir)


def test_movielens_100k_loads_completely_from_the_recbole_wheel(ml100k: Dataset) -> None:
    assert (len(ml100k.items), len(ml100k.interactions), len(ml100k.users)) == (1682, 100_000, 943)
    assert ml100k.report.skipped == 0
    toy_story = ml100k.items["1"]
    assert (toy_story.title, toy_story.year, toy_story.genres) == (
        "Toy Story (1995)",
        1995,
        ("Animation", "Children's", "Comedy"),
    )
    first = ml100k.interactions[0]
    assert (first.user, first.item, first.rating, first.action) == ("196", "242", 3.0, Action.RATE)
    assert ml100k.users["1"].occupation == "technician"
    assert all(1 <= e.rating <= 5 for e in ml100k.interactions)


def test_known_quirks_of_the_recbole_file_are_read_correctly(ml100k: Dataset) -> None:
    # the year field says 'V' (from "(1995) (V)"); the title's own year is used
    assert ml100k.items["1412"].year == 1995
    # item 267 is "unknown" in the original data, spelled 'unkonwn' in RecBole's
    assert ml100k.items["267"].year is None


def test_each_users_history_is_in_time_order(ml100k: Dataset) -> None:
    for events in ml100k.by_user().values():
        assert all(a.timestamp <= b.timestamp for a, b in itertools.pairwise(events))


def test_grouplens_layout_gives_the_same_dataset(ml100k: Dataset, tmp_path: Path) -> None:
    """Write the real data out in GroupLens' format (u.data, u.item with genre flags, u.user) and read it back."""
    rows = [f"{e.user}\t{e.item}\t{int(e.rating)}\t{int(e.timestamp.timestamp())}" for e in ml100k.interactions]
    (tmp_path / "u.data").write_text("\n".join(rows) + "\n", encoding="latin-1")
    items = []
    for item in ml100k.items.values():
        flags = "|".join("1" if g in item.genres else "0" for g in GROUPLENS_GENRES)
        date = f"01-Jan-{item.year}" if item.year else ""
        items.append(f"{item.id}|{item.title}|{date}||http://x/{item.id}|{flags}")
    (tmp_path / "u.item").write_text("\n".join(items) + "\n", encoding="latin-1", errors="replace")
    users = [f"{u.id}|{u.age}|{u.gender}|{u.occupation}|00000" for u in ml100k.users.values()]
    (tmp_path / "u.user").write_text("\n".join(users) + "\n", encoding="latin-1")

    grouplens = load_grouplens_100k(tmp_path)
    assert len(grouplens.interactions) == 100_000 and len(grouplens.users) == 943
    assert grouplens.items["50"].genres == ml100k.items["50"].genres
    assert grouplens.items["50"].year == ml100k.items["50"].year
    assert [e.event_id for e in grouplens.interactions[:50]] == [e.event_id for e in ml100k.interactions[:50]]


def test_bad_row_names_file_and_line_or_is_skipped_when_lenient(settings: Settings, tmp_path: Path) -> None:
    source = movielens_100k_dir(settings.cache_dir)
    for name in ("ml-100k.item", "ml-100k.user"):
        (tmp_path / name).write_bytes((source / name).read_bytes())
    lines = (source / "ml-100k.inter").read_text().splitlines()[:101]
    lines[5] = "196\t242\tfive\t881250949"  # a rating that is not a number
    lines[9] = "196\t99999\t3\t881250949"  # an item that does not exist
    (tmp_path / "ml-100k.inter").write_text("\n".join(lines) + "\n")

    with pytest.raises(DatasetError, match=r"ml-100k\.inter:6: ") as caught:
        load_movielens_100k(folder=tmp_path)
    assert caught.value.line == 6
    lenient = load_movielens_100k(folder=tmp_path, lenient=True)
    assert len(lenient.interactions) == 98
    assert lenient.report.skipped == 2
    assert "ml-100k.inter:10: item '99999' is not in the item file" in lenient.report.errors[1]


def test_catalog_import_from_jsonl_and_csv(tmp_path: Path) -> None:
    jsonl = tmp_path / "books.jsonl"
    jsonl.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {
                    "id": "b1",
                    "title": "Dune",
                    "year": 1965,
                    "genres": ["Sci-Fi"],
                    "description": "Desert planet.",
                    "pages": 412,
                },
                {"id": "b2", "title": "Emma", "genres": "Romance|Classic", "overview": "Matchmaking."},
                {"id": "b1", "title": "Dune (revised)", "year": 1965},
            ]
        )
        + "\n"
    )
    items, report = load_catalog(jsonl)
    assert [i.id for i in items] == ["b1", "b2"]
    assert items[0].title == "Dune (revised)"
    assert items[1].genres == ("Romance", "Classic") and items[1].text == "Matchmaking."
    assert report.rows == 3

    csv_path = tmp_path / "items.csv"
    csv_path.write_text("id,title,year,genres,description,brand\nx1,Kettle,,Kitchen,Boils water,Acme\nx2,,2020,,,\n")
    with pytest.raises(DatasetError, match=r"items\.csv:3: missing required field"):
        load_catalog(csv_path)
    items, report = load_catalog(csv_path, lenient=True)
    assert [i.metadata for i in items] == [{"brand": "Acme"}]
    assert report.skipped == 1


def test_catalog_rejects_malformed_json_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": "a", "title": "A"}\n{"id": "b", "title": \n')
    with pytest.raises(DatasetError, match=r"bad\.jsonl:2: not JSON"):
        load_catalog(path)
