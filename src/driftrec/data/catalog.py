"""Bring your own catalog: items from a JSONL or CSV file.

Each record needs ``id`` and ``title``; ``year`` and ``genres`` (a list, or a string split on ``|`` or
``,``) are optional; ``text_fields`` are joined into the item text that is embedded; every other scalar
field becomes filterable metadata.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from driftrec.data.dataset import DatasetError, LoadReport
from driftrec.models import Item

DEFAULT_TEXT_FIELDS = ("text", "description", "overview", "summary")


def _records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    suffix = path.suffix.lower()
    with open(path, encoding="utf-8", newline="") as handle:
        if suffix in (".jsonl", ".ndjson"):
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DatasetError(path, number, f"not JSON: {exc.msg}") from None
                if not isinstance(record, dict):
                    raise DatasetError(path, number, "expected a JSON object")
                yield number, record
        elif suffix in (".csv", ".tsv"):
            reader = csv.DictReader(handle, delimiter="\t" if suffix == ".tsv" else ",")
            for number, record in enumerate(reader, start=2):
                yield number, {k: v for k, v in record.items() if k is not None and v not in (None, "")}
        else:
            raise DatasetError(path, 0, "catalog must be .jsonl, .ndjson, .csv or .tsv")


def _item(record: dict[str, Any], text_fields: tuple[str, ...]) -> Item:
    if "id" not in record or "title" not in record:
        raise ValueError("missing required field 'id' or 'title'")
    genres = record.get("genres", ())
    if isinstance(genres, str):
        genres = [g.strip() for g in genres.replace("|", ",").split(",") if g.strip()]
    year = record.get("year")
    reserved = {"id", "title", "year", "genres", *text_fields}
    metadata = {k: v for k, v in record.items() if k not in reserved and isinstance(v, str | int | float | bool)}
    return Item(
        id=str(record["id"]),
        title=str(record["title"]),
        year=int(year) if year not in (None, "") else None,
        genres=tuple(genres),
        text=" ".join(str(record[f]) for f in text_fields if record.get(f)),
        metadata=metadata,
    )


def load_catalog(
    path: Path, *, text_fields: tuple[str, ...] = DEFAULT_TEXT_FIELDS, lenient: bool = False
) -> tuple[list[Item], LoadReport]:
    """Read items from ``path``; duplicates by id keep the last record."""
    report = LoadReport()
    items: dict[str, Item] = {}
    for number, record in _records(Path(path)):
        report.rows += 1
        try:
            item = _item(record, text_fields)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError too
            report.bad_row(path, number, exc, lenient=lenient)
            continue
        items[item.id] = item
    return list(items.values()), report
