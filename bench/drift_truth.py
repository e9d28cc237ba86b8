"""Do long-term profiles follow drift? Checked against the synthetic log's ground truth (issue 16, part 4).

The synthetic generator (`driftrec.eval.synthetic`) gives every user a true genre and, for half of them, a
second genre they switch to at a known time (events then come from the genre the user is in, 10% from any
genre). Each user's profile is updated once per week with activity, from that week's events, by memory's
own code: `evidence.gather` (positive and negative evidence per genre), `evidence.ground` (weights from the
data) and `drift.apply_proposal` (w' = (1-α)w + α·w_new, decay with a half-life, new interests enter at
α·w). The proposer names every genre the week's evidence backs — what a perfect namer (an LLM that names the
right genres) hands the drift rule; whether a given served model names them is the LLM studies' question,
not this one's.

Measured: after each update, is the profile's top interest the user's true genre at that moment? As a curve
over updates since the switch (drifting users), with 95% Wilson intervals, for several α, against two
profiles without the drift rule: cumulative counts (every event since the start, no forgetting) and a static
profile (the first four updates' top genre, frozen). Users who never switch measure stability (noise must not
flip the top interest).

Run: `.venv/bin/python bench/drift_truth.py [--users 1000] [--json-out F] [--plot-out F]`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from driftrec.eval.synthetic import GENRES, SyntheticLog, SyntheticSpec
from driftrec.memory.drift import DriftPolicy, ProfileProposal, ProposedInterest, apply_proposal
from driftrec.memory.evidence import gather, ground
from driftrec.models import Action, Interaction, InterestProfile, Item
from driftrec.plots import wilson

WEEK = 7 * 86400.0
SPAN = range(-6, 17)  # updates relative to the first one after the switch


def weekly(times: np.ndarray, items: np.ndarray) -> list[tuple[float, np.ndarray]]:
    """(end of week, items of that week) for each week with activity, oldest first."""
    week = ((times - times.min()) // WEEK).astype(np.int64) if len(times) else times
    return [(float(times[week == w].max()), items[week == w]) for w in np.unique(week)]


def proposal_from(evidence: dict) -> ProfileProposal:
    """Name every genre the evidence backs (ground() sets the weights from the data)."""
    interests = [ProposedInterest(name=g, weight=1.0) for g, e in evidence.items() if len(e.positive) > len(e.negative)]
    dislikes = [ProposedInterest(name=g, weight=1.0) for g, e in evidence.items() if len(e.negative) > len(e.positive)]
    return ProfileProposal(interests=interests[:20], dislikes=dislikes[:10])


def top_genre(profile: InterestProfile) -> int:
    if not profile.interests:
        return -1
    best = max(profile.interests, key=lambda i: (i.weight, i.name))
    return [g.lower() for g in GENRES].index(best.name.lower())


Follow = Callable[[str, list[tuple[float, np.ndarray]]], list[int]]  # (user, weeks) -> top genre after each


def drift_rule(policy: DriftPolicy, catalog: dict[str, Item]) -> Follow:
    def follow(user: str, weeks: list[tuple[float, np.ndarray]]) -> list[int]:
        profile = InterestProfile(user=user, version=0, updated_at=datetime.fromtimestamp(weeks[0][0], UTC))
        tops = []
        for end, items in weeks:
            at = datetime.fromtimestamp(end, UTC)
            events = [
                Interaction.model_construct(user=user, item=f"s{i}", action=Action.CLICK, rating=None, timestamp=at)
                for i in items.tolist()
            ]
            grounded, _ = ground(proposal_from(gather(events, catalog)), gather(events, catalog))
            profile = apply_proposal(profile, grounded, at, policy)
            tops.append(top_genre(profile))
        return tops

    return follow


def cumulative(genre_of: np.ndarray) -> Follow:
    def follow(_user: str, weeks: list[tuple[float, np.ndarray]]) -> list[int]:
        counts: Counter[int] = Counter()
        tops = []
        for _, items in weeks:
            counts.update(genre_of[items].tolist())
            tops.append(max(counts, key=lambda g: (counts[g], -g)))
        return tops

    return follow


def static(genre_of: np.ndarray, first: int = 4) -> Follow:
    def follow(_user: str, weeks: list[tuple[float, np.ndarray]]) -> list[int]:
        counts = Counter(genre_of[np.concatenate([items for _, items in weeks[:first]])].tolist())
        frozen = max(counts, key=lambda g: (counts[g], -g))
        return [frozen] * len(weeks)

    return follow


def ci95(hits: int, n: int) -> tuple[float, float]:
    """The 95 % Wilson interval (driftrec.plots), to four places for the JSON."""
    low, high = wilson(hits, n)
    return (round(low, 4), round(high, 4))


def run(users: int, seed: int, noise: float) -> dict:
    spec = SyntheticSpec(items=1_682, users=users, events=users * 160, drift_share=0.5, noise=noise, seed=seed)
    log = SyntheticLog(spec)
    catalog = {item.id: item for item in log.catalog()}
    u, i, t = (np.concatenate(parts) for parts in zip(*log.chunks(), strict=True))
    order = np.lexsort((t, u))
    u, i, t = u[order], i[order], t[order]
    bounds = np.flatnonzero(np.r_[True, u[1:] != u[:-1], True])
    genre_of = log.item_genre
    systems = {
        **{f"drift rule α={a}": drift_rule(DriftPolicy(alpha=a), catalog) for a in (0.2, 0.5, 0.8)},
        "cumulative counts": cumulative(genre_of),
        "static (first 4 weeks)": static(genre_of),
    }
    curves = {name: {k: [0, 0] for k in SPAN} for name in systems}
    stable = {name: [0, 0] for name in systems}
    lag: dict[str, list[int]] = {name: [] for name in systems}
    seconds = {name: 0.0 for name in systems}
    drifting = 0
    for lo, hi in itertools.pairwise(bounds):
        user = int(u[lo])
        weeks = weekly(t[lo:hi], i[lo:hi])
        if len(weeks) < 12:
            continue
        truth = [log.truth.genre_at(user, end) for end, _ in weeks]
        switched = log.truth.second[user] >= 0
        first_after = next((n for n, (end, _) in enumerate(weeks) if end >= log.truth.switch_at[user]), None)
        if switched and (first_after is None or first_after < 4):
            continue  # no room before or after the switch
        drifting += bool(switched)
        for name, follow in systems.items():
            started = time.perf_counter()
            tops = follow(f"u{user}", weeks)
            seconds[name] += time.perf_counter() - started
            if not switched:
                stable[name][0] += sum(a == b for a, b in zip(tops[4:], truth[4:], strict=True))
                stable[name][1] += len(tops) - 4
                continue
            assert first_after is not None
            for k in SPAN:
                n = first_after + k
                if 0 <= n < len(weeks):
                    curves[name][k][0] += tops[n] == truth[n]
                    curves[name][k][1] += 1
            caught = next((k for k, n in enumerate(range(first_after, len(weeks))) if tops[n] == truth[n]), None)
            lag[name].append(caught if caught is not None else 10_000)
    result = {
        "spec": spec.__dict__,
        "drifting_users": drifting,
        "systems": {},
    }
    for name in systems:
        hits, n = stable[name]
        lags = np.array(lag[name])
        result["systems"][name] = {
            "after_switch": {
                str(k): {"accuracy": round(h / m, 4) if m else None, "ci95": ci95(h, m), "users": m}
                for k, (h, m) in curves[name].items()
            },
            "stable_users_accuracy": {"accuracy": round(hits / n, 4) if n else None, "ci95": ci95(hits, n)},
            "updates_to_follow": {
                "median": float(np.median(lags)) if len(lags) else None,
                "share_never": round(float(np.mean(lags >= 10_000)), 4) if len(lags) else None,
            },
            "seconds": round(seconds[name], 2),
        }
    return result


def plot(results: list[dict], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(7 * len(results), 4.2), squeeze=False)
    for ax, result in zip(axes[0], results, strict=True):
        for name, row in result["systems"].items():
            ks = [int(k) for k, v in row["after_switch"].items() if v["users"]]
            acc = [row["after_switch"][str(k)]["accuracy"] for k in ks]
            lo = [row["after_switch"][str(k)]["ci95"][0] for k in ks]
            hi = [row["after_switch"][str(k)]["ci95"][1] for k in ks]
            ax.plot(ks, acc, marker=".", label=name)
            ax.fill_between(ks, lo, hi, alpha=0.15)
        ax.axvline(-0.5, color="grey", lw=0.8, ls="--")
        ax.set_xlabel("weekly profile updates since the true switch (0: first after it)")
        ax.set_ylabel("top interest = true genre")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.set_title(f"{result['spec']['noise']:.0%} off-genre events, {result['drifting_users']} drifting users")
    axes[0][0].legend(fontsize=8, loc="lower left")
    fig.suptitle("Do profiles follow drift? Synthetic ground truth, memory's drift rule (95% Wilson intervals)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--noise", type=float, nargs="+", default=[0.1, 0.4])
    parser.add_argument("--json-out", type=Path, default=Path("bench/results/drift-truth.json"))
    parser.add_argument("--plot-out", type=Path, default=Path("docs/results/drift-truth.png"))
    args = parser.parse_args()
    results = [run(args.users, args.seed, noise) for noise in args.noise]
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps({"machine": "2 cores, 24 GB, no GPU", "runs": results}, indent=2) + "\n")
    print(plot(results, args.plot_out))
    for result in results:
        print(f"noise {result['spec']['noise']}, {result['drifting_users']} drifting users")
        for name, row in result["systems"].items():
            after = row["after_switch"]
            print(
                f"  {name:24s} k=-2 {after['-2']['accuracy']} k=0 {after['0']['accuracy']} "
                f"k=2 {after['2']['accuracy']} k=6 {after['6']['accuracy']} "
                f"stable {row['stable_users_accuracy']['accuracy']} lag {row['updates_to_follow']}"
            )


if __name__ == "__main__":
    main()
