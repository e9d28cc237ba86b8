"""Preferences stated in words: "I'm tired of horror", "more comedies please", "nothing with kids".

A small deterministic reader of genre mentions and the words around them. It runs on every chat
message whatever the model, so a stated dislike is never lost on a model too small to notice it.
Because its dislikes become filters for a while, it is conservative about negation:

- words match whole words only ("no" is not inside "Casino", "war" is not inside "Wars");
- a negation governs a genre only within its own clause (split at punctuation and at "but", "just",
  "maybe", "instead"...), within a few words, and not across another genre or a word like "just"
  ("I'm not sure, maybe something set in space" wants Sci-Fi);
- phrases that look negative but praise are read as praise ("nothing beats a good comedy", "I can't
  get enough of westerns", "I don't mind horror");
- a plain mention in a request is a like ("a war film" wants War); a mention in a report of what the
  user watched ("I saw a horror film yesterday") is neither.

Tested on the phrasings in tests/unit/test_signals.py.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

from driftrec.models import StatedPreference

# Words users say for a genre, beyond its own name (MovieLens genres); plurals are matched too.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "Horror": ("horror", "horrors", "horor", "scary", "slasher", "gore", "gory", "creepy", "frightening"),
    "Comedy": (
        "comedy",
        "comedies",
        "comdy",
        "funny",
        "comedic",
        "laugh",
        "hilarious",
        "rom-com",
        "rom-coms",
        "romcom",
        "romcoms",
    ),
    "Sci-Fi": ("sci-fi", "scifi", "sci fi", "science fiction", "science-fiction", "space", "aliens", "futuristic"),
    "Romance": (
        "romance",
        "romances",
        "romantic",
        "love story",
        "love stories",
        "rom-com",
        "rom-coms",
        "romcom",
        "romcoms",
    ),
    "Children's": ("children's", "childrens", "children", "kids", "kid", "family"),
    "Animation": ("animation", "animated", "cartoon", "cartoons", "anime"),
    "Thriller": ("thriller", "thrillers", "suspense", "suspenseful"),
    "Documentary": ("documentary", "documentaries", "docs"),
    "Action": ("action", "action-packed"),
    "Adventure": ("adventure", "adventures"),
    "Crime": ("crime", "gangster", "gangsters", "heist", "mafia", "mob"),
    "Drama": ("drama", "dramas", "dramatic"),
    "Fantasy": ("fantasy", "fantasies", "magic", "wizards"),
    "Film-Noir": ("film-noir", "film noir", "noir"),
    "Musical": ("musical", "musicals"),
    "Mystery": ("mystery", "mysteries", "whodunit", "whodunnit", "detective"),
    "War": ("war", "wartime", "ww2", "wwii", "world war"),
    "Western": ("western", "westerns", "cowboy", "cowboys"),
}

_PRAISE = re.compile(
    r"\b(?:nothing (?:beats|tops|compares to|is better than|better than|against)|can'?t get enough of|"
    r"cannot get enough of|never get tired of|never tire of|(?:do not|don'?t|wouldn'?t|would not) mind|"
    r"not tired of|no shortage of)\b"
)
NEGATIONS = (
    "don't like", "dont like", "do not like", "doesn't like", "didn't like", "never liked", "don't want",
    "dont want", "do not want", "don't love", "don't enjoy", "don't need", "not into", "not a fan of",
    "not in the mood for", "no", "not", "never", "without", "avoid", "avoiding", "skip", "hate", "hated",
    "hates", "dislike", "dislikes", "detest", "less", "fewer", "except", "stop", "nothing", "nothing with",
    "nothing like", "anything except", "other than", "instead of", "tired of", "sick of", "bored of",
    "bored with", "fed up with", "fed up", "enough of", "enough with", "no more", "can't stand", "cant stand",
    "cannot stand", "rather not", "isn't", "isnt", "aren't", "don't", "dont", "doesn't", "won't", "wouldn't",
    "can't", "spare me", "done with", "over",
)  # fmt: skip
# Longest first, so "no more" and "don't like" are one negation, not "no" then "more".
_NEGATION = re.compile(r"\b(?:" + "|".join(re.escape(n) for n in sorted(NEGATIONS, key=len, reverse=True)) + r")\b")
_AFTER_NEGATIVE = re.compile(
    r"^(?:\W+\w+){0,3}?\W+(?:is|are|'s|'re)?\s*(?:not for me|not my thing|not really my thing|no thanks|"
    r"boring|bore me|bores me|suck|sucks|overrated|got old|gets old|annoy me|annoys me|too much)\b"
)
_REPORT = re.compile(r"\b(?:watched|saw|seen|finished)\b")
# Words that end a negation's reach ("no horror, just comedy"; "not sure, maybe space").
_BREAK = re.compile(
    r"\b(?:just|only|maybe|perhaps|rather|instead|prefer|but|something|though|however|so|more|love|like|want|"
    r"enjoy|give me|some)\b"
)
_CLAUSE = re.compile(r"[.;!?,:()\n]+|\b(?:but|however|although|though|whereas|while)\b")
_REACH = 6  # words a negation reaches forward


def stated_preferences(user: str, message: str, vocabulary: Sequence[str]) -> list[StatedPreference]:
    """Genre likes and dislikes stated in ``message``; the latest mention of a genre wins."""
    known = set(vocabulary)
    found: dict[str, StatedPreference] = {}
    text = message.replace("\u2019", "'").lower()
    text = re.sub(r"\banything but\b", "anything except", text)  # not a clause break
    for clause in _CLAUSE.split(text):
        for at, genre in _mentions(clause, known):
            polarity = _polarity(clause, at)
            if polarity is not None:
                found.pop(genre, None)
                found[genre] = StatedPreference(user=user, name=genre, polarity=polarity, text=message.strip()[:4000])
    return list(found.values())


def _mentions(clause: str, known: set[str]) -> list[tuple[tuple[int, int], str]]:
    """(start, end) of each genre word in the clause, in order. A word of six letters or more one typo
    away from a genre word (same first letter) counts too: "commedies", "thrilers", "documentrys"."""
    hits: list[tuple[tuple[int, int], str]] = []
    for genre, words in SYNONYMS.items():
        if genre not in known:
            continue
        for word in words:
            for match in re.finditer(r"(?<![\w-])" + re.escape(word) + r"(?![\w-])", clause):
                hits.append(((match.start(), match.end()), genre))
    exact = {span for span, _ in hits}
    for match in re.finditer(r"[a-z]{6,}", clause):
        if (match.start(), match.end()) in exact:
            continue
        for genre, words in SYNONYMS.items():
            if genre in known and any(_one_typo(match.group(), w) for w in words if len(w) >= 6 and " " not in w):
                hits.append(((match.start(), match.end()), genre))
                break
    hits.sort()
    return hits


def _one_typo(a: str, b: str) -> bool:
    """One letter inserted, deleted or replaced (not the first one)."""
    if a == b or a[0] != b[0] or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        return sum(x != y for x, y in zip(a, b, strict=True)) == 1
    short, long = (a, b) if len(a) < len(b) else (b, a)
    return any(long[:i] + long[i + 1 :] == short for i in range(len(long)))


def _polarity(clause: str, at: tuple[int, int]) -> Literal["like", "dislike"] | None:
    before, after = clause[: at[0]], clause[at[1] :]
    if _PRAISE.search(before):
        return "like"
    negations = list(_NEGATION.finditer(before))
    if negations:
        negation = negations[-1]  # the nearest one
        between = before[negation.end() :]
        if len(between.split()) <= _REACH and not _BREAK.search(between):
            return "dislike"
    if _AFTER_NEGATIVE.search(after):
        return "dislike"
    if _REPORT.search(before) and not re.search(r"\b(?:more|another|again|love|loved|like|liked)\b", clause):
        return None  # "I saw a horror film yesterday": a report, not a wish
    return "like"
