"""Ratios between two series of interleaved runs (used by bench/server, bench/backends, bench/million).

Each benchmark runs its rounds one after the other, and within a round the things it compares run
back to back. This machine's speed drifts by a quarter or more over minutes, far more than within a
round, so the ratio a target is judged by is the median of the rounds' own ratios: a slow or fast
stretch of the machine moves both runs of a round, not the ratio. The ratio of the two medians is
shown next to it; it mixes runs from different rounds, so drift leaks into it.
"""
import statistics


class Paired:
    """The rounds' ratios `a[i] / b[i]` of two series of runs taken in the same rounds."""

    def __init__(self, a, b):
        a, b = list(a), list(b)
        if len(a) != len(b) or not a:
            raise ValueError(f"paired ratios need two series of the same rounds (got {len(a)} and {len(b)} runs)")
        self.rounds = [x / y for x, y in zip(a, b) if y]
        if not self.rounds:
            raise ValueError("paired ratios: every run of the second series measured 0")
        self.of_medians = statistics.median(a) / statistics.median(b) if statistics.median(b) else float("nan")

    @property
    def median(self):
        """The median of the rounds' ratios: what targets are judged by."""
        return statistics.median(self.rounds)

    def describe(self, fmt):
        """`58% (rounds 53%–65%; ratio of medians 59%)`, with `fmt` formatting one ratio."""
        if len(self.rounds) == 1:
            return fmt(self.median)
        return (f"{fmt(self.median)} (rounds {fmt(min(self.rounds))}–{fmt(max(self.rounds))}; "
                f"ratio of medians {fmt(self.of_medians)})")


def percent(r):
    return f"{r:.0%}"


def times(r):
    return f"{r:.0f}×"
