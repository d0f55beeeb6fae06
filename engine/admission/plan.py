"""What the ``--admission-*`` flags of ``dklb run`` ask for, checked together before anything starts.

Where it sits in the data flow: ``engine.cli.run`` declares the flags (plain strings, so that a
mistake is one clear line whether it came from a flag or from its ``DKLB_*`` variable);
``engine.app`` calls ``admission_plan`` on them first thing and refuses to start, naming every
problem at once, when they contradict each other or name an unreadable file. The resulting
``AdmissionPlan`` is what ``engine.admission.webhook`` serves and registers.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from engine.admission.certs import check_ca_file
from engine.admission.register import (
    FAILURE_POLICIES,
    check_url,
    parse_namespace_selector,
    parse_service_reference,
)
from engine.telemetry.serving import parse_listen


class AdmissionFlags(Protocol):
    """The ``--admission-*`` flags as parsed (an ``argparse.Namespace`` has these attributes)."""

    admission_listen: str | None
    admission_tls_cert_file: str | None
    admission_tls_private_key_file: str | None
    admission_self_signed_dir: str | None
    admission_client_ca_file: str | None
    register_admission_webhook: bool
    admission_webhook_name: str
    admission_webhook_url: str | None
    admission_webhook_service: str | None
    admission_ca_bundle_file: str | None
    admission_failure_policy: str
    admission_namespace_selector: str | None


@dataclass(frozen=True)
class AdmissionPlan:
    """What the ``--admission-*`` flags ask for, checked and parsed (``admission_plan``)."""

    listen: tuple[str, int] | None  # None: no webhook server in this process
    cert_file: str | None
    key_file: str | None
    self_signed_dir: str | None
    register: bool
    name: str
    url: str | None
    service: tuple[str, str, int] | None
    ca_bundle_file: str | None
    failure_policy: str
    namespace_selector: dict[str, str] | None
    # Accept only clients (the API server) with a certificate this CA signed; None: any client.
    client_ca_file: str | None = None


class AdmissionFlagError(Exception):
    """The ``--admission-*`` flags contradict each other or name something unusable."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def admission_plan(args: AdmissionFlags) -> AdmissionPlan:
    """The webhook flags parsed and checked together; every problem is reported at once."""
    problems: list[str] = []

    def parse(flag: str, value: str | None, parser: Callable[[str], Any]) -> Any:
        if value is None:
            return None
        try:
            return parser(value)
        except ValueError as exc:
            problems.append(f"{flag}: {exc}")
            return None

    listen = parse("--admission-listen", args.admission_listen, parse_listen)
    url = parse("--admission-webhook-url", args.admission_webhook_url, check_url)
    service = parse("--admission-webhook-service", args.admission_webhook_service, parse_service_reference)
    selector = parse(
        "--admission-namespace-selector", args.admission_namespace_selector, parse_namespace_selector
    )
    problems += _server_problems(args) + _registration_problems(args)
    for flag, value in (
        ("--admission-tls-cert-file", args.admission_tls_cert_file),
        ("--admission-tls-private-key-file", args.admission_tls_private_key_file),
        ("--admission-ca-bundle-file", args.admission_ca_bundle_file),
    ):
        if value is not None and not os.access(value, os.R_OK):
            problems.append(f"{flag}: cannot read {value}")
    client_ca = args.admission_client_ca_file
    if client_ca is not None:
        try:
            check_ca_file(client_ca)
        except ValueError as exc:
            problems.append(f"--admission-client-ca-file: {exc}")
    if problems:
        raise AdmissionFlagError(problems)
    return AdmissionPlan(
        listen=listen,
        cert_file=args.admission_tls_cert_file,
        key_file=args.admission_tls_private_key_file,
        self_signed_dir=args.admission_self_signed_dir,
        register=bool(args.register_admission_webhook),
        name=args.admission_webhook_name,
        url=url,
        service=service,
        ca_bundle_file=args.admission_ca_bundle_file,
        failure_policy=args.admission_failure_policy,
        namespace_selector=selector,
        client_ca_file=client_ca,
    )


def _server_problems(args: AdmissionFlags) -> list[str]:
    """What contradicts in the flags of the webhook server (``--admission-listen`` and its certificate)."""
    problems: list[str] = []
    cert, key = args.admission_tls_cert_file, args.admission_tls_private_key_file
    self_signed = args.admission_self_signed_dir
    serving = args.admission_listen is not None
    if (cert is None) != (key is None):
        problems.append(
            "--admission-tls-cert-file and --admission-tls-private-key-file go together: give both"
        )
    if cert is not None and self_signed is not None:
        problems.append(
            "--admission-self-signed-dir generates the certificate that "
            "--admission-tls-cert-file names: give one or the other"
        )
    if serving and cert is None and key is None and self_signed is None:
        problems.append(
            "--admission-listen needs a certificate: --admission-tls-cert-file and "
            "--admission-tls-private-key-file, or --admission-self-signed-dir"
        )
    if not serving:
        for flag, value in (
            ("--admission-tls-cert-file", cert),
            ("--admission-tls-private-key-file", key),
            ("--admission-self-signed-dir", self_signed),
            ("--admission-client-ca-file", args.admission_client_ca_file),
        ):
            if value is not None:
                problems.append(f"{flag} is for the webhook server, which only --admission-listen starts")
    return problems


def _registration_problems(args: AdmissionFlags) -> list[str]:
    """What contradicts in the flags of the registration (``--register-admission-webhook``)."""
    problems: list[str] = []
    if args.admission_failure_policy not in FAILURE_POLICIES:
        problems.append(
            f"--admission-failure-policy: {args.admission_failure_policy!r} is not one of "
            + ", ".join(FAILURE_POLICIES)
        )
    if args.register_admission_webhook:
        if (args.admission_webhook_url is None) == (args.admission_webhook_service is None):
            problems.append(
                "--register-admission-webhook needs where the API server calls the webhook: "
                "--admission-webhook-url or --admission-webhook-service (exactly one)"
            )
        if args.admission_listen is None and args.admission_ca_bundle_file is None:
            problems.append(
                "--register-admission-webhook for a webhook this process does not serve "
                "(no --admission-listen) needs --admission-ca-bundle-file"
            )
        return problems
    # Almost certainly a forgotten --register-admission-webhook: say so rather than ignore it.
    for flag, value in (
        ("--admission-webhook-url", args.admission_webhook_url),
        ("--admission-webhook-service", args.admission_webhook_service),
        ("--admission-ca-bundle-file", args.admission_ca_bundle_file),
        ("--admission-namespace-selector", args.admission_namespace_selector),
    ):
        if value is not None:
            problems.append(f"{flag} only matters with --register-admission-webhook")
    return problems


def self_signed_hosts(plan: AdmissionPlan) -> list[str]:
    """The names the API server may use to reach the webhook: the generated certificate's SANs."""
    hosts: list[str] = []
    if plan.url is not None:
        hosts.append(urlsplit(plan.url).hostname or "")
    if plan.service is not None:
        namespace, name, _ = plan.service
        hosts += [f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local"]
    assert plan.listen is not None
    if plan.listen[0] not in ("", "0.0.0.0", "::"):
        hosts.append(plan.listen[0])
    return list(dict.fromkeys(h for h in hosts if h)) or ["localhost", "127.0.0.1"]
