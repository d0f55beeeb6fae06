"""Hostile annotations cost little and end in one clear error (security review S4, S5, S9).

Where it sits: the inputs are ``tests.hostile`` (the review's tables); each goes through the
parser (``parse_config``, ``check_service``), the admission webhook's ``review`` and
``dklb plan``, and must give a one-line error naming the field or the problem: never an
exception, an HTTP 500 or a traceback. The pieces that bound the cost are tested beside them:
the size cap, the depth and integer bounds, ``show``, the capped error list and Event message,
the merge-bomb floor of PyYAML, and the orphan sweeper's reading of annotations.
"""

from __future__ import annotations

import importlib.metadata
import json
import random
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench import hostile_bench, report
from engine import cli
from engine.admission.review import review
from engine.kube.recorder import MAX_EVENT_MESSAGE_BYTES, capped_message
from engine.model.checks import check_service
from engine.model.config import show
from engine.model.parse import MAX_ANNOTATION_BYTES, parse_config
from engine.model.report import MAX_MESSAGE_LENGTH, MAX_MESSAGES, capped
from engine.model.services import ANNOTATION
from engine.model.settings import Settings
from engine.model.strict_yaml import LongInteger, load_strict
from engine.runtime.orphans import _pool_named
from tests.hostile import ALL, Hostile, merge_bomb
from tests.unit.test_admission import admission_review

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = "kubernetes-cluster"
SETTINGS = Settings(cluster_name=CLUSTER, default_pool_size=1)
CASES = [pytest.param(h, id=h.id) for h in ALL]
# Bytes a whole rejection may take: MAX_MESSAGES capped errors, "and N more", and the separators.
MAX_REJECTION = (MAX_MESSAGES + 3) * (MAX_MESSAGE_LENGTH + 2)
# A C0/C1 control character, a line or paragraph separator, a bidirectional override.
UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def service(text: str, name: str = "web") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "team-a", "annotations": {ANNOTATION: text}},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080}]},
    }


def admission(obj: dict[str, Any], *, mutate: bool) -> dict[str, Any]:
    document = admission_review("CREATE", obj)
    response: dict[str, Any] = review(document, settings=SETTINGS, mutate=mutate, rng=random.Random(0))[
        "response"
    ]
    return response


def assert_one_clear_error(errors: tuple[str, ...], case: Hostile) -> None:
    assert errors, "refused"
    assert any(case.needle in e for e in errors), errors
    assert len(errors) <= MAX_MESSAGES + 1
    for e in errors:
        assert "\n" not in e and len(e) <= MAX_MESSAGE_LENGTH, e
        assert not UNSAFE.search(e), f"a control character reaches the message: {e!r}"


# --- the parser ----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_a_hostile_annotation_is_one_clear_error_never_an_exception(case: Hostile) -> None:
    """S5 (security review): seven small inputs made parse_config raise (RecursionError,
    ValueError, TypeError); S4/S8: others cost seconds or passed unchecked. Each is now refused
    with an error naming the field or the problem, in a few milliseconds."""
    start = time.process_time()
    result = parse_config(case.text, service_ports=[80], cluster_name=CLUSTER, owner=("team-a", "web"))
    elapsed = time.process_time() - start

    assert result.config is None
    assert_one_clear_error(result.errors, case)
    # A guard against a regression to seconds, not a measurement (bench/hostile_bench.py is).
    assert elapsed < 1.0

    check = check_service(
        service(case.text),
        previous=None,
        cluster_name=CLUSTER,
        default_size=1,
        pool_group=SETTINGS.pool_group,
    )
    assert check.config is None and check.errors == result.errors


def test_an_annotation_over_the_cap_is_refused_before_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    """S4 (security review): 256 KiB cost 8 s of CPU per parse; the size is now checked first."""

    def never(text: str) -> Any:
        raise AssertionError("parsed")

    monkeypatch.setattr("engine.model.parse.load_strict", never)
    text = "name: " + "a" * (MAX_ANNOTATION_BYTES - 5)

    result = parse_config(text, service_ports=[80], cluster_name=CLUSTER)

    assert result.errors == (
        f'the value of "{ANNOTATION}" is {MAX_ANNOTATION_BYTES + 1:,} bytes long: at most '
        f"{MAX_ANNOTATION_BYTES:,} are read (a configuration object is usually under 1 KiB)",
    )


def test_bytes_not_characters_are_counted() -> None:
    fits = "constraints: " + "é" * ((MAX_ANNOTATION_BYTES - 20) // 2)
    assert len(fits) < MAX_ANNOTATION_BYTES < len(fits.encode()) + 2 * len(fits) // 3
    too_long = "constraints: " + "é" * (MAX_ANNOTATION_BYTES // 2)
    assert "bytes long" in parse_config(too_long, service_ports=[80], cluster_name=CLUSTER).errors[0]


def test_a_text_libyaml_refuses_is_never_parsed_again_in_pure_python(monkeypatch: pytest.MonkeyPatch) -> None:
    """S4 (security review): on any libyaml error the annotation was parsed again by PyYAML's
    pure-Python parser (6-8 s for 256 KiB); the message now comes from libyaml's own mark."""
    assert yaml.__with_libyaml__, "the wheels of PyYAML ship libyaml: dklb relies on it"

    def pure_python(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the pure-Python YAML reader was used")

    monkeypatch.setattr(yaml.reader.Reader, "__init__", pure_python)
    result = parse_config("frontends: [1, 2\n", service_ports=[80], cluster_name=CLUSTER)

    assert result.errors == (
        f'failed to parse the value of "{ANNOTATION}" as a configuration object: while parsing a flow '
        "sequence: did not find expected ',' or ']' (at the end of the text)",
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "frontends: [1, 2]\n\t@\n",
            "while scanning for the next token: found character that cannot start any token "
            '(line 2, column 1, at "\\t")',
            id="the character libyaml does not name",
        ),
        pytest.param(
            "name: [a",
            "while parsing a flow sequence: did not find expected ',' or ']' (at the end of the text)",
        ),
        pytest.param("a:\n  b: 1\n c: 2", "did not find expected key (line 3, column 2)"),
    ],
)
def test_libyaml_messages_say_where(text: str, expected: str) -> None:
    result = parse_config(text, service_ports=[80], cluster_name=CLUSTER)
    prefix = f'failed to parse the value of "{ANNOTATION}" as a configuration object: '
    assert result.errors == (prefix + expected,) or result.errors[0].endswith(expected), result.errors


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("size", 2**53),
        ("memory", 2**53),
        ("cpus", 2**53),
        ("size", -(2**53)),
    ],
)
def test_integers_up_to_2_53_pass_the_type_check(field: str, value: int) -> None:
    result = parse_config(f"{field}: {value}", service_ports=[80], cluster_name=CLUSTER)
    assert not any("out of range: integers" in e for e in result.errors), result.errors


def test_an_8_level_merge_bomb_is_refused_fast() -> None:
    """S9 (security review): without PyYAML's merge-key de-duplication (6.0.4), 7 levels took
    6.8 s and each level multiplies that by 9. An 8-level bomb is refused; the figure is in
    bench/hostile_bench.py, this bound only catches a regression to seconds."""
    text = merge_bomb(8)
    start = time.process_time()

    result = parse_config(text, service_ports=[80], cluster_name=CLUSTER)

    assert time.process_time() - start < 2.0
    assert result.config is None and 'strategies: unknown field "k"' in result.errors


def test_pyyaml_is_pinned_to_releases_with_the_merge_key_fix() -> None:
    """S9 (security review): ``PyYAML>=6,<7`` admitted releases without the merge-key fix."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pins = [d for d in pyproject["project"]["dependencies"] if d.lower().startswith("pyyaml")]
    assert pins == ["PyYAML>=6.0.4,<7"]
    installed = tuple(int(p) for p in importlib.metadata.version("PyYAML").split(".")[:3])
    assert installed >= (6, 0, 4)


# --- messages ------------------------------------------------------------------------------------

NESTED: list[Any] = []
_inner = NESTED
for _ in range(5000):
    _inner.append([])
    _inner = _inner[0]
RECURSIVE: list[Any] = []
RECURSIVE.append(RECURSIVE)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (NESTED, "[" * 77 + "..."),
        (RECURSIVE, "[" * 77 + "..."),
        (16**4000, "an integer of 16,001 bits"),
        (LongInteger(5000, negative=False), "an integer of 5,000 digits"),
        ("a" * 200_000, '"' + "a" * 76 + "..."),
        ("tenant\x1b[2J\u202e\x85", '"tenant\\u001b[2J\\u202e\\u0085"'),
        (
            list(range(100_000)),
            "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21...",
        ),
        ({"port": 1, "a b": "true"}, '{port: 1, "a b": "true"}'),
        ({"k": "a\nb"}, '{k: "a\\nb"}'),
        (2**255, str(2**255)),
        (2**256, "an integer of 257 bits"),
    ],
    ids=[
        *("a list 5,000 deep", "a list that holds itself", "16,001 bits", "5,000 digits", "200 KB"),
        *("control characters", "100,000 items", "a mapping", "a newline inside", "2^255", "2^256"),
    ],
)
def test_show_never_recurses_never_raises_and_stays_short(value: Any, expected: str) -> None:
    """S5 (security review): ``_show`` safe_dumped the value: RecursionError on a deep list,
    ValueError on a 4,301-digit integer, and the whole of a huge value before cutting it."""
    shown = show(value)
    assert shown == expected
    assert len(shown) <= 80 and not UNSAFE.search(shown)


def test_an_error_list_is_cut_after_the_first_twenty() -> None:
    """S4 (security review): a 256 KiB ``frontends: [1,1,...]`` made 130,902 errors (5 MB)."""
    messages = [f"frontends[{i}]: 1 is not a mapping" for i in range(1000)] + ["x" * 5000]
    assert capped(messages) == (*messages[:MAX_MESSAGES], f"and {1001 - MAX_MESSAGES:,} more")
    (cut,) = capped(["x" * 5000])
    assert cut.endswith("... (4,600 more characters)") and len(cut) == MAX_MESSAGE_LENGTH


@pytest.mark.parametrize(
    "message", ["a" * 5_000_000, "é" * 2000, "😀" * 1000, "a" * MAX_EVENT_MESSAGE_BYTES, "short"]
)
def test_an_event_message_is_at_most_1_kib(message: str) -> None:
    """S4 (security review): each rejection posted its 5 MB message as a Warning Event."""
    capped_text = capped_message(message)
    size = len(capped_text.encode())
    assert size <= MAX_EVENT_MESSAGE_BYTES
    if len(message.encode()) <= MAX_EVENT_MESSAGE_BYTES:
        assert capped_text == message
    else:
        assert capped_text.endswith(f"... ({len(message.encode()):,} bytes, cut)")
        assert message.startswith(capped_text[: capped_text.rindex("...")])


# --- the webhook and dklb plan -------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_the_webhook_answers_every_hostile_annotation(case: Hostile) -> None:
    """S5 (security review): the live webhook answered HTTP 500 (``ValueError``, ``TypeError:
    unhashable type: 'set'``), which the default failure policy Ignore lets in. Now the mutating
    webhook lets it through unchanged and the validating one refuses it, naming the field."""
    obj = service(case.text)

    mutated = admission(obj, mutate=True)
    validated = admission(obj, mutate=False)

    assert mutated["allowed"] is True and "patch" not in mutated
    assert validated["allowed"] is False and validated["status"]["code"] == 403
    message = validated["status"]["message"]
    assert case.needle in message
    assert len(message.encode()) <= MAX_REJECTION
    json.dumps(validated)  # the answer is serialisable as it is


def test_the_webhook_answers_even_when_checking_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """The last guard: a bug met on some input is an answer (mutating: allowed; validating:
    refused), never an HTTP 500."""

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("boom")

    monkeypatch.setattr("engine.admission.review._check", broken)

    assert admission(service("name: web"), mutate=True)["allowed"] is True
    validated = admission(service("name: web"), mutate=False)
    assert validated["allowed"] is False and "KeyError: 'boom'" in validated["status"]["message"]


def test_check_service_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr("engine.model.checks.parse_config", broken)
    check = check_service(
        service("name: web"),
        previous=None,
        cluster_name=CLUSTER,
        default_size=1,
        pool_group=SETTINGS.pool_group,
    )
    assert check.config is None
    assert check.errors == (
        "the Service's configuration could not be checked (RecursionError: maximum recursion depth "
        "exceeded); this is a bug in dklb",
    )


def manifest(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "svc.yaml"
    path.write_text(yaml.safe_dump(service(text), allow_unicode=True), encoding="utf-8")
    return path


@pytest.mark.parametrize("case", [pytest.param(h, id=h.id) for h in ALL if "surrogate" not in h.id])
def test_dklb_plan_prints_the_error_and_exits_1(
    case: Hostile, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """S5 (security review): ``dklb plan`` printed a Python traceback on these inputs."""
    path = manifest(tmp_path, case.text)

    status = cli.main(["plan", "-f", str(path), "--kubernetes-cluster-framework-name", CLUSTER])

    err = capsys.readouterr().err
    assert status == 1
    assert case.needle in err and "Traceback" not in err


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(h, id=h.id)
        for h in ALL
        if h.id in ("5,000-digit integer", "!!set as a key", "frontends nested 360 deep")
    ],
)
def test_dklb_plan_as_a_command_prints_no_traceback(case: Hostile, tmp_path: Path) -> None:
    path = manifest(tmp_path, case.text)

    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", "plan", "-f", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )

    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and case.needle in done.stderr
    assert done.stderr.count("\n") <= MAX_MESSAGES + 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("kind: Service\nmetadata: " + "[" * 900 + "]" * 900, "metadata is not a mapping"),
        ("kind: Service\nmetadata: {name: a}\nspec: {ports: [1]}", "spec.ports is not a list of mappings"),
        (
            "kind: Service\nmetadata: {name: a}\nx: " + "1" * 5000,
            "is not valid YAML: ValueError: Exceeds the limit",
        ),
        ("kind: Service\nmetadata: {name: a, annotations: [1]}", "metadata.annotations is not a mapping"),
    ],
    ids=["metadata 900 deep", "ports not mappings", "a 5,000-digit integer", "annotations a list"],
)
def test_dklb_plan_refuses_a_hostile_manifest_without_a_traceback(
    text: str, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "svc.yaml"
    path.write_text(text)
    assert cli.main(["plan", "-f", str(path)]) == 1
    assert expected in capsys.readouterr().err


# --- the orphan sweeper --------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_the_orphan_sweeper_reads_annotations_with_the_same_bounded_loader(
    case: Hostile, monkeypatch: pytest.MonkeyPatch
) -> None:
    """S4 (security review): ``_pool_named`` ran the pure-Python ``yaml.safe_load`` over every
    handled Service's annotation: 6.4-7.4 s per 256 KiB annotation per sweep."""

    def pure_python(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the pure-Python YAML reader was used")

    monkeypatch.setattr(yaml.reader.Reader, "__init__", pure_python)
    start = time.process_time()
    assert _pool_named(case.text) is None
    assert time.process_time() - start < 1.0


def test_the_orphan_sweeper_still_reads_a_pool_name() -> None:
    assert _pool_named("name: p1\nsize: 2\n") == "p1"
    assert load_strict("name: p1") == {"name": "p1"}


def test_the_hostile_benchmark_refuses_every_shape_and_reports_its_target() -> None:
    """The benchmark's own check (its figures are not asserted here: bench/hostile_bench.py)."""
    result = hostile_bench.run(runs=1)

    assert all(r["refused"] for r in result["shapes"])
    assert {r["bytes"] for r in result["shapes"]} >= {256 * 1024 - 4}
    (target,) = [t for t in report.targets({"hostile": result}) if "hostile" in t["target"]]
    assert target["value"] is not None and "| 256 KiB: ints" in report.markdown({"hostile": result})


@pytest.mark.parametrize(
    "constraints",
    ["\U0001f600" * 1000, '"\\' * 1000, "é" * 1000, "\u00a0" * 1000, "a " * 1000, "a" * 3000, "\ufeff" * 500],
    ids=["emoji", "quotes and backslashes", "accents", "no-break spaces", "words", "one word", "BOMs"],
)
def test_the_write_back_bound_holds_for_the_worst_strings(constraints: str) -> None:
    """The defaulted object is written only when a cheap bound says it might be too long: the
    bound must hold for every string, however it is escaped and folded."""
    text = yaml.safe_dump({"name": "p", "constraints": constraints, "frontends": [{"servicePort": 80}]})
    result = parse_config(text, service_ports=[80, 81], cluster_name=CLUSTER)
    config = result.config
    assert config is not None, result.errors
    written = len(config.to_annotation().encode())
    assert written <= 12 * (len(constraints) + len("p") + len(config.role)) + 64 * 2 + 512
