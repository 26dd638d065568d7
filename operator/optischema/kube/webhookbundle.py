"""The webhook's certificates as one bundle, and when to renew it: pure decisions over what a Secret holds.

Every replica serves the bundle the shared Secret holds, so they agree; whoever finds it due writes the next one.
``decide`` says what is due (``now`` passed in); ``advance`` makes the next bundle. A new CA is trusted (it is in
``ca_bundle``) next to the old one until the old one expires, so certificates a slower replica still serves keep
verifying while it catches up.
"""

from __future__ import annotations

import datetime
import ipaddress
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from pydantic import BaseModel, ConfigDict, Field

from optischema.kube import certs

#: Renewed once this share of a certificate's lifetime has passed (a third of it is left to notice and act).
RENEW_AT = 2 / 3
CA_NAME = "optischema-webhook-ca"

Action = Literal["create", "rotate-ca", "renew-cert", "prune", "keep"]

#: Keys of the Secret (``tls.crt``/``tls.key`` as a kubernetes.io/tls Secret names them).
KEYS = ("ca.crt", "ca.key", "tls.crt", "tls.key", "ca-bundle.crt")


class Lifetimes(BaseModel):
    model_config = ConfigDict(frozen=True)
    ca: datetime.timedelta
    cert: datetime.timedelta

    @property
    def serving(self) -> datetime.timedelta:
        """The serving certificate never outlives its CA's lifetime (else it would renew on every check)."""
        return min(self.cert, self.ca)


class Bundle(BaseModel):
    """What the Secret holds, PEM text: the current CA and its key, the serving certificate and its key, and every
    CA the API server is to trust (the current one first, then older ones not yet expired)."""

    model_config = ConfigDict(frozen=True)
    ca_crt: str
    ca_key: str = Field(repr=False)  # private keys: never in a log or a traceback
    tls_crt: str
    tls_key: str = Field(repr=False)
    ca_bundle: str

    def to_data(self) -> dict[str, str]:
        return dict(zip(KEYS, (self.ca_crt, self.ca_key, self.tls_crt, self.tls_key, self.ca_bundle), strict=True))

    @classmethod
    def from_data(cls, data: dict[str, str] | None) -> Bundle | None:
        """The bundle in a Secret's (decoded) data; None when a key is missing."""
        if not data or any(not data.get(key) for key in KEYS):
            return None
        return cls(**{field: data[key] for field, key in zip(cls.model_fields, KEYS, strict=True)})


class Decision(BaseModel):
    model_config = ConfigDict(frozen=True)
    action: Action
    reason: str


def _remaining(cert: x509.Certificate, now: datetime.datetime) -> datetime.timedelta:
    return cert.not_valid_after_utc - now


def _due(cert: x509.Certificate, lifetime: datetime.timedelta, now: datetime.datetime) -> bool:
    """Past ``RENEW_AT`` of the lifetime: measured from the end, so the backdated start and a CA-capped end
    count as they should."""
    return _remaining(cert, now) <= lifetime * (1 - RENEW_AT)


def _pem_list(text: str) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(text.encode())


def _covers(cert: x509.Certificate, hosts: list[str], ips: list[str]) -> bool:
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    dns = set(names.get_values_for_type(x509.DNSName))
    addresses = set(names.get_values_for_type(x509.IPAddress))
    return set(hosts) <= dns and {ipaddress.ip_address(ip) for ip in ips} <= addresses


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def trusted_bundle(current_ca: str, previous: str, now: datetime.datetime) -> str:
    """The current CA first, then each earlier CA of ``previous`` that has not expired, once each."""
    head = _pem_list(current_ca)[0]
    kept, seen = [head], {head.fingerprint(hashes.SHA256())}
    for ca in _pem_list(previous) if previous else []:
        fingerprint = ca.fingerprint(hashes.SHA256())
        if fingerprint not in seen and ca.not_valid_after_utc > now:
            kept.append(ca)
            seen.add(fingerprint)
    return "".join(_pem(ca) for ca in kept)


def decide(
    bundle: Bundle | None,
    *,
    now: datetime.datetime,
    lifetimes: Lifetimes,
    hosts: list[str],
    ips: list[str],
) -> Decision:
    """What the bundle needs now, with the reason (logged by whoever acts on it)."""
    if bundle is None:
        return Decision(action="create", reason="no bundle yet")
    try:
        ca = _pem_list(bundle.ca_crt)[0]
        serving = _pem_list(bundle.tls_crt)[0]
        ca_key = serialization.load_pem_private_key(bundle.ca_key.encode(), password=None)
        serving_key = serialization.load_pem_private_key(bundle.tls_key.encode(), password=None)
        bundled = _pem_list(bundle.ca_bundle)
    except (ValueError, TypeError, UnsupportedAlgorithm) as error:  # TypeError: an encrypted key (we have no password)
        return Decision(action="create", reason=f"the bundle cannot be read: {error}")
    if ca_key.public_key() != ca.public_key():
        return Decision(action="create", reason="ca.key does not belong to ca.crt")
    if not _is_ca(ca):  # e.g. the serving pair pasted in: the API server would refuse every certificate it signed
        return Decision(action="create", reason="ca.crt is not a CA certificate")
    if _due(ca, lifetimes.ca, now):
        return Decision(action="rotate-ca", reason=f"the CA ends {ca.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}")
    try:
        serving.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return Decision(action="renew-cert", reason="tls.crt is not signed by ca.crt")
    if serving_key.public_key() != serving.public_key():
        return Decision(action="renew-cert", reason="tls.key does not belong to tls.crt")
    if _due(serving, lifetimes.serving, now):
        return Decision(
            action="renew-cert", reason=f"the certificate ends {serving.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}"
        )
    if not _covers(serving, hosts, ips):
        return Decision(action="renew-cert", reason=f"the certificate does not name {hosts + ips}")
    if bundle.ca_bundle != trusted_bundle(bundle.ca_crt, bundle.ca_bundle, now) or ca not in bundled:
        return Decision(action="prune", reason="ca-bundle.crt holds an expired CA or lacks the current one")
    return Decision(action="keep", reason="valid")


def advance(
    bundle: Bundle | None,
    decision: Decision,
    *,
    now: datetime.datetime,
    lifetimes: Lifetimes,
    hosts: list[str],
    ips: list[str],
) -> Bundle:
    """The bundle after acting on ``decision`` (``keep`` returns it unchanged)."""
    if decision.action == "keep" and bundle is not None:
        return bundle
    if decision.action in ("create", "rotate-ca") or bundle is None:
        ca_crt, ca_key = (pem.decode() for pem in certs.new_ca(CA_NAME, lifetime=lifetimes.ca, now=now))
        # A rotation keeps trusting the old CA (and any older one still valid); a bundle we could not read is not
        # trusted any more.
        previous = bundle.ca_bundle if bundle is not None and decision.action == "rotate-ca" else ""
    else:
        ca_crt, ca_key, previous = bundle.ca_crt, bundle.ca_key, bundle.ca_bundle
    if decision.action == "prune" and bundle is not None:
        tls_crt, tls_key = bundle.tls_crt, bundle.tls_key
    else:
        cert, key = certs.new_serving_cert(
            ca_crt.encode(), ca_key.encode(), hosts=hosts, ips=ips, lifetime=lifetimes.serving, now=now
        )
        tls_crt, tls_key = cert.decode(), key.decode()
    return Bundle(
        ca_crt=ca_crt,
        ca_key=ca_key,
        tls_crt=tls_crt,
        tls_key=tls_key,
        ca_bundle=trusted_bundle(ca_crt, previous, now),
    )


def serial(pem: str) -> str:
    """The certificate's serial number in hex (what the logs and tests compare)."""
    return f"{_pem_list(pem)[0].serial_number:x}"


def cas(pem: str) -> list[str]:
    """Serial numbers of the CAs in a bundle, in order."""
    return [f"{ca.serial_number:x}" for ca in _pem_list(pem)] if pem else []
