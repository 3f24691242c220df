"""The temporal error map and the error-against-step plot of report.html, drawn with matplotlib
(Agg) from the report dict alone. (The per-parameter heatmaps are inline SVG, see :mod:`.svg`.)

matplotlib is the optional extra ``plots`` (``pip install "bptt-check[plots]"``). Without it
:func:`available` is False and the HTML says what is missing instead of breaking.
"""

from __future__ import annotations

import io
from typing import Any

from .text import ranges

MISSING = ("the temporal error maps and error-against-step plots need matplotlib, which is not installed: "
           'pip install "bptt-check[plots]" (or pip install matplotlib), then re-render with: '
           "bptt-check show REPORT.json --format html")


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


SCALE = 2            # pixels per CSS pixel: the page shows each PNG at half its size, sharp on any screen
DPI = 80             # the figure sizes below are in inches at this many CSS pixels per inch


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI * SCALE)
    _plt().close(fig)
    return buf.getvalue()


def _integer_axis(axis: Any, values: Any) -> None:
    """Integer ticks on an axis of steps or lengths, with room around a single value (T = 1 would
    otherwise get -0.045 … 0.045)."""
    from matplotlib.ticker import FixedLocator, MaxNLocator

    values = sorted({int(v) for v in values})
    lo, hi = (values[0], values[-1]) if values else (0, 0)
    if len(values) <= 10:       # few: a tick at each (MaxNLocator falls back to fractions on a short range)
        axis.set_major_locator(FixedLocator(values or [0]))
    else:
        axis.set_major_locator(MaxNLocator(integer=True))
    if hi - lo < 2:
        getattr(axis.axes, f"set_{axis.axis_name}lim")(lo - 0.5, hi + 0.5)


def _anchored(name: str, floor: float) -> Any:
    """A colour map for log10 errors anchored at the tolerance: cells below ``vmin`` (within tolerance)
    in one quiet colour, beyond it graded from a clearly visible red upwards (never near white)."""
    import numpy as np
    from matplotlib.colors import ListedColormap

    base = _plt().get_cmap(name)
    return ListedColormap(base(np.linspace(floor, 1.0, 256))).with_extremes(under="#dce6f2", bad="#f4f4f4")


def _outline(ax: Any, mask: Any) -> None:
    """Draw the border of the cells covered by the truncation windows (one LineCollection)."""
    from matplotlib.collections import LineCollection

    T = len(mask)
    segs = []
    for t in range(T):
        for s in range(T):
            if not mask[t][s]:
                continue
            for dt, ds, seg in ((-1, 0, ([s - .5, s + .5], [t - .5, t - .5])),
                                (1, 0, ([s - .5, s + .5], [t + .5, t + .5])),
                                (0, -1, ([s - .5, s - .5], [t - .5, t + .5])),
                                (0, 1, ([s + .5, s + .5], [t - .5, t + .5]))):
                tt, ss = t + dt, s + ds
                if not (0 <= tt < T and 0 <= ss < T and mask[tt][ss]):
                    segs.append(list(zip(*seg)))
    ax.add_collection(LineCollection(segs, colors="k", linewidths=1.4))


def _mark_padding(ax: Any, lengths: Any, T: int) -> None:
    """Shade the steps that are padding for some sequence of a padded batch (from the shortest length on)."""
    if not lengths or min(lengths) >= T:
        return
    first = min(lengths)
    ax.axvspan(first - 0.5, T - 0.5, color="#8a8a8a", alpha=0.18, lw=0, hatch="//")
    ax.text(0.01, 0.98, f"shaded: padding (lengths {', '.join(map(str, lengths))})", transform=ax.transAxes,
            ha="left", va="top", fontsize=6)


def temporal_png(tm: dict[str, Any], evidence: dict[str, Any], rtol: float | None = None) -> bytes:
    """The (loss step t, step s) map of the recurrent matrix's error, windows outlined, its colours
    anchored at the tolerance ``rtol``, next to dU's error by sequence length (prefix runs)."""
    import numpy as np

    plt = _plt()
    T = int(tm["T"])
    mask = tm["mask"]
    errors = True
    if tm.get("inferred") is not None:
        grid, label = tm["inferred"], "dU error per cell (inferred)\n" + _short(tm["attribution"]["message"])
    elif tm.get("observed_x") is not None and np.max(tm["observed_x"]) > 0:
        grid, label = tm["observed_x"], "dx error per cell\n(observed by growing the sequence)"
    else:
        grid = tm.get("contribution") or np.zeros((T, T))
        label = "reference dU contributions\n(the error could not be placed in time)"
        errors = False
    g = np.asarray(grid, dtype=float)
    with np.errstate(divide="ignore"):
        lg = np.where(g > 0, np.log10(np.maximum(g, 1e-17)), np.nan)
    lg[np.triu(np.ones((T, T), dtype=bool), 1)] = np.nan        # s > t: no gradient flows forward
    rows = tm.get("rows")
    height = min(3.0 + 0.1 * T, 7.0)
    side = 1.25 * height                        # the square grid and its colour bar
    fig, axes = plt.subplots(1, 2 if rows else 1, figsize=(side + (3.0 if rows else 0), height),
                             gridspec_kw={"width_ratios": [side, 2.6], "wspace": 0.5} if rows else None)
    ax = axes[0] if rows else axes
    finite = lg[np.isfinite(lg)]
    vmax = float(finite.max()) if finite.size else 0.0
    if errors:     # anchored at the tolerance: within it one colour, beyond it graded from a visible red
        vmin = float(np.log10(rtol or 1e-7))
        cmap, extend = _anchored("Reds", 0.3), "min"
    else:          # the reference's own contributions (not errors): their spread in grey
        vmin = max(float(finite.min()) if finite.size else -3.0, vmax - 6)
        cmap, extend = _plt().get_cmap("Greys"), "neither"
    im = ax.imshow(lg, cmap=cmap, vmin=vmin, vmax=max(vmax, vmin + 1), interpolation="nearest")
    ax.set_facecolor("#f4f4f4")
    _outline(ax, mask)
    _mark_padding(ax, tm.get("sequence_lengths"), T)
    cb = fig.colorbar(im, ax=ax, fraction=0.05, pad=0.03, extend=extend)
    cb.set_label("log10 rel. to ‖reference‖" + (f" (below {vmin:.0f}: within rtol)" if errors else ""), fontsize=7)
    cb.ax.tick_params(labelsize=6)
    ax.set_xlabel("step s the gradient reaches (outlined: the windows)", fontsize=7)
    ax.set_ylabel("loss step t", fontsize=7)
    ax.set_title(label, fontsize=7)
    step = max(1, T // 12)
    ax.set_xticks(range(0, T, step))
    ax.set_yticks(range(0, T, step))
    ax.tick_params(labelsize=6)
    fig.subplots_adjust(left=0.07, right=0.97, bottom=0.13, top=0.84)
    if rows:
        ax2 = axes[1]
        lengths = rows["lengths"]
        vals = [r if r is not None else 1e-17 for r in rows["tol_ratio_U"]]
        colors = ["#b00000" if v > 1 else "#4a7ab0" for v in vals]
        ax2.bar(lengths, [max(v, 1e-17) for v in vals], color=colors)
        ax2.set_yscale("log")
        ax2.axhline(1.0, color="k", lw=1)
        sfl = evidence.get("shortest_failing_length")
        title = "dU error / tolerance by length"
        if sfl is not None:
            title += f"\n(some gradient fails from length {sfl} on)"
        ax2.set_title(title, fontsize=7)
        ax2.set_xlabel("sequence length (prefix)", fontsize=7)
        ax2.tick_params(labelsize=6)
        _integer_axis(ax2.xaxis, lengths)
    return _png(fig)


def _short(text: str, n: int = 48) -> str:
    text = text.split(" (explains")[0].split(": ", 1)[-1]     # "the step-0 term is missing"
    return text if len(text) <= n else text[: n - 1] + "…"


def steps_png(case: dict[str, Any]) -> bytes | None:
    """Error against time step: dL/dx per step when it was returned, and each gradient's error on
    every prefix of the sequence (x axis: its length) when the prefixes were run."""
    ev = case.get("evidence") or {}
    steps = ev.get("steps")
    prefix = ev.get("prefix")
    panels = [p for p in (("steps", steps), ("prefix", prefix)) if p[1]]
    if not panels:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.3 * len(panels), 2.7), squeeze=False)
    for ax, (kind, data) in zip(axes[0], panels):
        if kind == "steps":
            vals = [max(v, 1e-17) for v in data["tol_ratio"]]
            ax.semilogy(range(len(vals)), vals, "-o", color="#4a7ab0", ms=3, label="per step")
            bad = data["bad_steps"]
            if bad:
                ax.semilogy(bad, [vals[t] for t in bad], "o", color="#b00000", ms=5, label="beyond tolerance")
            ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, frameon=False)
            _integer_axis(ax.xaxis, range(len(vals)))
            ax.set_xlabel("time step t", fontsize=7)
            ax.set_ylabel("dx error / tolerance", fontsize=7)
            _mark_padding(ax, case.get("lengths"), len(vals))
            first = data.get("first_bad_step")
            ax.set_title("dL/dx per step" + (f": wrong at {ranges(bad)}" if first is not None else ": right"),
                         fontsize=8)
        else:
            runs = data["runs"]
            names = [k for k in ("W", "U", "b", "V", "c", "h0", "x") if any(k in r.get("tol_ratio", {}) for r in runs)]
            for k in names:
                ax.semilogy(data["lengths"], [max(r.get("tol_ratio", {}).get(k) or 1e-17, 1e-17) for r in runs],
                            "-o", ms=3, label=f"d{k}")
            ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, frameon=False)
            _integer_axis(ax.xaxis, data["lengths"])
            ax.set_xlabel("sequence length (prefix of the case)", fontsize=7)
            ax.set_ylabel("error / tolerance", fontsize=7)
            sfl = data.get("shortest_failing_length")
            ax.set_title("by sequence length" + (f": fails from {sfl} on" if sfl else ""), fontsize=8)
        ax.axhline(1.0, color="k", lw=1)
        ax.tick_params(labelsize=6)
    # the legends sit right of each panel, outside the curves
    fig.subplots_adjust(left=0.08, right=0.86 if len(panels) == 1 else 0.92, bottom=0.17, top=0.88, wspace=0.55)
    return _png(fig)


