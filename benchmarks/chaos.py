"""Chaos run of the whole local pipeline: uploads under a seeded schedule of AWS faults, then the promise's
invariants (a gate: exits 1 when any fails).

    .venv/bin/python benchmarks/chaos.py --uploads 60 --seed 1 --faults all
    .venv/bin/python benchmarks/chaos.py --uploads 30 --seed 2 --faults kill,sns --log out/chaos.log

`--faults`: `all`, or fault names and families, comma-separated (`--list` shows them). Prints per fault
how often it was injected and how often it hit, duplicate notifications per 1000 uploads, time from upload
to first notification (p50/p99) with and without a fault aimed at the upload, and each invariant with what
it checked and its violations.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from local_stack.faults.catalogue import FAULTS, TIME_SCALE, resolve
from local_stack.faults.invariants import duplicates
from local_stack.faults.runner import ChaosConfig, ChaosResult, run

MAX_LISTED_VIOLATIONS = 12


def pct(values: list[float], q: float) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]:.1f} s"


def report(result: ChaosResult) -> str:
    c, h = result.config, result.history
    settled = "settled" if result.settled else f"NOT settled ({result.unsettled})"
    lines = [f"Chaos run: {c.uploads} uploads ({len(h.versions)} object versions, {c.poison_images} poison), "
             f"seed {c.seed}, {c.workers} workers, {settled} after "
             f"{result.seconds:.0f} s (logs: {result.log_path})",
             f"Time: AWS's minutes x{TIME_SCALE:.4g} (spot warning {c.timing.spot_warning_seconds:g} s); work "
             f"visibility {c.work_visibility_seconds} s, worker idle {c.worker_idle_seconds} s, start grace "
             f"{c.worker_start_grace_seconds} s, scaler every {c.scaler_interval_seconds:g} s, intake timeout "
             f"{c.timing.intake_timeout_seconds:g} s", "",
             "| fault | family | injected | hit |", "|---|---|---|---|"]
    injected, hit = Counter[str](), Counter[str]()
    for armed in result.armed:
        injected[armed.fault] += 1
        hit[armed.fault] += 1 if armed.hits else 0
    for name in c.faults:
        lines.append(f"| {name} | {FAULTS[name].family} | {injected[name]} | {hit[name]} |")
    dupes = duplicates(h)
    per_thousand = 1000 * dupes / max(1, len(h.versions))
    lines += ["", "| measure | value |", "|---|---|",
              f"| duplicate notifications (identical copies) per 1000 uploads | {per_thousand:.1f} ({dupes}) |",
              f"| time to terminal p50 / p99, no fault aimed at it ({len(result.latency_clean)}) | "
              f"{pct(result.latency_clean, .5)} / {pct(result.latency_clean, .99)} |",
              f"| time to terminal p50 / p99, a fault aimed at it ({len(result.latency_faulted)}) | "
              f"{pct(result.latency_faulted, .5)} / {pct(result.latency_faulted, .99)} |",
              "", "| # | invariant | checked | violations |", "|---|---|---|---|"]
    lines += [f"| {v.number} | {v.statement} | {v.checked} | {len(v.violations)} |" for v in result.verdicts]
    for v in result.verdicts:
        for text in v.violations[:MAX_LISTED_VIOLATIONS]:
            lines.append(f"  {v.number}. {text}")
        if len(v.violations) > MAX_LISTED_VIOLATIONS:
            lines.append(f"  {v.number}. ... and {len(v.violations) - MAX_LISTED_VIOLATIONS} more")
    lines.append("\nOK: every invariant holds" if result.ok else "\nFAILED: invariants broken (above)")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--uploads", type=int, default=60)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--faults", default="all", help="all, or fault names and families, comma-separated")
    parser.add_argument("--rate", type=float, default=0.2, help="faults per healthy upload")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--settle-timeout", type=float, default=ChaosConfig.settle_timeout_seconds,
                        help="seconds after the last upload")
    parser.add_argument("--log", type=Path, default=None, help="every process's logs (default: a temp file)")
    parser.add_argument("--list", action="store_true", help="list the faults and exit")
    args = parser.parse_args()
    if args.list:
        for fault in FAULTS.values():
            print(f"{fault.name:22} {fault.family:9} {fault.aws}")
        return 0
    try:
        faults = resolve(args.faults)
    except ValueError as exc:
        parser.error(str(exc))
    if args.log:
        args.log.parent.mkdir(parents=True, exist_ok=True)
    result = run(ChaosConfig(uploads=args.uploads, seed=args.seed, faults=faults, rate=args.rate,
                             workers=args.workers, settle_timeout_seconds=args.settle_timeout, log_path=args.log))
    print(report(result))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
