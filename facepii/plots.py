"""Pictures of a report: the trade-off plot and the reconstruction grid (matplotlib, Agg).

These functions draw and return figures; :mod:`facepii.outputs` writes them.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np


def _private_config_dir() -> None:
    """matplotlib keeps a font list under ~/.cache/matplotlib (or $MPLCONFIGDIR): facepii writes only where told,
    so unless the user set MPLCONFIGDIR, matplotlib gets a private temporary folder removed at exit (it then
    lists the fonts afresh once per run, about a second)."""
    import sys

    if "matplotlib" in sys.modules or os.environ.get("MPLCONFIGDIR"):
        return
    tmp = tempfile.TemporaryDirectory(prefix="facepii-mpl-")
    _KEEP.append(tmp)  # removed when the process ends (TemporaryDirectory's finalizer)
    os.environ["MPLCONFIGDIR"] = tmp.name


_KEEP: list = []


def _plt():
    _private_config_dir()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def close(fig) -> None:
    _plt().close(fig)


def tradeoff_figure(report):
    """TAR@1e-3 against leakage ratio, one point per row with 95% intervals, the Pareto front,
    and the random baseline (leakage 1) and the random-face floor."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    pts, labels = [], []
    for r in report.rows:
        u = r.utility.tar_1e3
        p = r.privacy.headline.leakage_ratio if r.privacy is not None and r.privacy.headline else None
        if u is None or p is None or u.value != u.value or p.value != p.value:
            continue
        x, y = p.value, u.value
        xe = [[x - p.ci95[0]], [p.ci95[1] - x]] if p.ci95[0] == p.ci95[0] else None
        ye = [[y - u.ci95[0]], [u.ci95[1] - y]] if u.ci95[0] == u.ci95[0] else None
        color = "tab:red" if r.defense == "none" else ("tab:green" if r.pareto else "tab:blue")
        ax.errorbar(x, y, xerr=xe, yerr=ye, fmt="o", color=color, capsize=3, alpha=0.85)
        pts.append((x, y, r.pareto))
        labels.append((r.label, x, y))
    front = sorted((x, y) for x, y, p in pts if p)
    if len(front) > 1:
        ax.plot([f[0] for f in front], [f[1] for f in front], "--", color="tab:green", lw=1, label="Pareto front")
    ax.axvline(1.0, color="grey", lw=1, ls=":", label="random guess (leakage 1)")
    rf = ((report.extra.get("privacy_baselines") or {}).get("random_face") or {}).get("judge")
    if rf and (rf.get("leakage_ratio") or {}).get("value") is not None:
        ax.axvline(rf["leakage_ratio"]["value"], color="tab:orange", lw=1, ls=":",
                   label="random face through the judge")
    ax.set_xlabel(f"leakage: rank-1 re-identification by {report.judge} / random (x)")
    ax.set_ylabel("utility: TAR @ FAR 1e-3")
    ax.set_title("privacy-utility trade-off (red: unprotected; green: Pareto-optimal)")
    ax.set_xlim(left=0)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    place_labels(fig, ax, labels)
    return fig


#: where a point's label may go, in points from the point (tried in this order)
_OFFSETS = [(6, 4, "left"), (6, -11, "left"), (-6, 4, "right"), (-6, -11, "right"), (6, 15, "left"),
            (6, -22, "left"), (-6, 15, "right"), (-6, -22, "right"), (6, 26, "left"), (6, -33, "left")]


def place_labels(fig, ax, labels: list[tuple[str, float, float]], fontsize: int = 8) -> list:
    """Annotate each point with its label where it overlaps no label already placed and no other point
    (the first free place of a few around the point; the least crowded one when none is free)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    marks = [ax.transData.transform((x, y)) for _, x, y in labels]
    placed, texts = [], []
    for i, (text, x, y) in enumerate(labels):
        best, best_cost = None, None
        for dx, dy, ha in _OFFSETS:
            t = ax.annotate(text, (x, y), textcoords="offset points", xytext=(dx, dy), fontsize=fontsize, ha=ha)
            bb = t.get_window_extent(renderer).expanded(1.05, 1.15)
            cost = sum(bb.overlaps(b) for b in placed) + sum(
                bb.contains(*m) for j, m in enumerate(marks) if j != i)
            if best_cost is None or cost < best_cost:
                if best is not None:
                    best[0].remove()
                best, best_cost = (t, bb), cost
            else:
                t.remove()
            if cost == 0:
                break
        placed.append(best[1])
        texts.append(best[0])
    return texts


def det_figure(report):
    """DET curves (FNMR against FMR, normal-deviate axes) of every row's protected-vs-protected
    verification, the unprotected row in red, the operating points at FMR 1e-2/1e-3/1e-4 marked."""
    from scipy.stats import norm

    rows = [r for r in report.rows if r.det and r.det.get("fmr")]
    if not rows:
        return None
    plt = _plt()
    lo, hi = 1e-6, 0.99
    ticks = [1e-5, 1e-4, 1e-3, 1e-2, 0.05, 0.2, 0.5, 0.8, 0.95]

    def dev(v):
        return norm.ppf(np.clip(np.asarray(v, float), lo, hi))

    fig, ax = plt.subplots(figsize=(7, 6), dpi=120)
    markers = {"tar@far=1e-2": "s", "tar@far=1e-3": "o", "tar@far=1e-4": "^"}
    for n, r in enumerate(rows):
        fmr, fnmr = np.asarray(r.det["fmr"], float), np.asarray(r.det["fnmr"], float)
        keep = (fmr > 0) & (fnmr > 0)  # a rate of 0 sits at minus infinity on a normal-deviate axis
        color = "tab:red" if r.defense == "none" else f"C{(n % 9) + (1 if n % 9 >= 3 else 0)}"
        ax.plot(dev(fmr[keep]), dev(fnmr[keep]), lw=1.4, color=color, label=r.label)
        for k, op in (r.det.get("operating_points") or {}).items():
            if op.get("supported", True) and op["fmr_reached"] > 0 and op["fnmr"] > 0:
                ax.plot(dev(op["fmr_reached"]), dev(op["fnmr"]), markers.get(k, "o"), color=color, ms=5,
                        mfc="white")
    for k, m in markers.items():
        ax.plot([], [], m, color="black", mfc="white", ms=5, label=f"FMR {k.replace('tar@far=', '')}")
    t = dev(ticks)
    ax.set_xticks(t, [f"{v:g}" for v in ticks])
    ax.set_yticks(t, [f"{v:g}" for v in ticks])
    ax.set_xlim(t[0], dev(0.6))
    ax.set_ylim(dev(1e-3), dev(0.97))
    ax.set_xlabel("false match rate (FMR), normal-deviate scale")
    ax.set_ylabel("false non-match rate (FNMR), normal-deviate scale")
    ax.set_title("DET: verification of protected templates (red: unprotected)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return fig


def reconstruction_figure(sources: np.ndarray, gallery: np.ndarray, recon: dict[str, np.ndarray], n: int = 6,
                          labels: list[str] | None = None):
    """One line per victim: source photo | another gallery photo | reconstruction for each row."""
    plt = _plt()
    cols = ["source (stolen template)", "gallery photo"] + list(recon)
    n = min(n, len(sources))
    fig, axes = plt.subplots(n, len(cols), figsize=(1.6 * len(cols), 1.75 * n + 0.4), dpi=110, squeeze=False)
    for i in range(n):
        imgs = [sources[i], gallery[i]] + [recon[k][i] for k in recon]
        for j, img in enumerate(imgs):
            ax = axes[i][j]
            ax.imshow(img)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(cols[j], fontsize=7)
        if labels is not None:
            axes[i][0].set_ylabel(str(labels[i]), fontsize=7)
    fig.suptitle("victims: source | gallery | reconstruction per defense (worst attack)", fontsize=9)
    fig.tight_layout()
    return fig


def linkability_figure(report):
    """Per row: mated and non-mated score distributions (old vs re-issued templates) and D<->(s)."""
    plt = _plt()
    rows = [r for r in report.rows if r.unlinkability is not None and r.unlinkability.histogram]
    if not rows:
        return None
    cols = min(3, len(rows))
    nrow = (len(rows) + cols - 1) // cols
    fig, axes = plt.subplots(nrow, cols, figsize=(4.2 * cols, 3.1 * nrow), dpi=110, squeeze=False)
    for ax in axes.ravel()[len(rows):]:
        ax.axis("off")
    for ax, r in zip(axes.ravel(), rows):
        u = r.unlinkability
        h = u.histogram
        x = np.asarray(h["score"])
        width = (x[1] - x[0]) if len(x) > 1 else 1.0
        ax.bar(x, h["nonmated"], width=width, alpha=0.5, color="tab:blue", label="non-mated")
        ax.bar(x, h["mated"], width=width, alpha=0.5, color="tab:red", label="mated")
        ax2 = ax.twinx()
        seen = (np.asarray(h["mated"]) > 0) | (np.asarray(h["nonmated"]) > 0)  # no line through empty bins
        ax2.plot(x, np.where(seen, h["d_local"], np.nan), color="black", lw=1, label="D<->(s)")
        ax2.set_ylim(0, 1.05)
        ax.set_title(f"{r.label}: D_sys {u.dsys.value:.2f}", fontsize=8)
        ax.set_xlabel("score (old vs re-issued template)", fontsize=7)
        ax.tick_params(labelsize=6)
        ax2.tick_params(labelsize=6)
    axes.ravel()[0].legend(fontsize=6, loc="upper left")
    fig.suptitle("unlinkability: score distributions and local D<->(s) (ISO/IEC 30136)", fontsize=9)
    fig.tight_layout()
    return fig


def irreversibility_figure(report):
    """SAR against FMR (log axis) per row: type I (target system) and type II (independent judge)."""
    plt = _plt()
    rows = [r for r in report.rows if r.irreversibility is not None]
    if not rows:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), dpi=110, sharey=True)
    for ax, kind, title in ((axes[0], "type1", "type I: target system"),
                            (axes[1], "type2", "type II: independent judge")):
        for r in rows:
            c = getattr(r.irreversibility, kind).curve
            if c:
                ax.plot(c["fmr"], c["sar"], marker="o", ms=3, lw=1.2, label=r.label)
        ax.plot([1e-4, 1e-1], [1e-4, 1e-1], color="grey", lw=0.8, ls="--", label="SAR = FMR (chance)")
        ax.set_xscale("log")
        ax.set_xlabel("FMR (threshold calibrated on real impostor pairs)", fontsize=7)
        ax.set_title(title, fontsize=8)
        ax.tick_params(labelsize=6)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("SAR of the reconstructions", fontsize=7)
    axes[1].legend(fontsize=6, loc="upper left")
    fig.suptitle("irreversibility: success attack rate against FMR (ISO/IEC 30136)", fontsize=9)
    fig.tight_layout()
    return fig


def templates_figure(report):
    """Rank-1 and SAR of the headline judge (worst attack) against K stolen templates per victim, one line
    per row, with 95% intervals; the random guess as a dotted line."""
    ks = report.templates_ks
    rows = [r for r in report.rows if r.privacy_templates]
    if not rows or len(ks) < 2:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), dpi=110, sharex=True)
    for ax, what in ((axes[0], "rank1"), (axes[1], "sar")):
        for n, r in enumerate(rows):
            xs, ys, lo, hi = [], [], [], []
            for k in ks:
                b = report.privacy_at(r, k)
                e = None if b is None or b.headline is None else getattr(b.headline, what)
                if e is None or e.value != e.value:
                    continue
                xs.append(k * (1 + 0.03 * (n - len(rows) / 2)))  # rows side by side, not on top of each other
                ys.append(e.value)
                lo.append(e.value - e.ci95[0] if e.ci95[0] == e.ci95[0] else 0.0)
                hi.append(e.ci95[1] - e.value if e.ci95[1] == e.ci95[1] else 0.0)
            if xs:
                color = "tab:red" if r.defense == "none" else f"C{(n % 9) + (1 if n % 9 >= 3 else 0)}"
                ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", ms=4, lw=1.2, capsize=3, label=r.label, color=color)
        ax.set_xscale("log", base=2)
        ax.set_xticks(ks)
        ax.set_xticklabels([str(k) for k in ks])
        ax.set_xlabel("stolen templates per victim (K)", fontsize=8)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    base = (report.extra.get("privacy_baselines") or {}).get("random_guess_rank1")
    if isinstance(base, float):
        axes[0].axhline(base, color="grey", lw=1, ls=":", label="random guess")
    axes[0].set_ylabel(f"rank-1 by {report.judge}", fontsize=8)
    axes[1].set_ylabel(f"SAR at {report.judge}'s FMR 1e-3", fontsize=8)
    axes[0].legend(fontsize=6, loc="best")
    fig.suptitle("leakage against the number of stolen templates per victim (worst attack, 95% intervals)",
                 fontsize=9)
    fig.tight_layout()
    return fig


def transfer_figure(transfer):
    """Heat-map of the transfer matrix: rank-1 per target (row) and judge (column), values written in."""
    plt = _plt()
    targets, judges = list(transfer.matrix), transfer.judges
    M = np.full((len(targets), len(judges)), np.nan)
    for i, t in enumerate(targets):
        for j, name in enumerate(judges):
            c = transfer.matrix[t].get(name)
            if c is not None:
                M[i, j] = c["rank1"]["value"]
    fig, ax = plt.subplots(figsize=(2.6 + 1.5 * len(judges), 1.8 + 0.9 * len(targets)), dpi=120)
    im = ax.imshow(np.ma.masked_invalid(M), vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(judges)), judges, rotation=20, ha="right")
    ax.set_yticks(range(len(targets)), targets)
    ax.set_xlabel("judge")
    ax.set_ylabel("target (reconstructed from)")
    for i in range(len(targets)):
        for j in range(len(judges)):
            if np.isfinite(M[i, j]):
                c = transfer.matrix[targets[i]][judges[j]]
                lo, hi = c["rank1"]["ci95"]
                text = f"{M[i, j]:.2f}\n[{lo:.2f}, {hi:.2f}]" + ("\nupper bound" if c.get("upper_bound") else "")
                ax.text(j, i, text, ha="center", va="center", fontsize=8, color="white" if M[i, j] < 0.6 else "black")
    fig.colorbar(im, ax=ax, label="rank-1, unprotected")
    ax.set_title("Does leakage transfer?\nrank-1 by target and judge", fontsize=10)
    fig.tight_layout()
    return fig
