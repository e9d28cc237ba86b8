"""Systems: everything a protocol ranks with — the baselines and driftrec's variants — behind one interface.

A system is fitted on a protocol stage's training log and ranks that stage's users (``StageData``). Each
is one class registered by name (``@register_system``), and the studies look systems up here: the offline
harness (``eval.runner``), session replay (``eval.session_study``) and the ranker study
(``eval.ranker_study``) all run a named system the same way, so a new system is one class and every
study gets it — as RecBole's ``run_recbole`` runs Pop and SASRec through one path and
lm-evaluation-harness registers models with ``@register_model``. A baseline is a ``Ranker`` (scores the
whole catalog) registered in ``BASELINES``; it takes part here through ``BaselineSystem``.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import ClassVar

from driftrec.config import Settings
from driftrec.data.dataset import Dataset
from driftrec.eval.baselines import BASELINES, Ranker, TrainData
from driftrec.eval.protocols import Case
from driftrec.models import Interaction
from driftrec.retrieval import CandidateGenerator, ItemIndex, RetrievalRequest

Rankings = dict[str, list[str]]  # user -> best-first item ids


@dataclass
class StageData:
    """One protocol stage: what every system may learn from (``log``) and whom it ranks (``cases``)."""

    settings: Settings
    dataset: Dataset
    log: Sequence[Interaction]
    cases: Mapping[str, Case]
    index: ItemIndex | None = None  # the catalog in Chroma; made on first use and shared by the systems
    _train: TrainData | None = field(default=None, repr=False)

    def train_data(self) -> TrainData:
        """The log per user in time order, over the whole catalog (what a baseline is fitted on)."""
        if self._train is None:
            sequences: dict[str, list[Interaction]] = {}
            for event in sorted(self.log, key=lambda e: e.timestamp):
                sequences.setdefault(event.user, []).append(event)
            self._train = TrainData(list(self.dataset.items), sequences)
        return self._train

    async def item_index(self) -> ItemIndex:
        if self.index is None:
            from driftrec.eval.retrieval_study import ingest

            self.index = await ingest(self.settings, self.dataset)
        return self.index


class System(ABC):
    """Fitted on a stage, then ranks its users: ``k`` distinct items each, none the user has consumed."""

    name: ClassVar[str]
    group: ClassVar[str]  # "baseline" or "driftrec": the report compares the best of each

    @abstractmethod
    async def fit(self, stage: StageData) -> None: ...

    @abstractmethod
    async def rank(self, stage: StageData, k: int) -> Rankings: ...

    def report(self) -> dict[str, object] | None:
        """What training decided (epochs, early stopping, a ranker's card), when there is something to say."""
        return None


SYSTEMS: dict[str, Callable[[], System]] = {}


def register_system(cls: type[System]) -> type[System]:
    """Class decorator: the system becomes available by its ``name`` to every study."""
    SYSTEMS[cls.name] = cls
    return cls


def make_system(spec: str) -> System:
    """The system a spec names: a registered name, then the options its constructor takes after colons
    (``sasrec-ce:seed=1:max_epochs=50``: another seed, a shorter budget; ``driftrec-learned:stages=2``: two
    training cut points); the spec is its name in reports. Raises ValueError naming what is wrong (an
    unknown system or option, a bad value)."""
    name, *options = spec.split(":")
    if name not in SYSTEMS:
        raise ValueError(f"unknown system {name!r}; known: {', '.join(SYSTEMS)}")
    if not options:
        return SYSTEMS[name]()
    made = BASELINES.get(name) or SYSTEMS[name]  # a baseline's options are its ranker's
    accepted = [p for p in inspect.signature(made).parameters if p != "self"]
    if not accepted:
        raise ValueError(f"{spec}: {name} takes no options")
    kwargs: dict[str, object] = {}
    for option in options:
        key, equals, value = option.partition("=")
        if not equals or key not in accepted:
            raise ValueError(f"{spec}: {option!r} is not an option of {name} (key=value; {', '.join(accepted)})")
        kwargs[key] = _option_value(value)
    if name in BASELINES:
        return BaselineSystem(spec, made(**kwargs))
    system = made(**kwargs)  # type: ignore[call-arg]
    system.name = spec  # type: ignore[misc]  # reported under its spec, beside the default
    return system


def check_systems(specs: Sequence[str]) -> None:
    """Fail before any work when a spec names no system or an option it does not take (ValueError)."""
    for spec in specs:
        make_system(spec)


def _option_value(text: str) -> object:
    for parse in (int, float):
        try:
            return parse(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def top_unseen(ranker: Ranker, stage: StageData, k: int) -> Rankings:
    """A fitted ranker's top ``k`` items for each of the stage's users, none they consumed. Blocking."""
    catalog = stage.train_data().catalog
    return {u: ranker.recommend(u, [e.item for e in c.history], k, catalog) for u, c in stage.cases.items()}


class BaselineSystem(System):
    """A ``Ranker`` from ``BASELINES``: it scores the whole catalog and its top k unseen items are kept."""

    group = "baseline"

    def __init__(self, name: str, ranker: Ranker):
        self.name = name  # type: ignore[misc]  # per instance: one adapter class for every baseline
        self.ranker = ranker

    async def fit(self, stage: StageData) -> None:
        self.ranker = await asyncio.to_thread(self.ranker.fit, stage.train_data())

    async def rank(self, stage: StageData, k: int) -> Rankings:
        return await asyncio.to_thread(top_unseen, self.ranker, stage, k)

    def report(self) -> dict[str, object] | None:
        report = getattr(self.ranker, "report", None)  # SASRec-CE: epochs, early stopping, seed
        return asdict(report) if report is not None else None


for _name, _ranker in BASELINES.items():
    SYSTEMS[_name] = lambda name=_name, ranker=_ranker: BaselineSystem(name, ranker())


@register_system
class DriftrecRetrieval(System):
    """driftrec with no LLM and no learned ranker: the fused candidate list, in fusion order."""

    name = "driftrec-retrieval"
    group = "driftrec"

    async def fit(self, stage: StageData) -> None:
        index = await stage.item_index()
        retrieval = stage.settings.retrieval
        self.generator = await asyncio.to_thread(
            CandidateGenerator.build, retrieval, index, stage.dataset.items, stage.log
        )

    async def rank(self, stage: StageData, k: int) -> Rankings:
        semaphore = asyncio.Semaphore(8)

        async def one(user: str, case: Case) -> tuple[str, list[str]]:
            request = RetrievalRequest(user=user, history=case.history, now=case.now)
            async with semaphore:
                return user, [c.item.id for c in await self.generator.generate(request, k)]

        return dict(await asyncio.gather(*(one(u, c) for u, c in stage.cases.items())))


@register_system
class DriftrecLearned(System):
    """driftrec's learned ranking stage: LambdaMART over every source's top ``pool``, trained on the
    stage's log alone (each user's last ``stages`` events as cut points, ``ranking.training``), then
    ordering each user's pool. Trained here on whatever log the stage gives; the ranker study adds pool recall,
    ablations and sampled rows on top."""

    name = "driftrec-learned"
    group = "driftrec"

    def __init__(self, stages: int = 5, pool: int = 100):
        for option, value in (("stages", stages), ("pool", pool)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"driftrec-learned: {option} must be a whole number >= 1, got {value!r}")
        self.stages = stages  # training cut points: each user's last event, the one before, ...
        self.pool = pool  # candidates per user the ranker orders

    async def fit(self, stage: StageData) -> None:
        from driftrec.ranking.training import train_ranker

        index = await stage.item_index()
        started = time.perf_counter()
        self.model = await train_ranker(
            stage.settings.retrieval,
            index,
            stage.dataset.items,
            stage.train_data().sequences,
            stages=self.stages,
            pool=self.pool,
        )
        self.seconds = time.perf_counter() - started

    async def rank(self, stage: StageData, k: int) -> Rankings:
        from driftrec.ranking.training import Target, build_pool

        index = await stage.item_index()
        cases = {u: (c.history, Target.session(c.now, c.targets)) for u, c in stage.cases.items()}
        pool = await build_pool(stage.settings.retrieval, index, stage.dataset.items, stage.log, cases, self.pool)
        return pool.ranked(self.model, k)

    def report(self) -> dict[str, object] | None:
        card = self.model.card
        return {
            "examples": card.users,
            "stages": self.stages,
            "pool": self.pool,
            "best_iteration": card.best_iteration,
            "valid_ndcg@10 (stopping set)": card.valid_ndcg10,
            "params": card.params,
            "seconds": round(self.seconds, 1),
        }
