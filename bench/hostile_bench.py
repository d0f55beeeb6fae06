"""Benchmark: what one hostile ``kubernetes.dcos.io/dklb-config`` annotation costs to refuse.

Where it sits: every Service's annotation is parsed by the Pending handler and twice by the
admission webhook (``/mutate``, ``/validate``), so a Service author chooses what dklb spends.
The security review (S4) measured 8 s of CPU for a 256 KiB annotation, through a pure-Python
re-parse. This script measures, in one run and on one machine, the CPU time per refusal of
hostile shapes at 256 KiB (refused by size before parsing) and just under the 16 KiB cap (parsed,
the worst that gets through), beside a normal 1 KiB annotation's parse, and their ratio.

Two paths per shape: ``parse_config`` (what the controller calls) and the webhook's ``review``,
mutating then validating (what the API server waits for). The figure is the median of the CPU
time (``time.process_time``) over ``--runs`` repetitions. A benchmark, not a test: it exits 0 and
says whether each refusal met its 100 ms budget.

    .venv/bin/python -m bench.hostile_bench [--runs 20] [--json]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from engine.admission.review import review
from engine.model.parse import MAX_ANNOTATION_BYTES, parse_config
from engine.model.services import ANNOTATION
from engine.model.settings import Settings

BUDGET_MS = 100.0
BIG = 256 * 1024
CLUSTER = "kubernetes-cluster"
SETTINGS = Settings(cluster_name=CLUSTER, default_pool_size=1)
PORTS = list(range(8000, 8010))


def _ints(size: int) -> str:
    """``frontends: [1,1,...]`` with a tab at the end: every item an error, then a syntax error."""
    return "frontends: [" + ",".join(["1"] * ((size - 20) // 2)) + "]\n\t@\n"


def _deep(size: int) -> str:
    depth = (size - 12) // 2
    return "frontends: " + "[" * depth + "]" * depth


def _block_deep(size: int) -> str:
    lines, total, i = ["frontends:\n"], 11, 0
    while total + i + 2 <= size:
        lines.append(" " * i + "-\n")
        total += i + 2
        i += 1
    return "".join(lines)


def _emoji(size: int) -> str:
    return 'constraints: "' + "\U0001f600" * ((size - 16) // 4) + '"\n'


def merge_bomb(levels: int) -> str:
    lines = ["x0: &x0 {k: 1}"]
    for n in range(1, levels + 1):
        lines.append(f"x{n}: &x{n} {{<<: [{', '.join([f'*x{n - 1}'] * 9)}]}}")
    return "\n".join([*lines, f"strategies: *x{levels}"]) + "\n"


def _laughs() -> str:
    return (
        "a: &a [x, x, x, x, x, x, x, x, x]\n"
        + "".join(
            f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefg", "bcdefgh", strict=True)
        )
        + "name: *h\n"
    )


def normal() -> str:
    """A realistic configuration object of about 1 KiB: every field, ten frontends."""
    frontends = "".join(f"- port: {18000 + i}\n  servicePort: {port}\n" for i, port in enumerate(PORTS))
    text = (
        'name: team-a-web\nrole: slave_public\nnetwork: ""\ncpus: 0.5\nmemory: 512\nsize: 3\n'
        f"frontends:\n{frontends}"
        'constraints: "[[\\"hostname\\", \\"UNIQUE\\"], [\\"zone\\", \\"GROUP_BY\\", \\"3\\"]]"\n'
        "strategies:\n  creation: IfNotPresent\n"
    )
    return text + "# " + "padding to a round kibibyte " * ((1024 - len(text)) // 29) + "\n"


UNDER_CAP = MAX_ANNOTATION_BYTES - 64
SHAPES: list[tuple[str, str]] = [
    ("256 KiB: ints, a syntax error at the end", _ints(BIG)),
    ("256 KiB: flow lists nested 131,000 deep", _deep(BIG)),
    ("256 KiB: block list nested 720 deep", _block_deep(BIG)),
    ("256 KiB: a string of 65,000 emoji", _emoji(BIG)),
    ("16 KiB: 8,000 ints, a syntax error at the end", _ints(UNDER_CAP)),
    ("16 KiB: flow lists nested 8,000 deep", _deep(UNDER_CAP)),
    ("16 KiB: block list nested 178 deep", _block_deep(UNDER_CAP)),
    ("16 KiB: emoji (write-back 40 KB)", _emoji(UNDER_CAP)),
    ("16 KiB: a 16,000-digit integer", "size: " + "1" * (UNDER_CAP - 10)),
    ("merge bomb, 8 levels", merge_bomb(8)),
    ("billion laughs, 8 levels", _laughs()),
]


def _service(text: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "team-a", "annotations": {ANNOTATION: text}},
        "spec": {
            "type": "LoadBalancer",
            "ports": [{"port": p, "protocol": "TCP", "nodePort": 30000 + i} for i, p in enumerate(PORTS)],
        },
    }


def _parse(text: str) -> bool:
    result = parse_config(
        text, service_ports=PORTS, cluster_name=CLUSTER, rng=random.Random(0), owner=("team-a", "web")
    )
    return result.config is None


def _webhook(text: str) -> bool:
    document = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "bench",
            "kind": {"group": "", "version": "v1", "kind": "Service"},
            "operation": "CREATE",
            "object": _service(text),
        },
    }
    review(document, settings=SETTINGS, mutate=True, rng=random.Random(0))
    answer = review(document, settings=SETTINGS, mutate=False, rng=random.Random(0))
    return answer["response"]["allowed"] is False


def cpu_ms(call: Callable[[str], bool], text: str, runs: int) -> tuple[float, bool]:
    """Median CPU milliseconds of ``call(text)`` over ``runs``, and whether it refused."""
    samples, refused = [], False
    for _ in range(runs):
        start = time.process_time()
        refused = call(text)
        samples.append((time.process_time() - start) * 1000)
    return statistics.median(samples), refused


def run(runs: int = 20) -> dict[str, Any]:
    """Every shape's figures, and the normal annotation's, as one JSON-able dict."""
    base = normal()
    base_parse, refused = cpu_ms(_parse, base, runs * 10)
    assert not refused, "the normal annotation is valid"
    base_webhook, _ = cpu_ms(_webhook, base, runs * 10)
    rows = []
    for label, text in SHAPES:
        parse_ms, parse_refused = cpu_ms(_parse, text, runs)
        webhook_ms, webhook_refused = cpu_ms(_webhook, text, runs)
        rows.append(
            {
                "shape": label,
                "bytes": len(text.encode("utf-8")),
                "refused": parse_refused and webhook_refused,
                "parse_ms": round(parse_ms, 3),
                "webhook_ms": round(webhook_ms, 3),
                "parse_ratio": round(parse_ms / base_parse, 1) if base_parse else None,
                "met": parse_refused and webhook_refused and max(parse_ms, webhook_ms) < BUDGET_MS,
            }
        )
    return {
        "budget_ms": BUDGET_MS,
        "runs": runs,
        "normal": {
            "bytes": len(base.encode()),
            "parse_ms": round(base_parse, 3),
            "webhook_ms": round(base_webhook, 3),
        },
        "shapes": rows,
    }


def markdown(result: dict[str, Any]) -> str:
    n = result["normal"]
    lines = [
        f"**Hostile annotations**: CPU per refusal (median of {result['runs']}), beside a normal "
        f"{n['bytes']:,}-byte annotation: parse {n['parse_ms']:.3f} ms, webhook (mutate + validate) "
        f"{n['webhook_ms']:.3f} ms. Budget {result['budget_ms']:g} ms.",
        "",
        "| shape | bytes | refused | parse (ms) | webhook (ms) | parse / normal | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["shapes"]:
        lines.append(
            f"| {r['shape']} | {r['bytes']:,} | {'yes' if r['refused'] else 'NO'} | {r['parse_ms']:.3f} | "
            f"{r['webhook_ms']:.3f} | {r['parse_ratio']}x | {'yes' if r['met'] else 'NO'} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.hostile_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="repetitions per shape (the normal one: 10x)")
    parser.add_argument("--json", action="store_true", help="print the JSON document instead of the table")
    args = parser.parse_args(argv)
    result = run(args.runs)
    print(json.dumps(result, indent=2) if args.json else markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
