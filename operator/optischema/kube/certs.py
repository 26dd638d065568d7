"""Certificates made with the `cryptography` library: the webhook server's, and the embedded control plane's.

(kopf's own self-signed path, certbuilder/oscrypto, crashes on OpenSSL 3 here.) The ``new_*`` functions return PEM
bytes and write nothing: the webhook keeps its CA in a Secret, not on a disk a restarted replica would find stale.
The ``make_*`` functions write files, for the embedded control plane.
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

#: Certificates start a little in the past: a peer whose clock is behind ours still accepts a fresh one.
BACKDATE = datetime.timedelta(minutes=5)
#: The embedded control plane's certificates (never rotated: a cluster lives as long as a test session).
DEVCLUSTER_LIFETIME = datetime.timedelta(days=30)


def _key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, path: Path) -> None:
    path.write_bytes(_key_pem(key))
    path.chmod(0o600)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def new_ca(name: str, *, lifetime: datetime.timedelta, now: datetime.datetime | None = None) -> tuple[bytes, bytes]:
    """A self-signed CA valid for ``lifetime`` from ``now``: (certificate, key) as PEM."""
    now = now or _now()
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def new_serving_cert(
    ca_cert_pem: bytes,
    ca_key_pem: bytes,
    *,
    hosts: list[str],
    ips: list[str],
    lifetime: datetime.timedelta,
    now: datetime.datetime | None = None,
) -> tuple[bytes, bytes]:
    """A server certificate signed by the CA for ``hosts`` and ``ips``, valid for ``lifetime`` but never past the
    CA's own end (a chain is only as valid as its CA): (certificate, key) as PEM."""
    now = now or _now()
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName(h) for h in hosts]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0] if hosts else ips[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(min(now + lifetime, ca_cert.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def make_ca(directory: Path, name: str = "optischema-devcluster-ca") -> tuple[Path, Path]:
    cert, key = new_ca(name, lifetime=DEVCLUSTER_LIFETIME)
    cert_path, key_path = directory / "ca.crt", directory / "ca.key"
    cert_path.write_bytes(cert)
    key_path.write_bytes(key)
    key_path.chmod(0o600)
    return cert_path, key_path


def make_serving_cert(
    directory: Path, stem: str, ca: tuple[Path, Path], *, hosts: list[str], ips: list[str]
) -> tuple[Path, Path]:
    """A server certificate signed by ``ca`` for ``hosts`` and ``ips`` (127.0.0.1 for everything here)."""
    cert, key = new_serving_cert(
        ca[0].read_bytes(), ca[1].read_bytes(), hosts=hosts, ips=ips, lifetime=DEVCLUSTER_LIFETIME
    )
    cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
    cert_path.write_bytes(cert)
    key_path.write_bytes(key)
    key_path.chmod(0o600)
    return cert_path, key_path


def make_rsa_pair(directory: Path, stem: str) -> tuple[Path, Path]:
    """An RSA key pair (service-account token signing): ``stem.key`` and ``stem.pub``."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private, public = directory / f"{stem}.key", directory / f"{stem}.pub"
    _write_key(key, private)
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return private, public
