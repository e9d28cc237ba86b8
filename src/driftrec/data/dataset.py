"""The in-memory form of a dataset, and the error a bad row raises."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from driftrec.models import Interaction, Item, User


class DatasetError(ValueError):
    """A bad row: names the file and the line, and says what is wrong."""

    def __init__(self, path: Path | str, line: int, message: str):
        super().__init__(f"{path}:{line}: {message}")
        self.path = str(path)
        self.line = line
        self.message = message


@dataclass
class LoadReport:
    """What lenient loading skipped, so a caller can decide whether that is acceptable."""

    rows: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)

    def skip(self, error: DatasetError) -> None:
        self.skipped += 1
        if len(self.errors) < 20:
            self.errors.append(str(error))

    def bad_row(self, path: Path | str, line: int, exc: ValueError, *, lenient: bool) -> None:
        """Raise the row's error naming file, line and field; or, when lenient, count it and go on."""
        detail = exc.errors()[0] if isinstance(exc, ValidationError) else None
        message = f"{'.'.join(map(str, detail['loc']))}: {detail['msg']}" if detail else str(exc)
        error = DatasetError(path, line, message)
        if not lenient:
            raise error from None
        self.skip(error)


@dataclass
class Dataset:
    name: str
    items: dict[str, Item]
    interactions: list[Interaction]
    users: dict[str, User] = field(default_factory=dict)
    report: LoadReport = field(default_factory=LoadReport)

    def by_user(self) -> dict[str, list[Interaction]]:
        """Each user's interactions in time order (ties keep file order, which is stable)."""
        grouped: dict[str, list[Interaction]] = defaultdict(list)
        for event in self.interactions:
            grouped[event.user].append(event)
        return {user: sorted(events, key=lambda e: e.timestamp) for user, events in grouped.items()}
