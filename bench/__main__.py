"""``./dev bench`` (``python -m bench``): every benchmark of issue 6 in one run, side by side.

Where it sits: runs ``bench.store_bench`` (no servers), then ``bench.scenarios.suite`` for dklb
and for the Go dklb's algorithm (``bench.baseline``) at each size, the shared-pool scenario for
both, and dklb alone at the idle size (the CPU a hostile annotation costs, ``bench.hostile_bench``,
first: it takes a second); each on fresh servers in a work directory. Writes
``OUT/latest.json`` (every figure, the options, the machine) and ``OUT/latest.md`` (the table the
README quotes) and prints the markdown. Exit status 0 whether or not targets are met: it is a
benchmark; the table says what was met.

    ./dev bench                         # 100 and 1,000 Services, shared 200, idle 5,000 (~20 min)
    ./dev bench --quick                 # a smoke run: 40 Services, short resyncs (~3 min)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import hostile_bench, report, scenarios, store_bench

HERE = Path(__file__).resolve().parent


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,1000", help="burst sizes run by both controllers")
    parser.add_argument("--idle-services", type=int, default=5000, help="dklb alone: burst + idle + RSS")
    parser.add_argument("--shared-services", type=int, default=200, help="Services in pools of 10")
    parser.add_argument("--metadata-delay", default="2s", help="local EdgeLB metadata delay")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="where latest.json/.md go")
    parser.add_argument("--work", type=Path, default=None, help="keep the servers' files here")
    parser.add_argument("--quick", action="store_true", help="small sizes and short resyncs (smoke run)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    options = scenarios.Options(metadata_delay=args.metadata_delay)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    idle_n, shared_n, transitions = args.idle_services, args.shared_services, 5000
    if args.quick:
        options = scenarios.Options(
            metadata_delay="1s", dklb_resync="5s", baseline_resync="10s", idle_periods=2, timeout=300
        )
        sizes, idle_n, shared_n, transitions = [40], 0, 40, 2000
    base = "/dev/shm" if Path("/dev/shm").is_dir() else None
    work = args.work or Path(tempfile.mkdtemp(prefix="dklb-bench-", dir=base))
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "system": platform.platform(),
        },
        "options": vars(options),
        "suites": [],
        "shared": [],
    }

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    out = args.out / "quick" if args.quick else args.out  # a smoke run never replaces the real figures
    out.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        # After every suite: a failure late in a long run keeps what was measured before it.
        results["targets"] = report.targets(results)
        (out / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
        (out / "latest.md").write_text(report.markdown(results))

    try:
        say("hostile annotations: CPU per refusal ...")
        results["hostile"] = hostile_bench.run(runs=5 if args.quick else 20)
        save()
        say("store: transitions per second vs raw sqlite3 ...")
        results["store"] = store_bench.run(work / "store", transitions=transitions)
        save()
        for n in sizes:
            for mode in ("dklb", "baseline"):
                say(f"{mode}: {n} Services (burst, restart, churn, idle) ...")
                results["suites"].append(scenarios.suite(mode, n, work / f"{mode}-{n}", options))
                save()
        for mode in ("dklb", "baseline"):
            say(f"{mode}: {shared_n} Services in shared pools ...")
            results["shared"].append(scenarios.shared(mode, shared_n, work / f"{mode}-shared", options))
            save()
        if idle_n:
            say(f"dklb: {idle_n} Services (burst, restart, idle) ...")
            results["suites"].append(
                scenarios.suite("dklb", idle_n, work / f"dklb-{idle_n}", options, churn=False)
            )
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    save()
    print(report.markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
