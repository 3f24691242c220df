import pytest
from hypothesis import given
from hypothesis import strategies as st

from bptt_check import BPTTCheckError, Spec, Truncation
from bptt_check.model.spec import Window, schedule_windows
from bptt_check.strategies import truncations


@pytest.mark.parametrize("text", ["none", "window:3", "tbptt:2,5", "chunk:4", "window-loss:2,3", "tbptt:3,3"])
def test_truncation_round_trips(text):
    assert str(Truncation.parse(text)) == text


@pytest.mark.parametrize("text, words", [
    ("window:0", "must be >= 1"),
    ("tbptt:4,2", "k2 must be >= k1"),
    ("tbptt:3", "needs 2 sizes"),
    ("window:x", "whole numbers"),
    ("sometimes:3", "unknown truncation"),
    ("chunk:-1", "must be >= 1"),
])
def test_bad_truncations_say_what_is_wrong(text, words):
    with pytest.raises(BPTTCheckError, match=words):
        Truncation.parse(text)


def test_bad_spec_fields_name_the_choices():
    with pytest.raises(BPTTCheckError, match="unknown activation 'gelu'; choose one of tanh"):
        Spec(activation="gelu")
    with pytest.raises(BPTTCheckError, match="output must be softmax or identity"):
        Spec(loss="cross_entropy", output="tanh")


def test_named_schedules_match_design_table():
    # per-step window k: s = max(0, t-k), L = {t}
    assert schedule_windows(Truncation("window", 2), 4) == [
        Window(0, (0,)), Window(0, (1,)), Window(0, (2,)), Window(1, (3,))]
    # TBPTT(2, 3) over T = 5: block ends 1, 3 and the short last block 4
    assert schedule_windows(Truncation("tbptt", 2, 3), 5) == [
        Window(0, (0, 1)), Window(1, (2, 3)), Window(2, (4,))]
    # chunk k = TBPTT(k, k) when k divides T ...
    assert schedule_windows(Truncation("chunk", 2), 6) == schedule_windows(Truncation("tbptt", 2, 2), 6)
    # ... but a short last chunk starts at its border, while TBPTT's last block reaches k2 back from T-1
    assert schedule_windows(Truncation("chunk", 2), 5) == [Window(0, (0, 1)), Window(2, (2, 3)), Window(4, (4,))]
    assert schedule_windows(Truncation("tbptt", 2, 2), 5)[-1] == Window(3, (4,))
    # window-loss (2, 3) over T = 5: n = 2, 4 -> s = 0, 1; the tail step 4 is dropped
    assert schedule_windows(Truncation("window-loss", 2, 3), 5) == [Window(0, (0, 1)), Window(1, (1, 2, 3))]


def test_many_to_one_keeps_only_the_last_loss_step():
    spec = Spec(mode="many-to-one", truncation="tbptt:2,3")
    assert spec.windows(5) == [Window(2, (4,))]
    assert Spec(mode="many-to-one", truncation="window-loss:2,2").windows(5) == []


@given(truncations(), st.integers(1, 12))
def test_every_window_is_well_formed(tr, T):
    for w in schedule_windows(tr, T):
        assert 0 <= w.start <= min(w.losses)
        assert max(w.losses) < T
        reach = tr.reach
        if reach is not None:
            assert max(w.losses) - w.start + 1 <= max(reach, tr.k1)


@given(truncations(kinds=["window", "tbptt", "chunk"]), st.integers(1, 12))
def test_window_covering_the_sequence_is_full_bptt(tr, T):
    covers = {"window": tr.k1 >= T - 1, "tbptt": tr.k2 >= T, "chunk": tr.k1 >= T}[tr.kind]
    starts = {w.start for w in schedule_windows(tr, T)}
    losses = sorted(t for w in schedule_windows(tr, T) for t in w.losses)
    assert losses == list(range(T))           # these schedules count every loss exactly once
    assert (starts == {0}) == covers or not covers


def test_spec_dict_round_trip():
    spec = Spec(mode="many-to-one", truncation="tbptt:2,4", activation="relu", loss="cross_entropy",
                output="softmax", reduction="mean", bias=False)
    assert Spec.from_dict(spec.to_dict()) == spec
