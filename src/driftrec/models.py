"""The shared vocabulary: pydantic models every module speaks.

Nothing here imports other driftrec modules; every other module may import this one. Models are
frozen where they describe facts (an item, an event) and validated strictly, so bad input fails at the
edge with an error naming the field instead of deep inside ranking.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, TypeVar, overload

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator


def _encodable(value: str) -> str:
    """Refuse text that is not valid Unicode (a lone surrogate cannot be stored or sent on)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("not valid Unicode (lone surrogate)") from None
    return value


def _json_number(value: Any) -> Any:
    """A number as JSON Schema has it: ``true`` and ``"5"`` are not numbers (pydantic's lax mode takes both)."""
    if isinstance(value, bool | str):
        raise ValueError("must be a JSON number")
    return value


Text = Annotated[str, AfterValidator(_encodable)]
# In an Annotated, put JSON_NUMBER after any Field(ge=..., le=...): before it, the schema loses its bounds.
JSON_NUMBER = BeforeValidator(_json_number)
JsonInt = Annotated[int, JSON_NUMBER]  # 5 or 5.0; never true or "5"
JsonFloat = Annotated[float, JSON_NUMBER]
ItemId = Annotated[str, Field(min_length=1, max_length=256), AfterValidator(_encodable)]
# A user id is a path segment over HTTP, so it has no "/" and no control characters: every id that can
# be recorded can also be read and forgotten through every interface.
UserId = Annotated[
    str, Field(min_length=1, max_length=256, pattern=r"^[^/\x00-\x1f\x7f]+$"), AfterValidator(_encodable)
]
SessionId = Annotated[
    str, Field(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$"), AfterValidator(_encodable)
]
Weight = Annotated[float, Field(ge=0.0, le=1.0)]


def utcnow() -> datetime:
    return datetime.now(UTC)


_set_attribute = object.__setattr__
_new = object.__new__
# BaseModel's three slots, set through their descriptors: half the cost of object.__setattr__ by name
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__
M = TypeVar("M", bound=BaseModel)


def trusted(cls: type[M], values: dict[str, Any]) -> M:
    """An instance of ``cls`` from values already validated (rows this process stored, objects it built),
    without validating again: what ``model_construct`` does, minus its per-field alias and default
    lookups, which cost more than the rest of a recommendation's bookkeeping (hot paths build hundreds of
    these per request). ``values`` must give every field; ``tests/unit/test_fast_paths.py`` checks the result is
    equal to a validated instance. Models with aliases, private attributes or post-init hooks are refused."""
    if cls not in _TRUSTABLE:
        aliased = any(f.alias or f.validation_alias for f in cls.__pydantic_fields__.values())
        if cls.__pydantic_post_init__ or cls.__private_attributes__ or aliased:
            raise TypeError(f"{cls.__name__} cannot be built without validation")
        _TRUSTABLE.add(cls)
    model = _new(cls)
    _set_attribute(model, "__dict__", values)
    _set_fields_set(model, set(values))
    _set_extra(model, None)
    _set_private(model, None)
    return model


_TRUSTABLE: set[type] = set()


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Item(_Frozen):
    """One thing that can be recommended (a movie, for MovieLens)."""

    id: ItemId
    title: str = Field(min_length=1)
    text: str = ""
    year: int | None = Field(default=None, ge=1800, le=2200)
    genres: tuple[str, ...] = ()
    metadata: dict[str, str | int | float | bool] = Field(default_factory=dict)

    def document(self) -> str:
        """The readable text that is embedded and shown to the LLM."""
        head = self.title if self.year is None or str(self.year) in self.title else f"{self.title} ({self.year})"
        parts = [head]
        if self.genres:
            parts.append("Genres: " + ", ".join(self.genres))
        if self.text:
            parts.append(self.text)
        return ". ".join(parts)


class User(_Frozen):
    """Demographics, where a dataset has them (MovieLens does)."""

    id: UserId
    age: int | None = Field(default=None, ge=0, le=150)
    gender: str | None = None
    occupation: str | None = None


class Action(StrEnum):
    VIEW = "view"
    CLICK = "click"
    RATE = "rate"
    PURCHASE = "purchase"
    LIKE = "like"
    DISLIKE = "dislike"
    SKIP = "skip"


class Interaction(_Frozen):
    """One event: a user did something with an item at a time."""

    user: UserId
    item: ItemId
    action: Action = Action.VIEW
    timestamp: datetime
    rating: Annotated[float, Field(ge=0.0, le=10.0), JSON_NUMBER] | None = None
    text: Text | None = Field(default=None, max_length=4000)
    session_id: SessionId | None = None
    event_id: str | None = Field(default=None, min_length=1, max_length=128)

    def signal(self) -> str:
        """How the user reacted, in words the LLM reads: "rated 4/5", "liked", "dislike: too slow"."""
        if self.rating is not None:
            return f"rated {self.rating:g}/5"
        return self.action.value + (f": {self.text}" if self.text else "")

    @field_validator("timestamp")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        return value if value.tzinfo else value.replace(tzinfo=UTC)


class History(Sequence[Interaction]):
    """A user's events, oldest first, made from stored rows as they are read. ``items`` holds every event's
    item without building the events, which is most of what a recommendation reads (the seen set, the
    sources' seeds, the titles consumed); an event is built the first time it is asked for, then kept.
    A computed recommendation builds its last few events instead of the whole history (~1.8 us each)."""

    __slots__ = ("_built", "_make", "_rows", "items")

    def __init__(self, rows: Sequence[tuple], make: Callable[[tuple], Interaction], items: list[str]):
        self.items = items  # every event's item, in order
        self._rows = rows
        self._make = make
        self._built: list[Interaction | None] = [None] * len(rows)

    def __len__(self) -> int:
        return len(self._rows)

    @overload
    def __getitem__(self, index: int) -> Interaction: ...
    @overload
    def __getitem__(self, index: slice) -> list[Interaction]: ...
    def __getitem__(self, index: int | slice) -> Interaction | list[Interaction]:
        if isinstance(index, slice):
            return [self._event(i) for i in range(*index.indices(len(self._rows)))]
        if index < 0:
            index += len(self._rows)
        if not 0 <= index < len(self._rows):
            raise IndexError("history index out of range")
        return self._event(index)

    def __iter__(self) -> Iterator[Interaction]:
        return (self._event(i) for i in range(len(self._rows)))

    def _event(self, index: int) -> Interaction:
        event = self._built[index]
        if event is None:
            event = self._built[index] = self._make(self._rows[index])
        return event


def item_ids(events: Iterable[Interaction]) -> list[str]:
    """The items of ``events`` in order: a ``History``'s without building its events."""
    return events.items if isinstance(events, History) else [e.item for e in events]


class Session(BaseModel):
    """A run of interactions with no gap longer than the session timeout: the short-term context."""

    user: UserId
    session_id: str
    started_at: datetime
    ended_at: datetime
    interactions: list[Interaction] = Field(default_factory=list)
    closed: bool = False


class ItemEvidence(BaseModel):
    item: ItemId
    why: str = Field(default="", max_length=300)


class SessionSummary(BaseModel):
    """What the LLM made of one session."""

    user: UserId
    session_id: SessionId
    themes: list[str] = Field(default_factory=list, max_length=8)
    liked: list[ItemEvidence] = Field(default_factory=list)
    disliked: list[ItemEvidence] = Field(default_factory=list)
    intent: str = Field(default="", max_length=500)
    created_at: datetime = Field(default_factory=utcnow)


class Interest(BaseModel):
    """One long-term interest (or dislike). ``evidence`` are the user's own items behind it; ``positive``
    and ``negative`` count the user's events for it, and ``support`` is the share of the user's positive
    events that carry it: computed from the data, never taken from the LLM."""

    name: str = Field(min_length=1, max_length=80)
    weight: Weight
    evidence: list[ItemId] = Field(default_factory=list)
    positive: int = Field(default=0, ge=0)
    negative: int = Field(default=0, ge=0)
    support: Weight = 0.0
    source: Literal["llm", "stated", "edit"] = "llm"
    first_seen: datetime
    last_seen: datetime


class InterestProfile(BaseModel):
    """A user's long-term interests; every update is a new version, older ones stay readable."""

    user: UserId
    version: int = Field(default=0, ge=0)
    interests: list[Interest] = Field(default_factory=list)
    dislikes: list[Interest] = Field(default_factory=list)
    summary: str = Field(default="", max_length=2000)
    updated_at: datetime = Field(default_factory=utcnow)
    # LLM claims this version's update refused because the user's events contradicted them, in words
    rejected: list[Annotated[str, Field(max_length=300)]] = Field(default_factory=list, max_length=50)
    # the user's own edits that made (or were upheld in) this version, in words ("removed interest Drama")
    edits: list[Annotated[str, Field(max_length=300)]] = Field(default_factory=list, max_length=50)


class ProfileEdit(BaseModel):
    """A user's correction of their own profile: add or remove an interest or a dislike.

    It is stored as a versioned event and holds through later LLM updates until the user's own events
    after it say otherwise (memory/edits.py)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=80)
    kind: Literal["interest", "dislike"] = "interest"
    action: Literal["add", "remove"] = "add"
    created_at: datetime = Field(default_factory=utcnow)

    def words(self) -> str:
        return f"{'added' if self.action == 'add' else 'removed'} {self.kind} {self.name}"


class ProfileEdits(BaseModel):
    """A batch of edits applied at once (one new profile version)."""

    model_config = ConfigDict(extra="forbid")

    edits: list[ProfileEdit] = Field(min_length=1, max_length=20)


class Filters(BaseModel):
    """Constraints on what may be recommended: any of ``genres``, none of ``exclude_genres``, a year range."""

    model_config = ConfigDict(extra="forbid")

    genres: list[Annotated[str, Field(max_length=80)]] = Field(default_factory=list, max_length=50)
    exclude_genres: list[Annotated[str, Field(max_length=80)]] = Field(default_factory=list, max_length=50)
    year_min: Annotated[int, Field(ge=0, le=3000), JSON_NUMBER] | None = None
    year_max: Annotated[int, Field(ge=0, le=3000), JSON_NUMBER] | None = None

    def matches(self, item: Item) -> bool:
        if self.genres and not set(self.genres) & set(item.genres):
            return False
        if set(self.exclude_genres) & set(item.genres):
            return False
        if self.year_min is not None and (item.year is None or item.year < self.year_min):
            return False
        return not (self.year_max is not None and (item.year is None or item.year > self.year_max))


class Provenance(BaseModel):
    """Which candidate source proposed an item, and with what score and rank."""

    source: str
    score: float
    rank: int = Field(ge=1)


class Candidate(BaseModel):
    item: Item
    score: float
    provenance: list[Provenance] = Field(default_factory=list)


class StatedPreference(BaseModel):
    """Something the user said about a kind of item ("I'm tired of horror"): short-term, and evidence
    for the next profile update. ``name`` is a catalog genre (or free text with a free vocabulary)."""

    user: UserId
    name: str = Field(min_length=1, max_length=80)
    polarity: Literal["like", "dislike"]
    text: Text = Field(default="", max_length=4000)
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime | None = None


class ChatTurn(BaseModel):
    role: Literal["user", "assistant"]
    content: str = Field(max_length=20000)
    created_at: datetime = Field(default_factory=utcnow)


class Recommendation(BaseModel):
    item: Item
    rank: int = Field(ge=1)
    score: float
    reason: str | None = None
    matched_interests: list[str] = Field(default_factory=list)
    provenance: list[Provenance] = Field(default_factory=list)
    degraded: bool = False
    extra: dict[str, Any] = Field(default_factory=dict)


class RecommendationList(BaseModel):
    """One answer to ``recommend``: the items, and how they were produced."""

    user: UserId
    items: list[Recommendation]
    degraded: bool = False
    ranking: str = "off"  # verbalizer | listwise | second-phase (the learned top window, judged) | off
    order: str = "fusion"  # what ordered the candidates before the LLM: learned (the ranker) | fusion
    prompt: str | None = None  # template id and version, when the LLM ranked
    # how many retrieved candidates were considered: the pool, or with nothing to re-order it (no LLM ranking)
    # the first k + 10 of it, enough for the filters
    candidates: int = 0
    error: str | None = None  # why the LLM could not help, when degraded
    seconds: float = 0.0
    cached: bool = False  # the same answer as this user's last identical request (nothing it used changed)
