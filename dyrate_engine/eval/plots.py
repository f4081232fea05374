"""PNG plots of the quality harness (matplotlib, Agg backend): quality vs FLOPs reduction for every
policy family (the Pareto picture), and dense decoding's attention share per token type vs decode
step (DyRate's Fig. 2 on the evaluated model), and the visual tokens kept per step."""
from __future__ import annotations

from pathlib import Path

from .harness import TOKEN_TYPES, PolicyResult

_STYLES = {"dense": dict(marker="*", markersize=14, color="black"),
           "fastv": dict(marker="s", linestyle="--", color="tab:orange"),
           "schedule": dict(marker="o", linestyle="-", color="tab:blue"),
           "dyrate": dict(marker="D", linestyle="-", color="tab:red"),
           "random": dict(marker="x", linestyle=":", color="tab:grey"),
           "pool": dict(marker="v", linestyle="-.", color="tab:green")}


def pyplot():
    """matplotlib's pyplot on the Agg backend, or None (with a message) when it is missing."""
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed: skipping the plots (pip install 'dyrate_engine[eval]')")
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def pareto_plot(rows: list[PolicyResult], path, metric: str = "cider",
                saving: str = "flops_reduction") -> Path | None:
    """Quality (``metric``: an attribute of :class:`PolicyResult`) vs a saving (``saving``: the
    FLOPs reduction, or ``"kv_read_reduction"``): one line per family through its points in
    order of the saving, dense as a reference point and a dotted horizontal line. Returns the
    written path, or None without matplotlib."""
    plt = pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    families: dict[str, list[PolicyResult]] = {}
    for r in rows:
        families.setdefault(r.family, []).append(r)
    for family, members in families.items():
        members = sorted(members, key=lambda r: getattr(r, saving))
        x = [100 * getattr(r, saving) for r in members]
        y = [getattr(r, metric) for r in members]
        style = dict(_STYLES.get(family, dict(marker="^", linestyle=":")))
        if family == "dense":
            ax.axhline(y[0], color="grey", linestyle=":", linewidth=1)
            style["linestyle"] = "none"
        ax.plot(x, y, label=family, **style)
        for r, xi, yi in zip(members, x, y):
            if family != "dense":  # the parameters, e.g. "K=3,0.5" of "schedule(K=3,0.5)"
                tag = r.label[r.label.find("(") + 1:].rstrip(")") if "(" in r.label else r.label
                ax.annotate(tag, (xi, yi), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel({"flops_reduction": "FLOPs reduction vs dense (%)",
                   "kv_read_reduction": "KV read by the decode steps, reduction vs dense (%)"}
                  .get(saving, saving))
    ax.set_ylabel({"cider": "CIDEr", "bleu4": "BLEU-4", "exact_match": "exact match"}.get(
        metric, metric))
    ax.set_title("Quality vs compute, per policy family")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, plt, path)


def attention_plot(shares: dict, path, min_requests: float = 0.25) -> Path | None:
    """Mean attention share of each token type vs decode step from :func:`attention_shares`,
    over the steps that at least ``min_requests`` of the requests reached (the tail is an average
    of few answers). Returns the written path, or None without matplotlib."""
    plt = pyplot()
    if plt is None:
        return None
    counts = shares["requests"]
    last = max((i for i, n in enumerate(counts) if n >= min_requests * counts[0]), default=-1)
    steps = shares["steps"][:last + 1]
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for name in TOKEN_TYPES:
        ax.plot(steps, shares["shares"][name][:last + 1], label=name, marker=".")
    ax.set_xlabel("decode step (0 = last prompt token)")
    ax.set_ylabel("attention share (head mean)")
    ax.set_ylim(0, 1)
    ax.set_title(f"Dense decoding: attention of the newest token, layer {shares['monitor_layer']}")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, plt, path)


def kept_plot(rows: list[PolicyResult], path, min_steps: int = 2) -> Path | None:
    """Mean visual tokens kept vs decode step for the policies whose count can change while
    decoding (schedules, ramps, DyRate) and dense; one line each, over the steps of the longest
    answer. Returns the written path, or None without matplotlib (or with nothing to draw)."""
    shown = [r for r in rows if r.family in ("dense", "schedule", "dyrate")
             and len(r.kept_visual_by_step) >= min_steps]
    plt = pyplot() if shown else None
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    for r in shown:
        style = _STYLES[r.family]
        ax.plot(r.kept_visual_by_step, label=r.label, color=style["color"],
                linestyle=style.get("linestyle", "-"), linewidth=1)
    ax.set_xlabel("decode step (0 = the prefill)")
    ax.set_ylabel("visual tokens kept (mean over the answers)")
    ax.set_title("Visual tokens kept while answering")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=5)
    return _save(fig, plt, path)


def _save(fig, plt, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
