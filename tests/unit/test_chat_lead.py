"""The LLM's lead sentence is dropped when it only copies the result (SmolLM2 starts the list itself)."""

from __future__ import annotations

from driftrec.agent.chat import _copies

RESULT = "1. Vermin (1998) [Comedy] (id 907): Matches your interest in Comedy.\n2. Bean (1997) [Comedy] (id 338): ..."


def test_a_numbered_line_or_a_copied_line_is_not_a_lead() -> None:
    assert _copies("1. That Thing You Do! (1996) [Comedy] (id 845): Matches your interest in Comedy.", RESULT)
    assert _copies("Vermin (1998) [Comedy] (id 907): Matches your interest in Comedy.", RESULT)


def test_a_sentence_about_the_result_is_kept() -> None:
    assert not _copies("Here are five comedies from the nineties, none of them horror.", RESULT)
