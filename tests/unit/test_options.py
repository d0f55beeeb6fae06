"""``engine.cli.options``: every flag two commands share is declared once and means the same on each.

Built from the real ``dklb`` parser: the shared flags' strings occur once under ``engine/``;
``run``, ``inspect`` and ``pools`` take the same EdgeLB flags (the bare
``--edgelb-insecure-skip-tls-verify`` included); ``plan`` takes ``run``'s names and keeps its
old spellings; no command accepts an abbreviated flag; ``DKLB_<FLAG>`` sets a configuration flag
of every command, and a bad value names its variable. ``run`` takes every flag of the Go dklb's
``cmd/main.go`` with the values Go took (logrus levels, a bare bool, a failure policy in any case,
feature gates), spelt with one dash or two, and says in its help what a Go-only flag does here.
"""

from __future__ import annotations

import argparse
import ast
from collections import Counter
from pathlib import Path

import pytest

from engine import cli
from engine.cli.goflags import GO_BINARY, GO_FLAGS, go_command_line
from engine.cli.options import UsageError, env_name

pytestmark = pytest.mark.usefixtures("no_dklb_environment")

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
    "--edgelb-allow-insecure-http",
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


def test_a_misspelt_token_flag_is_refused_and_the_go_token_flag_is_a_token_not_a_file(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # argparse's default would take an abbreviation for --edgelb-bearer-token-file, and a secret
    # would then name a file that cannot be read, in a Warning Event on every Service.
    with pytest.raises(SystemExit) as exited:
        parse("run", "--edgelb-bearer-tok", "SECRET-TOKEN")
    assert exited.value.code == 2
    assert "unrecognized arguments: --edgelb-bearer-tok" in capsys.readouterr().err
    args = parse("run", "--edgelb-bearer-token", "SECRET-TOKEN")
    assert args.edgelb_bearer_token_file is None
    assert args.edgelb_bearer_token.reveal() == "SECRET-TOKEN"


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


# ---- the Go dklb's command line (cmd/main.go of v1.0.1) --------------------------------------------


def go_parse(*argv: str) -> argparse.Namespace:
    """As ``dklb`` parses a command line: through ``go_command_line`` first."""
    line = go_command_line(argv)
    return cli.build_parser([line[0]]).parse_args(line)


def test_run_takes_every_flag_of_the_go_dklb() -> None:
    assert {f"--{name}" for name in GO_FLAGS} <= flags("run") | {"--help"}


@pytest.mark.parametrize(
    ("argv", "attribute", "expected"),
    [
        # Go's bool flag: bare is true, =false/=f/=0 false (Go's strconv.ParseBool spellings).
        (["--edgelb-insecure-skip-tls-verify"], "edgelb_insecure_skip_tls_verify", True),
        (["-edgelb-insecure-skip-tls-verify"], "edgelb_insecure_skip_tls_verify", True),
        (["-edgelb-insecure-skip-tls-verify=false"], "edgelb_insecure_skip_tls_verify", False),
        (["--edgelb-insecure-skip-tls-verify=F"], "edgelb_insecure_skip_tls_verify", False),
        (["--edgelb-insecure-skip-tls-verify=T"], "edgelb_insecure_skip_tls_verify", True),
        (["--edgelb-insecure-skip-tls-verify=0"], "edgelb_insecure_skip_tls_verify", False),
        # Single dash, with a separate value or "=".
        (["-pod-name", "dklb-7f9c"], "pod_name", "dklb-7f9c"),
        (["-pod-namespace=kube-system"], "pod_namespace", "kube-system"),
        (["-kubeconfig", "/k/config"], "kubeconfig", "/k/config"),
        (
            ["-kubernetes-cluster-framework-name=dev/kube01"],
            "kubernetes_cluster_framework_name",
            "dev/kube01",
        ),
        (["-edgelb-default-pool-size", "3"], "edgelb_default_pool_size", 3),
        (["-edgelb-pool-group", "dcos-edgelb/pools"], "edgelb_pool_group", "dcos-edgelb/pools"),
        (["-edgelb-host=api.edgelb"], "edgelb_host", "api.edgelb"),
        (["-edgelb-scheme", "https"], "edgelb_scheme", "https"),
        (["-edgelb-path", "/"], "edgelb_path", "/"),
        (["-resync-period", "2m"], "resync_period", 120.0),
        (["--resync-period=1m30s"], "resync_period", 90.0),
        (["-admission-tls-cert-file", "/tls/tls.crt"], "admission_tls_cert_file", "/tls/tls.crt"),
        (["-admission-tls-private-key-file=/tls/k"], "admission_tls_private_key_file", "/tls/k"),
        (["-admission-tls-ca-bundle", "Q0E="], "admission_tls_ca_bundle", "Q0E="),
        # logrus' level names, any case.
        (["--log-level", "trace"], "log_level", "debug"),
        (["--log-level", "debug"], "log_level", "debug"),
        (["-log-level=INFO"], "log_level", "info"),
        (["--log-level", "warn"], "log_level", "warning"),
        (["--log-level", "Warning"], "log_level", "warning"),
        (["--log-level", "error"], "log_level", "error"),
        (["--log-level", "fatal"], "log_level", "critical"),
        (["--log-level", "panic"], "log_level", "critical"),
        ([], "log_level", "info"),
        # The failure policy in any case; anything else is left for the admission plan to name.
        (["--admission-failure-policy", "ignore"], "admission_failure_policy", "Ignore"),
        (["-admission-failure-policy=FAIL"], "admission_failure_policy", "Fail"),
        (["--admission-failure-policy", "fail"], "admission_failure_policy", "Fail"),
        (["--admission-failure-policy", "Ignore"], "admission_failure_policy", "Ignore"),
        (["--admission-failure-policy", "sometimes"], "admission_failure_policy", "sometimes"),
        ([], "admission_failure_policy", "Ignore"),
        # Go's feature gates: KEY=BOOL pairs, blanks ignored.
        (
            ["--feature-gates", "ServeAdmissionWebhook=false, RegisterAdmissionWebhook=T"],
            "feature_gates",
            {"ServeAdmissionWebhook": False, "RegisterAdmissionWebhook": True},
        ),
        (["-feature-gates=,ServeAdmissionWebhook=1,"], "feature_gates", {"ServeAdmissionWebhook": True}),
        (["--feature-gates", ""], "feature_gates", {}),
        ([], "feature_gates", None),
        (["--load-balancer-class", "example.com/edgelb"], "load_balancer_class", "example.com/edgelb"),
        ([], "load_balancer_class", None),
    ],
)
def test_the_go_dklb_flags_parse(argv: list[str], attribute: str, expected: object) -> None:
    assert getattr(go_parse("run", *argv), attribute) == expected
    assert getattr(go_parse(GO_BINARY, *argv), attribute) == expected


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--log-level", "verbose"], "argument --log-level: 'verbose' is not a log level"),
        (["--feature-gates", "Ingress=true"], "'Ingress' is not a feature gate"),
        (["--feature-gates", "ServeAdmissionWebhook"], "'ServeAdmissionWebhook' is not a KEY=VALUE pair"),
        (
            ["--feature-gates", "ServeAdmissionWebhook=maybe"],
            "ServeAdmissionWebhook: 'maybe' is not a boolean",
        ),
        (
            ["--kubernetes-cluster-framework-name", ""],
            "argument --kubernetes-cluster-framework-name: must not",
        ),
        (["--load-balancer-class", " "], "argument --load-balancer-class: must not be empty"),
        (["-edgelb-insecure-skip-tls-verify=maybe"], "'maybe' is not a boolean"),
    ],
)
def test_a_bad_go_flag_value_is_refused_naming_flag_and_value(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        go_parse("run", *argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_a_bad_feature_gate_variable_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DKLB_FEATURE_GATES", "Ingress=true")
    with pytest.raises(UsageError, match="DKLB_FEATURE_GATES: 'Ingress' is not a feature gate"):
        parse("run")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        # The Go Deployment's args under our ENTRYPOINT: /dklb is run.
        (["/dklb", "--pod-name", "p"], ["run", "--pod-name", "p"]),
        (["/dklb", "-pod-name", "p", "-log-level=debug"], ["run", "--pod-name", "p", "--log-level=debug"]),
        (["run", "-edgelb-insecure-skip-tls-verify"], ["run", "--edgelb-insecure-skip-tls-verify"]),
        (["run", "-help"], ["run", "--help"]),
        # Only Go's own flag names, only before "--", only in run.
        (["run", "-database", "x"], ["run", "-database", "x"]),
        (["run", "-p"], ["run", "-p"]),
        (["run", "--", "-pod-name"], ["run", "--", "-pod-name"]),
        (["inspect", "-pod-name", "p"], ["inspect", "-pod-name", "p"]),
        (["-pod-name", "p"], ["-pod-name", "p"]),
        (["dklb", "run"], ["dklb", "run"]),
        ([], []),
    ],
)
def test_go_command_line_rewrites_only_the_go_spellings(argv: list[str], expected: list[str]) -> None:
    assert go_command_line(argv) == expected


def test_a_go_only_flag_says_in_its_help_what_it_does_here() -> None:
    helps = {o: a.help or "" for a in subparser("run")._actions for o in a.option_strings}
    assert "the Lease's namespace" in helps["--pod-namespace"]
    assert "accepted and ignored" in helps["--pod-name"]
    assert "serves the admission webhook on 0.0.0.0:8443" in helps["--feature-gates"]
    assert "registers it" in helps["--feature-gates"]
    assert "--admission-ca-bundle-file, given inline" in helps["--admission-tls-ca-bundle"]
    assert "prefer --edgelb-bearer-token-file" in helps["--edgelb-bearer-token"]
    # Defaults that differ from Go's say so.
    assert "the Go dklb's was 2m" in helps["--resync-period"]
    assert "the Go dklb required it" in helps["--kubernetes-cluster-framework-name"]
    assert "trace (= debug)" in helps["--log-level"]
