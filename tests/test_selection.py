"""`--runtime auto`'s choice: the fastest within budgets, a tie (inside the measurement spread) settled by memory —
unless an interleaved measurement shows the lighter candidate is really slower. Pure: the interleaved check is
passed in (the pipeline passes compare.slower_when_interleaved, exercised end to end in test_cli_build)."""

from __future__ import annotations

from dataclasses import replace

from edgepack.selection import choose_fastest

from tests.ci_reports import measurement, report


def two_candidates():
    """A: p50 1.00 ms, 40 MB; B: p50 1.05 ms (inside A's p50-p90 spread), 5 MB."""
    base = report()
    a_art = replace(base.artifacts[0], name="a-int8")
    b_art = replace(base.artifacts[0], name="b-int8")
    spread = [0.9, 1.0, 1.0, 1.0, 1.3]
    return replace(base, shipping=("a-int8", "b-int8"), artifacts=(a_art, b_art), accuracy=(),
                   measurements=(measurement("a-int8", spread, peak=40_000_000),
                                 measurement("b-int8", [x * 1.05 for x in spread], peak=5_000_000)))


def test_a_tie_goes_to_the_lighter_candidate_without_a_closer_look():
    chosen = choose_fastest(two_candidates())
    assert chosen.shipping == ("b-int8",)
    assert chosen.selection[-1].startswith("shipped: b-int8 — tied within noise with a-int8")


def test_an_interleaved_check_that_finds_the_lighter_one_slower_breaks_the_tie():
    asked = []

    def slower(fastest: str, other: str):
        asked.append((fastest, other))
        return f"{other} is slower than {fastest} measured interleaved (p50 ratio 1.05)"

    chosen = choose_fastest(two_candidates(), slower)
    assert asked == [("a-int8", "b-int8")]
    assert chosen.shipping == ("a-int8",)
    assert "not a tie: b-int8 is slower than a-int8 measured interleaved (p50 ratio 1.05)" in chosen.selection
    assert chosen.selection[-1].startswith("shipped: a-int8 — the fastest")


def test_an_interleaved_check_that_finds_no_difference_keeps_the_tie():
    chosen = choose_fastest(two_candidates(), lambda fastest, other: None)
    assert chosen.shipping == ("b-int8",)
    assert "b-int8 is not slower than a-int8 measured interleaved: the tie stands" in chosen.selection


def test_a_heavier_tied_candidate_is_never_measured_again():
    r = two_candidates()
    heavier_b = replace(r.measurements[1], peak_over_baseline_bytes=90_000_000)
    heavy = replace(r, measurements=(r.measurements[0], heavier_b))

    def never(fastest: str, other: str):
        raise AssertionError("a candidate that cannot win the tie was measured again")

    assert choose_fastest(heavy, never).shipping == ("a-int8",)
