"""Paper figures. One style for all: serif fonts, a sequential palette ordered by log RM size
(light to dark, so it survives greyscale print), labelled axes with units, PDF + 300-dpi PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .fit import predict
from .keys import main_policy, with_params

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
        fig.savefig(tmp, format="pdf", metadata={"CreationDate": None})  # same inputs, same bytes
    with atomic_file(Path(out_pdf).with_suffix(".png")) as tmp:
        fig.savefig(tmp, format="png", dpi=300)


def kl_axis(ax) -> None:
    """A KL axis on top of a d = sqrt(KL) axis."""
    from matplotlib.ticker import MaxNLocator

    top = ax.secondary_xaxis("top", functions=(lambda d: np.square(d), lambda kl: np.sqrt(np.clip(kl, 0, None))))
    top.xaxis.set_major_locator(MaxNLocator(5, integer=True))
    top.set_xlabel("KL (nats)")




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
    b = with_params(bon[(bon["data"] == data) & (bon["policy"] == pol)], bon_fits)
    r = with_params(rl[(rl["data"] == data) & (rl["policy"] == pol)], rl_fits)
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
    r = with_params(rl, rl_fits)
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
    """Figure 9: gold (solid) and proxy (dashed) against d for each KL penalty, a panel per RM
    size. The paper finds a penalty moves a run along the no-penalty frontier (early stopping);
    the proxy beside the gold shows whether a run above that frontier is ahead on the proxy too
    (a more KL-efficient optimiser) or only on the gold."""
    plt = style()
    import seaborn as sns

    r = with_params(rl, rl_fits)
    pens = sorted(r["kl_penalty"].unique())
    pal = dict(zip(pens, sns.color_palette("mako_r", n_colors=len(pens) + 1)[1:]))
    # a panel per RM size that the penalty sweep covers (rl.penalty_reward_models)
    swept = r.groupby("rm_params")["kl_penalty"].nunique()
    sizes = sorted(swept[swept > 1].index) or sorted(r["rm_params"].unique())
    fig, axes = plt.subplots(1, len(sizes), figsize=(2.3 * len(sizes) + 0.6, 2.3), squeeze=False, sharey=True)
    for ax, params in zip(axes[0], sizes):
        for pen in pens:
            g = r[(r["rm_params"] == params) & (r["kl_penalty"] == pen)]
            m = g.groupby("step", as_index=False)[["d", "gold", "proxy"]].mean()
            ax.plot(m["d"], m["gold"], "-o", ms=2, color=pal[pen], label=f"KL penalty {pen:g}")
            ax.plot(m["d"], m["proxy"], "--", lw=1, color=pal[pen])
        ax.set_title(f"RM {fmt_params(params)}")
        ax.set_xlabel("d = sqrt(KL) (nats$^{1/2}$)")
        ax.axhline(0, color="0.7", lw=0.6)
        kl_axis(ax)
    axes[0, 0].set_ylabel("score (std. units)")
    _legend(axes[0, -1], extra=(("-", "gold"), ("--", "proxy")))
    save(fig, out_pdf)
    plt.close(fig)


def fig_curves(curves: pd.DataFrame, fits: pd.DataFrame, form: str, out_pdf: str, title: str) -> None:
    """Figure 1: gold (solid), proxy (dashed), fit (dotted) against d; a panel per data size,
    a colour per RM size; curves and fits averaged over seeds (at equal n, or equal PPO step)."""
    plt = style()
    key = "n" if form == "bon" else "step"
    if "kl_penalty" in curves:
        curves, fits = curves[curves["kl_penalty"] == 0], fits[fits["kl_penalty"] == 0]
    curves = with_params(curves, fits)
    datas = sorted(curves["data"].unique())
    policies = sorted(curves["policy"].unique())
    colors = size_colors(curves["rm_params"].tolist())
    # constrained layout keeps each panel's title clear of the KL axis above it and of the row below
    fig, axes = plt.subplots(len(policies), len(datas), figsize=(2.6 * len(datas) + 0.9, 2.5 * len(policies)),
                             squeeze=False, sharey=True, constrained_layout=True)
    for r, pol in enumerate(policies):
        for c, data in enumerate(datas):
            ax = axes[r, c]
            sub = curves[(curves["data"] == data) & (curves["policy"] == pol)]
            if sub.empty:  # a cell outside the sub-grids: no empty frame in the figure
                ax.set_visible(False)
                continue
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
            if not any(a.get_visible() for a in axes[r, :c]):  # the row's first panel carries its y axis
                ax.set_ylabel(f"score (gold std. units)\npolicy {pol}")
                ax.tick_params(labelleft=True)
            ax.set_title(f"{title}, {data:,} comparisons")
            kl_axis(ax)
    from matplotlib.lines import Line2D

    # one legend for the figure: every RM size that appears in any panel, smallest first
    sizes = sorted(curves["rm_params"].unique())
    handles = [Line2D([], [], color=colors[p]) for p in sizes] + [Line2D([], [], color="k", ls=s) for s in ("-", "--", ":")]
    labels = [fmt_params(p) for p in sizes] + ["gold", "proxy", "fit"]
    fig.legend(handles, labels, title="RM params", loc="outside right upper", frameon=False)
    save(fig, out_pdf)
    plt.close(fig)


def fig_scaling(fits: dict, table: pd.DataFrame, out_pdf: str) -> None:
    """Figure 3: alpha and beta against RM parameters (log x), per method and data size, with the
    fitted line in log10(params) and its bootstrap band."""
    plt = style()
    import seaborn as sns

    methods = list(fits)
    from .scaling import boot_lines

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
                    boot = boot_lines(rows, coef, 300, rng)
                    ys = boot[:, :1] * np.log10(xs)[None, :] + boot[:, 1:]
                    lo, hi = np.percentile(ys, [2.5, 97.5], axis=0)
                    ax.fill_between(xs, lo, hi, color=pal[data], alpha=0.15, lw=0)
            ax.set_xscale("log")
            ax.set_xlabel("RM parameters")
            ax.set_ylabel(f"{coef} ({'best-of-n' if m == 'bon' else 'RL'})")
        axes[r, 1].legend(title="comparisons", loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    save(fig, out_pdf)
    plt.close(fig)


def _seed_mean(g: pd.DataFrame, key: str) -> pd.DataFrame:
    return g.groupby(key, as_index=False)[["d", "gold", "proxy"]].mean()


def fig_data_size(curves: pd.DataFrame, fits: pd.DataFrame, out_pdf: str) -> None:
    """Figure 4: best-of-n curves for each data size at a fixed RM size (a panel per RM size
    that has at least two data sizes): gold solid, proxy dashed, darker = more comparisons."""
    plt = style()
    import seaborn as sns

    pol = main_policy(curves)
    c = with_params(curves[curves["policy"] == pol], fits)
    sizes = [p for p, g in c.groupby("rm_params") if g["data"].nunique() > 1] or sorted(c["rm_params"].unique())[-1:]
    datas = sorted(c["data"].unique())
    pal = dict(zip(datas, sns.color_palette("crest", n_colors=len(datas))))
    fig, axes = plt.subplots(1, len(sizes), figsize=(2.4 * len(sizes) + 0.8, 2.4), squeeze=False, sharey=True)
    for ax, params in zip(axes[0], sizes):
        for data, g in c[c["rm_params"] == params].groupby("data"):
            m = _seed_mean(g, "n")
            ax.plot(m["d"], m["gold"], "-", color=pal[data], label=f"{data:,}")
            ax.plot(m["d"], m["proxy"], "--", color=pal[data], lw=1.0)
        ax.axhline(0, color="0.7", lw=0.6)
        ax.set_title(f"RM {fmt_params(params)}", pad=18)
        ax.set_xlabel("d = sqrt(KL) (nats$^{1/2}$)")
        kl_axis(ax)
    axes[0, 0].set_ylabel(f"score (gold std. units)\npolicy {pol}, best-of-n")
    _legend(axes[0, -1], (("-", "gold"), ("--", "proxy")))
    axes[0, -1].get_legend().set_title("comparisons")
    save(fig, out_pdf)
    plt.close(fig)


def gold_at_n(curves: pd.DataFrame, n: int) -> pd.DataFrame:
    """Gold of each best-of-n curve at `n`, interpolated in log n between grid points."""
    rows = []
    for key, g in curves.groupby(["policy", "rm", "data", "seed"]):
        g = g.sort_values("n")
        rows.append(dict(zip(["policy", "rm", "data", "seed"], key),
                         gold_at_n=float(np.interp(np.log(n), np.log(g["n"]), g["gold"]))))
    return pd.DataFrame(rows)


def fig_rm_loss(curves: pd.DataFrame, fits: pd.DataFrame, n: int, out5: str, out6: str) -> None:
    """Figure 5: gold at a fixed n against the proxy's validation loss (one point per proxy);
    Figure 6: validation loss against data size per RM size, and against RM size per data size."""
    plt = style()
    pol = main_policy(curves)
    f = fits[fits["policy"] == pol].merge(gold_at_n(curves[curves["policy"] == pol], n),
                                          on=["policy", "rm", "data", "seed"])
    colors = size_colors(f["rm_params"].tolist())
    markers = dict(zip(sorted(f["data"].unique()), "os^Dv<>"))
    fig, ax = plt.subplots(figsize=(3.6, 2.6))
    for (params, data), g in f.groupby(["rm_params", "data"]):
        ax.scatter(g["val_loss"], g["gold_at_n"], color=colors[params], marker=markers[data], s=14)
    from matplotlib.lines import Line2D

    h = [Line2D([], [], color=colors[p], marker="o", ls="", label=fmt_params(p)) for p in sorted(colors)]
    h += [Line2D([], [], color="k", marker=m, ls="", label=f"{d:,} comparisons") for d, m in markers.items()]
    ax.legend(handles=h, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    ax.set_xlabel("proxy RM validation loss (nats)")
    ax.set_ylabel(f"gold score at n = {n} (std. units)")
    ax.set_title(f"best-of-{n}, policy {pol}")
    save(fig, out5)
    plt.close(fig)

    m = f.groupby(["rm_params", "data"], as_index=False)["val_loss"].agg(["mean", "std"]).reset_index()
    fig, axes = plt.subplots(1, 2, figsize=(5.8, 2.4), constrained_layout=True)
    for params, g in m.groupby("rm_params"):
        axes[0].errorbar(g["data"], g["mean"], yerr=g["std"].fillna(0), fmt="-o", ms=3, color=colors[params],
                         label=fmt_params(params))
    import seaborn as sns

    datas = sorted(m["data"].unique())
    pal = dict(zip(datas, sns.color_palette("crest", n_colors=len(datas))))
    for data, g in m.groupby("data"):
        axes[1].errorbar(g["rm_params"], g["mean"], yerr=g["std"].fillna(0), fmt="-o", ms=3, color=pal[data],
                         label=f"{data:,}")
    axes[0].set_xlabel("comparisons")
    axes[1].set_xlabel("RM parameters")
    for ax, title in zip(axes, ("RM params", "comparisons")):
        ax.set_xscale("log")
        ax.set_ylabel("validation loss (nats)")
        ax.legend(title=title, frameon=False)
    save(fig, out6)
    plt.close(fig)


def fig_policy_size(curves: pd.DataFrame, fits: pd.DataFrame, out7: str, out24: str, method: str = "bon") -> bool:
    """Figure 7: gold (solid) and proxy (dashed) against d for each policy size, a panel per RM
    shared by the policies; Figure 24: the proxy - gold gap on the same axes. False (and no
    figure) when the grid has a single policy."""
    plt = style()
    import seaborn as sns

    key = "n" if method == "bon" else "step"
    if "kl_penalty" in curves:
        curves = curves[curves["kl_penalty"] == 0]
    pols = curves.groupby("policy")["policy_params"].first().sort_values() if "policy_params" in curves else None
    if curves["policy"].nunique() < 2:
        return False
    cells = curves.groupby(["rm", "data"])["policy"].nunique()
    shared = cells[cells > 1].index.tolist()
    if not shared:
        return False
    order = list(pols.index) if pols is not None else sorted(curves["policy"].unique())
    pal = dict(zip(order, sns.color_palette("mako_r", n_colors=len(order) + 1)[1:]))
    for out, gap in ((out7, False), (out24, True)):
        fig, axes = plt.subplots(1, len(shared), figsize=(2.4 * len(shared) + 0.8, 2.4), squeeze=False, sharey=True)
        for ax, (rm, data) in zip(axes[0], shared):
            for pol in order:
                g = curves[(curves["rm"] == rm) & (curves["data"] == data) & (curves["policy"] == pol)]
                if g.empty:
                    continue
                m = _seed_mean(g, key)
                lab = f"{pol} ({fmt_params(pols[pol])})" if pols is not None else pol
                if gap:
                    ax.plot(m["d"], m["proxy"] - m["gold"], "-", color=pal[pol], label=lab)
                else:
                    ax.plot(m["d"], m["gold"], "-", color=pal[pol], label=lab)
                    ax.plot(m["d"], m["proxy"], "--", color=pal[pol], lw=1.0)
            ax.axhline(0, color="0.7", lw=0.6)
            ax.set_title(f"RM {rm}, {data:,} comparisons", pad=18)
            ax.set_xlabel("d = sqrt(KL) (nats$^{1/2}$)")
            kl_axis(ax)
        axes[0, 0].set_ylabel("proxy - gold (std. units)" if gap else "score (gold std. units)")
        _legend(axes[0, -1], () if gap else (("-", "gold"), ("--", "proxy")))
        axes[0, -1].get_legend().set_title("policy")
        save(fig, out)
        plt.close(fig)
    return True


def fig_max_gold(fits: pd.DataFrame, out_pdf: str) -> None:
    """Figure 10: the highest seed-mean gold on each best-of-n curve, RM size x data size, for
    the main policy; cells outside the grid are left blank."""
    plt = style()
    import seaborn as sns

    pol = fits.groupby("policy")[["rm_params", "data"]].apply(lambda g: len(g.drop_duplicates())).idxmax()
    f = fits[fits["policy"] == pol]
    table = f.groupby(["rm_params", "data"])["gold_max"].mean().unstack("data").sort_index(ascending=False)
    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * table.shape[1], 0.6 + 0.45 * table.shape[0]))
    sns.heatmap(table, annot=True, fmt=".2f", cmap="Greys", cbar_kws={"label": "max gold (std. units)"}, ax=ax,
                yticklabels=[fmt_params(p) for p in table.index], xticklabels=[f"{d:,}" for d in table.columns],
                linewidths=0.5, linecolor="white", annot_kws={"size": 7})
    ax.set_xlabel("comparisons")
    ax.set_ylabel("RM parameters")
    ax.set_title(f"best-of-n maximum gold, policy {pol}")
    save(fig, out_pdf)
    plt.close(fig)


def fig_extrapolation(curves: dict, max_d: dict, table: pd.DataFrame, out_pdf: str) -> None:
    """Figure 26: each method's seed-mean curves, the fit made on d <= the cut-off (solid
    segment) and its extrapolation beyond (dotted), at the largest data size of the main policy."""
    plt = style()
    fig, axes = plt.subplots(1, len(curves), figsize=(2.9 * len(curves) + 0.8, 2.5), squeeze=False)
    for ax, (method, c) in zip(axes[0], curves.items()):
        t = table[table["method"] == method]
        colors = size_colors(t["rm_params"].tolist())
        key = "n" if method == "bon" else "step"
        for _, row in t.iterrows():
            g = c[(c["policy"] == row["policy"]) & (c["rm"] == row["rm"]) & (c["data"] == row["data"])]
            m = _seed_mean(g, key)
            col = colors[row["rm_params"]]
            ax.plot(m["d"], m["gold"], "o", ms=2, color=col, label=fmt_params(row["rm_params"]))
            if np.isfinite(row["alpha"]):
                dl = np.linspace(1e-3, max_d[method], 50)
                dr = np.linspace(max_d[method], m["d"].max(), 50)
                ax.plot(dl, predict(method, dl, row["alpha"], row["beta"]), "-", color=col, lw=1.0)
                ax.plot(dr, predict(method, dr, row["alpha"], row["beta"]), ":", color=col, lw=1.2)
        ax.axvline(max_d[method], color="0.5", lw=0.6, ls="--")
        ax.axhline(0, color="0.7", lw=0.6)
        ax.set_xlabel("d = sqrt(KL) (nats$^{1/2}$)")
        ax.set_title(f"{'best-of-n' if method == 'bon' else 'RL'}: fit on d <= {max_d[method]:g}", pad=18)
        kl_axis(ax)
    axes[0, 0].set_ylabel("gold score (std. units)")
    _legend(axes[0, -1], (("-", "fit"), (":", "extrapolated")))
    save(fig, out_pdf)
    plt.close(fig)


def fig_forecast(forecast: pd.DataFrame, curves: dict, fits: dict, out_pdf: str) -> None:
    """The forecast: the largest RM's measured curve (points) against the curve predicted from
    the coefficient lines of the smaller RMs (line), per method, at each data size."""
    plt = style()
    import seaborn as sns

    if forecast.empty:
        fig, ax = plt.subplots(figsize=(3, 1))
        ax.axis("off")
        ax.text(0.5, 0.5, "no forecast: fewer than 3 RM sizes", ha="center")
        save(fig, out_pdf)
        plt.close(fig)
        return
    methods = list(forecast["method"].unique())
    fig, axes = plt.subplots(1, len(methods), figsize=(2.9 * len(methods) + 0.8, 2.5), squeeze=False)
    for ax, method in zip(axes[0], methods):
        fc = forecast[forecast["method"] == method]
        pal = dict(zip(sorted(fc["data"].unique()), sns.color_palette("crest", n_colors=fc["data"].nunique())))
        key = "n" if method == "bon" else "step"
        c = with_params(curves[method], fits[method])
        if "kl_penalty" in c:
            c = c[c["kl_penalty"] == 0]
        for _, row in fc.iterrows():
            g = c[(c["policy"] == row["policy"]) & (c["data"] == row["data"]) & (c["rm_params"] == row["rm_params"])]
            m = _seed_mean(g, key)
            col = pal[row["data"]]
            ax.plot(m["d"], m["gold"], "o", ms=2, color=col, label=f"{row['data']:,}")
            dd = np.linspace(1e-3, max(m["d"].max(), min(row["d_peak_pred"], 2 * m["d"].max())), 100)
            ax.plot(dd, predict(method, dd, row["alpha_pred"], row["beta_pred"]), "-", color=col, lw=1.0)
            if np.isfinite(row["d_peak_pred"]):
                ax.plot([row["d_peak_pred"]], [row["gold_peak_pred"]], "*", color=col, ms=6)
        ax.axhline(0, color="0.7", lw=0.6)
        ax.set_xlabel("d = sqrt(KL) (nats$^{1/2}$)")
        ax.set_title(f"{'best-of-n' if method == 'bon' else 'RL'}: RM {fmt_params(fc['rm_params'].iloc[0])} "
                     "predicted", pad=18)
        kl_axis(ax)
    axes[0, 0].set_ylabel("gold score (std. units)")
    _legend(axes[0, -1], (("-", "predicted"),))
    axes[0, -1].get_legend().set_title("comparisons")
    save(fig, out_pdf)
    plt.close(fig)
