"""Benchmark: majority vote vs Dawid–Skene vs SWAP on a simulated volunteer crowd.

Two questions, answered on the same simulated crowd (200 volunteers with sensitivity 0.77–0.99 and
specificity 0.87–0.996, plus 5 % random spammers and 2 % who always say "real"; heavy-tailed activity):

1. Label accuracy at equal vote budgets (every subject gets exactly 3, 5 or 10 votes).
2. Votes per subject needed to retire subjects at ~1 % label error. Votes arrive one at a time per subject
   (round by round); a subject retires as soon as its rule fires:
     majority   — one answer leads by m votes;
     SWAP / DS  — P(real) > 1 − t or P(real) < t.
   Every rule stops at --max-votes. The free parameter (m or t) is calibrated on a separate calibration seed
   as the cheapest setting whose error is <= the target, then evaluated on fresh seeds, so the reported
   error is an honest out-of-sample figure (it scatters around the target).

Gold subjects (expert-labelled, --gold-share of all votes, as in production) train SWAP's per-volunteer
skills; Dawid–Skene sees the gold votes as ordinary votes (it is unsupervised) and majority ignores them.
Votes on gold subjects are not counted in votes/subject (they are the same overhead for every method).

The model as a voter ("+ model" rows): a simulated classifier scores every subject (held-out AUC about
0.985, like our model's; a share of confident mistakes; scores drawn independently of the votes, i.e.
cross-fitted: it never trained on the subject it scores). Its confusion is learned on the gold subjects'
scores (mlcore.aggregation.model_confusion) and its vote enters SWAP as the first step
(model_swap_update) and Dawid–Skene as one more worker (dawid_skene_with_model); only volunteer votes
are counted. A last, small simulation shows the feedback loop: a model retrained on labels it helped decide.

    .venv/bin/python bench/aggregation.py            # full run, writes the "## Aggregation" section
    .venv/bin/python bench/aggregation.py --quick    # smoke run, prints only
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from benchdoc import replace_section  # noqa: E402

from mlcore.aggregation import (  # noqa: E402
    dawid_skene,
    dawid_skene_with_model,
    label_accuracy,
    majority_vote,
    model_confusion,
    model_log_lr,
    swap,
)
from mlcore.crowd import make_panel, simulate_vote_sequences  # noqa: E402

DOC = ROOT / "docs" / "benchmarks.md"
SECTION = "## Aggregation"


@dataclass
class World:
    """One simulated crowd: subjects with per-subject vote sequences, plus a gold-vote generator."""

    truth: np.ndarray
    workers: np.ndarray  # (n, max_votes)
    labels: np.ndarray  # (n, max_votes)
    panel: object
    gold_truth: np.ndarray
    gold_share: float
    rng_seed: int
    history: tuple  # (items, workers, labels) of gold votes cast before the benchmark starts
    model_scores: np.ndarray | None = None  # the simulated classifier's P(real) per subject
    gold_model_scores: np.ndarray | None = None  # ... and per gold subject (its confusion is learned there)

    def gold_votes(self, rng: np.random.Generator, n_subject_votes: int):
        """Gold votes shown alongside ``n_subject_votes`` ordinary ones, at the production gold share."""
        k = int(rng.binomial(max(n_subject_votes, 0), self.gold_share / (1 - self.gold_share)))
        items = rng.integers(0, len(self.gold_truth), k)
        workers = rng.choice(len(self.panel), size=k, p=self.panel.activity)
        labels = self.panel.answer(rng, workers, self.gold_truth[items])
        return items, workers, labels


def make_world(
    seed: int, n: int, max_votes: int, gold_share: float, real_fraction: float, gold_history: float
) -> World:
    rng = np.random.default_rng(seed)
    truth = (rng.random(n) < real_fraction).astype(np.int8)
    panel = make_panel(200, rng, spammer_share=0.05, always_real_share=0.02)
    seqs = simulate_vote_sequences(truth, max_votes=max_votes, seed=rng, panel=panel)
    n_gold = max(20, int(gold_share * n))
    gold_truth = (rng.random(n_gold) < 0.5).astype(np.int8)
    world = World(truth, seqs.workers, seqs.labels, panel, gold_truth, gold_share, seed, ())
    # A project that has been running a while: the same crowd already answered some gold subjects,
    # in proportion to each volunteer's activity (--gold-history gold votes per volunteer on average).
    k_hist = int(gold_history * len(panel))
    world.history = (
        rng.integers(0, n_gold, k_hist),
        rng.choice(len(panel), size=k_hist, p=panel.activity),
        None,
    )
    world.history = (*world.history[:2], panel.answer(rng, world.history[1], gold_truth[world.history[0]]))
    # Its own generator: the model's scores are independent of the votes (cross-fitted), and adding it
    # leaves every other method's numbers as they were.
    model_rng = np.random.default_rng(seed + 7_919)
    world.model_scores = simulated_model_scores(model_rng, truth)
    world.gold_model_scores = simulated_model_scores(model_rng, gold_truth)
    return world


# The simulated classifier: a latent score N(±SEPARATION/2, 1) by class (AUC ≈ 0.98 with the mistakes below),
# turned into P(real) by the logistic that is calibrated for it; MODEL_CONFIDENT_MISTAKES of the subjects get
# the other class's latent (artefacts that fool it), so its most confident scores are not always right.
SEPARATION = 3.5
MODEL_CONFIDENT_MISTAKES = 0.01


def simulated_model_scores(rng: np.random.Generator, truth: np.ndarray) -> np.ndarray:
    side = np.where(truth == 1, 1.0, -1.0)
    side = np.where(rng.random(len(truth)) < MODEL_CONFIDENT_MISTAKES, -side, side)
    latent = side * SEPARATION / 2 + rng.standard_normal(len(truth))
    return 1.0 / (1.0 + np.exp(-SEPARATION * latent))


def auc(scores: np.ndarray, truth: np.ndarray) -> float:
    """ROC AUC by ranks (ties averaged)."""
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    for value in np.unique(scores[np.diff(np.sort(scores), prepend=-1) == 0]):
        tied = scores == value
        ranks[tied] = ranks[tied].mean()
    pos = truth == 1
    n_pos, n_neg = pos.sum(), (~pos).sum()
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def run(world: World, method: str, param: float, max_votes: int, retire: bool = True):
    """Serve votes round by round to unretired subjects; return (labels, votes used per subject, p_real).

    With retire=False every subject receives exactly ``max_votes`` votes (the equal-budget experiment).
    """
    n = len(world.truth)
    min_votes = 1
    if method.endswith("_min2"):  # the production default: never retire before two volunteer votes
        method, min_votes = method[: -len("_min2")], 2
    model_lr = None
    if method in ("swap_model", "ds_model"):
        confusion = model_confusion(world.gold_model_scores, world.gold_truth)
        model_lr = model_log_lr(world.model_scores, confusion)
    rng = np.random.default_rng(world.rng_seed + 99_991)
    active = np.ones(n, dtype=bool)
    used = np.zeros(n, dtype=np.int64)
    decided = np.full(n, -1, dtype=np.int64)
    # Accumulated votes (subjects first, gold after with offset item ids, for DS).
    v_items, v_workers, v_labels = [], [], []
    g_items, g_workers, g_labels = [], [], []
    hi, hw, hl = world.history
    if method != "swap_cold":  # the gold history exists in the database for every method but cold-start SWAP
        g_items.append(hi)
        g_workers.append(hw)
        g_labels.append(hl.astype(np.int64))
    # SWAP running state.
    log_odds = np.zeros(n)
    tallies = np.zeros((len(world.panel), 4))  # real_seen, real_said_real, bogus_seen, bogus_said_bogus
    if method in ("swap", "swap_informed", "swap_model"):
        _add_tallies(tallies, world.gold_truth[hi], hw, hl)
    if method == "swap_model":  # the model votes first: the subject's SWAP start is the prior moved by it
        log_odds += model_lr
    counts = np.zeros((n, 2), dtype=np.int64)
    p_real = np.full(n, 0.5)

    for r in range(max_votes):
        idx = np.flatnonzero(active)
        if len(idx) == 0:
            break
        w = world.workers[idx, r]
        lab = world.labels[idx, r].astype(np.int64)
        used[idx] += 1
        gi, gw, gl = world.gold_votes(rng, len(idx))
        if method == "majority":
            np.add.at(counts, (idx, lab), 1)
            lead = counts[:, 1] - counts[:, 0]
            p_real = np.where(lead > 0, 1.0, np.where(lead < 0, 0.0, 0.5))
            fire = active & (np.abs(lead) >= param)
        elif method in ("swap", "swap_cold", "swap_informed", "swap_model"):
            a, b = SWAP_INFORMED if method == "swap_informed" else SWAP_PSEUDO
            p_l = np.clip((tallies[w, 1] + a) / (tallies[w, 0] + a + b), 0.01, 0.99)
            p_d = np.clip((tallies[w, 3] + a) / (tallies[w, 2] + a + b), 0.01, 0.99)
            log_odds[idx] += np.where(lab == 1, np.log(p_l) - np.log1p(-p_d), np.log1p(-p_l) - np.log(p_d))
            # Skills learn from this round's gold votes before the next round.
            _add_tallies(tallies, world.gold_truth[gi], gw, gl)
            p_real = 1 / (1 + np.exp(-log_odds))
            fire = active & ((p_real > 1 - param) | (p_real < param))
        elif method in ("dawid_skene", "ds_gold", "ds_model"):
            v_items.append(idx)
            v_workers.append(w)
            v_labels.append(lab)
            g_items.append(gi)
            g_workers.append(gw)
            g_labels.append(gl)
            items = np.concatenate(v_items + [n + np.concatenate(g_items)])
            workers = np.concatenate(v_workers + g_workers)
            labels = np.concatenate(v_labels + g_labels)
            gold_kw = {}
            if method == "ds_gold":  # semi-supervised: gold subjects clamped to their expert label
                gold_kw = dict(gold_items=n + np.arange(len(world.gold_truth)), gold_labels=world.gold_truth)
            if method == "ds_model":  # the model votes on the subjects (not on gold), confusion from gold
                scores = np.r_[world.model_scores, np.full(len(world.gold_truth), np.nan)]
                result = dawid_skene_with_model(items, workers, labels, scores, n_items=n + len(world.gold_truth),
                                                n_workers=len(world.panel), max_iter=50, tol=1e-4,
                                                model_confusion_fixed=confusion)  # fmt: skip
            else:
                result = dawid_skene(items, workers, labels, n_classes=2, n_items=n + len(world.gold_truth),
                                     n_workers=len(world.panel), max_iter=50, tol=1e-4, **gold_kw)  # fmt: skip
            p_real = result.posterior[:n, 1]
            fire = active & ((p_real > 1 - param) | (p_real < param))
        else:
            raise ValueError(method)
        if retire:
            fire &= used >= min_votes
            decided[fire] = (p_real[fire] > 0.5).astype(np.int64)
            active &= ~fire
    # Subjects still open at the cap retire with their current best guess (a tie counts as a coin flip).
    still = decided < 0
    coin = rng.integers(0, 2, n)
    decided[still] = np.where(p_real[still] == 0.5, coin[still], (p_real[still] > 0.5).astype(np.int64))
    return decided, used, p_real


def _add_tallies(tallies, gold_truth, workers, labels):
    np.add.at(tallies, (workers, 0), gold_truth == 1)
    np.add.at(tallies, (workers, 1), (gold_truth == 1) & (labels == 1))
    np.add.at(tallies, (workers, 2), gold_truth == 0)
    np.add.at(tallies, (workers, 3), (gold_truth == 0) & (labels == 0))


SWAP_PSEUDO = (1.0, 1.0)  # mlcore.aggregation.swap's default: a new volunteer starts at P_L = P_D = 0.5
# An informative start: a new volunteer is assumed 80 % right (4 pseudo-correct, 1 pseudo-wrong answers).
SWAP_INFORMED = (4.0, 1.0)
# ("ds_gold", DS with gold subjects clamped to their expert label, is available too; on this crowd it gives the
# same numbers as plain DS because every gold subject already has ~10+ votes that settle it.)
METHODS = (
    "majority",
    "dawid_skene",
    "swap",
    "swap_cold",
    "swap_informed",
    "swap_model",
    "ds_model",
    "swap_model_min2",
    "ds_model_min2",
)
GRIDS = {
    "majority": [1, 2, 3, 4, 5, 6, 7, 8, 10, 12],
    "dawid_skene": [0.3, 0.2, 0.1, 0.05, 0.03, 0.02, 0.01, 5e-3, 2e-3, 1e-3, 3e-4, 1e-4, 3e-5],
    "swap": [0.3, 0.2, 0.1, 0.05, 0.03, 0.02, 0.01, 5e-3, 2e-3, 1e-3, 3e-4, 1e-4, 3e-5],
}
GRIDS["swap_cold"] = GRIDS["swap_informed"] = GRIDS["swap_model"] = GRIDS["swap_model_min2"] = GRIDS["swap"]
GRIDS["ds_model"] = GRIDS["ds_model_min2"] = GRIDS["dawid_skene"]
BUDGET_METHODS = tuple(m for m in METHODS if not m.endswith("_min2"))  # the minimum changes no equal budget


# --- The feedback loop: a model retrained on labels it helped decide -------------------------------------

FEEDBACK_POLICIES = {
    "crowd": "model does not vote",
    "train": "model votes; its labels train at full weight",
    "half": "model votes; its labels train at half weight",
    "exclude": "model votes; its labels are left out (default)",
    "crowd_target": "model votes; its labels train on the volunteers' evidence alone",
    "train_fresh_gold": "model votes; its labels train at full weight; gold includes the new kind",
}


def _fit_logistic(x: np.ndarray, y: np.ndarray, w: np.ndarray, l2: float = 1e-2) -> np.ndarray:
    """Weighted L2 logistic regression by Newton steps (features + bias)."""
    xb = np.column_stack([x, np.ones(len(x))])
    beta = np.zeros(xb.shape[1])
    for _ in range(25):
        p = 1 / (1 + np.exp(-np.clip(xb @ beta, -30, 30)))
        grad = xb.T @ (w * (p - y)) + l2 * beta
        hess = (xb * (w * p * (1 - p))[:, None]).T @ xb + l2 * np.eye(len(beta))
        beta -= np.linalg.solve(hess, grad)
    return beta


def _predict(beta: np.ndarray, x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-np.clip(np.column_stack([x, np.ones(len(x))]) @ beta, -30, 30)))


def feedback_loop(seed: int, policy: str, threshold: float, rounds: int = 6, per_round: int = 1500):
    """A stream of subjects in which a new kind of real transient appears after the model was first trained
    (15 % of reals from round 1 look bogus along the main feature, a second feature tells them apart). Each
    round the current model (logistic regression) scores the new subjects, votes with its gold-learned
    confusion (gold: 200 subjects from before the new kind, so the gold confusion does not show its blind
    spot, except with "train_fresh_gold"), volunteers (skills known) vote until SWAP passes ``threshold``, and the model is retrained per
    ``policy``. Returns (label error, label error on the new kind, test AUC of the model after the last round,
    volunteer votes per subject, share of labels the model helped decide)."""
    rng = np.random.default_rng(seed)
    panel = make_panel(200, rng, spammer_share=0.05, always_real_share=0.02)
    p_l = np.clip(panel.sensitivity, 0.01, 0.99)
    p_d = np.clip(panel.specificity, 0.01, 0.99)
    dim = 6
    mu = np.zeros(dim)
    mu[0] = 1.3
    shift = np.zeros(dim)
    shift[1] = 3.0

    def draw(n, new_share):
        y = (rng.random(n) < 0.5).astype(np.int64)
        x = rng.standard_normal((n, dim)) + np.where(y[:, None] == 1, mu, -mu)
        new = (y == 1) & (rng.random(n) < new_share)
        x[new] = rng.standard_normal((int(new.sum()), dim)) - mu + shift
        return x, y, new

    x_train, y_train, _ = draw(300, 0.0)  # the first round's labels: crowd-decided, before the new kind
    w_train = np.ones(len(y_train))
    # Gold chosen before the new kind appeared, or refreshed with it (the last policy).
    x_gold, y_gold, _ = draw(200, 0.15 if policy == "train_fresh_gold" else 0.0)
    x_test, y_test, _ = draw(4000, 0.15)
    beta = _fit_logistic(x_train, y_train, w_train)
    wrong = all_wrong = helped_n = new_wrong = new_n = votes = decided_n = 0
    for _ in range(rounds):
        x, y, new = draw(per_round, 0.15)
        scores = _predict(beta, x)
        log_odds = np.zeros(per_round)
        helped = np.zeros(per_round, dtype=bool)
        lr = np.zeros(per_round)
        if policy != "crowd":
            lr = model_log_lr(scores, model_confusion(_predict(beta, x_gold), y_gold))
            log_odds += lr
            helped = lr != 0
        active = np.ones(per_round, dtype=bool)
        used = np.zeros(per_round, dtype=np.int64)
        for _ in range(30):
            idx = np.flatnonzero(active)
            if not len(idx):
                break
            w = rng.choice(len(panel), size=len(idx), p=panel.activity)
            lab = panel.answer(rng, w, y[idx])
            log_odds[idx] += np.where(
                lab == 1, np.log(p_l[w]) - np.log1p(-p_d[w]), np.log1p(-p_l[w]) - np.log(p_d[w])
            )
            used[idx] += 1
            p = 1 / (1 + np.exp(-log_odds[idx]))
            active[idx[(p > 1 - threshold) | (p < threshold)]] = False
        label = (log_odds > 0).astype(np.int64)
        wrong += int((label != y)[helped].sum())
        all_wrong += int((label != y).sum())
        helped_n += int(helped.sum())
        new_wrong += int((label != y)[new].sum())
        new_n += int(new.sum())
        votes += int(used.sum())
        decided_n += per_round
        weight = np.ones(per_round)
        target = label
        if policy == "crowd_target":  # the model's own vote divided out of the posterior it trains on
            crowd_odds = log_odds - lr
            target = (crowd_odds > 0).astype(np.int64)
            weight = np.abs(2 / (1 + np.exp(-crowd_odds)) - 1)
        elif policy == "half":
            weight[helped] = 0.5
        elif policy == "exclude":
            weight[helped] = 0.0
        keep = weight > 0
        x_train = np.vstack([x_train, x[keep]])
        y_train = np.r_[y_train, target[keep]]
        w_train = np.r_[w_train, weight[keep]]
        beta = _fit_logistic(x_train, y_train, w_train)
    return (
        all_wrong / decided_n,
        new_wrong / max(new_n, 1),
        auc(_predict(beta, x_test), y_test),
        votes / decided_n,
        helped_n / decided_n,
    )


GRIDS["ds_gold"] = GRIDS["dawid_skene"]


def curve(worlds, method: str, max_votes: int):
    """(param, mean error, mean votes/subject) for every grid setting, averaged over ``worlds``."""
    rows = []
    for param in GRIDS[method]:
        errs, votes = [], []
        for world in worlds:
            decided, used, _ = run(world, method, param, max_votes)
            errs.append(float((decided != world.truth).mean()))
            votes.append(float(used.mean()))
        rows.append((param, errs, votes))
    return rows


def calibrate(rows, target: float):
    """Cheapest grid setting whose calibration error is <= target (the strictest one if none reaches it)."""
    for param, errs, _ in rows:  # grids run from permissive to strict
        if np.mean(errs) <= target:
            return param
    return rows[-1][0]


def votes_at_error(rows, target: float) -> float:
    """Votes/subject at exactly ``target`` error, interpolating linearly between the two neighbouring settings
    on the error–votes trade-off curve (what a rule that randomly mixes them achieves). Only Pareto-efficient
    settings count (no other setting has both lower error and fewer votes). NaN if the target is off the curve."""
    pts = sorted((float(np.mean(e)), float(np.mean(v))) for _, e, v in rows)
    frontier = []
    for err, votes in pts:  # ascending error: keep a point only if it is cheaper than every more accurate one
        if not frontier or votes < frontier[-1][1]:
            frontier.append((err, votes))
    errs = np.array([p[0] for p in frontier])
    votes = np.array([p[1] for p in frontier])
    if not (errs.min() <= target <= errs.max()):
        return float("nan")
    return float(np.interp(target, errs, votes))


def budget_accuracy(world: World, budget: int):
    out = {}
    for method in BUDGET_METHODS:
        _, _, p_real = run(world, method, 0.0, budget, retire=False)
        out[method] = label_accuracy(p_real, world.truth)
    return out


def ds_speed(n_votes: int = 1_000_000):
    rng = np.random.default_rng(0)
    n_items = n_votes // 5
    truth = rng.integers(0, 2, n_items)
    items = np.repeat(np.arange(n_items), 5)
    workers = rng.integers(0, 2000, n_votes)
    labels = np.where(rng.random(n_votes) < 0.85, truth[items], 1 - truth[items])
    t0 = time.perf_counter()
    majority_vote(items, workers, labels)
    t_mv = time.perf_counter() - t0
    t0 = time.perf_counter()
    ds = dawid_skene(items, workers, labels, n_classes=2)
    t_ds = time.perf_counter() - t0
    t0 = time.perf_counter()
    swap(items, workers, labels, np.arange(2000), truth[:2000])
    t_sw = time.perf_counter() - t0
    return t_mv, t_ds, ds.n_iter, t_sw


def mean_sd(values, fmt=".4f"):
    a = np.asarray(values, dtype=float)
    sd = a.std(ddof=1) if len(a) > 1 else 0.0
    return f"{a.mean():{fmt}} ± {sd:{fmt}}"


NAMES = {
    "majority": "Majority vote",
    "dawid_skene": "Dawid–Skene",
    "ds_gold": "Dawid–Skene + gold",
    "swap": "SWAP (gold history)",
    "swap_cold": "SWAP (cold start)",
    "swap_informed": "SWAP (gold history, start at 0.8)",
    "swap_model": "SWAP + model",
    "ds_model": "Dawid–Skene + model",
    "swap_model_min2": "SWAP + model, ≥ 2 volunteer votes",
    "ds_model_min2": "Dawid–Skene + model, ≥ 2 volunteer votes",
}


def main(argv=None):
    global SWAP_PSEUDO
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run; does not write the doc")
    parser.add_argument("--subjects", type=int, default=4000)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--max-votes", type=int, default=30)
    parser.add_argument(
        "--gold-share", type=float, default=0.05, help="share of all votes cast on gold subjects"
    )
    parser.add_argument(
        "--gold-history", type=float, default=10.0,
        help="gold votes per volunteer (on average) cast before the benchmark starts; SWAP (cold start) ignores them",
    )  # fmt: skip
    parser.add_argument("--real-fraction", type=float, default=0.5)
    parser.add_argument("--target-error", type=float, default=0.01)
    parser.add_argument(
        "--swap-pseudo", type=float, nargs=2, default=SWAP_PSEUDO, metavar=("CORRECT", "WRONG"),
        help="SWAP skill pseudo-counts (default 1 1: new volunteers start at 0.5, as in Space Warps)",
    )  # fmt: skip
    parser.add_argument("--no-write", action="store_true", help="print only, leave docs/benchmarks.md alone")
    args = parser.parse_args(argv)
    SWAP_PSEUDO = tuple(args.swap_pseudo)
    if args.quick:
        args.subjects, args.seeds, args.max_votes = 800, 2, 20

    started = time.perf_counter()
    budgets = (3, 5, 10)

    def world(seed):
        return make_world(
            seed, args.subjects, args.max_votes, args.gold_share, args.real_fraction, args.gold_history
        )

    worlds = [world(s) for s in range(args.seeds)]
    acc = {m: {b: [] for b in budgets} for m in BUDGET_METHODS}
    for w in worlds:
        for b in budgets:
            for m, value in budget_accuracy(w, b).items():
                acc[m][b].append(value)

    calib_world = world(1000)
    calibrated, rows, at_target = {}, {}, {}
    for m in METHODS:
        calibrated[m] = calibrate(curve([calib_world], m, args.max_votes), args.target_error)
        rows[m] = curve(worlds, m, args.max_votes)
        at_target[m] = votes_at_error(rows[m], args.target_error)
    t_mv, t_ds, ds_iter, t_sw = ds_speed(200_000 if args.quick else 1_000_000)
    elapsed = time.perf_counter() - started

    lines = [
        f"Simulated crowd: 200 volunteers (sensitivity U(0.77, 0.99), specificity U(0.87, 0.996)), 5 % random "
        f'spammers, 2 % always-"real", lognormal activity; {args.subjects} subjects per seed '
        f"({args.real_fraction:.0%} real), {args.seeds} seeds (mean ± sd). Gold subjects get {args.gold_share:.0%} "
        f'of all votes; "gold history" means the crowd already answered {args.gold_history:g} gold subjects per '
        f'volunteer on average before the run (a project that has been live a while), "cold start" means none. '
        f"SWAP skills use pseudo-counts {SWAP_PSEUDO[0]:g} right / {SWAP_PSEUDO[1]:g} wrong (a new volunteer starts "
        f'at P_L = P_D = {SWAP_PSEUDO[0] / sum(SWAP_PSEUDO):.2g}, mlcore\'s default), except the "start at 0.8" row '
        f"({SWAP_INFORMED[0]:g} / {SWAP_INFORMED[1]:g}).",
        "",
        "Label accuracy at equal vote budgets (every subject gets exactly N votes):",
        "",
        "| Method | " + " | ".join(f"{b} votes" for b in budgets) + " |",
        "| --- | " + " | ".join("---" for _ in budgets) + " |",
    ]
    for m in BUDGET_METHODS:
        lines.append(f"| {NAMES[m]} | " + " | ".join(mean_sd(acc[m][b]) for b in budgets) + " |")
    lines += [
        "",
        f"Sequential retirement at {args.target_error:.0%} label error (votes arrive one at a time; cap "
        f"{args.max_votes} votes). *Calibrated*: the rule's parameter is picked on a separate seed and evaluated "
        f"on the {args.seeds} seeds (an honest, out-of-sample error). *At exactly {args.target_error:.0%}*: votes "
        "interpolated on the evaluation curve between the two neighbouring settings (what a rule randomly mixing "
        "them achieves), so all methods are compared at the same error.",
        "",
        "| Method | Calibrated rule | Error | Votes / subject | Votes at exactly "
        f"{args.target_error:.0%} | vs majority |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    base = at_target["majority"]
    for m in METHODS:
        param = calibrated[m]
        _, errs, votes = next(r for r in rows[m] if r[0] == param)
        rule = f"lead ≥ {param}" if m == "majority" else f"P(real) > {1 - param:g} or < {param:g}"
        lines.append(
            f"| {NAMES[m]} | {rule} | {mean_sd(errs)} | {mean_sd(votes, '.2f')} | {at_target[m]:.2f} | "
            f"{at_target[m] / base:.2f}× |"
        )
    pts = "; ".join(
        f"lead ≥ {p}: {np.mean(e):.2%} error at {np.mean(v):.2f} votes" for p, e, v in rows["majority"][1:4]
    )
    lines += [
        "",
        f"Majority's trade-off curve: {pts}. This crowd is good enough that two agreeing votes already give ~2 % "
        "error, which bounds what any weighting can save at a 1 % target.",
    ]
    # The stated goal, checked rather than assumed.
    smart = ("dawid_skene", "swap")  # the methods as shipped (mlcore defaults)
    acc_goal = all(max(np.mean(acc[m][b]) for m in smart) >= np.mean(acc["majority"][b]) for b in budgets)
    savings = {m: 1 - at_target[m] / base for m in smart}
    vote_goal = any(v >= 0.30 for v in savings.values())
    lines += [
        "",
        "Goal: DS or SWAP at least as accurate as majority at every budget — "
        + ("**met**" if acc_goal else "**not met**")
        + "; ≥30 % fewer votes than majority to retire at the same error — "
        + ("**met**" if vote_goal else "**not met**")
        + f" (at exactly {args.target_error:.0%} error DS saves {savings['dawid_skene']:.0%} and SWAP with gold "
        f"history saves {savings['swap']:.0%} of majority's votes).",
        "",
    ]
    model_auc = [auc(w.model_scores, w.truth) for w in worlds]

    def calibrated_row(m):
        return next(r for r in rows[m] if r[0] == calibrated[m])

    def calibrated_votes(m):
        return float(np.mean(calibrated_row(m)[2]))

    def calibrated_error(m):
        return float(np.mean(calibrated_row(m)[1]))

    model_savings = {m: 1 - at_target[m] / base for m in METHODS if "model" in m}
    best = max(("swap_model", "ds_model"), key=lambda m: model_savings[m])
    other = "ds_model" if best == "swap_model" else "swap_model"
    best2 = max(("swap_model_min2", "ds_model_min2"), key=lambda m: model_savings[m])
    model_goal = model_savings[best] >= 0.40
    lines += [
        f"The model as a voter: the simulated classifier's AUC on the subjects is {mean_sd(model_auc)} "
        f"({MODEL_CONFIDENT_MISTAKES:.0%} confident mistakes); its confusion is learned on the "
        f"{len(worlds[0].gold_truth)} gold subjects' scores, its vote counts once per subject, and only volunteer "
        "votes are counted. Rules fire from the first volunteer vote, as in every row above; the "
        '"≥ 2 volunteer votes" rows add the workflow default min_votes = 2.',
        "",
        "Goal: at ≤ 1 % label error, ≥ 40 % fewer volunteer votes per retired subject than the majority/count "
        "rule — " + ("**met**" if model_goal else "**not met**") + f" ({NAMES[best]} saves "
        f"{model_savings[best]:.0%} at exactly {args.target_error:.0%} error: {at_target[best]:.2f} votes against "
        f"{base:.2f}; {NAMES[other]} saves {model_savings[other]:.0%}). With min_votes = 2 no subject retires on "
        f"fewer than 2 votes: {NAMES[best2]} saves {model_savings[best2]:.0%}"
        + (
            " at exactly 1 % — short of 40 % by that measure."
            if model_savings[best2] < 0.40
            else " — met with the default min_votes = 2 too."
        )
        + " Compared as deterministic rules calibrated to ≤ 1 % error (the *Calibrated* columns), majority needs "
        f"{calibrated_votes('majority'):.2f} votes; "
        + "; ".join(
            f"{NAMES[m]} {calibrated_votes(m):.2f} at {calibrated_error(m):.2%} error "
            f"({1 - calibrated_votes(m) / calibrated_votes('majority'):.0%} fewer)"
            for m in ("swap_model", "ds_model", "swap_model_min2", "ds_model_min2")
        )
        + ".",
        "",
    ]
    t_model = calibrated["swap_model"]
    fb = {
        k: [feedback_loop(100 + i, k, t_model) for i in range(3 if args.quick else 5)]
        for k in FEEDBACK_POLICIES
    }
    lines += [
        f"Feedback loop ({3 if args.quick else 5} seeds, 6 rounds of 1,500 subjects, SWAP + model at "
        f"P(real) > {1 - t_model:g} or < {t_model:g}): a new kind of real transient (15 % of reals) appears after "
        "the first model was trained and looks bogus to it; the gold set predates it. The model (logistic "
        "regression on 6 features) is retrained after each round on the labels decided so far.",
        "",
        "| Policy | Label error | Error on the new kind | Model AUC after 6 rounds | Volunteer votes / subject "
        "| Labels the model helped |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for k, label in FEEDBACK_POLICIES.items():
        cols = list(zip(*fb[k], strict=True))
        lines.append(
            f"| {label} | {mean_sd(cols[0])} | {mean_sd(cols[1])} | {mean_sd(cols[2])} | "
            f"{mean_sd(cols[3], '.2f')} | {np.mean(cols[4]):.0%} |"
        )

    def fb_mean(policy, col):
        return float(np.mean([r[col] for r in fb[policy]]))

    lines += [
        "",
        f"Reading: the model's vote saves {1 - fb_mean('train', 3) / fb_mean('crowd', 3):.0%} of the volunteer "
        "votes, but the labels it helps decide err more on the kind it has never seen "
        f"({fb_mean('train', 1):.1%} against {fb_mean('crowd', 1):.1%} without its vote; "
        f"{fb_mean('train_fresh_gold', 1):.1%} once gold includes that kind, so its confusion shows the blind spot). "
        "Leaving its labels out of training "
        + ("lowers" if fb_mean("exclude", 2) < fb_mean("train", 2) else "does not lower")
        + f" the retrained model's AUC ({fb_mean('exclude', 2):.3f} against {fb_mean('train', 2):.3f} training on "
        "them): with the model voting on every new subject, no new label is left to learn the new kind from.",
        "",
        f"Speed (same run, {'200k' if args.quick else '1M'} votes, 2,000 volunteers): majority {t_mv:.2f} s "
        f"(baseline), Dawid–Skene {t_ds:.2f} s = {t_ds / t_mv:.0f}× majority ({ds_iter} EM iterations), "
        f"SWAP {t_sw:.2f} s = {t_sw / t_mv:.1f}× majority.",
        "",
    ]
    cmd = "nice -n 10 .venv/bin/python bench/aggregation.py" + (" --quick" if args.quick else "")
    lines.append(
        f"Reproduce: `{cmd}` — {dt.date.today().isoformat()}, {platform.machine()} "
        f"{os.cpu_count()}-core machine (shared with other jobs), Python {platform.python_version()}, "
        f"numpy {np.__version__}; took {elapsed:.0f} s."
    )
    body = "\n".join(lines)
    print(body)
    if not args.quick and not args.no_write:
        write_section(body)
        print(f"\nwrote {SECTION!r} in {DOC.relative_to(ROOT)}")


def write_section(body: str) -> None:
    replace_section(SECTION, body, DOC)


if __name__ == "__main__":
    main()
