"""The Go dklb's Deployment arguments start ``dklb run``, and its Go-only flags mean what they did.

``engine.cli.goflags``: the Go Deployment's ``args`` (docs/deployment/10-deployment.yaml of
mesosphere/dklb v1.0.1, written out below) run through ``dklb``'s own entry point up to the
``AppConfig`` it would run (``engine.app.App`` is replaced by a recorder: no cluster needed), and
``resolve`` maps ``--pod-namespace``, ``--pod-name``, ``--feature-gates`` and
``--admission-tls-ca-bundle`` onto our flags, case by case.
"""

from __future__ import annotations

import argparse
import base64
import logging
import re
import signal
from pathlib import Path
from typing import Any

import pytest

from engine import cli
from engine.admission.certs import generate_self_signed
from engine.admission.plan import admission_plan
from engine.cli import run as run_command
from engine.cli.goflags import GO_WEBHOOK_LISTEN, GO_WEBHOOK_SERVICE, go_command_line, resolve
from engine.cli.options import UsageError
from engine.telemetry.logs import configure_logging, level_name

# The container's args of the Go Deployment, verbatim (comments dropped); the kubelet expands
# $(VAR) from the container's environment.
GO_DEPLOYMENT_ARGS = [
    "/dklb",
    "--admission-tls-ca-bundle",
    "$(CA_BUNDLE)",
    "--admission-tls-cert-file",
    "/tls/tls.crt",
    "--admission-tls-private-key-file",
    "/tls/tls.key",
    "--pod-namespace",
    "$(POD_NAMESPACE)",
    "--pod-name",
    "$(POD_NAME)",
    "--kubernetes-cluster-framework-name",
    "$(CLUSTER_NAME)",
    "--log-level",
    "debug",
    "--edgelb-pool-group",
    "dcos-edgelb/pools",
    "--edgelb-default-pool-size",
    "1",
]


@pytest.fixture(autouse=True)
def _no_ambient_configuration(no_dklb_environment: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POD_NAMESPACE", raising=False)


def kubelet_expand(args: list[str], env: dict[str, str]) -> list[str]:
    return [re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env[m.group(1)], a) for a in args]


class Recorder:
    """Stands in for ``engine.app.App``: keeps the config it was given, runs nothing."""

    configs: list[Any] = []

    def __init__(self, config: Any) -> None:
        Recorder.configs.append(config)

    def run(self) -> int:
        return 0


def test_the_go_deployment_args_start_dklb_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The Secret dklb-tls, mounted at /tls in the Go Deployment, is tmp_path/tls here.
    ca, _, _ = generate_self_signed(tmp_path / "tls", hosts=["dklb.kube-system.svc"])
    env = {
        "CA_BUNDLE": base64.b64encode(ca.read_bytes()).decode(),
        "POD_NAMESPACE": "kube-system",
        "POD_NAME": "dklb-5d8f7c9b6-x2x7k",
        "CLUSTER_NAME": "dev/kube01",
    }
    argv = [a.replace("/tls/", f"{tmp_path}/tls/") for a in kubelet_expand(GO_DEPLOYMENT_ARGS, env)]
    # In a cluster leader election is on by default (the Go dklb always elected).
    monkeypatch.setenv("DKLB_LEADER_ELECT", "true")
    monkeypatch.setenv("DKLB_DATABASE", str(tmp_path / "dklb.db"))
    levels: list[str] = []
    monkeypatch.setattr(run_command, "configure_logging", lambda level, fmt: levels.append(level))
    monkeypatch.setattr(signal, "signal", lambda *_: None)
    monkeypatch.setattr("engine.app.App", Recorder)
    Recorder.configs.clear()
    caplog.set_level(logging.INFO, logger="dklb")

    assert cli.main(argv) == 0

    (config,) = Recorder.configs
    assert levels == ["debug"]
    assert (config.settings.cluster_name, config.settings.pool_group, config.settings.default_pool_size) == (
        "dev/kube01",
        "dcos-edgelb/pools",
        1,
    )
    assert config.settings.load_balancer_class is None
    # Go's defaults for what the args do not set; ours where they differ (documented in --help).
    assert (config.edgelb.host, config.edgelb.scheme, config.edgelb.token_value) == (
        "api.edgelb.marathon.l4lb.thisdcos.directory",
        "http",
        None,
    )
    assert config.settings.resync_period == 300.0
    assert config.leader_election is not None and config.leader_election.namespace == "kube-system"
    plan = config.admission
    assert plan.listen == ("0.0.0.0", 8443)
    assert (plan.cert_file, plan.key_file) == (f"{tmp_path}/tls/tls.crt", f"{tmp_path}/tls/tls.key")
    assert plan.register is True
    assert plan.service == ("kube-system", "dklb", 443)
    assert plan.ca_bundle_file is not None and Path(plan.ca_bundle_file).read_bytes() == ca.read_bytes()
    assert plan.failure_policy == "Ignore"
    notices = [r.getMessage() for r in caplog.records if r.name == "dklb.run"]
    assert (
        sum("--pod-name is accepted for compatibility with the Go dklb and ignored" in n for n in notices)
        == 1
    )
    assert any("serving the admission webhook on 0.0.0.0:8443" in n for n in notices)


def parsed(*argv: str) -> argparse.Namespace:
    line = go_command_line(["run", *argv])
    return cli.build_parser(["run"]).parse_args(line)


CA_PEM = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
CA_B64 = base64.b64encode(CA_PEM).decode()
CERT = ["--admission-tls-cert-file", "/tls/tls.crt", "--admission-tls-private-key-file", "/tls/tls.key"]
# The attributes resolve may change, as they are when nothing changed them.
UNTOUCHED = {
    "leader_elect_namespace": "default",
    "admission_listen": None,
    "admission_tls_cert_file": None,
    "admission_tls_private_key_file": None,
    "register_admission_webhook": False,
    "admission_webhook_service": None,
    "admission_ca_bundle_file": None,
}


@pytest.mark.parametrize(
    ("argv", "environ", "changed", "notices"),
    [
        ([], {}, {}, []),
        ([], {"POD_NAMESPACE": "dklb"}, {"leader_elect_namespace": "dklb"}, []),
        (
            ["--pod-namespace", "kube-system"],
            {"POD_NAMESPACE": "dklb"},
            {"leader_elect_namespace": "kube-system"},
            ["--pod-namespace kube-system: the Lease's namespace"],
        ),
        (
            ["--pod-namespace", "kube-system", "--leader-elect-namespace", "dklb"],
            {},
            {"leader_elect_namespace": "dklb"},
            ["--pod-namespace is ignored: --leader-elect-namespace"],
        ),
        (
            ["--pod-name", "p-1"],
            {},
            {},
            ["--pod-name is accepted for compatibility with the Go dklb and ignored"],
        ),
        # The certificate alone serves, as in Go (ServeAdmissionWebhook defaults to true there).
        (
            CERT,
            {},
            {
                "admission_listen": GO_WEBHOOK_LISTEN,
                "admission_tls_cert_file": "/tls/tls.crt",
                "admission_tls_private_key_file": "/tls/tls.key",
            },
            ["the certificate files (ServeAdmissionWebhook is on in Go): serving the admission webhook"],
        ),
        (
            [*CERT, "--admission-listen", "127.0.0.1:9443"],
            {},
            {
                "admission_listen": "127.0.0.1:9443",
                "admission_tls_cert_file": "/tls/tls.crt",
                "admission_tls_private_key_file": "/tls/tls.key",
            },
            [],
        ),
        (
            [*CERT, "--feature-gates", "ServeAdmissionWebhook=false"],
            {},
            {},
            ["--admission-tls-cert-file and --admission-tls-private-key-file ignored: Serve"],
        ),
        (
            ["--feature-gates", "ServeAdmissionWebhook=true"],
            {},
            {"admission_listen": GO_WEBHOOK_LISTEN},
            ["--feature-gates ServeAdmissionWebhook=true: serving the admission webhook on 0.0.0.0:8443"],
        ),
        # A CA bundle registers, for Go's Service, trusting what it holds.
        (
            ["--admission-tls-ca-bundle", CA_B64],
            {},
            {
                "register_admission_webhook": True,
                "admission_webhook_service": GO_WEBHOOK_SERVICE,
                "admission_ca_bundle_file": "written",
            },
            ["registering the admission webhook", "through the Service kube-system/dklb:443"],
        ),
        (
            ["--admission-tls-ca-bundle", CA_B64, "--admission-webhook-service", "dklb/dklb-webhook:443"],
            {},
            {
                "register_admission_webhook": True,
                "admission_webhook_service": "dklb/dklb-webhook:443",
                "admission_ca_bundle_file": "written",
            },
            ["registering the admission webhook"],
        ),
        (
            ["--admission-tls-ca-bundle", CA_B64, "--feature-gates", "RegisterAdmissionWebhook=false"],
            {},
            {},
            ["--admission-tls-ca-bundle ignored: RegisterAdmissionWebhook=false"],
        ),
        (
            ["--feature-gates", "RegisterAdmissionWebhook=true"],
            {},
            {"register_admission_webhook": True, "admission_webhook_service": GO_WEBHOOK_SERVICE},
            [
                "--feature-gates RegisterAdmissionWebhook=true: registering the admission webhook",
                "through the Service kube-system/dklb:443",
            ],
        ),
    ],
)
def test_resolve_maps_the_go_only_flags_onto_ours(
    argv: list[str], environ: dict[str, str], changed: dict[str, Any], notices: list[str]
) -> None:
    written: list[bytes] = []

    def write_ca(content: bytes) -> str:
        written.append(content)
        return "written"

    args = parsed(*argv)
    got = resolve(args, environ=environ, write_ca=write_ca)
    assert {name: getattr(args, name) for name in UNTOUCHED} == UNTOUCHED | changed
    assert written == ([CA_PEM] if "admission_ca_bundle_file" in changed else [])
    assert len(got) == len(notices)
    for notice, expected in zip(got, notices, strict=True):
        assert expected in notice


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--admission-listen", "0.0.0.0:8443", "--feature-gates", "ServeAdmissionWebhook=false"],
            "--feature-gates ServeAdmissionWebhook=false contradicts --admission-listen",
        ),
        (
            ["--register-admission-webhook", "--feature-gates", "RegisterAdmissionWebhook=false"],
            "--feature-gates RegisterAdmissionWebhook=false contradicts --register-admission-webhook",
        ),
        (
            ["--admission-tls-ca-bundle", CA_B64, "--admission-ca-bundle-file", "/ca.crt"],
            "--admission-tls-ca-bundle and --admission-ca-bundle-file name the same CA",
        ),
        (["--admission-tls-ca-bundle", "not base64!"], "--admission-tls-ca-bundle: the value is not base64"),
        (
            ["--admission-tls-ca-bundle", base64.b64encode(b"hello").decode()],
            "--admission-tls-ca-bundle: the value does not decode to a PEM certificate",
        ),
    ],
)
def test_resolve_refuses_what_contradicts(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        resolve(parsed(*argv), environ={}, write_ca=lambda _: "unused")


def test_the_ca_bundle_of_the_go_flag_is_what_the_admission_plan_registers(tmp_path: Path) -> None:
    ca, cert, key = generate_self_signed(tmp_path, hosts=["dklb.kube-system.svc"])
    args = parsed(
        "--admission-tls-ca-bundle",
        base64.b64encode(ca.read_bytes()).decode(),
        "--admission-tls-cert-file",
        str(cert),
        "--admission-tls-private-key-file",
        str(key),
    )
    resolve(args, environ={})  # the default writer: a temporary file, removed at exit
    plan = admission_plan(args)
    assert plan.ca_bundle_file is not None
    assert Path(plan.ca_bundle_file).read_bytes() == ca.read_bytes()
    assert (plan.listen, plan.register, plan.service) == (
        ("0.0.0.0", 8443),
        True,
        ("kube-system", "dklb", 443),
    )


@pytest.mark.parametrize(
    ("given", "python"),
    [
        ("trace", logging.DEBUG),
        ("debug", logging.DEBUG),
        ("DEBUG", logging.DEBUG),
        ("info", logging.INFO),
        ("warn", logging.WARNING),
        ("Warning", logging.WARNING),
        ("error", logging.ERROR),
        ("fatal", logging.CRITICAL),
        ("panic", logging.CRITICAL),
        ("critical", logging.CRITICAL),
    ],
)
def test_every_logrus_level_sets_the_python_level_it_means(given: str, python: int) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging(level=given)
        assert root.level == python
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)


def test_an_unknown_log_level_names_itself_and_the_choices() -> None:
    with pytest.raises(ValueError, match=r"'verbose' is not a log level \(one of trace, debug, info, warn"):
        level_name("verbose")
