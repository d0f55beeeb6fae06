"""The Go dklb's command line (v1.0.1, ``cmd/main.go``), understood by ``dklb run``.

Where it sits: ``engine.cli.main`` passes argv through ``go_command_line`` before parsing, so
the Go Deployment's ``args`` (``/dklb --admission-tls-ca-bundle ... --pod-name ...``, under
our image's ENTRYPOINT ``dklb``) start ``dklb run``, and Go's single-dash spelling of its own
flags (``-pod-name x``, ``-log-level=debug``) is accepted; no other flag gets a single-dash
form. ``engine.cli.run`` declares the flags only Go had (``declare``) and, once parsed, calls
``resolve`` to map them onto ours before anything starts:

* ``--pod-namespace``: the Lease's namespace when ``--leader-elect-namespace`` is not given;
* ``--pod-name``: accepted and ignored (our Lease holder is ``<hostname>_<random>``, the hostname
  being the Pod's name: unique per process, so a restarted container waits for its old Lease);
* ``--feature-gates`` (``RegisterAdmissionWebhook``, ``ServeAdmissionWebhook``, both true by
  default in Go) and ``--admission-tls-ca-bundle`` (base64 PEM): Go served its webhook on
  0.0.0.0:8443 whenever it had a certificate, and registered it for the Service
  ``kube-system/dklb`` whenever it had a CA bundle; the same flags do the same here (see
  ``_serve`` and ``_register``). Our webhook stays opt-in otherwise.

Each mapping or ignored flag is one notice line, logged once at start-up.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import binascii
import contextlib
import os
import tempfile
from collections.abc import Callable, Sequence

from engine.cli.options import UsageError, add

#: Argv[0] of the Go Deployment's args: the Go image's binary, which had no ENTRYPOINT.
GO_BINARY = "/dklb"
#: Every flag of the Go ``cmd/main.go`` (and Go's ``-help``): the names ``-name`` is rewritten for.
GO_FLAGS = frozenset(
    {
        "admission-failure-policy",
        "admission-tls-ca-bundle",
        "admission-tls-cert-file",
        "admission-tls-private-key-file",
        "edgelb-bearer-token",
        "edgelb-default-pool-size",
        "edgelb-host",
        "edgelb-insecure-skip-tls-verify",
        "edgelb-path",
        "edgelb-pool-group",
        "edgelb-scheme",
        "feature-gates",
        "kubeconfig",
        "kubernetes-cluster-framework-name",
        "log-level",
        "pod-name",
        "pod-namespace",
        "resync-period",
        "help",
    }
)
REGISTER, SERVE = "RegisterAdmissionWebhook", "ServeAdmissionWebhook"
#: Where the Go dklb served its webhook, and the Service it registered it for (port 443, the
#: default of a webhook's service reference).
GO_WEBHOOK_LISTEN = "0.0.0.0:8443"
GO_WEBHOOK_SERVICE = "kube-system/dklb:443"
_TRUE = ("1", "t", "true")
_FALSE = ("0", "f", "false")


def go_command_line(argv: Sequence[str]) -> list[str]:
    """``argv`` as ``dklb`` parses it: ``/dklb ARGS`` is ``run ARGS``, and in ``run`` a Go flag
    spelt with one dash (``-pod-name``, ``-log-level=debug``) gets two. Only an argument that is
    exactly ``-<Go flag>`` or ``-<Go flag>=...`` before a ``--`` is rewritten (as a value argparse
    would have refused it anyway: it looks like a flag)."""
    args = list(argv)
    if args and args[0] == GO_BINARY:
        args[0] = "run"
    if not args or args[0] != "run":
        return args
    out = [args[0]]
    rest = iter(args[1:])
    for arg in rest:
        if arg == "--":
            out += [arg, *rest]
            break
        if arg.startswith("-") and not arg.startswith("--") and arg[1:].partition("=")[0] in GO_FLAGS:
            arg = "-" + arg
        out.append(arg)
    return out


def parse_bool(text: str) -> bool:
    """Go's ``strconv.ParseBool``: 1, t, true, 0, f, false (any case)."""
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{text!r} is not a boolean (true or false)")


def feature_gates(text: str) -> dict[str, bool]:
    """``--feature-gates``: ``KEY=BOOL`` pairs separated by commas, blanks ignored, as Go parsed
    them; only the gates given are in the answer. Go logged a bad value and went on with its
    defaults; here it is an error naming the pair."""
    gates: dict[str, bool] = {}
    for pair in "".join(text.split()).split(","):
        if not pair:
            continue
        key, equals, value = pair.partition("=")
        if not equals or "=" in value:
            raise argparse.ArgumentTypeError(f"{pair!r} is not a KEY=VALUE pair")
        if key not in (REGISTER, SERVE):
            raise argparse.ArgumentTypeError(f"{key!r} is not a feature gate (one of {REGISTER}, {SERVE})")
        try:
            gates[key] = parse_bool(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{key}: {exc}") from None
    return gates


def declare(parser: argparse.ArgumentParser) -> None:
    """The flags only the Go dklb had; ``resolve`` says what each means here."""
    group = parser.add_argument_group(
        "compatibility with the Go dklb",
        "Its flags that have no name of ours; the Go dklb's Deployment arguments run unchanged.",
    )
    add(
        group,
        "--pod-namespace",
        metavar="NAMESPACE",
        help="the Lease's namespace when --leader-elect-namespace is not given (the Go dklb's "
        "leader-election namespace; not required to be kube-system)",
    )
    add(
        group,
        "--pod-name",
        metavar="NAME",
        help="accepted and ignored: the Lease holder is <hostname>_<random>, the hostname being the "
        "Pod's name, unique per process so a restarted container waits for its old Lease",
    )
    add(
        group,
        "--feature-gates",
        type=feature_gates,
        metavar="KEY=BOOL[,KEY=BOOL]",
        help=f"{SERVE}=true serves the admission webhook on {GO_WEBHOOK_LISTEN} (as --admission-listen) "
        f"and {REGISTER}=true registers it (as --register-admission-webhook, for the Service "
        f"{GO_WEBHOOK_SERVICE} unless --admission-webhook-url/-service says otherwise); =false turns "
        "off what the Go flags alone would turn on. Unset, as in Go, each is on when its Go flags are "
        "given: the certificate files without --admission-listen, --admission-tls-ca-bundle",
    )
    add(
        group,
        "--admission-tls-ca-bundle",
        metavar="BASE64",
        help="the CA bundle (base64 of PEM) the API server trusts for the webhook: the value of "
        "--admission-ca-bundle-file, given inline; implies registering the webhook as in Go",
    )


def resolve(
    args: argparse.Namespace,
    *,
    environ: dict[str, str] | os._Environ[str] = os.environ,
    write_ca: Callable[[bytes], str] | None = None,
) -> list[str]:
    """Maps the Go-only flags of ``args`` onto ours, in place; the notices to log. A contradiction
    or a bad CA bundle is a ``UsageError``. ``write_ca`` stores the decoded CA bundle and returns
    the file's path (default: a temporary file, removed at exit)."""
    notices: list[str] = []
    if args.leader_elect_namespace is None:
        if args.pod_namespace:
            args.leader_elect_namespace = args.pod_namespace
            notices.append(
                f"--pod-namespace {args.pod_namespace}: the Lease's namespace (as --leader-elect-namespace)"
            )
        else:
            args.leader_elect_namespace = environ.get("POD_NAMESPACE") or "default"
    elif args.pod_namespace:
        notices.append("--pod-namespace is ignored: --leader-elect-namespace names the Lease's namespace")
    if args.pod_name:
        notices.append(
            "--pod-name is accepted for compatibility with the Go dklb and ignored: the Lease holder "
            "is <hostname>_<random>, unique per process"
        )
    gates: dict[str, bool] = args.feature_gates or {}
    notices += _serve(args, gates.get(SERVE))
    notices += _register(args, gates.get(REGISTER), write_ca or _temporary_file)
    return notices


def _serve(args: argparse.Namespace, gate: bool | None) -> list[str]:
    """``ServeAdmissionWebhook``: Go served whenever it was on (by default) and had its files."""
    certificate = args.admission_tls_cert_file is not None and args.admission_tls_private_key_file is not None
    if gate is False:
        if args.admission_listen is not None:
            raise UsageError(f"--feature-gates {SERVE}=false contradicts --admission-listen: give one")
        dropped = [
            flag
            for flag, value in (
                ("--admission-tls-cert-file", args.admission_tls_cert_file),
                ("--admission-tls-private-key-file", args.admission_tls_private_key_file),
            )
            if value is not None
        ]
        args.admission_tls_cert_file = args.admission_tls_private_key_file = None
        return [f"{' and '.join(dropped)} ignored: {SERVE}=false (as in the Go dklb)"] if dropped else []
    if args.admission_listen is not None:
        return []
    if gate is True or (certificate and args.admission_self_signed_dir is None):
        args.admission_listen = GO_WEBHOOK_LISTEN
        why = f"--feature-gates {SERVE}=true" if gate else f"the certificate files ({SERVE} is on in Go)"
        return [f"{why}: serving the admission webhook on {GO_WEBHOOK_LISTEN}, as the Go dklb did"]
    return []


def _register(args: argparse.Namespace, gate: bool | None, write_ca: Callable[[bytes], str]) -> list[str]:
    """``RegisterAdmissionWebhook``: Go registered whenever it was on (by default) and had a CA bundle."""
    bundle: str | None = args.admission_tls_ca_bundle
    if bundle is not None and args.admission_ca_bundle_file is not None:
        raise UsageError(
            "--admission-tls-ca-bundle and --admission-ca-bundle-file name the same CA: give one"
        )
    if gate is False:
        if args.register_admission_webhook:
            raise UsageError(
                f"--feature-gates {REGISTER}=false contradicts --register-admission-webhook: give one"
            )
        return [f"--admission-tls-ca-bundle ignored: {REGISTER}=false (as in the Go dklb)"] if bundle else []
    if gate is None and bundle is None:
        return []
    notices: list[str] = []
    if bundle is not None:
        args.admission_ca_bundle_file = write_ca(_decode_ca_bundle(bundle))
    if not args.register_admission_webhook:
        args.register_admission_webhook = True
        why = (
            f"--feature-gates {REGISTER}=true"
            if gate
            else f"--admission-tls-ca-bundle ({REGISTER} is on in Go)"
        )
        notices.append(f"{why}: registering the admission webhook, as the Go dklb did")
    if args.admission_webhook_url is None and args.admission_webhook_service is None:
        args.admission_webhook_service = GO_WEBHOOK_SERVICE
        notices.append(f"the API server calls the webhook through the Service {GO_WEBHOOK_SERVICE}, as in Go")
    return notices


def _decode_ca_bundle(text: str) -> bytes:
    try:
        pem = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise UsageError("--admission-tls-ca-bundle: the value is not base64 (of a PEM CA bundle)") from None
    if b"-----BEGIN CERTIFICATE-----" not in pem:
        raise UsageError("--admission-tls-ca-bundle: the value does not decode to a PEM certificate")
    return pem


def _temporary_file(content: bytes) -> str:
    # A file, because the webhook registers (and re-registers on change) what a file holds. The
    # CA is public: only its removal at exit matters. /tmp is writable in our Deployment.
    fd, path = tempfile.mkstemp(prefix="dklb-admission-ca-", suffix=".pem")
    with os.fdopen(fd, "wb") as out:
        out.write(content)
    atexit.register(_remove, path)
    return path


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
