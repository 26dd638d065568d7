"""Where the operator may connect to: a database host, an LLM endpoint, a notification URL.

Whoever may write a ``PostgresTarget`` chooses these, and the operator connects with its own credentials and
Secrets: a host that smuggles connection options (``db/postgres?sslmode=disable#``) or an endpoint in clear text
would make the operator a deputy for that person. So a host is a host name or an address and nothing else, and
URLs that carry credentials or prompts are https, plain http being accepted only on the loopback interface (a
model served on the developer's own machine). Pure: used by the models (refused at ``kubectl apply``) and again
where connections are made.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

#: One RFC 1123 label: letters, digits and '-', neither first nor last, at most 63 characters.
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
#: A host name (RFC 1123, optionally fully qualified with a trailing dot) or an IPv4 address.
HOSTNAME_PATTERN = rf"^{_LABEL}(\.{_LABEL})*\.?$"
#: What the CRD schema accepts (the API server's regular expressions): a host name, an IPv4 address, or the
#: characters of an IPv6 address with at least two ':' (every IPv6 address has two; ``db:5432`` has one). The model
#: checks IPv6 exactly with :mod:`ipaddress`.
HOST_PATTERN = rf"^({_LABEL}(\.{_LABEL})*\.?|[0-9A-Fa-f.]*:[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*)$"
HOST_RULE = "must be a host name (RFC 1123: letters, digits, '-' and '.') or an IP address, nothing else"

#: What the CRD schema accepts for an endpoint URL: https, or http on a loopback host.
ENDPOINT_URL_PATTERN = (
    r"^(https://[^\s]+|http://(localhost|127\.[0-9]+\.[0-9]+\.[0-9]+|\[::1\])(:[0-9]+)?([/?#][^\s]*)?)$"
)
ENDPOINT_URL_RULE = (
    "must be an https:// URL; plain http:// is accepted only for a loopback host (localhost, 127.0.0.0/8, [::1]), "
    "for development"
)


def host_problem(value: str) -> str | None:
    """Why ``value`` is not a bare host name or IP address, or None when it is one."""
    if not value or len(value) > 253:
        return f"{HOST_RULE} (1 to 253 characters)"
    if not value.isascii():
        return f"{HOST_RULE} (non-ASCII characters: write an internationalised name in its xn-- form)"
    if ":" in value:
        try:
            address = ipaddress.IPv6Address(value)
        except ValueError:
            return f"{HOST_RULE} (':' is only allowed in an IPv6 address; the port is spec.connection.port)"
        return f"{HOST_RULE} (no zone id)" if address.scope_id else None
    if re.fullmatch(HOSTNAME_PATTERN, value) is None:
        return HOST_RULE
    if re.fullmatch(r"[0-9.]+", value):
        try:
            ipaddress.IPv4Address(value)
        except ValueError:
            return f"{HOST_RULE} ({value!r} is neither a valid IPv4 address nor a host name)"
    return None


def check_host(value: str) -> str:
    """``value`` when it is a bare host name or address; ValueError naming the rule otherwise."""
    problem = host_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


def is_loopback(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ::1: the names and addresses that never leave the pod.

    Not a subdomain of localhost nor ``localhost.``: /etc/hosts does not hold them, and the resolver asks DNS,
    where a pod's search list reads ``x.localhost`` as ``x.localhost.svc.cluster.local``, the Service ``x`` of a
    namespace called ``localhost``."""
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def endpoint_url_problem(url: str) -> str | None:
    """Why ``url`` may not carry credentials or prompts, or None: https, or http to a loopback host only.

    The message never repeats the URL: a webhook URL's path is itself a credential.
    """
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return f"is not a URL: {ENDPOINT_URL_RULE}"
    if not host:
        return f"has no host: {ENDPOINT_URL_RULE}"
    if parts.scheme == "https":
        return None
    if parts.scheme == "http":
        if is_loopback(host):
            return None
        return f"is plain http to a host that is not loopback: {ENDPOINT_URL_RULE}"
    return f"has scheme {parts.scheme or '(none)'!r}: {ENDPOINT_URL_RULE}"


def check_endpoint_url(url: str) -> str:
    """``url`` when :func:`endpoint_url_problem` finds nothing; ValueError otherwise."""
    problem = endpoint_url_problem(url)
    if problem is not None:
        raise ValueError(problem)
    return url
