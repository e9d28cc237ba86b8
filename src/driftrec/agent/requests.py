"""A request in words becomes constraints that retrieval enforces: genres wanted and refused, a year range.

"something funny from the nineties, nothing with kids" -> genres [Comedy], exclude [Children's],
years 1990-1999. Deterministic, so it works with any model or none; an LLM's reading (a chat plan, a
tool call) can add to it, and never drops what it found (chat.py merges both). Genres come from the
stated-preference reader (signals.py: word boundaries, negation scope); years from decades ("90s",
"nineties", "1990s", "the eighties or nineties"), bounds ("before 1980", "after 1995", "since 1990",
"from 1994"), and words relative to the catalog ("recent", "new", "old", "classic"). What remains of the
message once refused genres are taken out is the text for vector search, so "no horror" never retrieves
a title with "no" in it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from driftrec.agent.signals import _NEGATION, SYNONYMS, stated_preferences
from driftrec.models import Filters

DECADE_WORDS = {
    "twenties": 1920, "thirties": 1930, "forties": 1940, "fifties": 1950, "sixties": 1960,
    "seventies": 1970, "eighties": 1980, "nineties": 1990, "noughties": 2000,
}  # fmt: skip
_DECADE = re.compile(r"\b(?:(1[89]|20)?([0-9])0'?s|(" + "|".join(DECADE_WORDS) + r"))\b")
_BEFORE = re.compile(r"\b(?:before|pre-?|older than|earlier than|until|up to)\s*((?:19|20)\d\d)\b")
_AFTER = re.compile(r"\b(?:after|post-?|newer than|later than)\s*((?:19|20)\d\d)\b")
_SINCE = re.compile(r"\b(?:since|from|in|released in|made in|of)\s+((?:19|20)\d\d)\b(?!s)(\s+(?:on|onwards?))?")
_RECENT = re.compile(r"\b(?:recent|new|newer|latest|modern|current)\b")
_OLD = re.compile(r"\b(?:old|older|classic|classics|vintage|golden age)\b")
RECENT_YEARS = 3  # "recent": the catalog's last few years
CLASSIC_BEFORE = 1970


@dataclass
class Constraints:
    genres: list[str] = field(default_factory=list)  # any of these
    exclude_genres: list[str] = field(default_factory=list)  # none of these
    year_min: int | None = None
    year_max: int | None = None
    query: str = ""  # the request's text without what it refuses: for vector search

    def filters(self) -> Filters | None:
        if not (self.genres or self.exclude_genres or self.year_min or self.year_max):
            return None
        return Filters(
            genres=self.genres, exclude_genres=self.exclude_genres, year_min=self.year_min, year_max=self.year_max
        )

    def merged(self, other: Constraints) -> Constraints:
        """Both readings at once: refusals win over wishes, year bounds take the narrower range."""
        exclude = list(dict.fromkeys([*self.exclude_genres, *other.exclude_genres]))
        genres = [g for g in dict.fromkeys([*self.genres, *other.genres]) if g not in exclude]
        lows = [y for y in (self.year_min, other.year_min) if y is not None]
        highs = [y for y in (self.year_max, other.year_max) if y is not None]
        return Constraints(
            genres, exclude, max(lows) if lows else None, min(highs) if highs else None, self.query or other.query
        )


def parse_request(message: str, vocabulary: Sequence[str], *, latest_year: int | None = None) -> Constraints:
    """The constraints a request states (see the module doc). ``latest_year`` anchors "recent"."""
    stated = stated_preferences("_", message, vocabulary)
    genres = [s.name for s in stated if s.polarity == "like"]
    exclude = [s.name for s in stated if s.polarity == "dislike"]
    text = message.lower()
    year_min, year_max = _years(text, latest_year)
    return Constraints(genres, exclude, year_min, year_max, _query_text(message, exclude))


def _years(text: str, latest_year: int | None) -> tuple[int | None, int | None]:
    starts: list[int] = []
    for match in _DECADE.finditer(text):
        century, digit, word = match.groups()
        if word:
            starts.append(DECADE_WORDS[word])
        elif digit is not None:
            base = int(century) * 100 if century else (2000 if digit in "012" and not century else 1900)
            starts.append(base + int(digit) * 10)
    low: int | None = min(starts) if starts else None
    high: int | None = max(starts) + 9 if starts else None
    if match := _BEFORE.search(text):
        high = min(high or 9999, int(match.group(1)) - 1)
    if match := _AFTER.search(text):
        low = max(low or 0, int(match.group(1)) + 1)
    if not starts and (match := _SINCE.search(text)):
        year = int(match.group(1))
        if match.group(2) or re.search(r"\bsince\s+" + match.group(1), text):  # "since 1990", "from 1990 on"
            low = max(low or 0, year)
        else:  # "from 1995", "in 1995", "of 1995": that year
            low, high = year, year
    if latest_year is not None and low is None and high is None:
        if _RECENT.search(text):
            low = latest_year - RECENT_YEARS + 1
        elif _OLD.search(text):
            high = CLASSIC_BEFORE - 1
    return low, high


def _query_text(message: str, exclude: Sequence[str]) -> str:
    """The message without the phrases that refuse a genre ("no horror", "isn't a comedy"): their words
    would pull exactly those items closer in vector search."""
    text = message
    for genre in exclude:
        for word in SYNONYMS.get(genre, (genre.lower(),)):
            refusal = rf"(?:{_NEGATION.pattern}[^.;,!?]{{0,40}}?)?(?<![\w-]){re.escape(word)}(?![\w-])"
            text = re.sub(refusal, " ", text, flags=re.IGNORECASE)
    return re.sub(r"\s+", " ", text).strip(" ,.;")
