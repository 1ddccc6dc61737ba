"""Pictures of a report: the trade-off plot and the reconstruction grid (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def tradeoff_plot(report, path: str | Path) -> Path:
    """TAR@1e-3 against leakage ratio, one point per row with 95% intervals, the Pareto front,
    and the random baseline (leakage 1) and the random-face floor."""
    from facepii.pipeline import row_label

    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    pts = []
    for r in report.rows:
        u = (r.get("utility") or {}).get("tar@far=1e-3") or {}
        p = (r.get("privacy") or {}).get("leakage_ratio") or {}
        if u.get("value") is None or p.get("value") is None:
            continue
        x, y = p["value"], u["value"]
        xe = [[x - p["ci95"][0]], [p["ci95"][1] - x]]
        ye = [[y - u["ci95"][0]], [u["ci95"][1] - y]]
        color = "tab:red" if r["defense"] == "none" else ("tab:green" if r.get("pareto") else "tab:blue")
        ax.errorbar(x, y, xerr=xe, yerr=ye, fmt="o", color=color, capsize=3, alpha=0.85)
        ax.annotate(row_label(r), (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
        pts.append((x, y, r.get("pareto")))
    front = sorted((x, y) for x, y, p in pts if p)
    if len(front) > 1:
        ax.plot([f[0] for f in front], [f[1] for f in front], "--", color="tab:green", lw=1, label="Pareto front")
    ax.axvline(1.0, color="grey", lw=1, ls=":", label="random guess (leakage 1)")
    rf = ((report.extra.get("privacy_baselines") or {}).get("random_face") or {}).get("judge")
    if rf:
        ax.axvline(rf["leakage_ratio"]["value"], color="tab:orange", lw=1, ls=":",
                   label="random face through the judge")
    judge = next((r["privacy"].get("judge", "judge") for r in report.rows if r.get("privacy")), "judge")
    ax.set_xlabel(f"leakage: rank-1 re-identification by {judge} / random (x)")
    ax.set_ylabel("utility: TAR @ FAR 1e-3")
    ax.set_title("privacy-utility trade-off (red: unprotected; green: Pareto-optimal)")
    ax.set_xlim(left=0)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def reconstruction_grid(sources: np.ndarray, gallery: np.ndarray, recon: dict[str, np.ndarray],
                        path: str | Path, n: int = 6, labels: list[str] | None = None) -> Path:
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
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_outputs(evaluation, out_dir: str | Path, verdicts: list[dict] | None = None) -> list[Path]:
    """report.json, report.md, report.html and, with privacy, tradeoff.png and reconstructions.png."""
    from facepii.html import write_html

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rep = evaluation.report
    if verdicts is not None:
        rep.extra["gate"] = verdicts
    paths = [out / "report.json", out / "report.md"]
    rep.to_json(paths[0])
    paths[1].write_text(rep.markdown())
    images: dict[str, Path | None] = {}
    if rep.has_privacy:
        images["tradeoff"] = tradeoff_plot(rep, out / "tradeoff.png")
        paths.append(images["tradeoff"])
        if evaluation.reconstructions:
            from facepii.lineup import save_material

            images["reconstructions"] = reconstruction_grid(
                evaluation.sources, evaluation.gallery, evaluation.reconstructions, out / "reconstructions.png")
            paths.append(images["reconstructions"])
            material = save_material(evaluation, out)
            if material is not None:
                paths.append(material)
        elif (out / "reconstructions.png").is_file():
            images["reconstructions"] = out / "reconstructions.png"
    paths.append(write_html(rep, out / "report.html", images, verdicts))
    return paths
