"""Chat requests: do the recommendations meet what the user asked for?

A benchmark of requests with known constraints (genres wanted, genres refused, a decade or a year
bound), written from templates over the catalog's genres and decades, with negations, synonyms and
typos ("something funny from the nineties, nothing with kids", "a war film that isn't a comedy",
"no horror, no thrillers, just something light and funny", "commedies before 1980"). The constraints
are the template's, never the parser's, so the parser is measured, not trusted. Only requests the
catalog can satisfy (at least ``k`` items) are kept.

Each system answers every request for two kinds of user: a new user (no history) and a user with a
long history (MovieLens user 13, 636 ratings), whose history should not drown the request. Reported:
the share of recommended items that meet their request, and the share of requests fully met (``k``
items, or as many as the catalog has that the user has not seen, every one meeting it). Systems:
popularity for the user (ignores the request), ``recommend``
with the query as text only (vector search, no constraints: the old behaviour), ``recommend`` with the
request understood (agent/requests.py; no LLM), and, with a served model, plan-first chat and native
tool-calling chat.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from driftrec.eval.report import write_report as report_files
from driftrec.models import Item

DECADES = {1950: "50s", 1960: "60s", 1970: "70s", 1980: "80s", 1990: "90s"}
DECADE_WORDS = {1950: "fifties", 1960: "sixties", 1970: "seventies", 1980: "eighties", 1990: "nineties"}
# How people name genres in requests (plural nouns, adjectives), and a typo for some.
NOUNS = {
    "Action": "action movies", "Adventure": "adventure films", "Animation": "animated movies",
    "Children's": "kids' movies", "Comedy": "comedies", "Crime": "crime films", "Drama": "dramas",
    "Fantasy": "fantasy films", "Horror": "horror movies", "Musical": "musicals", "Mystery": "mysteries",
    "Romance": "romances", "Sci-Fi": "sci-fi movies", "Thriller": "thrillers", "War": "war films",
    "Western": "westerns", "Documentary": "documentaries", "Film-Noir": "film noir",
}  # fmt: skip
SINGULAR = {
    "Action": "an action movie", "Adventure": "an adventure", "Animation": "an animated film",
    "Children's": "a kids' movie", "Comedy": "a comedy", "Crime": "a crime film", "Drama": "a drama",
    "Fantasy": "a fantasy film", "Horror": "a horror movie", "Musical": "a musical", "Mystery": "a mystery",
    "Romance": "a romance", "Sci-Fi": "a sci-fi film", "Thriller": "a thriller", "War": "a war film",
    "Western": "a western", "Documentary": "a documentary", "Film-Noir": "a film noir",
}  # fmt: skip
ADJECTIVES = {"Comedy": "funny", "Horror": "scary", "Romance": "romantic", "Animation": "animated"}
TYPOS = {"Comedy": "commedies", "Horror": "horor movies", "Thriller": "thrilers", "Documentary": "documentries"}


@dataclass(frozen=True)
class Request:
    text: str
    genres: tuple[str, ...] = ()  # any of these
    exclude: tuple[str, ...] = ()  # none of these
    year_min: int | None = None
    year_max: int | None = None
    kind: str = ""

    def meets(self, item: Item) -> bool:
        if self.genres and not set(self.genres) & set(item.genres):
            return False
        if set(self.exclude) & set(item.genres):
            return False
        if self.year_min is not None and (item.year is None or item.year < self.year_min):
            return False
        return not (self.year_max is not None and (item.year is None or item.year > self.year_max))


def build_requests(catalog: Mapping[str, Item], *, n: int = 120, k: int = 5, seed: int = 0) -> list[Request]:
    """``n`` requests from the templates, each satisfiable by at least ``k`` catalog items."""
    rng = random.Random(seed)
    genres = sorted({g for item in catalog.values() for g in item.genres if g in NOUNS})
    common = [g for g in genres if sum(g in i.genres for i in catalog.values()) >= 60]

    def decade() -> int:
        return rng.choice(list(DECADES))

    templates: list[Callable[[], Request]] = [
        lambda: (lambda g, d: Request(f"{NOUNS[g]} from the {DECADES[d]}", (g,), (), d, d + 9, "genre+decade"))(
            rng.choice(common), decade()
        ),
        lambda: (
            lambda d, g: Request(
                f"something funny from the {DECADE_WORDS[d]}, nothing with {g}",
                ("Comedy",),
                ("Children's",),
                d,
                d + 9,
                "adjective+decade+negation",
            )
        )(rng.choice([1970, 1980, 1990]), rng.choice(["kids", "children"])),
        lambda: (lambda a, b: Request(f"{SINGULAR[a]} that isn't {SINGULAR[b]}", (a,), (b,), kind="genre+negation"))(
            *rng.sample(common, 2)
        ),
        lambda: (
            lambda a, b, w: Request(
                f"no {NOUNS[a].split()[0]}, no {NOUNS[b]}, just something {ADJECTIVES[w]}",
                (w,),
                (a, b),
                kind="negations+adjective",
            )
        )(*rng.sample([g for g in common if g not in ADJECTIVES], 2), rng.choice(list(ADJECTIVES))),
        lambda: (
            lambda a, b: Request(f"I'm tired of {NOUNS[a]}, recommend some {NOUNS[b]}", (b,), (a,), kind="tired+genre")
        )(*rng.sample(common, 2)),
        lambda: (lambda g, y: Request(f"{NOUNS[g]} from before {y}", (g,), (), None, y - 1, "genre+before"))(
            rng.choice(common), rng.choice([1960, 1970, 1980])
        ),
        lambda: (lambda g, y: Request(f"{NOUNS[g]} released after {y}", (g,), (), y + 1, None, "genre+after"))(
            rng.choice(common), rng.choice([1990, 1993, 1995])
        ),
        lambda: (lambda g, d: Request(f"{TYPOS[g]} from the {DECADES[d]}", (g,), (), d, d + 9, "typo+decade"))(
            rng.choice([g for g in TYPOS if g in common]), decade()
        ),
        lambda: (
            lambda g, d: Request(
                f"any good {NOUNS[g]} from the {d}s? no horror please",
                (g,),
                ("Horror",),
                d,
                d + 9,
                "genre+decade+negation",
            )
        )(rng.choice([g for g in common if g != "Horror"]), rng.choice([1980, 1990])),
        lambda: (
            lambda g: Request(
                f"show me {SINGULAR[g]}, nothing too scary", (g,), ("Horror",), kind="genre+soft negation"
            )
        )(rng.choice([g for g in common if g != "Horror"])),
    ]
    out: list[Request] = []
    seen: set[str] = set()
    attempts = 0
    while len(out) < n and attempts < 50 * n:
        attempts += 1
        request = templates[attempts % len(templates)]()
        if request.text in seen or sum(request.meets(i) for i in catalog.values()) < k:
            continue
        seen.add(request.text)
        out.append(request)
    return out


@dataclass
class SystemResult:
    name: str
    user_kind: str
    requests: int
    items_meeting: float  # share of recommended items that meet their request
    fully_met: float  # share of requests with min(k, satisfiable unseen items) items, all meeting it
    seconds_per_request: float
    by_kind: dict[str, float] = field(default_factory=dict)  # fully met, per template kind
    model_read: float | None = None  # chat: share of requests the model's own arguments got right
    fallbacks: float | None = None  # tool-calling chat: share of turns that fell back to plan mode


@dataclass
class RequestStudy:
    k: int
    model: str | None
    requests: int
    tool_choice: str | None = None  # how tool-calling chat asked for its call: required (constrained) or auto
    results: list[SystemResult] = field(default_factory=list)
    examples: list[dict[str, object]] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def markdown(self) -> str:
        lines = [
            f"Chat requests with known constraints: {self.requests} requests, k = {self.k}, "
            f"model {self.model or '(none)'}" + (f", tool calls {self.tool_choice}" if self.tool_choice else ""),
            "",
            "| system | user | requests | items meeting the request | requests fully met | model's own reading right "
            "| fell back to plan | s / request |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in self.results:
            read = f"{r.model_read:.1%}" if r.model_read is not None else "-"
            fell = f"{r.fallbacks:.1%}" if r.fallbacks is not None else "-"
            lines.append(
                f"| {r.name} | {r.user_kind} | {r.requests} | {r.items_meeting:.1%} | {r.fully_met:.1%} | {read} | "
                f"{fell} | {r.seconds_per_request:.2f} |"
            )
        return "\n".join(lines)


SYSTEMS_NO_LLM = ("popularity (ignores the request)", "query as text only", "request understood (no LLM)")
SYSTEMS_LLM = ("plan-first chat", "tool-calling chat")


async def run_request_study(
    rec,  # a started Recommender (with or without an LLM)
    *,
    requests: list[Request],
    users: Mapping[str, str],  # user kind -> user id
    systems: tuple[str, ...],
    k: int = 5,
    progress: Callable[[str], None] | None = None,
) -> RequestStudy:
    """Every system answers every request for every kind of user; items are checked against the request."""
    from dataclasses import replace

    from driftrec.agent.chat import ChatAgent
    from driftrec.agent.tools import RecommenderTools

    started = time.perf_counter()
    memory = rec._require()
    study = RequestStudy(k=k, model=rec.llm.client.model if rec.llm else None, requests=len(requests))
    if "tool-calling chat" in systems:
        study.tool_choice = rec.chat_options().tool_choice
    for system in systems:
        agent = None
        if system in SYSTEMS_LLM:
            mode = "plan" if system == "plan-first chat" else "tools"
            options = replace(rec.chat_options(), mode=mode)
            agent = ChatAgent(rec.llm, RecommenderTools(rec), memory.conversations, memory.statements, options)
        for kind, user in users.items():
            meeting = shown = full = read = fell = 0
            per_kind: dict[str, list[int]] = {}
            consumed = {e.item for e in await memory.events.history(user)}
            t0 = time.perf_counter()
            for n, request in enumerate(requests):
                possible = sum(request.meets(i) and i.id not in consumed for i in rec.catalog.values())
                await asyncio.to_thread(_clear_chat_state, memory, user)  # each request starts afresh
                items = await _answer(rec, agent, system, user, request.text, k)
                ok = [request.meets(rec.catalog[i]) for i in items]
                meeting += sum(ok)
                shown += len(ok)
                met = len(ok) == min(k, possible) and all(ok)  # a long history may leave fewer than k
                full += met
                per_kind.setdefault(request.kind, []).append(int(met))
                if agent is not None and (turn := agent.last_turn.get(user)) is not None:
                    read += _model_read(request, turn.model_arguments)
                    fell += turn.degraded is not None
                if kind == "new user" and len(study.examples) < 40 and n % 10 == 0:
                    study.examples.append(
                        {
                            "system": system,
                            "request": request.text,
                            "items": [rec.catalog[i].document() for i in items],
                            "met": met,
                        }
                    )
                if progress:
                    progress(f"{system}, {kind}: {n + 1}/{len(requests)}")
            study.results.append(
                SystemResult(
                    name=system,
                    user_kind=kind,
                    requests=len(requests),
                    items_meeting=meeting / shown if shown else 0.0,
                    fully_met=full / len(requests),
                    seconds_per_request=(time.perf_counter() - t0) / len(requests),
                    by_kind={key: sum(v) / len(v) for key, v in per_kind.items()},
                    model_read=read / len(requests) if agent is not None else None,
                    fallbacks=fell / len(requests) if agent is not None else None,
                )
            )
            await asyncio.to_thread(_clear_chat_state, memory, user)
    study.seconds = time.perf_counter() - started
    return study


async def _answer(rec, agent, system: str, user: str, text: str, k: int) -> list[str]:
    if system == "popularity (ignores the request)":
        answer = await rec.recommend(user, k)
    elif system == "query as text only":
        answer = await rec.recommend(user, k, query=text, understand=False)
    elif system == "request understood (no LLM)":
        answer = await rec.recommend(user, k, query=text)
    else:
        rec.answers.forget(user)
        async for _ in agent.reply(user, text):
            pass
        answer = rec.last_recommendations(user)
        if answer is None:  # the chat did something other than recommend: nothing met
            return []
    return [r.item.id for r in answer.items]


def _model_read(request: Request, arguments: Mapping[str, object]) -> bool:
    """Did the model's own call (before driftrec's guard rails) name every wanted and refused genre?"""
    genres = {str(g).lower() for g in arguments.get("genres") or []}  # type: ignore[union-attr]
    refused = {str(g).lower() for g in arguments.get("exclude_genres") or []}  # type: ignore[union-attr]
    return {g.lower() for g in request.genres} <= genres and {g.lower() for g in request.exclude} <= refused


def _clear_chat_state(memory, user: str) -> None:
    """Forget what the user said in earlier requests (stated preferences last a day otherwise)."""
    with memory.db.transaction() as conn:
        for table in ("statements", "chat_turns", "chat_summaries"):
            conn.execute(f"DELETE FROM {table} WHERE user = ?", (user,))


def write_report(study: RequestStudy, out: Path) -> list[Path]:
    """requests.json and requests.md (``eval.report``) and a chart of requests fully met."""
    from driftrec.plots import metric_bars, wilson

    report_files(out, "requests", study)

    plot = metric_bars(
        [
            (f"{r.name} ({r.user_kind})", r.fully_met, wilson(r.fully_met * r.requests, r.requests))
            for r in study.results
        ],
        out / "requests.png",
        f"{study.requests} requests with known constraints, k = {study.k}, model {study.model or '(none)'}",
        label="share of requests fully met (95 % Wilson interval)",
    )
    return [out / "requests.json", out / "requests.md", plot]
