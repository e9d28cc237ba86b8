"""Preferences stated in words: "I'm tired of horror", "more comedies please", "less scary".

A small deterministic reader of genre mentions and the cue words around them. It runs on every chat
message whatever the model, so a stated dislike is never lost on a model too small to notice it; the
LLM's plan can add to it but not remove it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from driftrec.models import StatedPreference

# Words users say for a genre, beyond its own name (MovieLens genres).
SYNONYMS: dict[str, tuple[str, ...]] = {
    "Horror": ("horror", "scary", "slasher", "gore", "creepy"),
    "Comedy": ("comedy", "comedies", "funny", "comedic", "laugh"),
    "Sci-Fi": ("sci-fi", "scifi", "science fiction", "space"),
    "Romance": ("romance", "romantic", "love stor", "rom-com", "romcom"),
    "Children's": ("children", "kids", "family"),
    "Animation": ("animation", "animated", "cartoon"),
    "Thriller": ("thriller", "suspense"),
    "Documentary": ("documentary", "documentaries"),
    "Action": ("action",),
    "Adventure": ("adventure",),
    "Crime": ("crime", "gangster", "heist"),
    "Drama": ("drama",),
    "Fantasy": ("fantasy",),
    "Film-Noir": ("film-noir", "noir"),
    "Musical": ("musical",),
    "Mystery": ("mystery", "mysteries", "whodunit"),
    "War": ("war movie", "war film", "war"),
    "Western": ("western", "cowboy"),
}
NEGATIVE = (
    "tired of", "sick of", "bored of", "bored with", "enough", "no more", "not ", "don't", "dont", "do not",
    "hate", "dislike", "less", "without", "avoid", "nothing", "no ", "stop", "fed up", "can't stand",
)  # fmt: skip
POSITIVE = ("more", "love", "want", "like", "mood for", "into", "craving", "give me", "some")
_CLAUSE = re.compile(r"[.;!?]|\bbut\b|\bhowever\b|\balthough\b")


def stated_preferences(user: str, message: str, vocabulary: Sequence[str]) -> list[StatedPreference]:
    """Genre likes and dislikes stated in ``message``; the latest mention of a genre wins."""
    known = set(vocabulary)
    found: dict[str, StatedPreference] = {}
    for clause in _CLAUSE.split(message.lower()):
        for genre, words in SYNONYMS.items():
            if genre not in known:
                continue
            for word in words:
                at = _find_word(clause, word)
                if at < 0:
                    continue
                before = clause[max(0, at - 40) : at]
                if any(cue in before for cue in NEGATIVE):
                    polarity = "dislike"
                elif any(cue in before for cue in POSITIVE):
                    polarity = "like"
                else:
                    continue
                found[genre] = StatedPreference(user=user, name=genre, polarity=polarity, text=message.strip()[:4000])
                break
    return list(found.values())


def _find_word(text: str, word: str) -> int:
    match = re.search(r"(?<![a-z])" + re.escape(word), text)
    return match.start() if match else -1
