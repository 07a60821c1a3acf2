"""Paper figures. One style for all: serif fonts, a sequential palette ordered by log RM size
(light to dark, so it survives greyscale print), labelled axes with units, PDF + 300-dpi PNG."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from .fit import predict

CURVE = re.compile(r"(?P<policy>[^/]+)/(?P<rm>[^/]+)/n(?P<data>\d+)/(kl(?P<kl>[^/]+)/)?s(?P<seed>\d+)\.csv$")


def style():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({
        "font.family": "serif", "font.size": 8, "axes.titlesize": 9, "axes.labelsize": 8,
        "legend.fontsize": 7, "xtick.labelsize": 7, "ytick.labelsize": 7, "lines.linewidth": 1.3,
        "axes.spines.top": True, "axes.spines.right": False, "pdf.fonttype": 42, "savefig.bbox": "tight",
    })
    return plt


def fmt_params(n: float) -> str:
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return f"{int(n)}"


def size_colors(params: list[int]) -> dict[int, tuple]:
    """Sequential colours ordered by log parameter count."""
    import seaborn as sns

    ps = sorted(set(params))
    pal = sns.color_palette("rocket_r", n_colors=len(ps) + 2)[2:] if len(ps) > 1 else [(0.2, 0.1, 0.3)]
    return {p: pal[i] for i, p in enumerate(ps)}


def save(fig, out_pdf: str) -> None:
    from .util import atomic_file

    with atomic_file(out_pdf) as tmp:
        fig.savefig(tmp, format="pdf")
    with atomic_file(Path(out_pdf).with_suffix(".png")) as tmp:
        fig.savefig(tmp, format="png", dpi=300)


def kl_axis(ax) -> None:
    """A KL axis on top of a d = sqrt(KL) axis."""
    from matplotlib.ticker import MaxNLocator

    top = ax.secondary_xaxis("top", functions=(lambda d: np.square(d), lambda kl: np.sqrt(np.clip(kl, 0, None))))
    top.xaxis.set_major_locator(MaxNLocator(5, integer=True))
    top.set_xlabel("KL (nats)")


def load_curves(paths: list[str]) -> pd.DataFrame:
    frames = []
    for p in paths:
        g = CURVE.search(Path(p).as_posix())
        df = pd.read_csv(p).assign(policy=g["policy"], rm=g["rm"], data=int(g["data"]), seed=int(g["seed"]))
        if g["kl"] is not None:
            df["kl_penalty"] = float(g["kl"])
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def _params(curves: pd.DataFrame, fits: pd.DataFrame) -> pd.DataFrame:
    return curves.merge(fits[["policy", "rm", "data", "seed", "rm_params"]].drop_duplicates(),
                        on=["policy", "rm", "data", "seed"])


def _legend(ax, extra=()):
    from matplotlib.lines import Line2D

    h, l = ax.get_legend_handles_labels()
    h += [Line2D([], [], color="k", ls=s) for s, _ in extra]
    l += [name for _, name in extra]
    ax.legend(h, l, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)


def fig_bon_vs_rl(bon: pd.DataFrame, rl: pd.DataFrame, bon_fits: pd.DataFrame, rl_fits: pd.DataFrame, out_pdf: str) -> None:
    """Figure 8: gold against d and against proxy score, best-of-n (solid) vs RL (dashed)."""
    plt = style()
    rl = rl[rl["kl_penalty"] == 0]
    data = max(set(bon["data"]) & set(rl["data"]))
    pol = sorted(bon["policy"].unique())[0]
    b = _params(bon[(bon["data"] == data) & (bon["policy"] == pol)], bon_fits)
    r = _params(rl[(rl["data"] == data) & (rl["policy"] == pol)], rl_fits)
    colors = size_colors(b["rm_params"].tolist() + r["rm_params"].tolist())
    fig, axes = plt.subplots(1, 2, figsize=(6.4, 2.5))
    for params in sorted(colors):
        mb = b[b["rm_params"] == params].groupby("n", as_index=False)[["d", "gold", "proxy"]].mean()
        mr = r[r["rm_params"] == params].groupby("step", as_index=False)[["d", "gold", "proxy"]].mean()
        for ax, x in ((axes[0], "d"), (axes[1], "proxy")):
            ax.plot(mb[x], mb["gold"], "-", color=colors[params], label=fmt_params(params) if ax is axes[1] else None)
            ax.plot(mr[x], mr["gold"], "--", color=colors[params])
    axes[0].set_xlabel("d = sqrt(KL) (nats$^{1/2}$)")
    axes[1].set_xlabel("proxy score (re-centred on $\\pi_{init}$)")
    for ax in axes:
        ax.set_ylabel("gold score (std. units)")
        ax.axhline(0, color="0.7", lw=0.6)
    axes[0].set_title(f"against KL, {data:,} comparisons")
    axes[1].set_title("against proxy score")
    _legend(axes[1], (("-", "best-of-n"), ("--", "RL")))
    save(fig, out_pdf)
    plt.close(fig)


def fig_rl_kl(rl: pd.DataFrame, rl_fits: pd.DataFrame, out_pdf: str) -> None:
    """Figures 14-16: KL(pi || pi_init) against PPO step, per RM size and per KL penalty."""
    plt = style()
    r = _params(rl, rl_fits)
    colors = size_colors(r["rm_params"].tolist())
    pens = sorted(r["kl_penalty"].unique())
    fig, axes = plt.subplots(1, len(pens), figsize=(2.6 * len(pens) + 0.6, 2.3), squeeze=False, sharey=True)
    for ax, pen in zip(axes[0], pens):
        for params, g in r[r["kl_penalty"] == pen].groupby("rm_params"):
            m = g.groupby("step", as_index=False)["kl"].mean()
            ax.plot(m["step"], m["kl"], "-", color=colors[params], label=fmt_params(params))
        ax.set_xlabel("PPO step")
        ax.set_title(f"KL penalty {pen:g}")
    axes[0, 0].set_ylabel("KL (nats)")
    _legend(axes[0, -1])
    save(fig, out_pdf)
    plt.close(fig)


def fig_kl_penalty(rl: pd.DataFrame, rl_fits: pd.DataFrame, out_pdf: str) -> None:
    """Figure 9: gold against d for each KL penalty (a panel per RM size): a penalty moves a
    run along the no-penalty frontier (early stopping) rather than above it."""
    plt = style()
    import seaborn as sns

    r = _params(rl, rl_fits)
    pens = sorted(r["kl_penalty"].unique())
    pal = dict(zip(pens, sns.color_palette("mako_r", n_colors=len(pens) + 1)[1:]))
    sizes = sorted(r["rm_params"].unique())
    fig, axes = plt.subplots(1, len(sizes), figsize=(2.3 * len(sizes) + 0.6, 2.3), squeeze=False, sharey=True)
    for ax, params in zip(axes[0], sizes):
        for pen in pens:
            g = r[(r["rm_params"] == params) & (r["kl_penalty"] == pen)]
            m = g.groupby("step", as_index=False)[["d", "gold"]].mean()
            ax.plot(m["d"], m["gold"], "-o", ms=2, color=pal[pen], label=f"{pen:g}")
        ax.set_title(f"RM {fmt_params(params)}")
        ax.set_xlabel("d = sqrt(KL) (nats$^{1/2}$)")
        ax.axhline(0, color="0.7", lw=0.6)
    axes[0, 0].set_ylabel("gold score (std. units)")
    axes[0, -1].legend(title="KL penalty", loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    save(fig, out_pdf)
    plt.close(fig)


def fig_curves(curves: pd.DataFrame, fits: pd.DataFrame, form: str, out_pdf: str, title: str) -> None:
    """Figure 1: gold (solid), proxy (dashed), fit (dotted) against d; a panel per data size,
    a colour per RM size; curves and fits averaged over seeds (at equal n, or equal PPO step)."""
    plt = style()
    key = "n" if form == "bon" else "step"
    if "kl_penalty" in curves:
        curves, fits = curves[curves["kl_penalty"] == 0], fits[fits["kl_penalty"] == 0]
    curves = _params(curves, fits)
    datas = sorted(curves["data"].unique())
    policies = sorted(curves["policy"].unique())
    colors = size_colors(curves["rm_params"].tolist())
    fig, axes = plt.subplots(len(policies), len(datas), figsize=(2.6 * len(datas) + 0.6, 2.3 * len(policies)),
                             squeeze=False, sharey=True)
    for r, pol in enumerate(policies):
        for c, data in enumerate(datas):
            ax = axes[r, c]
            sub = curves[(curves["data"] == data) & (curves["policy"] == pol)]
            for params, g in sub.groupby("rm_params"):
                m = g.groupby(key, as_index=False)[["d", "gold", "proxy"]].mean()
                col = colors[params]
                ax.plot(m["d"], m["gold"], "-", color=col, label=fmt_params(params))
                ax.plot(m["d"], m["proxy"], "--", color=col, lw=1.0)
                f = fits[(fits["policy"] == pol) & (fits["data"] == data) & (fits["rm_params"] == params)]
                dd = np.linspace(max(m["d"].min(), 1e-3), m["d"].max(), 100)
                ax.plot(dd, predict(form, dd, f["alpha"].mean(), f["beta"].mean()), ":", color=col, lw=1.0)
            ax.axhline(0, color="0.7", lw=0.6)
            ax.set_xlabel("d = sqrt(KL) (nats$^{1/2}$)")
            if c == 0:
                ax.set_ylabel(f"score (gold std. units)\npolicy {pol}")
            ax.set_title(f"{title}, {data:,} comparisons", pad=18)
            kl_axis(ax)
    handles, labels = axes[0, -1].get_legend_handles_labels()
    from matplotlib.lines import Line2D

    handles += [Line2D([], [], color="k", ls=s) for s in ("-", "--", ":")]
    labels += ["gold", "proxy", "fit"]
    axes[0, -1].legend(handles, labels, title="RM params", loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    save(fig, out_pdf)
    plt.close(fig)


def fig_scaling(fits: dict, table: pd.DataFrame, out_pdf: str) -> None:
    """Figure 3: alpha and beta against RM parameters (log x), per method and data size, with the
    fitted line in log10(params) and its bootstrap band."""
    plt = style()
    import seaborn as sns

    methods = list(fits)
    from .scaling import _boot_lines

    rng = np.random.default_rng(0)
    fig, axes = plt.subplots(len(methods), 2, figsize=(5.6, 2.4 * len(methods)), squeeze=False,
                             constrained_layout=True)
    for r, m in enumerate(methods):
        f = fits[m]
        if "kl_penalty" in f:
            f = f[f["kl_penalty"] == 0]
        datas = sorted(f["data"].unique())
        pal = dict(zip(datas, sns.color_palette("crest", n_colors=len(datas))))
        for c, coef in enumerate(("alpha", "beta")):
            ax = axes[r, c]
            for data in datas:
                g = f[f["data"] == data].groupby("rm_params")[coef].agg(["mean", "std"]).reset_index()
                ax.errorbar(g["rm_params"], g["mean"], yerr=g["std"].fillna(0), fmt="o", ms=3, color=pal[data],
                            label=f"{data:,}")
                line = table[(table["method"] == m) & (table["coefficient"] == coef) & (table["data"] == data)]
                if "kl_penalty" in line and line["kl_penalty"].notna().any():
                    line = line[line["kl_penalty"] == 0]
                if len(line):
                    l = line.iloc[0]
                    xs = np.logspace(np.log10(g["rm_params"].min()), np.log10(g["rm_params"].max()), 50)
                    ax.plot(xs, l["slope"] * np.log10(xs) + l["intercept"], "-", color=pal[data], lw=1)
                    # the band: pointwise 95% of the bootstrap replicate lines
                    rows = f[f["data"] == data].dropna(subset=[coef])
                    boot = _boot_lines(rows, coef, 300, rng)
                    ys = boot[:, :1] * np.log10(xs)[None, :] + boot[:, 1:]
                    lo, hi = np.percentile(ys, [2.5, 97.5], axis=0)
                    ax.fill_between(xs, lo, hi, color=pal[data], alpha=0.15, lw=0)
            ax.set_xscale("log")
            ax.set_xlabel("RM parameters")
            ax.set_ylabel(f"{coef} ({'best-of-n' if m == 'bon' else 'RL'})")
        axes[r, 1].legend(title="comparisons", loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    save(fig, out_pdf)
    plt.close(fig)
