"""Saved candidate indexes: fitted once, loaded by every process that starts after.

A snapshot is the co-occurrence, transition and popularity state after the event log up to one position, plus the user
codes it was built with. A process loads the newest snapshot that matches its catalog, its index settings and
the store's *generation* (a counter the store bumps whenever it deletes events, i.e. forgets a user), then
takes in only the events after the snapshot's position. A snapshot of an older generation may hold a
forgotten user's events, so it is never loaded and is deleted on sight.

Files are plain ``.npz`` arrays (no pickles), written to a temporary name and renamed, so a reader sees a
whole snapshot or none. Point ``DRIFTREC_INDEX_DIR`` at a volume the API hosts share and one fit serves them
all; by default each data dir keeps its own.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import sparse

from driftrec.retrieval.candidates import Indexes
from driftrec.retrieval.log import UserCodes
from driftrec.retrieval.sources import CoOccurrenceIndex, PopularityIndex, TransitionIndex

log = logging.getLogger(__name__)

FORMAT = 2  # 2: the transition index joined (a format-1 file is fitted over, never misread)
KEEP = 2  # snapshots kept per directory (the newest); an older one is only a slower start
_NAME = re.compile(r"^candidates-g(\d+)-p(\d+)\.npz$")


def store_key(pseudonym_key: bytes) -> str:
    """A store's identity for snapshots, from its secret pseudonym key (one-way: the key is not revealed)."""
    return hashlib.sha256(b"driftrec candidate snapshot\x00" + pseudonym_key).hexdigest()[:32]


def catalog_key(ids: Sequence[str]) -> str:
    """What a snapshot's item positions mean: the catalog's ids, in order."""
    return hashlib.sha256("\x1f".join(ids).encode()).hexdigest()[:32]


@dataclass
class Snapshot:
    """The candidate indexes' state after the log up to ``position`` (store generation ``generation``)."""

    store: str  # which event store (a database recreated under the same name is another store)
    generation: int
    position: int
    catalog: str  # catalog_key of the item ids the positions index
    params: dict[str, float]
    indexes: Indexes
    users: UserCodes


class SnapshotDir:
    """A directory of candidate-index snapshots (local or on a volume several hosts share)."""

    def __init__(self, path: Path):
        self.path = path

    def files(self) -> list[tuple[int, int, Path]]:
        """(generation, position, path) of every snapshot here, newest first."""
        if not self.path.is_dir():
            return []
        found = [(int(m[1]), int(m[2]), p) for p in self.path.iterdir() if (m := _NAME.match(p.name))]
        return sorted(found, reverse=True)

    def save(self, snapshot: Snapshot) -> Path:
        """Write atomically; keep the newest ``KEEP`` of this generation, delete every older generation."""
        self.path.mkdir(parents=True, exist_ok=True)
        cooc, transition, popularity = snapshot.indexes.cooc, snapshot.indexes.transition, snapshot.indexes.popularity
        counts, steps = _merged(cooc), _merged(transition)
        header = {
            "format": FORMAT,
            "store": snapshot.store,
            "generation": snapshot.generation,
            "position": snapshot.position,
            "catalog": snapshot.catalog,
            "params": snapshot.params,
            "items": len(cooc.ids),
        }
        target = self.path / f"candidates-g{snapshot.generation}-p{snapshot.position}.npz"
        fd, temporary = tempfile.mkstemp(dir=self.path, prefix=".candidates-", suffix=".npz")
        try:
            with os.fdopen(fd, "wb") as out:
                np.savez(
                    out,
                    header=np.frombuffer(json.dumps(header).encode(), np.uint8),
                    data=counts.data,
                    indices=counts.indices,
                    indptr=counts.indptr,
                    totals=cooc.totals,
                    tails=cooc.tails,
                    t_data=steps.data,
                    t_indices=steps.indices,
                    t_indptr=steps.indptr,
                    t_totals=transition.totals,
                    t_tails=transition.tails,
                    times=popularity.times,
                    items=popularity.items,
                    users=np.array(list(snapshot.users.codes), dtype=np.str_),
                )
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        self.prune(snapshot.generation)
        return target

    def prune(self, generation: int) -> list[Path]:
        """Delete snapshots of generations before ``generation`` (they may hold forgotten users) and all but
        the newest ``KEEP`` of it; returns what was deleted."""
        deleted = []
        kept = 0
        for gen, _, path in self.files():
            if gen == generation and kept < KEEP:
                kept += 1
                continue
            if gen > generation:
                continue  # another process already saw a later generation: its files are not ours to judge
            path.unlink(missing_ok=True)
            deleted.append(path)
        for stray in self.path.glob(".candidates-*.npz") if self.path.is_dir() else ():
            stray.unlink(missing_ok=True)  # a writer that died before its rename
        return deleted

    def load(
        self, store: str, generation: int, catalog_ids: Sequence[str], params: dict[str, float]
    ) -> Snapshot | None:
        """The newest usable snapshot of this store at ``generation`` for this catalog and these settings."""
        key = catalog_key(catalog_ids)
        for gen, _, path in self.files():
            if gen != generation:
                continue
            try:
                snapshot = _read(path, catalog_ids)
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:  # torn or foreign: fit
                log.warning("snapshot %s is not usable: %s", path, exc)
                continue
            found = (snapshot.store, snapshot.generation, snapshot.catalog, snapshot.params)
            if found == (store, generation, key, params):
                return snapshot
        return None


def _merged(index: CoOccurrenceIndex) -> sparse.csr_matrix:
    return (index.base + index.delta).tocsr() if index.delta.nnz else index.base


def _read(path: Path, catalog_ids: Sequence[str]) -> Snapshot:
    with np.load(path, allow_pickle=False) as arrays:
        header = json.loads(arrays["header"].tobytes())
        if header.get("format") != FORMAT:
            raise ValueError(f"format {header.get('format')}, this driftrec reads {FORMAT}")
        n = int(header["items"])
        if n != len(catalog_ids):
            raise ValueError(f"{n} items, the catalog has {len(catalog_ids)}")
        params = header["params"]
        counts = sparse.csr_matrix((arrays["data"], arrays["indices"], arrays["indptr"]), shape=(n, n))
        cooc = CoOccurrenceIndex(
            window=int(params["window"]), recent=int(params["recent"]), decay=params["decay"]
        ).restore(catalog_ids, counts, arrays["totals"], arrays["tails"])
        steps = sparse.csr_matrix((arrays["t_data"], arrays["t_indices"], arrays["t_indptr"]), shape=(n, n))
        transition = TransitionIndex(
            window=int(params["transition_window"]),
            recent=int(params["transition_recent"]),
            decay=params["transition_decay"],
            step_decay=params["transition_step_decay"],
            backward=params["transition_backward"],
        ).restore(catalog_ids, steps, arrays["t_totals"], arrays["t_tails"])
        popularity = PopularityIndex(window_days=params["popularity_days"]).restore(
            catalog_ids, arrays["times"], arrays["items"]
        )
        users = UserCodes()
        users.codes = {str(user): code for code, user in enumerate(arrays["users"].tolist())}
    return Snapshot(
        store=str(header["store"]),
        generation=int(header["generation"]),
        position=int(header["position"]),
        catalog=header["catalog"],
        params=params,
        indexes=Indexes(cooc, transition, popularity),
        users=users,
    )
