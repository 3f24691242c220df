"""Layouts lowered onto the canonical protocol.

The property test writes, for any layout, a user backward *in that layout* by translating the
user's arrays back by hand (independently of the adapters) and calling a built-in backward;
it must pass, and fail on U alone when the user returns dU transposed.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bptt_check as bc
from bptt_check import Layout, adapt, adapt_module, adapt_torch
from bptt_check.builtin import truncated
from bptt_check.cli import target_and_spec as cli_target
from bptt_check.model.forward import total_loss

# ----------------------------------------------------------------- a user backward in any layout


def user_backward_in(lay: dict, bug: str | None = None):
    """A backward written in layout ``lay``; it translates to canonical by hand and runs a built-in."""
    col, batch, in_out = lay["vectors"] == "column", lay["batch"], lay["weights"] == "in_out"
    names, two = lay["names"], lay["two_biases"]

    def vec_in(a):         # one vector per sample, yours -> (B, F)
        if col:
            return a.T
        return a[None, :] if batch is None else a

    def vec_out(a):
        if col:
            return a.T
        return a[0] if batch is None else a

    def seq_in(a):         # yours -> (T, B, F)
        if col:
            return a.transpose(0, 2, 1)
        if batch is None:
            return a[:, None, :]
        return a.transpose(1, 0, 2) if batch == "batch_major" else a

    def seq_out(a):
        if col:
            return a.transpose(0, 2, 1)
        if batch is None:
            return a[:, 0, :]
        return a.transpose(1, 0, 2) if batch == "batch_major" else a

    def ids_in(a):         # yours -> (T, B)
        if batch is None:
            return a[:, None]
        return a.T if batch == "batch_major" else a

    def backward(params, x, y, spec):
        p = {}
        for k in ("W", "U", "V"):
            p[k] = params[names[k]].T if in_out else params[names[k]]
        H, I = p["W"].shape
        if two and "b1" in params:
            p["b"] = params["b1"] + params["b2"]
        elif names["b"] in params:
            p["b"] = params[names["b"]]
        if names["c"] in params:
            p["c"] = params[names["c"]]
        for k in ("b", "c"):
            if k in p and col:
                p[k] = p[k][:, 0]
        if spec.bias:
            for k, n in (("b", H), ("c", p["V"].shape[0])):
                p.setdefault(k, np.zeros(n))          # absent: the model has it at zero
        if lay["inputs"] == "index":
            xc = np.eye(I)[ids_in(x)]
        else:
            xc = seq_in(x)
        B = xc.shape[1]
        if lay["h0"] == "zero":
            p["h0"] = np.zeros((B, H))
        elif lay["h0"] == "shared":
            h = params[names["h0"]].reshape(-1)
            p["h0"] = np.tile(h, (B, 1))
        else:
            p["h0"] = vec_in(params[names["h0"]])
        m2o = spec.mode == "many-to-one"
        if spec.loss == "cross_entropy" and lay["targets"] == "one_hot":
            yc = np.argmax(vec_in(y) if m2o else seq_in(y), axis=-1)
        elif spec.loss == "cross_entropy":
            yc = (np.array([y]) if batch is None else y) if m2o else ids_in(y)
        else:
            yc = vec_in(y) if m2o else seq_in(y)
        g = truncated(p, xc, yc, spec)
        if bug == "dU transposed":
            g["U"] = g["U"].T
        out = {}
        for k in ("W", "U", "V"):
            out[names[k]] = g[k].T if in_out else g[k]
        for k in ("b", "c"):
            if k in lay["absent"] or k not in g:
                continue
            gk = g[k][:, None] if col else g[k]
            if k == "b" and two:
                out["b1"] = gk
                out["b2"] = gk.copy()
            else:
                out[names[k]] = gk
        if lay["h0"] == "learned":
            out[names["h0"]] = vec_out(g["h0"])
        elif lay["h0"] == "shared":
            s = g["h0"].sum(axis=0)
            out[names["h0"]] = s[:, None] if col else s
        if lay["inputs"] == "dense":
            out["x"] = seq_out(g["x"])
        loss = total_loss(p, xc, yc, spec.replace(truncation=bc.Truncation()))
        if lay["returns"] == "dict":
            return {("d" + k if k != "x" else "dx"): v for k, v in out.items()} | {"loss": loss}
        return [loss, *[out[k] for k in lay["order"] if k in out], None]

    return backward


NAMINGS = {
    "canonical": {k: k for k in ("W", "U", "b", "V", "c", "h0")},
    "seed001": {"W": "U", "U": "W", "b": "b", "V": "V", "c": "c", "h0": "h0"},
    "mine": {"W": "Wxh", "U": "Whh", "b": "bh", "V": "Why", "c": "by", "h0": "hprev"},
}


@st.composite
def layouts(draw):
    vectors = draw(st.sampled_from(["row", "column"]))
    batch = draw(st.sampled_from(["time_major", None] + (["batch_major"] if vectors == "row" else [])))
    lay = {
        "vectors": vectors, "batch": batch,
        "weights": draw(st.sampled_from(["out_in", "in_out"])),
        "inputs": draw(st.sampled_from(["dense", "one_hot", "index"])),
        "h0": draw(st.sampled_from(["learned", "shared", "given", "zero"])),
        "absent": tuple(draw(st.sampled_from([(), ("c",), ("b",)]))),
        "names": NAMINGS[draw(st.sampled_from(sorted(NAMINGS)))],
        "two_biases": draw(st.booleans()),
        "returns": draw(st.sampled_from(["dict", "tuple"])),
        "targets": draw(st.sampled_from(["index", "one_hot"])),
    }
    if "b" in lay["absent"]:
        lay["two_biases"] = False
    n = lay["names"]
    lay["order"] = [n["V"], n["W"], "b1", "b2", n["b"], n["c"], n["U"], n["h0"], "x"]
    return lay


def to_layout(lay: dict) -> Layout:
    names = {k: v for k, v in lay["names"].items()}
    if lay["two_biases"]:
        names["b"] = ("b1", "b2")
    returns = "dict" if lay["returns"] == "dict" else (
        "loss", *[("d" + k if k != "x" else "dx") for k in lay["order"]
                  if k not in ("b1", "b2") or lay["two_biases"]], None)
    if lay["returns"] != "dict":
        # only the names this layout has: drop the plain b name when split, absent biases, h0 not learned
        keep = []
        for r in returns:
            k = None if r in (None, "loss") else r[1:] if r != "dx" else "x"
            if k is None:
                keep.append(r)
                continue
            if k == lay["names"]["b"] and lay["two_biases"]:
                continue
            if k in (lay["names"].get(a) for a in lay["absent"]):
                continue
            if k == lay["names"]["h0"] and lay["h0"] not in ("learned", "shared"):
                continue
            if k == "x" and lay["inputs"] != "dense":
                continue
            keep.append(r)
        returns = tuple(keep)
    return Layout(names=names, vectors=lay["vectors"], batch=lay["batch"], weights=lay["weights"],
                  inputs=lay["inputs"], targets=lay["targets"], h0=lay["h0"], absent=lay["absent"], returns=returns,
                  args=("params", "x", "y", "spec"))


@settings(max_examples=30)
@given(lay=layouts(), mode=st.sampled_from(["many-to-one", "many-to-many"]),
       loss=st.sampled_from(["half_mse", "cross_entropy"]), index=st.integers(0, 7), bias=st.booleans())
def test_a_correct_backward_in_any_layout_passes_and_a_transposed_dU_fails_on_U(lay, mode, loss, index, bias):
    if not bias:   # a fixed tuple of returns cannot follow an optional bias: the layout says it has none
        lay = {**lay, "two_biases": False, "absent": ("b", "c")}
    spec = bc.Spec(mode=mode, loss=loss, output="softmax" if loss == "cross_entropy" else "identity",
                   truncation="window:2", bias=bias)
    layout = to_layout(lay)
    case = bc.draw_case(spec, seed=11, index=index)
    good = bc.check_case(adapt(user_backward_in(lay), layout, spec=spec), case)
    assert good.status == "passed", (good.summary(), good.notes, layout)
    expected = {"W", "U", "b", "V", "c", "h0", "x"}
    if lay["two_biases"] and bias:
        expected.add("b2")
    expected -= set(lay["absent"])
    if lay["h0"] in ("given", "zero"):
        expected.discard("h0")
    if lay["inputs"] != "dense":
        expected.discard("x")
    assert set(good.grads) == expected
    if good.shapes["H"] >= 2:
        bad = bc.check_case(adapt(user_backward_in(lay, bug="dU transposed"), layout, spec=spec), case)
        if lay["h0"] == "zero" and good.shapes["T"] == 1:
            assert bad.status == "passed"          # dU is exactly 0 then: transposing it changes nothing
        else:
            assert bad.status == "failed" and bad.failed_grads == ["U"], bad.summary()
            if lay["names"]["U"] != "U":
                assert any(f"your {lay['names']['U']!r}" in n for n in bad.notes), bad.notes


# ----------------------------------------------------------------- one feature at a time


def test_cases_are_shaped_for_the_layout():
    layout = Layout(batch=None, inputs="one_hot", h0="shared", absent=("c",))
    seen = []

    def backward(params, x, y):
        seen.append((x.shape, {k: v.shape for k, v in params.items()}, x.copy()))
        g = truncated({"W": params["W"], "U": params["U"], "b": params["b"], "V": params["V"],
                       "c": np.zeros(params["V"].shape[0]), "h0": params["h0"][None, :]}, x[:, None, :],
                      y[:, None, :], bc.Spec())
        return {"W": g["W"], "U": g["U"], "b": g["b"], "V": g["V"], "h0": g["h0"][0], "x": g["x"][:, 0]}

    result = bc.check_case(adapt(backward, layout), bc.draw_case(bc.Spec(), 3, 0), isolate="thread")  # reads `seen`
    assert result.status == "passed", result.summary()
    xshape, pshapes, x = seen[0]
    T, I = xshape
    assert pshapes["h0"] == (pshapes["U"][0],) and "c" not in pshapes
    assert set(np.unique(x)) <= {0.0, 1.0} and (x.sum(axis=1) == 1).all()     # one-hot rows
    assert result.shapes["B"] == 1


def test_clip_declared_compares_with_the_clipped_reference_and_says_so():
    c = 0.05

    def clipped(params, x, y):
        return {k: np.clip(v, -c, c) if k != "x" else v for k, v in truncated(params, x, y, bc.Spec()).items()}

    case = bc.draw_case(bc.Spec(), 2, 0)
    ok = bc.check_case(adapt(clipped, Layout(clip=c)), case)
    assert ok.status == "passed", ok.summary()
    note = [n for n in ok.notes if n.startswith(f"clipped at ±{c:g} (declared)")]
    assert note and " 0 of " not in note[0]
    # clipping that is not declared is wrong math here; a declared clip the code does not do, too
    assert bc.check_case(adapt(clipped, Layout()), case).status == "failed"
    plain = bc.check_case(adapt(lambda p, x, y: truncated(p, x, y, bc.Spec()), Layout(clip=c)), case)
    assert plain.status == "failed"


def test_forward_supplied_by_the_user_is_checked_first():
    spec = bc.Spec(loss="half_mse")

    def fwd(params, x, y):
        return 2 * total_loss(params, x, y, spec)      # sse instead of half_mse

    called = []

    def backward(params, x, y):
        called.append(1)
        return truncated(params, x, y, spec)

    result = bc.check_case(adapt(backward, forward=fwd), bc.draw_case(spec, 0, 0), isolate="thread")  # counts calls
    assert result.status == "error" and result.error["kind"] == "forward"
    assert "forward bug" in result.error["message"] and "sse" in result.error["message"]
    assert called == [1, 1]              # the backward ran (twice: the determinism check), but was not judged
    good = adapt(backward, forward=lambda p, x, y: (total_loss(p, x, y, spec), "cache"))
    assert bc.check_case(good, bc.draw_case(spec, 0, 0)).status == "passed"


def test_returns_are_parsed_and_misdeclared_returns_say_how_to_fix():
    def as_tuple(params, x, y):
        g = truncated(params, x, y, bc.Spec())
        return g["W"], g["U"], g["b"], g["V"], g["c"], g["h0"]

    case = bc.draw_case(bc.Spec(), 1, 0)
    result = bc.check_case(adapt(as_tuple), case)
    assert result.status == "error" and "returns=('dW', 'dU', ...)" in result.error["message"]
    right = adapt(as_tuple, Layout(returns=("dW", "dU", "db", "dV", "dc", "dh0")))
    assert bc.check_case(right, case).status == "passed"
    short = adapt(as_tuple, Layout(returns=("dW", "dU", "db", "dV", "dc")))
    msg = bc.check_case(short, case).error["message"]
    assert "returned 6 values; the layout declares 5" in msg


@pytest.mark.parametrize("kwargs, words", [
    ({"names": {"Wx": "W"}}, "not a canonical name"),
    ({"names": {"W": "A", "U": "A"}}, "used for two parameters"),
    ({"names": {"W": ("a", "b")}}, "give one name"),
    ({"absent": ("h0",)}, "h0='zero'"),
    ({"vectors": "column", "batch": "batch_major"}, "not supported"),
    ({"vectors": "col"}, "choose one of 'row', 'column'"),
    ({"args": ("params", "inputs")}, "'inputs' is none of"),
    ({"returns": ("dW", "dQ")}, "'dQ' is not 'loss'"),
    ({"clip": 0}, "positive"),
    ({"names": {"W": "loss"}}, "reserved"),
])
def test_bad_layouts_are_refused_with_what_to_do(kwargs, words):
    with pytest.raises(bc.BPTTCheckError, match=words.replace("(", r"\(").replace(")", r"\)")):
        Layout(**kwargs)


def test_declared_spec_is_the_default_and_explicit_arguments_win():
    adapted = adapt(truncated_m2o := (lambda p, x, y, spec: truncated(p, x, y, spec)), mode="many-to-one")
    assert adapted.bptt_spec.mode == "many-to-one"
    report = bc.check(adapted, cases=2)
    assert {c.spec.mode for c in report.cases} == {"many-to-one"} and report.passed
    assert bc.check(adapted, bc.Spec(), cases=1).cases[0].spec.mode == "many-to-many"
    assert callable(truncated_m2o)
    with pytest.raises(bc.BPTTCheckError, match="spec fields are"):
        adapt(truncated, modes="x")
    assert adapt(truncated, Layout(absent=("b", "c"))).bptt_spec.bias is False


def test_cli_target_resolves_factories_and_flags():
    adapted = adapt(truncated, truncation="window:3", loss="sse")
    values = {"mode": "many-to-many", "truncation": "none", "activation": "tanh", "output": "identity",
              "loss": "half_mse", "reduction": "sum", "no_bias": False, "dtype": "float64"}
    fn, spec = cli_target(adapted, values, given=set())
    assert fn is adapted and str(spec.truncation) == "window:3" and spec.loss == "sse"
    fn, spec = cli_target(lambda: adapted, {**values, "truncation": "chunk:2"}, given={"truncation"})
    assert fn is adapted and str(spec.truncation) == "chunk:2" and spec.loss == "sse"
    fn, spec = cli_target(truncated, values, given=set())
    assert fn is truncated and spec == bc.Spec()

    def broken():
        raise RuntimeError("no GPU here")

    with pytest.raises(bc.BPTTCheckError, match="RuntimeError: no GPU here"):
        cli_target(broken, values, given=set())


def test_unbatched_adapter_called_directly_with_a_batch_says_so():
    case = bc.draw_case(bc.Spec(sizes=bc.Sizes(B=(2, 2))), 0, 0)
    with pytest.raises(bc.BPTTCheckError, match="unbatched"):
        adapt(truncated, Layout(batch=None))(case.params, case.x, case.y, case.spec)


def test_annotate_gives_the_index_in_your_in_out_weights():
    def wrong(params, x, y):
        spec = bc.Spec()
        p = {"W": params["Wx"].T, "U": params["Wh"].T, "b": params["b"], "V": params["V"].T, "c": params["c"],
             "h0": params["h0"]}
        g = truncated(p, x, y, spec)
        g["W"][0, -1] += 1.0                                   # canonical (0, I-1) -> yours (I-1, 0)
        return {"Wx": g["W"].T, "Wh": g["U"].T, "b": g["b"], "V": g["V"].T, "c": g["c"], "h0": g["h0"]}

    layout = Layout(names={"W": "Wx", "U": "Wh"}, weights="in_out")
    case = bc.draw_case(bc.Spec(), 4, 0)
    result = bc.check_case(adapt(wrong, layout), case)
    assert result.failed_grads == ["W"]
    I = case.shapes["I"]   # noqa: E741
    assert f"W is your 'Wx': its worst element is Wx[{I - 1}, 0]" in result.notes


# ----------------------------------------------------------------- torch


def _torch_function(bug=False):
    import torch

    class Cell(torch.autograd.Function):
        """loss = 0.5 * sum((tanh(x W^T + h0 U^T + b) V^T + c - y)^2), one step, canonical names."""

        @staticmethod
        def forward(ctx, x, h0, W, U, b, V, c, y):
            h = torch.tanh(x[0] @ W.T + h0 @ U.T + b)
            r = h @ V.T + c - y[0]
            ctx.save_for_backward(x, h0, W, U, V, h, r)
            return 0.5 * (r ** 2).sum()

        @staticmethod
        def backward(ctx, g):
            x, h0, W, U, V, h, r = ctx.saved_tensors
            dr = g * r
            dh = dr @ V
            da = dh * (1 - h ** 2) if not bug else dh
            return (da @ W)[None], da @ U, da.T @ x[0], da.T @ h0, da.sum(0), dr.T @ h, dr.sum(0), None

    return Cell


def test_adapt_torch_runs_a_hand_written_autograd_function_and_catches_its_bug():
    spec = bc.Spec(sizes=bc.Sizes(T=(1, 1)))
    layout = Layout(args=("x", "h0", "W", "U", "b", "V", "c", "y"))
    case = bc.draw_case(spec, 0, 0)
    assert bc.check_case(adapt_torch(_torch_function(), layout, spec=spec), case).status == "passed"
    bad = bc.check_case(adapt_torch(_torch_function(bug=True), layout, spec=spec), case)
    assert bad.status == "failed" and set(bad.failed_grads) == {"W", "U", "b", "h0", "x"}


def test_adapt_torch_explains_a_loss_that_is_not_a_scalar():
    case = bc.draw_case(bc.Spec(), 0, 0)
    result = bc.check_case(adapt_torch(lambda p, x, y: x * p["W"].sum()), case)
    assert result.status == "error" and "scalar loss" in result.error["message"]
    detached = bc.check_case(adapt_torch(lambda p, x, y: p["W"].sum().detach()), case)
    assert "does not depend on any parameter" in detached.error["message"]


def test_adapt_module_captures_a_torch_module_updating_its_parameters_in_place():
    import torch

    class Net(torch.nn.Module):
        def __init__(self, sizes):
            super().__init__()
            H, I, O = sizes["H"], sizes["I"], sizes["O"]
            self.W, self.U = torch.nn.Parameter(torch.zeros(H, I)), torch.nn.Parameter(torch.zeros(H, H))
            self.b, self.V = torch.nn.Parameter(torch.zeros(H)), torch.nn.Parameter(torch.zeros(O, H))
            self.c, self.h0 = torch.nn.Parameter(torch.zeros(O)), None
            self.rate = 0.5

        def fit(self, x, y):
            x, y = torch.as_tensor(x), torch.as_tensor(y)
            h, loss = self.h0, 0
            for t in range(x.shape[0]):
                h = torch.tanh(x[t] @ self.W.T + h @ self.U.T + self.b)
                loss = loss + 0.5 * ((h @ self.V.T + self.c - y[t]) ** 2).sum()
            loss.backward()
            with torch.no_grad():
                for p in self.parameters():
                    p -= self.rate * p.grad
            return float(loss.detach())

    class NetWithH0(Net):
        def __init__(self, sizes):
            super().__init__(sizes)
            self.h0 = torch.nn.Parameter(torch.zeros(sizes["B"], sizes["H"]))

    result = bc.check(adapt_module(NetWithH0, step="fit", lr=0.5, layout=Layout(returns="loss")), cases=3)
    assert result.passed, result.summary()

    class Stale(NetWithH0):            # forgets to zero .grad between two steps it takes
        def fit(self, x, y):
            super().fit(x, y)
            return super().fit(x, y)

    assert not bc.check(adapt_module(Stale, step="fit", lr=0.5), cases=2).passed


def test_adapt_module_with_returned_gradients():
    class Model:
        def __init__(self):
            self.spec = bc.Spec()

        def grads(self, x, y):
            p = {k: getattr(self, k) for k in ("W", "U", "b", "V", "c", "h0")}
            return truncated(p, x, y, self.spec)

    adapted = adapt_module(Model, step="grads", grads="returned")
    assert bc.check(adapted, cases=2).passed
    with pytest.raises(bc.BPTTCheckError, match="'update'"):
        adapt_module(Model, step="grads", grads="both")
