"""A run's plan from a seed: which uploads are poison images, which get which fault (with which variant),
each image's size, and the pause before each upload. The same seed and arguments give the same plan."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from local_stack.faults.catalogue import FAULTS


@dataclass(frozen=True, slots=True)
class PlannedUpload:
    index: int
    size: tuple[int, int]  # width, height of the image
    gap_seconds: float  # pause before this upload
    killer: bool = False  # a poison image (kills every worker that tries it)
    fault: str | None = None
    params: dict[str, str | int] = field(default_factory=dict)


def plan(seed: int, uploads: int, faults: Sequence[str], *, rate: float = 0.2, killers: int = 1,
         mean_gap_seconds: float = 0.5, sizes: tuple[int, int] = (24, 64)) -> list[PlannedUpload]:
    """`uploads` uploads; about `rate` of the healthy ones get one of `faults` (uniformly); `killers` are poison."""
    unknown = [f for f in faults if f not in FAULTS]
    if unknown:
        raise ValueError(f"unknown faults: {unknown}")
    if not 0 <= killers <= uploads:
        raise ValueError("killers must be within 0..uploads")
    rng = random.Random(seed)
    poison = set(rng.sample(range(uploads), killers))
    planned = []
    for index in range(uploads):
        size = (rng.randint(*sizes), rng.randint(*sizes))
        gap = round(rng.expovariate(1 / mean_gap_seconds), 3) if mean_gap_seconds > 0 else 0.0
        if index in poison:
            planned.append(PlannedUpload(index, size, gap, killer=True))
            continue
        if faults and rng.random() < rate:
            fault = rng.choice(list(faults))
            planned.append(PlannedUpload(index, size, gap, fault=fault, params=FAULTS[fault].draw(rng)))
        else:
            planned.append(PlannedUpload(index, size, gap))
    return planned
