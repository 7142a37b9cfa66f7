"""Grid tables: per-cell means with t-intervals over seeds, and paired differences.

A *cell* is (policy, gamma, alpha); its seeds are the replicates. Policies of one
(gamma, alpha, seed) share the data, the generator warm-up and the seed, so differences
between policies are paired by seed.
"""

from __future__ import annotations

import pandas as pd

from experiments.stats import Interval, paired_interval, t_interval

CELL = ["policy", "gamma", "alpha"]
PAIR = ["gamma", "alpha", "seed"]


def cell_intervals(frame: pd.DataFrame, metric: str) -> dict[tuple, Interval]:
    """``(policy, gamma, alpha) -> t-interval of metric over seeds``."""
    return {key: t_interval(group[metric].dropna()) for key, group in frame.groupby(CELL)}


def paired_differences(frame: pd.DataFrame, metric: str, policy: str, reference: str) -> dict[tuple, Interval]:
    """``(gamma, alpha) -> interval of metric(policy) - metric(reference)`` paired by seed
    (seeds that either policy lacks are left out)."""
    wide = frame.pivot_table(index=PAIR, columns="policy", values=metric, aggfunc="first")
    if policy not in wide or reference not in wide:
        return {}
    pairs = wide[[policy, reference]].dropna()
    return {key: paired_interval(group[policy], group[reference])
            for key, group in pairs.groupby(level=["gamma", "alpha"])}


def paired_across(frame: pd.DataFrame, metric: str, policy: str, axis: str, high: float, low: float
                  ) -> dict[float, Interval]:
    """For one policy: ``other axis value -> interval of metric(axis=high) - metric(axis=low)``
    paired by seed (e.g. axis ``gamma``: the same data under strong and no competition)."""
    if high == low:
        return {}
    other = "alpha" if axis == "gamma" else "gamma"
    rows = frame[frame.policy == policy]
    wide = rows.pivot_table(index=[other, "seed"], columns=axis, values=metric, aggfunc="first")
    if high not in wide or low not in wide:
        return {}
    pairs = wide[[high, low]].dropna()
    return {value: paired_interval(group[high], group[low]) for value, group in pairs.groupby(level=other)}


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def section_markers(name: str) -> tuple[str, str]:
    """The comments that bound a generated section of a Markdown file written by another tool."""
    return f"<!-- {name}: generated, do not edit -->", f"<!-- end of {name} -->"


def kept_section(text: str, name: str) -> str:
    """The section ``name`` of ``text`` with its markers (empty where it has none)."""
    begin, end = section_markers(name)
    if begin not in text or end not in text:
        return ""
    return text[text.index(begin):text.index(end) + len(end)]


def with_section(text: str, name: str, body: str) -> str:
    """``text`` with its section ``name`` replaced by ``body`` (appended where it has none)."""
    begin, end = section_markers(name)
    block = f"{begin}\n{body.strip()}\n{end}"
    old = kept_section(text, name)
    return text.replace(old, block) if old else f"{text.rstrip()}\n\n{block}\n"
