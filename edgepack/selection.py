"""`--runtime auto`: of the artifacts that could ship (one per runtime that built, verified and measured), ship the
one that meets every budget fastest. Pure and torch-free: it reads the report's records.

A latency difference inside the measurement noise is not a win: when the next candidate's p50 is within the wider of
the two artifacts' p50-to-p90 spreads, the two are tied and the smaller peak memory, then the smaller file, decides.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Optional

from edgepack.gates import format_value, judge
from edgepack.records import Measurement, Report


def choose_fastest(report: Report, slower: Optional[Callable[[str, str], Optional[str]]] = None) -> Report:
    """The report with only the chosen artifact shipping, its verdicts re-judged, and the reasons in `selection`.

    `slower(fastest, other)`: a closer look at a tie (an interleaved measurement); it returns why `other` is slower,
    or None. A candidate it finds slower is not tied with the fastest, however wide the spreads were."""
    candidates = list(report.shipping)
    if len(candidates) <= 1:
        return report
    measured = {m.artifact: m for m in report.measurements}
    verdicts = judge(report)
    passing = [a for a in candidates if all(v.passed for v in verdicts if v.artifact == a)]
    pool = [a for a in (passing or candidates) if a in measured]
    if not pool:
        return report
    sizes = {a.name: a.size_bytes for a in report.artifacts}
    pool.sort(key=lambda a: measured[a].p50_ms)
    fastest = measured[pool[0]]
    tied = [a for a in pool if _within_noise(fastest, measured[a])]
    lines = [_row(a, measured.get(a), sizes.get(a), a in passing) for a in candidates]
    # a tie is settled by memory, then size: the candidates that would win it on those are checked first
    for other in sorted(tied[1:], key=lambda a: (_memory(measured[a]), sizes.get(a, 0))):
        lighter = (_memory(measured[other]), sizes.get(other, 0)) < (_memory(fastest), sizes.get(pool[0], 0))
        if slower is None or not lighter:
            continue
        why = slower(pool[0], other)
        if why is None:
            lines.append(f"{other} is not slower than {pool[0]} measured interleaved: the tie stands")
            break
        tied.remove(other)
        lines.append(f"not a tie: {why}")
    winner = min(tied, key=lambda a: (_memory(measured[a]), sizes.get(a, 0), measured[a].p50_ms))
    why = "the fastest" if winner == pool[0] else (
        f"tied within noise with {pool[0]} (p50 {format_value(fastest.p50_ms, 'ms')}) and smaller in "
        f"{'peak memory' if _memory(measured[winner]) < _memory(fastest) else 'file size'}")
    among = "among those meeting every budget" if passing else "no candidate meets every budget"
    lines.append(f"shipped: {winner} — {why} ({among})")
    chosen = replace(report, shipping=(winner,), selection=tuple(lines))
    return replace(chosen, verdicts=tuple(judge(chosen)))


def _within_noise(fastest: Measurement, other: Measurement) -> bool:
    spread = max(fastest.p90_ms - fastest.p50_ms, other.p90_ms - other.p50_ms)
    return other.p50_ms - fastest.p50_ms <= spread


def _memory(m: Measurement) -> float:
    return float("inf") if m.memory_bytes is None else float(m.memory_bytes)


def _row(artifact: str, m: Optional[Measurement], size: Optional[int], passes: bool) -> str:
    if m is None:
        return f"{artifact}: not measured"
    return (f"{artifact}: p50 {format_value(m.p50_ms, 'ms')} (p90 {format_value(m.p90_ms, 'ms')}), peak memory "
            f"{format_value(m.memory_bytes, 'bytes')}, file {format_value(size, 'bytes')}; "
            f"{'meets every budget' if passes else 'misses a budget'}")
