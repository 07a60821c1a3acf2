"""The findings of docs/findings.md, computed as that protocol says: replicate-mean curves, a
cluster bootstrap with prompts nested in replicates, one peak definition, each finding's
statistic and threshold, and beside each pooled test the count of replicates it holds in.

A replicate is what a proxy seed indexes: every cell's seed s belongs to replicate s. Every
curve of a method is measured on the same prompts (the pool's, or PPO's evaluation prompts,
which are the pool's first ones), so a bootstrap draw redraws the replicates and one set of
prompt indices, and applies both to every cell: the draws of cells that share replicates and
prompts stay as correlated as the measurements were. A cell with fewer seeds than others maps
the same uniform draws onto its own seeds. Tables in, findings out: nothing here loads a model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .bootstrap import Draw, draws, interval
from .fit import fit_curve

R2_MIN = 0.95  # F7, F8: ours, stated in advance (the paper shows no R^2)
SAME_KL = 0.25  # F14: the larger policy's peak d within 25% of the smaller's
F13_MARGIN = 0.1  # F13: a penalty "no better" than early stopping within 0.1 gold std
LEVEL = 0.95  # two-sided percentile intervals; F4 uses the one-sided 95% lower end
NOT_REACHED = 1e9  # the position of a peak not reached: after every reached one


@dataclass
class Cell:
    """One grid cell of one method: per replicate, d along the curve and gold per prompt."""

    key: tuple  # (policy, rm, data) or (policy, rm, data, kl_penalty)
    rm_params: int
    seeds: list
    x: np.ndarray  # (K,) n (best-of-n) or PPO step
    d: np.ndarray  # (R, K)
    gold: np.ndarray  # (R, P, K)
    val_loss: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (R,)
    pools: list = field(default_factory=list)  # the pool (prompt set) of each replicate; [] or all equal: shared

    @property
    def nested(self) -> bool:
        """Whether each replicate was measured on prompts of its own (prompts nested in replicates)."""
        return len(set(self.pools)) > 1


class View:
    """Curves of every cell under one draw (the replicate mean of the drawn replicates' means
    over the drawn prompts). `only`: one replicate's data alone (for "k of R")."""

    def __init__(self, cells: dict, draw: Draw, only=None):
        self.cells, self.draw, self.only = cells, draw, only
        self._cache, self._fits = {}, {}

    def has(self, key) -> bool:
        return key in self.cells and (self.only is None or self.only in self.cells[key].seeds)

    def _reps(self, c: Cell) -> np.ndarray:
        if self.only is not None:
            if self.only not in c.seeds:
                raise KeyError(f"replicate {self.only} not in cell {c.key}")
            return np.array([c.seeds.index(self.only)])
        return self.draw.rep_index(len(c.seeds))

    def _per_replicate(self, c: Cell):
        """(replicate, its prompt indices) of each drawn replicate."""
        P = c.gold.shape[1]
        return [(r, self.draw.prompt_index(P, j if c.nested else 0)) for j, r in enumerate(self._reps(c))]

    def curve(self, key) -> tuple[np.ndarray, np.ndarray]:
        """(d, gold) of a cell's replicate-mean curve."""
        if key not in self._cache:
            c = self.cells[key]
            drawn = self._per_replicate(c)
            g = np.mean([c.gold[r][p].mean(0) for r, p in drawn], axis=0)
            self._cache[key] = (c.d[[r for r, _ in drawn]].mean(0), g)
        return self._cache[key]

    def fit(self, form: str, key, min_d: float, what: str) -> float:
        """`fit_curve`'s `what` on a cell's replicate-mean curve where d >= min_d, NaN under 3
        points; each curve is fitted once per view, for every finding that reads it."""
        if (form, key, min_d) not in self._fits:
            d, g = self.curve(key)
            keep = d >= min_d
            self._fits[form, key, min_d] = fit_curve(form, d[keep], g[keep]) if keep.sum() >= 3 else None
        f = self._fits[form, key, min_d]
        return float("nan") if f is None else f[what]

    def proxies(self, key, at: int) -> list[tuple[float, float]]:
        """(validation loss, gold at grid index `at`) of each drawn replicate's proxy."""
        c = self.cells[key]
        return [(float(c.val_loss[r]), float(c.gold[r][p, at].mean())) for r, p in self._per_replicate(c)]


@dataclass
class Result:
    fid: str
    name: str
    status: str  # PASS, FAIL, INCONCLUSIVE or SKIP
    detail: str

    def line(self) -> str:
        return f"{self.status:4s}  {self.fid} {self.name}: {self.detail}"


# ----------------------------------------------------------------------------- statistics


def slope(x, y) -> float:
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 2 or np.ptp(x) == 0 or not np.all(np.isfinite(y)):
        return float("nan")
    return float(np.polyfit(x, y, 1)[0])


def _ranks(v: np.ndarray) -> np.ndarray:
    """1-based ranks, ties at their average rank (scipy's `rankdata`, exact for these sizes)."""
    order = np.argsort(v, kind="mergesort")
    s = v[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    ends = np.r_[starts[1:], len(v)]
    r = np.empty(len(v))
    r[order] = np.repeat((starts + ends + 1) / 2, ends - starts)
    return r


def spearman(x, y) -> float:
    """Spearman's rho as scipy's `spearmanr` computes it (the Pearson correlation of average ranks;
    NaN where either side is constant or holds a NaN), without its per-call overhead: the
    bootstrap calls it tens of thousands of times."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 2 or np.ptp(y) == 0 or np.ptp(x) == 0 or np.isnan(x).any() or np.isnan(y).any():
        return float("nan")
    return float(np.corrcoef(np.column_stack([_ranks(x), _ranks(y)]), rowvar=False)[1, 0])


def peak(d: np.ndarray, g: np.ndarray) -> tuple[float, float, int]:
    """(peak gold, peak position, index): the measured maximum; a maximum at the last point
    is not reached, its position NOT_REACHED."""
    i = int(np.argmax(g))
    return float(g[i]), (NOT_REACHED if i == len(g) - 1 else float(d[i])), i


def first_d(d: np.ndarray, g: np.ndarray, level: float) -> float:
    """The smallest d at which a curve reaches `level`, interpolated from the origin (d = 0,
    gold 0 by construction; the measured d = 0 point is left out); inf if never."""
    keep = d > 0
    d = np.concatenate([[0.0], d[keep]])
    g = np.concatenate([[0.0], g[keep]])
    above = np.nonzero(g >= level)[0]
    if not len(above):
        return float("inf")
    j = above[0]
    return float(d[j - 1] + (level - g[j - 1]) * (d[j] - d[j - 1]) / (g[j] - g[j - 1]))


def at_most(d: np.ndarray, g: np.ndarray, dmax: float) -> float:
    """The early-stopping frontier: the best gold at no more than `dmax` (0, pi_init's, if none)."""
    keep = d <= dmax
    return float(g[keep].max()) if keep.any() else 0.0


# ----------------------------------------------------------------------------- the bootstrap


@dataclass
class Part:
    """One part of a finding (one data size, one RM, ...): its statistic per view and its rule."""

    label: str
    stat: callable  # View -> float
    rule: str  # "lo>0", "hi<0" (95% interval), "lo5>0" (one-sided), "r2" (point >= R2_MIN), "f13" (three-way)
    fmt: str = "{:+.3f}"
    extra: callable | None = None  # View -> bool: a condition on the point estimate (the peak reached, ...)
    unmet: str = "peak not reached"  # what the line says when `extra` is false


def judge(part: Part, point: float, boot: np.ndarray, extra_ok: bool = True) -> tuple[str, str]:
    """(status, the interval as printed) of one part: its rule on the point estimate and the
    percentile interval of its bootstrap values (infinite values rank beyond every finite one)."""
    lo, hi = interval(boot, LEVEL, inf=NOT_REACHED) if len(boot) else (np.nan, np.nan)
    if part.rule == "lo5>0":  # one-sided: the lower end of the two-sided interval at twice the level's tail
        lo5 = interval(boot, 2 * LEVEL - 1, inf=NOT_REACHED)[0]
        shown = f" [5th percentile {part.fmt.format(lo5)}]"
    else:
        shown = f" [{part.fmt.format(lo)}, {part.fmt.format(hi)}]" if len(boot) else ""
    if not np.isfinite(point):
        return "FAIL", shown
    if part.rule == "lo>0":
        ok = lo > 0
    elif part.rule == "hi<0":
        ok = hi < 0
    elif part.rule == "lo5>0":
        ok = lo5 > 0
    elif part.rule == "r2":
        ok = point >= R2_MIN
    elif part.rule == "f13":
        return ("PASS" if hi < F13_MARGIN else "FAIL" if lo > 0 else "INCONCLUSIVE"), shown
    else:
        raise ValueError(part.rule)
    return ("PASS" if ok and extra_ok else "FAIL"), shown


def combine(statuses: list[str]) -> str:
    if not statuses:
        return "SKIP"
    if all(s == "PASS" for s in statuses):
        return "PASS"
    return "FAIL" if "FAIL" in statuses else "INCONCLUSIVE"


class Views:
    """The views every finding reads, made once per draw and shared by all findings: a curve
    resampled by one draw is computed once, whichever findings read it."""

    def __init__(self, cells: dict, boot: list[Draw], replicates: list, prompt_boot: list[Draw]):
        self.cells, self.replicates, self.prompt_boot = cells, replicates, prompt_boot
        self.point = View(cells, Draw(None, None))
        self.boot = [View(cells, dr) for dr in boot]
        self._own = {}

    def own(self, s) -> tuple[View, list[View]]:
        """Replicate s alone: its view as measured and under each prompt-only draw."""
        if s not in self._own:
            self._own[s] = (View(self.cells, Draw(None, None), only=s),
                            [View(self.cells, dr, only=s) for dr in self.prompt_boot])
        return self._own[s]


def evaluate(fid: str, name: str, parts: list[Part], views: Views) -> Result:
    """The pooled test on every part (bootstrap over replicates and prompts), then the same rule
    within each replicate (bootstrap over that replicate's prompts): "holds in k of R"."""
    if not parts:
        return Result(fid, name, "SKIP", "not testable on this grid")
    point_view = views.point
    texts, statuses = [], []
    for part in parts:
        point = part.stat(point_view)
        values = np.array([part.stat(v) for v in views.boot]) if part.rule != "r2" else np.array([])
        extra_ok = part.extra(point_view) if part.extra else True
        st, q = judge(part, point, values, extra_ok)
        statuses.append(st)
        texts.append(f"{part.label}: {part.fmt.format(point)}{q}" + ("" if extra_ok else f" ({part.unmet})"))
    k, R = 0, 0
    for s in views.replicates:
        own = []
        pv, own_views = views.own(s)
        for part in parts:
            try:
                point = part.stat(pv)
            except KeyError:  # a cell this replicate does not have
                own = None
                break
            values = np.array([part.stat(v) for v in own_views]) if part.rule != "r2" else np.array([])
            own.append(judge(part, point, values, part.extra(pv) if part.extra else True)[0])
        if own is None:
            continue
        R += 1
        k += combine(own) == "PASS"
    return Result(fid, name, combine(statuses), "; ".join(texts) + f"; holds in {k} of {R} replicates")


_WORK = None  # (tasks, views) for forked workers: a finding's statistics are closures, which do not pickle


def _evaluate_task(i: int) -> Result:
    return evaluate(*_WORK[0][i], _WORK[1])


def evaluate_all(tasks: list, views: "Views", workers: int = 1) -> list[Result]:
    """`evaluate` of each (fid, name, parts), in order. With `workers` > 1 in forked processes,
    each taking the next finding: the same results, as a finding's draws are fixed before any
    is evaluated (`views`); the findings job is the study's last, with the machine to itself."""
    global _WORK
    if workers <= 1 or len(tasks) < 2:
        return [evaluate(*t, views) for t in tasks]
    import multiprocessing

    _WORK = (tasks, views)
    try:
        with multiprocessing.get_context("fork").Pool(min(workers, len(tasks))) as pool:
            return pool.map(_evaluate_task, range(len(tasks)), chunksize=1)
    finally:
        _WORK = None


# ----------------------------------------------------------------------------- building cells


def bon_cells(fits: pd.DataFrame, scores: dict) -> dict:
    """Best-of-n cells from the fit table (sizes, losses) and the scores files ({keys: path})."""
    from .estimator import bon_kl, bon_per_prompt, n_grid, scores_matrix

    from .keys import scores_metadata

    cells = {}
    for key, rows in fits.sort_values("seed").groupby(["policy", "rm", "data"], sort=True):
        golds, pools = [], []
        for s in rows["seed"]:
            path = scores[key + (int(s),)]
            proxy, gold = scores_matrix(pd.read_parquet(path))
            ns = n_grid(proxy.shape[1])
            golds.append(bon_per_prompt(proxy, gold, ns)[0])
            pools.append(scores_metadata(path).get("pool", 0))
        d = np.sqrt(bon_kl(ns))
        cells[key] = Cell(key, int(rows["rm_params"].iloc[0]), [int(s) for s in rows["seed"]], ns.astype(float),
                          np.tile(d, (len(golds), 1)), np.stack(golds), rows["val_loss"].to_numpy(float), pools)
    return cells


def rl_cells(fits: pd.DataFrame, runs: pd.DataFrame, by_prompt: pd.DataFrame) -> dict:
    """PPO cells: d per evaluation from the runs, gold per evaluation prompt from their tables."""
    cells = {}
    keys = ["policy", "rm", "data", "kl_penalty"]
    for key, rows in fits.sort_values("seed").groupby(keys, sort=True):
        ds, golds, pools, steps = [], [], [], None
        for s in rows["seed"]:
            sel = lambda t: t[(t[keys] == pd.Series(dict(zip(keys, key)))).all(1) & (t["seed"] == s)]
            run = sel(runs).sort_values("step")
            per = sel(by_prompt).pivot(index="prompt", columns="step", values="gold").sort_index()
            steps = run["step"].to_numpy() if steps is None else steps
            if not np.array_equal(run["step"].to_numpy(), steps) or not np.array_equal(per.columns.to_numpy(), steps):
                raise ValueError(f"run {key} seed {s}: its evaluations are not at the steps of the cell's other runs")
            ds.append(run["d"].to_numpy(float))
            golds.append(per.to_numpy(float))
            pools.append(int(sel(by_prompt)["pool"].iloc[0]) if "pool" in by_prompt else 0)
        cells[key] = Cell(key, int(rows["rm_params"].iloc[0]), [int(s) for s in rows["seed"]], steps.astype(float),
                          np.stack(ds), np.stack(golds), pools=pools)
    return cells


# ----------------------------------------------------------------------------- the findings


def findings(bon: dict, rl: dict, main: str, loss_n: int, rl_min_d: float, policy_params: dict,
             B: int = 1000, seed: int = 0, workers: int = 1) -> list[Result]:
    """Every finding of the protocol on best-of-n cells `bon` and PPO cells `rl` (either may be
    empty): F1-F14 in order, evaluated in `workers` processes."""
    allc = {("bon",) + k: c for k, c in bon.items()} | {("rl",) + k: c for k, c in rl.items()}
    if not allc:
        return []
    R = max(len(c.seeds) for c in allc.values())
    P = max(c.gold.shape[1] for c in allc.values())
    boot = draws(B, seed, R, P)
    prompt_boot = [Draw(None, dr.prompts) for dr in draws(B, seed + 1, R, P)]
    replicates = sorted({s for c in allc.values() for s in c.seeds})
    views = Views(allc, boot, replicates, prompt_boot)
    tasks = []
    ev = lambda fid, name, parts: tasks.append((fid, name, parts))

    def main_cells(method, penalty=0.0):
        out = {}
        for k, c in allc.items():
            if k[0] == method and k[1] == main and (method == "bon" or k[4] == penalty):
                out[k] = c
        return out

    def by(cells, axis):  # group cell keys by data size (axis 3) or RM (axis 2)
        g = {}
        for k in cells:
            g.setdefault(k[axis], []).append(k)
        return g

    def curve_peak(k):
        return lambda v: peak(*v.curve(k))

    label = {"bon": "best-of-n", "rl": "RL, no KL penalty"}

    # F1, F2: the smallest RM's gold turns over, at every data size
    for fid, method in (("F1", "bon"), ("F2", "rl")):
        cells = main_cells(method)
        parts = []
        if cells:
            smallest = min(allc[k].rm_params for k in cells)
            for k in sorted(k for k in cells if allc[k].rm_params == smallest):
                peak_at = {}  # the peak index of the data as measured (or of one replicate alone), by `only`

                def fall(v, k=k, peak_at=peak_at):
                    if v.only not in peak_at:
                        peak_at[v.only] = peak(*View(allc, Draw(None, None), only=v.only).curve(k))[2]
                    g = v.curve(k)[1]
                    return float(g[peak_at[v.only]] - g[-1])
                parts.append(Part(f"{k[3]:,} comparisons, fall from the peak", fall, "lo>0",
                                  extra=lambda v, k=k: peak(*v.curve(k))[1] < NOT_REACHED))
        name = f"gold turns over for the smallest RM ({label[method]})"
        ev(fid, name, parts)

    # F3, F4: larger RMs reach more gold, and peak later
    for fid, what in (("F3", "gold"), ("F4", "position")):
        for method in ("bon", "rl"):
            parts = []
            for dsize, keys in sorted(by(main_cells(method), 3).items()):
                if len({allc[k].rm_params for k in keys}) < 2:
                    continue
                keys = sorted(keys, key=lambda k: allc[k].rm_params)
                x = [np.log10(allc[k].rm_params) for k in keys]
                if what == "gold":
                    parts.append(Part(f"{dsize:,}: slope per decade", lambda v, keys=keys, x=x:
                                      slope(x, [peak(*v.curve(k))[0] for k in keys]), "lo>0"))
                else:
                    parts.append(Part(f"{dsize:,}: rho", lambda v, keys=keys, x=x:
                                      spearman(x, [peak(*v.curve(k))[1] for k in keys]), "lo5>0", fmt="{:+.2f}"))
            name = (f"larger RMs reach more gold ({label[method]})" if what == "gold"
                    else f"larger RMs peak later ({label[method]}; measured peaks, not reached last)")
            ev(fid, name, parts)

    # F5: more data helps (best-of-n)
    parts = []
    for rm, keys in sorted(by(main_cells("bon"), 2).items(), key=lambda kv: allc[kv[1][0]].rm_params):
        if len(keys) < 2:
            continue
        keys = sorted(keys, key=lambda k: k[3])
        x = [np.log10(k[3]) for k in keys]
        parts.append(Part(f"RM {allc[keys[0]].rm_params:,}: slope per decade of data", lambda v, keys=keys, x=x:
                          slope(x, [peak(*v.curve(k))[0] for k in keys]), "lo>0"))
    ev("F5", "more data helps (best-of-n; peak gold by data size)", parts)

    # F6: lower validation loss, more gold at n = loss_n
    parts = []
    keys = sorted(main_cells("bon"))
    if len(keys) >= 2 and all(len(allc[k].val_loss) for k in keys):
        at = int(np.argmin(np.abs(allc[keys[0]].x - loss_n)))

        def loss_rho(v, keys=keys, at=at):
            pts = [p for k in keys if v.has(k) for p in v.proxies(k, at)]
            return spearman([p[0] for p in pts], [p[1] for p in pts])
        parts.append(Part(f"rho over proxies at n = {int(allc[keys[0]].x[at])}", loss_rho, "hi<0", fmt="{:+.2f}"))
    ev("F6", "lower RM validation loss, more gold (best-of-n)", parts)

    # F7, F8: the functional forms fit each replicate-mean curve
    for fid, method, min_d in (("F7", "bon", 0.0), ("F8", "rl", rl_min_d)):
        parts = []
        for k in sorted(main_cells(method), key=lambda k: (k[3], allc[k].rm_params)):
            parts.append(Part(f"{allc[k].rm_params:,}/{k[3]:,}",
                              lambda v, k=k, method=method, min_d=min_d: v.fit(method, k, min_d, "r2"), "r2", fmt="{:.3f}"))
        form = "d(alpha - beta d)" if method == "bon" else "d(alpha - beta log d)"
        ev(fid, f"{label[method].split(',')[0]} follows {form} (R^2 >= {R2_MIN} per curve, RM params/data)", parts)

    # F9-F11: the coefficients against log RM size, at data sizes with >= 3 RM sizes
    for fid, method, coef, rule, what in (("F9", "bon", "alpha", "lo>0", "alpha_bon rises"),
                                          ("F10", "bon", "beta", "hi<0", "beta_bon falls"),
                                          ("F11", "rl", "beta", "hi<0", "beta_RL falls")):
        parts = []
        min_d = 0.0 if method == "bon" else rl_min_d
        for dsize, keys in sorted(by(main_cells(method), 3).items()):
            if len({allc[k].rm_params for k in keys}) < 3:
                continue
            keys = sorted(keys, key=lambda k: allc[k].rm_params)
            x = [np.log10(allc[k].rm_params) for k in keys]

            parts.append(Part(f"{dsize:,}: slope per decade", lambda v, keys=keys, x=x, coef=coef, min_d=min_d, method=method:
                              slope(x, [v.fit(method, k, min_d, coef) for k in keys]), rule))
        ev(fid, f"{what} with RM size", parts)

    # F12: RL spends more KL than best-of-n for the same gold
    parts = []
    for k in sorted(main_cells("rl"), key=lambda k: allc[k].rm_params):
        b = ("bon",) + k[1:4]
        if b not in allc:
            continue

        def kl_ratio(v, k=k, b=b):
            (db, gb), (dr, gr) = v.curve(b), v.curve(k)
            level = 0.5 * min(gb.max(), gr.max())
            if level <= 0:
                return float("nan")
            x_b, x_r = first_d(db, gb, level), first_d(dr, gr, level)
            if not (np.isfinite(x_b) or np.isfinite(x_r)):
                return float("nan")
            return float(np.log(x_r / x_b)) if np.isfinite(x_b) and np.isfinite(x_r) else (np.inf if np.isfinite(x_b) else -np.inf)
        parts.append(Part(f"RM {allc[k].rm_params:,}: log(d_RL / d_BoN)", kl_ratio, "lo>0"))
    ev("F12", "RL spends more KL than best-of-n for the same gold", parts)

    # F13: a KL penalty acts like early stopping
    parts = []
    for k in sorted(k for k in allc if k[0] == "rl" and k[4] != 0):
        base = k[:4] + (0.0,)
        if base not in allc:
            continue

        def gap(v, k=k, base=base):
            dp, gp = v.curve(k)
            i = int(np.argmax(gp))
            return float(gp[i] - at_most(*v.curve(base), dp[i]))
        parts.append(Part(f"RM {allc[k].rm_params:,}, penalty {k[4]:g}: gap to early stopping", gap, "f13"))
    ev("F13", f"a KL penalty is no better than early stopping (margin {F13_MARGIN})", parts)

    # F14: a larger policy gains less, peaking at a similar KL
    parts = []
    shared = {}
    for k in allc:
        if k[0] == "bon":
            shared.setdefault((allc[k].rm_params, k[3]), []).append(k)
    for (p, dsize), keys in sorted(shared.items()):
        pols = sorted({k[1] for k in keys}, key=lambda q: policy_params.get(q, 0))
        if len(pols) < 2:
            continue
        small = next(k for k in keys if k[1] == pols[0])
        large = next(k for k in keys if k[1] == pols[-1])

        def gain_diff(v, small=small, large=large):
            ds, gs = v.curve(small)
            i = int(np.argmax(gs))
            dl, gl = v.curve(large)
            return float(np.interp(ds[i], dl, gl) - gs[i])

        def similar_kl(v, small=small, large=large):
            _, ps, _ = peak(*v.curve(small))
            _, pl, _ = peak(*v.curve(large))
            return ps < NOT_REACHED and pl < NOT_REACHED and abs(pl / ps - 1) <= SAME_KL
        parts.append(Part(f"RM {p:,}, {dsize:,}: {pols[-1]} minus {pols[0]} at {pols[0]}'s peak", gain_diff, "hi<0",
                          extra=similar_kl, unmet=f"peak d not within {SAME_KL:.0%}, or not reached"))
    ev("F14", f"a larger policy gains less, peaking at a similar KL (within {SAME_KL:.0%})", parts)
    return evaluate_all(tasks, views, workers)
