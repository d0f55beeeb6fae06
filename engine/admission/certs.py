"""Self-signed certificates for the admission webhook (``--admission-self-signed-dir``).

Where it sits: ``engine.admission.webhook`` calls ``generate_self_signed`` when the webhook is
to be served without certificate files (the demo, the tests, a quick try-out); the generated
CA is what it registers as the webhook's CA bundle. In production the certificate comes from a
Secret (cert-manager or the like), and nothing here runs. ``generate_client_certificate`` makes
the other side's pair: a CA for ``--admission-client-ca-file`` and the certificate the API server
presents to the webhook (``localcluster``, the tests). ``check_ca_file`` is what
``engine.admission.plan`` asks of ``--admission-client-ca-file`` before anything starts.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

CA_CERT, CA_KEY, TLS_CERT, TLS_KEY = "ca.crt", "ca.key", "tls.crt", "tls.key"


def generate_self_signed(directory: Path, *, hosts: list[str], days: int = 365) -> tuple[Path, Path, Path]:
    """A CA and a serving certificate for ``hosts``: ``(ca.crt, tls.crt, tls.key)`` in ``directory``.

    IP addresses become IP SANs, anything else DNS SANs (Go, i.e. the API server, ignores the
    common name). A CA already in ``directory`` (``ca.crt`` + ``ca.key``) is reused, so a new
    serving certificate (a restart, a rotation) is still trusted by the CA bundle registered
    with the webhook configurations. Files are replaced atomically; keys are readable by the
    owner only.
    """
    if not hosts:
        raise ValueError("at least one host is required")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    # A few minutes in the past: a peer whose clock lags must not see a certificate from the future.
    not_before = now - datetime.timedelta(minutes=5)

    ca_key, ca_cert = _ensure_ca(directory, "dklb admission webhook CA", now=now, not_before=not_before)
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    _issue(
        directory,
        (ca_key, ca_cert),
        common_name=hosts[0],
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        sans=sans,
        not_before=not_before,
        not_after=now + datetime.timedelta(days=days),
    )
    return directory / CA_CERT, directory / TLS_CERT, directory / TLS_KEY


def generate_client_certificate(directory: Path, *, name: str, days: int = 365) -> tuple[Path, Path, Path]:
    """A CA and a client certificate (``clientAuth``) for ``name``: ``(ca.crt, tls.crt, tls.key)``.

    The CA is what ``--admission-client-ca-file`` names; the pair is what the API server presents
    to the webhook. Like ``generate_self_signed``, a CA already in ``directory`` is reused.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    not_before = now - datetime.timedelta(minutes=5)
    ca = _ensure_ca(directory, "dklb admission client CA", now=now, not_before=not_before)
    _issue(
        directory,
        ca,
        common_name=name,
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
        sans=[],
        not_before=not_before,
        not_after=now + datetime.timedelta(days=days),
    )
    return directory / CA_CERT, directory / TLS_CERT, directory / TLS_KEY


def check_ca_file(path: str) -> None:
    """``ValueError`` unless ``path`` holds PEM certificates that may sign others (CA:TRUE)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ValueError(f"{path} holds no PEM certificate") from None
    for certificate in certificates:
        try:
            constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            continue  # an X.509 v1 root, or one OpenSSL judges by itself
        if not constraints.ca:
            # A leaf given as the CA: every client would be refused, so say it now.
            raise ValueError(f"{path}: {certificate.subject.rfc4514_string()} is not a CA certificate")


def _ensure_ca(
    directory: Path, common_name: str, *, now: datetime.datetime, not_before: datetime.datetime
) -> tuple[_SigningKey, x509.Certificate]:
    """The CA of ``directory`` (``ca.crt`` + ``ca.key``), made first when there is none usable."""
    ca = _load_ca(directory)
    if ca is not None:
        return ca
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(now + datetime.timedelta(days=10 * 365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write(directory / CA_KEY, _key_pem(ca_key), private=True)
    _write(directory / CA_CERT, ca_cert.public_bytes(serialization.Encoding.PEM))
    return ca_key, ca_cert


def _issue(
    directory: Path,
    ca: tuple[_SigningKey, x509.Certificate],
    *,
    common_name: str,
    usage: x509.ObjectIdentifier,
    sans: list[x509.GeneralName],
    not_before: datetime.datetime,
    not_after: datetime.datetime,
) -> None:
    """A new key and a certificate for it signed by ``ca``, as ``tls.key`` and ``tls.crt``."""
    ca_key, ca_cert = ca
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    # Key first: a reload between the two writes fails on the mismatch and keeps the old pair.
    _write(directory / TLS_KEY, _key_pem(key), private=True)
    _write(directory / TLS_CERT, cert.public_bytes(serialization.Encoding.PEM))


def _load_ca(directory: Path) -> tuple[_SigningKey, x509.Certificate] | None:
    try:
        cert = x509.load_pem_x509_certificate((directory / CA_CERT).read_bytes())
        key = serialization.load_pem_private_key((directory / CA_KEY).read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return None  # absent, unreadable or encrypted: a new CA
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        return None  # a key type signing with SHA-256 does not apply to
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*spki) != cert.public_key().public_bytes(*spki):
        return None  # not the pair they claim to be
    return key, cert


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write(path: Path, data: bytes, *, private: bool = False) -> None:
    """Written beside and renamed over ``path``: a reader sees the old file or the new one, whole."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)  # O_CREAT keeps an existing file's mode
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
