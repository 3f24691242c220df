"""Per-parameter heatmaps of log relative error as inline SVG: no dependency, microseconds per
picture, hover a cell for its index and value. (The temporal map and the error-against-step
plot use matplotlib, see :mod:`.plots`.)"""

from __future__ import annotations

import math
from html import escape
from typing import Any

# RdYlBu reversed: blue (far below tolerance) .. pale yellow (at tolerance) .. red (far above)
_ANCHORS = ((49, 54, 149), (69, 117, 180), (116, 173, 209), (171, 217, 233), (224, 243, 248), (255, 255, 191),
            (254, 224, 144), (253, 174, 97), (244, 109, 67), (215, 48, 39), (165, 0, 38))


def _color(u: float) -> str:
    u = min(max(u, 0.0), 1.0) * (len(_ANCHORS) - 1)
    i = min(int(u), len(_ANCHORS) - 2)
    f = u - i
    a, b = _ANCHORS[i], _ANCHORS[i + 1]
    r, g, b_ = (int(round(a[k] + f * (b[k] - a[k]))) for k in range(3))
    return f"#{r:02x}{g:02x}{b_:02x}"


def _norm(v: float, vmin: float, center: float, vmax: float) -> float:
    """Two slopes: [vmin, center] -> [0, .5], [center, vmax] -> [.5, 1]."""
    if v <= center:
        return 0.5 * (v - vmin) / max(center - vmin, 1e-12)
    return 0.5 + 0.5 * (v - center) / max(vmax - center, 1e-12)


def heatmap_svg(name: str, hm: dict[str, Any], grad: dict[str, Any]) -> str:
    """One gradient's log10 relative error, element by element (x: one row per time step)."""
    data = hm["log10_rel"]
    rows, cols = len(data), len(data[0]) if data else 0
    rtol = float(grad.get("rtol") or 1e-7)
    center = math.log10(rtol)
    flat = [v for row in data for v in row]
    vmin = min(min(flat, default=center), center - 1)
    vmax = max(max(flat, default=center), center + 1)
    c = max(8, min(28, 280 // max(cols, 1), 220 // max(rows, 1)))
    left, top, bottom, bar = 38, 34, 30, 60
    w, h = left + cols * c + 12 + bar, top + rows * c + bottom
    ok = grad.get("passed", True)
    status = "ok" if ok else f"{grad.get('mismatched')}/{grad.get('size')} wrong"
    pool = hm.get("pooled", [1, 1])
    pooled = f", max over {pool[0]}×{pool[1]} blocks" if list(pool) != [1, 1] else ""
    title = f"d{name} {tuple(hm.get('shape', []))}: {status}{pooled}"
    out = [f'<svg data-kind="heatmap" data-param="{escape(name)}" '
           f'width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="{escape(title)}" '
           'font-family="sans-serif">',
           f'<text x="{left}" y="14" font-size="12" fill="{"#222" if ok else "#b00000"}">{escape(title)}</text>']
    show_text = rows * cols <= 144 and c >= 16
    for i, row in enumerate(data):
        for j, v in enumerate(row):
            x, y = left + j * c, top + i * c
            u = _norm(v, vmin, center, vmax)
            where = f"[{i}, {j}]" if list(pool) == [1, 1] else f"block [{i}, {j}]"
            out.append(f'<rect x="{x}" y="{y}" width="{c}" height="{c}" fill="{_color(u)}">'
                       f"<title>d{escape(name)}{where}: log10 rel err {v:.2f}</title></rect>")
            if show_text:
                fill = "#fff" if abs(u - 0.5) > 0.3 else "#222"
                out.append(f'<text x="{x + c / 2}" y="{y + c / 2 + 3.5}" font-size="9" text-anchor="middle" '
                           f'fill="{fill}" pointer-events="none">{int(round(v)) or 0}</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{cols * c}" height="{rows * c}" fill="none" stroke="#555"/>')
    step_r = max(1, rows // 8)
    for i in range(0, rows, step_r):
        out.append(f'<text x="{left - 4}" y="{top + i * c + c / 2 + 3.5}" font-size="9" text-anchor="end">{i}</text>')
    step_c = max(1, cols // 8)
    for j in range(0, cols, step_c):
        out.append(f'<text x="{left + j * c + c / 2}" y="{top + rows * c + 11}" font-size="9" '
                   f'text-anchor="middle">{j}</text>')
    ylab = "time step t" if name == "x" else ("batch b" if name == "h0" else ("" if rows == 1 else "row"))
    xlab = "batch·input (b·I + i)" if name == "x" else ("element" if rows == 1 else "column")
    out.append(f'<text x="{left + cols * c / 2}" y="{h - 4}" font-size="10" text-anchor="middle">{xlab}</text>')
    if ylab:
        out.append(f'<text x="10" y="{top + rows * c / 2}" font-size="10" text-anchor="middle" '
                   f'transform="rotate(-90 10 {top + rows * c / 2})">{ylab}</text>')
    # colour bar with the tolerance marked
    bx, bh = left + cols * c + 12, max(rows * c, 60)
    n = 24
    for k in range(n):
        u = 1 - (k + 0.5) / n
        out.append(f'<rect x="{bx}" y="{top + k * bh / n:.1f}" width="10" height="{bh / n + 0.5:.1f}" '
                   f'fill="{_color(u)}"/>')
    for v, label in ((vmax, f"{vmax:.0f}"), (center, f"rtol 1e{center:.0f}"), (vmin, f"{vmin:.0f}")):
        y = top + (1 - _norm(v, vmin, center, vmax)) * bh
        out.append(f'<line x1="{bx - 2}" x2="{bx + 12}" y1="{y:.1f}" y2="{y:.1f}" stroke="#000"/>'
                   f'<text x="{bx + 14}" y="{y + 3:.1f}" font-size="9">{label}</text>')
    out.append(f'<text x="{bx}" y="{top - 4}" font-size="9">log10 rel</text>')
    out.append("</svg>")
    return "".join(out)
