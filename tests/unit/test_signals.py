"""The stated-preference reader: what users say, and what driftrec hears (like, dislike, or nothing).

Its dislikes become filters for a day, so every misread here would hide a genre from the user."""

from __future__ import annotations

import pytest

from driftrec.agent.signals import SYNONYMS, stated_preferences

GENRES = sorted(SYNONYMS)

# message -> {genre: polarity}; genres not listed must not be read at all.
PHRASINGS: list[tuple[str, dict[str, str]]] = [
    # the three misreadings reported in issue 12
    ("I loved Casino and want more crime", {"Crime": "like"}),
    ("Nothing beats a good comedy", {"Comedy": "like"}),
    ("I'm not sure, maybe something set in space", {"Sci-Fi": "like"}),
    # and the chat requests of issue 13
    ("something funny from the nineties, nothing with kids", {"Comedy": "like", "Children's": "dislike"}),
    ("a war film that isn't a comedy", {"War": "like", "Comedy": "dislike"}),
    (
        "no horror, no thrillers, just something light and funny",
        {"Horror": "dislike", "Thriller": "dislike", "Comedy": "like"},
    ),
    ("give me a quiet drama", {"Drama": "like"}),
    ("I'm tired of horror", {"Horror": "dislike"}),
    ("more comedies please", {"Comedy": "like"}),
    ("less scary stuff tonight", {"Horror": "dislike"}),
    ("I hate horror but love comedy", {"Horror": "dislike", "Comedy": "like"}),
    ("No more romance please", {"Romance": "dislike"}),
    ("I don't like westerns", {"Western": "dislike"}),
    ("I don't mind horror", {"Horror": "like"}),
    ("I can't get enough of westerns", {"Western": "like"}),
    ("anything but musicals", {"Musical": "dislike"}),
    ("Anything except documentaries", {"Documentary": "dislike"}),
    ("no horror or thrillers", {"Horror": "dislike", "Thriller": "dislike"}),
    ("Horror is not my thing", {"Horror": "dislike"}),
    ("musicals bore me", {"Musical": "dislike"}),
    ("I'm sick of sci-fi, give me a mystery", {"Sci-Fi": "dislike", "Mystery": "like"}),
    ("I'm in the mood for a romantic comedy", {"Romance": "like", "Comedy": "like"}),
    ("Star Wars was great, more like that", {}),  # "Wars" is not the War genre
    ("I saw a horror film yesterday", {}),  # a report, not a wish
    ("I watched a drama last night and loved it, more dramas", {"Drama": "like"}),
    ("recommend an animated movie for the kids", {"Animation": "like", "Children's": "like"}),
    ("not into documentaries", {"Documentary": "dislike"}),
    ("not a fan of musicals, but westerns are fine", {"Musical": "dislike", "Western": "like"}),
    ("something without gore", {"Horror": "dislike"}),
    ("Avoid thrillers.", {"Thriller": "dislike"}),
    ("fed up with action movies", {"Action": "dislike"}),
    ("Give me some film noir", {"Film-Noir": "like"}),
    ("a commedy from the 80s", {"Comedy": "like"}),  # a typo
    ("scifi please", {"Sci-Fi": "like"}),
    ("I would rather not watch a war movie", {"War": "dislike"}),
    ("I never liked fantasy", {"Fantasy": "dislike"}),
    ("spare me the love stories", {"Romance": "dislike"}),
    ("I'm done with crime dramas; something adventurous", {"Crime": "dislike", "Drama": "dislike"}),
    ("what about an adventure?", {"Adventure": "like"}),
    ("I like mysteries. I hate horror.", {"Mystery": "like", "Horror": "dislike"}),
    ("no thanks, what else is there", {}),
    ("I love horror. Actually, I'm tired of horror now", {"Horror": "dislike"}),  # the latest mention wins
    ("Nobody's Fool was nice", {}),  # "No" inside a title is no negation
    ("Nowhere near enough westerns lately", {"Western": "like"}),
]


@pytest.mark.parametrize(("message", "expected"), PHRASINGS, ids=[m for m, _ in PHRASINGS])
def test_reads_what_the_user_said(message: str, expected: dict[str, str]) -> None:
    got = {s.name: s.polarity for s in stated_preferences("u", message, GENRES)}
    assert got == expected


def test_there_are_at_least_forty_phrasings() -> None:
    assert len(PHRASINGS) >= 40


def test_only_genres_of_the_vocabulary_are_read() -> None:
    assert stated_preferences("u", "no horror, more comedy", ["Comedy"])[0].name == "Comedy"
    assert stated_preferences("u", "no horror, more comedy", ["Comedy"])[0].polarity == "like"


def test_the_statement_keeps_the_users_words() -> None:
    [said] = stated_preferences("u", "  I'm tired of horror  ", GENRES)
    assert said.text == "I'm tired of horror" and said.user == "u"
