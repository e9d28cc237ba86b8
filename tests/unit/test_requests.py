"""Requests in words become constraints retrieval enforces; the benchmark's requests are satisfiable and
their constraints come from the templates, not from the parser under test."""

from __future__ import annotations

import pytest

from driftrec.agent.requests import Constraints, parse_request
from driftrec.agent.signals import SYNONYMS
from driftrec.eval.request_study import build_requests
from driftrec.models import Item

GENRES = sorted(SYNONYMS)


@pytest.mark.parametrize(
    ("message", "genres", "exclude", "years"),
    [
        ("something funny from the nineties, nothing with kids", ["Comedy"], ["Children's"], (1990, 1999)),
        ("a war film that isn't a comedy", ["War"], ["Comedy"], (None, None)),
        ("no horror, no thrillers, just something light and funny", ["Comedy"], ["Horror", "Thriller"], (None, None)),
        ("I'm tired of horror, recommend 5 comedies from the 90s", ["Comedy"], ["Horror"], (1990, 1999)),
        ("a drama from before 1980", ["Drama"], [], (None, 1979)),
        ("thrillers released after 1993", ["Thriller"], [], (1994, None)),
        ("an 80s or 90s action movie", ["Action"], [], (1980, 1999)),
        ("a movie from 1995", [], [], (1995, 1995)),
        ("romcoms since 1990", ["Comedy", "Romance"], [], (1990, None)),
        ("comedies from the 1930s", ["Comedy"], [], (1930, 1939)),
        ("recent sci-fi please", ["Sci-Fi"], [], (1996, None)),  # the catalog's last three years
        ("classic westerns", ["Western"], [], (None, 1969)),
        ("commedies from the 80s", ["Comedy"], [], (1980, 1989)),  # a typo
    ],
)
def test_requests_become_constraints(
    message: str, genres: list[str], exclude: list[str], years: tuple[int | None, int | None]
) -> None:
    got = parse_request(message, GENRES, latest_year=1998)
    assert sorted(got.genres) == sorted(genres)
    assert sorted(got.exclude_genres) == sorted(exclude)
    assert (got.year_min, got.year_max) == years


def test_the_search_text_loses_its_refusals() -> None:
    got = parse_request("no horror, no thrillers, just something light and funny", GENRES)
    assert got.query == "just something light and funny"
    assert "comedy" not in parse_request("a war film that isn't a comedy", GENRES).query


def test_merging_keeps_refusals_and_the_narrower_years() -> None:
    a = Constraints(["Comedy", "Horror"], [], 1980, None)
    b = Constraints([], ["Horror"], 1990, 1999)
    merged = a.merged(b)
    assert merged.genres == ["Comedy"] and merged.exclude_genres == ["Horror"]
    assert (merged.year_min, merged.year_max) == (1990, 1999)


def test_the_benchmark_has_over_a_hundred_satisfiable_requests() -> None:
    catalog = {}
    n = 0
    for genre in GENRES:
        for year in range(1930, 2000, 3):
            for other in ("Drama", "Comedy", "Children's"):
                n += 1
                catalog[str(n)] = Item(id=str(n), title=f"t{n}", year=year, genres=(genre, other))
    requests = build_requests(catalog, n=120, k=5)
    assert len(requests) >= 100 and len({r.text for r in requests}) == len(requests)
    assert all(sum(r.meets(i) for i in catalog.values()) >= 5 for r in requests)
    kinds = {r.kind for r in requests}
    assert {"genre+negation", "negations+adjective", "typo+decade", "genre+before"} <= kinds
