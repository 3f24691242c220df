"""The pictures of report.html, as a reader sees them: colour scales anchored at the tolerance (one
colour within it, graded beyond it, the least-wrong cell clearly coloured), colour bars inside their
picture, PNGs drawn at twice the size they are shown at, integer axes for steps and lengths (T = 1
included), and the reproduce box wrapping instead of running off the page. (The pages themselves
were looked at as headless-browser screenshots; these tests hold what a test can.)"""

import re
import struct
import xml.etree.ElementTree as ET

import pytest

from bptt_check.report import html as rhtml
from bptt_check.report import plots
from bptt_check.report.svg import WITHIN, heatmap_svg


def _luminance(hex_colour):
    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def _cells(svg):
    root = ET.fromstring(svg)
    return root, {r.find("title").text.split(":")[0]: r.get("fill") for r in root.iter("rect")
                  if r.find("title") is not None}


def test_heatmap_colours_are_anchored_at_the_tolerance():
    # rtol 1e-7: two cells far within, one just beyond (1e-6.9), one far beyond (1e0)
    grid = [[-16.0, -9.0, -6.9, 0.0]]
    root, cells = _cells(heatmap_svg("b", {"log10_rel": grid, "shape": [4], "pooled": [1, 1]},
                                     {"rtol": 1e-7, "passed": False, "mismatched": 2, "size": 4}))
    assert cells["db[0, 0]"] == cells["db[0, 1]"] == WITHIN            # within tolerance: one colour
    assert cells["db[0, 2]"] != WITHIN and cells["db[0, 3]"] != WITHIN
    assert _luminance(cells["db[0, 2]"]) < 200                         # the least-wrong cell is not near white
    assert _luminance(cells["db[0, 3]"]) < _luminance(cells["db[0, 2]"])   # graded beyond the tolerance


@pytest.mark.parametrize("shape", [(1, 1), (1, 5), (3, 4), (40, 2)])
def test_the_colour_bar_fits_inside_its_picture(shape):
    rows, cols = shape
    grid = [[-10.0 + (i + j) % 9 for j in range(cols)] for i in range(rows)]
    root, _ = _cells(heatmap_svg("c", {"log10_rel": grid, "shape": list(shape), "pooled": [1, 1]},
                                 {"rtol": 1e-7, "passed": False, "mismatched": 1, "size": rows * cols}))
    height, width = float(root.get("height")), float(root.get("width"))
    for r in root.iter("rect"):
        assert float(r.get("y")) + float(r.get("height")) <= height + 0.01, (shape, r.attrib)
        assert float(r.get("x")) + float(r.get("width")) <= width + 0.01
    for t in root.iter("text"):
        assert float(t.get("y")) <= height, (shape, t.text)


def test_pngs_are_drawn_at_twice_their_shown_size(monkeypatch):
    pytest.importorskip("matplotlib")
    png = plots.steps_png({"evidence": {"steps": {"tol_ratio": [1e-3, 2.0], "bad_steps": [1],
                                                  "first_bad_step": 1}}})
    tag = rhtml._img(png, "x", "steps")
    shown = int(re.search(r'width="(\d+)"', tag).group(1))
    width = struct.unpack(">II", png[16:24])[0]
    assert plots.SCALE == 2 and width == 2 * shown


def test_steps_and_lengths_get_integer_axes_also_for_t_1():
    pytest.importorskip("matplotlib")
    plt = plots._plt()
    for values in ([0], [1], [0, 1, 2], list(range(30))):
        fig, ax = plt.subplots()
        ax.semilogy(values, [1.0] * len(values), "o")
        plots._integer_axis(ax.xaxis, values)
        lo, hi = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
        assert ticks and all(float(t).is_integer() for t in ticks), (values, ticks)
        plt.close(fig)


def test_the_reproduce_box_wraps_instead_of_running_off_the_page():
    assert re.search(r"pre\.cmd[^{]*\{[^}]*white-space:pre-wrap", rhtml.CSS)
    assert "overflow-wrap:anywhere" in rhtml.CSS
