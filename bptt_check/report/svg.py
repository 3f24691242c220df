"""Per-parameter heatmaps of log relative error as inline SVG: no dependency, microseconds per
picture, hover a cell for its index and value. (The temporal map and the error-against-step
plot use matplotlib, see :mod:`.plots`.)"""

from __future__ import annotations

import math
from html import escape
from typing import Any

# within tolerance: one quiet colour; beyond it: graded from a clearly visible orange (just beyond)
# to dark red (the worst), so that the least-wrong cell is never lost against the right ones
WITHIN = "#dce6f2"
_BEYOND = ((253, 174, 97), (244, 109, 67), (215, 48, 39), (165, 0, 38))


def _color(v: float, center: float, vmax: float) -> str:
    """The colour of a cell of log10 relative error ``v``: :data:`WITHIN` up to the tolerance ``center``,
    then graded up to ``vmax``."""
    if v <= center:
        return WITHIN
    u = min(max((v - center) / max(vmax - center, 1e-12), 0.0), 1.0) * (len(_BEYOND) - 1)
    i = min(int(u), len(_BEYOND) - 2)
    f = u - i
    a, b = _BEYOND[i], _BEYOND[i + 1]
    r, g, b_ = (int(round(a[k] + f * (b[k] - a[k]))) for k in range(3))
    return f"#{r:02x}{g:02x}{b_:02x}"


def heatmap_svg(name: str, hm: dict[str, Any], grad: dict[str, Any]) -> str:
    """One gradient's log10 relative error, element by element (x: one row per time step); the colour
    scale is anchored at the tolerance (rtol): one colour within it, graded beyond it."""
    data = hm["log10_rel"]
    rows, cols = len(data), len(data[0]) if data else 0
    rtol = float(grad.get("rtol") or 1e-7)
    center = math.log10(rtol)
    flat = [float(v) for row in data for v in row]
    vmax = max(max(flat, default=center), center + 1)
    c = max(8, min(28, 280 // max(cols, 1), 220 // max(rows, 1)))
    left, top, bottom = 38, 34, 30
    bh = max(rows * c, 96)                      # the colour bar: never shorter than its labels need
    bar_w = 70
    w = left + cols * c + 12 + bar_w
    h = top + max(rows * c + bottom, bh + 14)
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
            v = float(v)
            x, y = left + j * c, top + i * c
            where = f"[{i}, {j}]" if list(pool) == [1, 1] else f"block [{i}, {j}]"
            verdict = "within tolerance" if v <= center else "beyond tolerance"
            out.append(f'<rect x="{x}" y="{y}" width="{c}" height="{c}" fill="{_color(v, center, vmax)}">'
                       f"<title>d{escape(name)}{where}: log10 rel err {v:.2f} ({verdict})</title></rect>")
            if show_text:
                dark = v > center + 0.45 * (vmax - center)
                out.append(f'<text x="{x + c / 2}" y="{y + c / 2 + 3.5}" font-size="9" text-anchor="middle" '
                           f'fill="{"#fff" if dark else "#222"}" pointer-events="none">{int(round(v)) or 0}</text>')
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
    out.append(f'<text x="{left + cols * c / 2}" y="{top + rows * c + 25}" font-size="10" '
               f'text-anchor="middle">{xlab}</text>')
    if ylab:
        out.append(f'<text x="10" y="{top + rows * c / 2}" font-size="10" text-anchor="middle" '
                   f'transform="rotate(-90 10 {top + rows * c / 2})">{ylab}</text>')
    # the colour bar: the graded part above the tolerance mark, one block of WITHIN below it
    bx = left + cols * c + 12
    graded = 0.7 * bh
    n = 20
    for k in range(n):
        v = vmax - (k + 0.5) / n * (vmax - center)
        out.append(f'<rect x="{bx}" y="{top + k * graded / n:.1f}" width="10" height="{graded / n + 0.5:.1f}" '
                   f'fill="{_color(v, center, vmax)}"/>')
    out.append(f'<rect x="{bx}" y="{top + graded:.1f}" width="10" height="{bh - graded:.1f}" fill="{WITHIN}"/>')
    for y, label in ((top, f"{round(vmax)}"), (top + graded, f"rtol 1e{round(center)}")):
        out.append(f'<line x1="{bx - 2}" x2="{bx + 12}" y1="{y:.1f}" y2="{y:.1f}" stroke="#000"/>'
                   f'<text x="{bx + 14}" y="{y + 3:.1f}" font-size="9">{label}</text>')
    out.append(f'<text x="{bx + 14}" y="{top + (graded + bh) / 2 + 3:.1f}" font-size="9">within</text>')
    out.append(f'<text x="{bx}" y="{top - 4}" font-size="9">log10 rel</text>')
    out.append("</svg>")
    return "".join(out)
