"""What a grid preset costs: some of its jobs measured, the whole grid projected.

A preset (``conf/experiment/<name>.yaml``) sweeps ``hydra.sweeper.params``. Its jobs of
one (seed, Dirichlet alpha) group share one federated generator warm-up and one
calibration pilot (both cached by the first job of the group); every job pays its own
rounds. A sweep over part of the preset's grid (``+experiment=<name>`` with some of the
swept keys fixed on the command line) measures the three parts, and the projection is

    hours = groups x (warm-up + pilot) + jobs x rounds

with the medians of the measured jobs: the warm-up and the pilot over the jobs that ran
them, the rounds (wall time minus both) over all jobs. The rounds' time grows with the
images generated; a line fitted through the measured jobs (``rounds = base + seconds per
image x images``) gives the bound where every job of the grid generates at capacity.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from server_app.config import sweep_params
from server_app.sweep import planned_jobs

RAN = 10.0
"""Seconds above which a job trained the generator or ran the pilot (loading the cached
generator or reusing the pilot takes less)."""
GROUP_KEYS = ("seed", "partition.alpha")
"""The swept keys that share a warm-up and a pilot (the data and the seed)."""
PRESET = re.compile(r"\+experiment=(\w+)")


@dataclass(frozen=True)
class PresetCost:
    """A preset's grid size and the measured medians of its jobs' parts (seconds)."""

    preset: str
    jobs: int
    groups: int
    measured: int
    warmup_seconds: float
    pilot_seconds: float
    rounds_seconds: float
    base_seconds: float
    seconds_per_image: float
    capacity_images: float

    @property
    def group_seconds(self) -> float:
        """What a (seed, alpha) group pays once: the warm-up and the pilot."""
        return self.warmup_seconds + self.pilot_seconds

    @property
    def projected_hours(self) -> float:
        """``groups x (warm-up + pilot) + jobs x rounds``, in hours."""
        return (self.groups * self.group_seconds + self.jobs * self.rounds_seconds) / 3600

    @property
    def capacity_rounds_seconds(self) -> float:
        """A job's rounds when every organisation generates its capacity every round (the fitted line)."""
        return self.base_seconds + self.seconds_per_image * self.capacity_images

    @property
    def capacity_hours(self) -> float:
        """The projection with every job at capacity: the grid's most, in hours."""
        return (self.groups * self.group_seconds + self.jobs * self.capacity_rounds_seconds) / 3600


def preset_name(jobs: pd.DataFrame) -> str:
    """The ``+experiment=`` preset every measured job ran (one, or ValueError)."""
    names = {match.group(1) for match in map(PRESET.search, jobs.overrides) if match}
    if len(names) != 1 or not all(PRESET.search(o) for o in jobs.overrides):
        raise ValueError(f"the cost sweep's jobs must all run one +experiment preset, found {sorted(names)}")
    return names.pop()


def preset_grid(preset: str) -> tuple[int, int]:
    """The preset's number of jobs and of (seed, alpha) groups."""
    params = sweep_params(preset)
    groups = {key: value for key, value in params.items() if key in GROUP_KEYS}
    return len(planned_jobs(params, [])), len(planned_jobs(groups, []))


def rounds_seconds(jobs: pd.DataFrame) -> pd.Series:
    """Each job's wall time without its warm-up and pilot."""
    return jobs.wall_seconds - jobs.warmup_seconds - jobs.pilot_seconds


def measure(jobs: pd.DataFrame) -> PresetCost:
    """The preset's cost from measured jobs (a sweep's rows with ``pilot_seconds``); ValueError
    when no job ran the warm-up or the pilot (their cost would be unknown)."""
    jobs = jobs.dropna(subset=["pilot_seconds"])
    warmups, pilots = jobs.warmup_seconds[jobs.warmup_seconds > RAN], jobs.pilot_seconds[jobs.pilot_seconds > RAN]
    if warmups.empty or pilots.empty:
        raise ValueError("no measured job trained the generator and ran the pilot (start the cost sweep on an "
                         "empty cache)")
    if jobs.images_generated.nunique() < 2:
        raise ValueError("the measured jobs must generate different numbers of images (e.g. every policy)")
    preset = preset_name(jobs)
    total, groups = preset_grid(preset)
    rounds = rounds_seconds(jobs)
    slope, base = np.polyfit(jobs.images_generated, rounds, 1)
    return PresetCost(preset=preset, jobs=total, groups=groups, measured=len(jobs),
                      warmup_seconds=float(warmups.median()), pilot_seconds=float(pilots.median()),
                      rounds_seconds=float(rounds.median()), base_seconds=float(base), seconds_per_image=float(slope),
                      capacity_images=float((jobs.organisations * jobs.rounds * jobs.capacity).median()))
