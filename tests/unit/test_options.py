"""``engine.cli.options``: every flag two commands share is declared once and means the same on each.

Built from the real ``dklb`` parser: the shared flags' strings occur once under ``engine/``;
``run``, ``inspect`` and ``pools`` take the same EdgeLB flags (the bare
``--edgelb-insecure-skip-tls-verify`` included); ``plan`` takes ``run``'s names and keeps its
old spellings; no command accepts an abbreviated flag; ``DKLB_<FLAG>`` sets a configuration flag
of every command, and a bad value names its variable.
"""

from __future__ import annotations

import argparse
import ast
import os
from collections import Counter
from pathlib import Path

import pytest

from engine import cli
from engine.cli.options import UsageError, env_name

REPO = Path(__file__).resolve().parents[2]
EDGELB_FLAGS = {
    "--edgelb-url",
    "--edgelb-host",
    "--edgelb-scheme",
    "--edgelb-path",
    "--edgelb-bearer-token-file",
    "--edgelb-service-account-secret-file",
    "--edgelb-ca-bundle",
    "--edgelb-insecure-skip-tls-verify",
    "--edgelb-request-timeout",
}
# The stand-ins' own command is theirs to shape.
PRODUCT_COMMANDS = [c for c in cli.COMMANDS if c != "edgelb-local"]


def subparser(command: str) -> argparse.ArgumentParser:
    parser = cli.build_parser([command])
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    chosen: argparse.ArgumentParser = sub.choices[command]
    return chosen


def flags(command: str) -> set[str]:
    return {o for a in subparser(command)._actions for o in a.option_strings if o.startswith("--")} - {
        "--help"
    }


def parse(*argv: str) -> argparse.Namespace:
    return cli.build_parser([argv[0]]).parse_args(list(argv))


@pytest.fixture(autouse=True)
def _no_ambient_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("DKLB_")]:
        monkeypatch.delenv(name)


def test_a_flag_shared_by_two_commands_is_declared_once_under_engine() -> None:
    used = Counter(flag for command in PRODUCT_COMMANDS for flag in flags(command))
    shared = {flag for flag, commands in used.items() if commands > 1}
    assert {"--database", "--kubernetes-cluster-framework-name", *EDGELB_FLAGS} <= shared
    literals: Counter[str] = Counter()
    for path in (REPO / "engine").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in shared:
                literals[node.value] += 1
    assert {flag: literals[flag] for flag in shared} == dict.fromkeys(shared, 1)


def test_run_inspect_and_pools_take_the_same_edgelb_flags() -> None:
    for command in ("run", "inspect", "pools"):
        assert {f for f in flags(command) if f.startswith("--edgelb-") and f in EDGELB_FLAGS} == EDGELB_FLAGS
    for argv in (["run"], ["inspect"], ["pools"]):
        assert parse(*argv, "--edgelb-insecure-skip-tls-verify").edgelb_insecure_skip_tls_verify is True
        assert (
            parse(*argv, "--edgelb-insecure-skip-tls-verify=false").edgelb_insecure_skip_tls_verify is False
        )
        assert parse(*argv).edgelb_insecure_skip_tls_verify is False
        assert parse(*argv, "--edgelb-request-timeout", "1500ms").edgelb_request_timeout == 1.5
    # Deliberately different defaults: the controller reads EdgeLB where DC/OS runs it, the
    # operator commands only when told to.
    assert parse("run").edgelb_host == "api.edgelb.marathon.l4lb.thisdcos.directory"
    assert parse("inspect").edgelb_host is None
    assert (parse("run").edgelb_request_timeout, parse("inspect").edgelb_request_timeout) == (4.0, 10.0)


@pytest.mark.parametrize("command", PRODUCT_COMMANDS)
def test_no_command_takes_an_abbreviated_flag(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    longest = max(flags(command) or {"--help"}, key=len)
    required = {"plan": ["-f", "svc.yaml"], "migrate": ["--database", "d.db"], "retry": ["default/a"]}
    with pytest.raises(SystemExit) as exited:
        parse(command, *required.get(command, []), longest[:-2], "x")
    assert exited.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err


def test_a_token_given_to_a_misspelt_token_file_flag_is_refused_not_read(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # argparse's default would take --edgelb-bearer-token for --edgelb-bearer-token-file, and the
    # secret then names a file that cannot be read, in a Warning Event on every Service.
    with pytest.raises(SystemExit) as exited:
        cli.main(["run", "--edgelb-bearer-token", "SECRET-TOKEN"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments: --edgelb-bearer-token SECRET-TOKEN" in err


def test_plan_takes_the_names_of_run_and_keeps_its_old_spellings() -> None:
    new = parse(
        "plan",
        "-f",
        "svc.yaml",
        "--kubernetes-cluster-framework-name",
        "/dev/k",
        "--edgelb-pool-group",
        "g",
        "--edgelb-default-pool-size",
        "3",
    )
    old = parse(
        "plan", "-f", "svc.yaml", "--cluster-name", "/dev/k", "--pool-group", "g", "--default-pool-size", "3"
    )
    for args in (new, old):
        assert (
            args.kubernetes_cluster_framework_name,
            args.edgelb_pool_group,
            args.edgelb_default_pool_size,
        ) == (
            "/dev/k",
            "g",
            3,
        )


@pytest.mark.parametrize(
    ("command", "flag", "value", "attribute", "expected"),
    [
        ("run", "--edgelb-url", "http://e:1", "edgelb_url", "http://e:1"),
        ("inspect", "--edgelb-url", "http://e:1", "edgelb_url", "http://e:1"),
        ("pools", "--edgelb-insecure-skip-tls-verify", "true", "edgelb_insecure_skip_tls_verify", True),
        ("run", "--edgelb-insecure-skip-tls-verify", "yes", "edgelb_insecure_skip_tls_verify", True),
        ("history", "--database", "/x/dklb.db", "database", "/x/dklb.db"),
        ("migrate", "--database", "/x/dklb.db", "database", "/x/dklb.db"),
        (
            "plan",
            "--kubernetes-cluster-framework-name",
            "/dev/k",
            "kubernetes_cluster_framework_name",
            "/dev/k",
        ),
        ("plan", "--edgelb-default-pool-size", "2", "edgelb_default_pool_size", 2),
        ("run", "--resync-period", "2m", "resync_period", 120.0),
        ("run", "--leader-elect", "false", "leader_elect", False),
    ],
)
def test_a_configuration_flag_of_any_command_can_come_from_its_variable(
    monkeypatch: pytest.MonkeyPatch, command: str, flag: str, value: str, attribute: str, expected: object
) -> None:
    monkeypatch.setenv(env_name(flag), value)
    argv = [command, *(["-f", "svc.yaml"] if command == "plan" else [])]
    assert getattr(parse(*argv), attribute) == expected


def test_a_bad_variable_is_an_error_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DKLB_EDGELB_REQUEST_TIMEOUT", "soon")
    with pytest.raises(UsageError, match="DKLB_EDGELB_REQUEST_TIMEOUT: 'soon' is not a valid duration"):
        parse("inspect")
    assert cli.main(["inspect"]) == 1
    assert capsys.readouterr().err.startswith("error: DKLB_EDGELB_REQUEST_TIMEOUT: ")
    monkeypatch.setenv("DKLB_EDGELB_REQUEST_TIMEOUT", "1s")
    monkeypatch.setenv("DKLB_BACKEND_MODE", "nodes")
    with pytest.raises(UsageError, match="DKLB_BACKEND_MODE: 'nodes' is not one of mesos, address"):
        parse("run")
    # Another command is not concerned: only the command that runs reads its variables.
    assert parse("lifecycle").output == "mermaid"


def test_a_query_flag_never_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DKLB_OUTPUT", "json")
    monkeypatch.setenv("DKLB_STATE", "Ready")
    args = parse("inspect")
    assert (args.output, args.state) == ("table", None)
