"""The fault plan from a seed, and fault names and families as `--faults` takes them."""

from __future__ import annotations

import pytest

from local_stack.faults.catalogue import FAMILIES, FAULTS, resolve
from local_stack.faults.schedule import plan


def test_the_same_seed_gives_the_same_plan_and_another_seed_another() -> None:
    faults = tuple(FAULTS)
    assert plan(7, 200, faults, killers=3) == plan(7, 200, faults, killers=3)
    assert plan(7, 200, faults, killers=3) != plan(8, 200, faults, killers=3)


def test_about_one_fault_per_five_healthy_uploads_and_poison_images_get_none() -> None:
    planned = plan(1, 2000, tuple(FAULTS), killers=10)
    killers = [p for p in planned if p.killer]
    faulted = [p for p in planned if p.fault]
    assert len(killers) == 10 and not any(p.fault for p in killers)
    assert 0.17 < len(faulted) / (2000 - 10) < 0.23
    assert {p.fault for p in faulted} == set(FAULTS)  # every fault is drawn
    for p in faulted:  # each variant is one of the fault's own
        assert set(p.params) == set(FAULTS[str(p.fault)].variants)
        assert all(p.params[k] in FAULTS[str(p.fault)].variants[k] for k in p.params)
    assert all(24 <= p.size[0] <= 64 and 24 <= p.size[1] <= 64 and p.gap_seconds >= 0 for p in planned)


def test_only_the_chosen_faults_are_drawn() -> None:
    planned = plan(3, 300, ("kill-inference", "spot-reclaim"), rate=0.5, killers=0)
    assert {p.fault for p in planned if p.fault} == {"kill-inference", "spot-reclaim"}
    assert not any(p.fault for p in plan(3, 50, (), killers=1))


def test_bad_plans_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown faults"):
        plan(1, 10, ("no-such-fault",))
    with pytest.raises(ValueError, match="killers"):
        plan(1, 2, (), killers=3)


def test_resolve_takes_all_families_and_names_in_order_without_repeats() -> None:
    assert resolve("all") == tuple(FAULTS)
    assert resolve("kill") == FAMILIES["kill"] and len(FAMILIES["kill"]) == 5
    assert resolve("sns,kill-inference,sns-slow-publish") == (*FAMILIES["sns"], "kill-inference")
    with pytest.raises(ValueError, match="unknown fault or family 'nope'"):
        resolve("kill,nope")
