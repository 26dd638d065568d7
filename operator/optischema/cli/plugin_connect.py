"""How ``kubectl optischema`` reaches the API server: kubectl's rules, so that a user's habits carry over.

kubectl's precedence (``clientcmd``'s loading rules), followed here:

- credentials: ``--kubeconfig FILE`` (which must exist), else the files ``KUBECONFIG`` lists (``:``-separated,
  missing ones skipped, merged), else ``~/.kube/config``; only when none of them exists, the Pod's service account
  (in-cluster). A kubeconfig therefore wins over in-cluster credentials, as with kubectl in a debug Pod.
- context: ``--context NAME``, else the kubeconfig's ``current-context``.
- namespace: ``-n/--namespace``, else the context's namespace, else — in-cluster only — ``POD_NAMESPACE`` and then
  the service account's namespace file, else ``default``.
- ``--as USER`` (and ``--as-group GROUP``) send the impersonation headers on every request, as kubectl does; the
  API server checks that the caller may ``impersonate``.

Every failure is a :class:`ConnectError` with one line saying what to do, never a traceback.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client, config

#: Where a Pod's service account namespace is mounted.
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class ConnectError(Exception):
    """The plugin cannot build a client: no kubeconfig, a missing context, an unreadable file."""


@dataclass(frozen=True)
class Options:
    """The connection flags as given (None: not given)."""

    kubeconfig: str | None = None
    context: str | None = None
    namespace: str | None = None
    as_user: str | None = None
    as_groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class Connection:
    api_client: client.ApiClient
    namespace: str
    #: Where the credentials came from, for error messages: ``kubeconfig …`` or ``in-cluster``.
    source: str
    host: str


def kubeconfig_files(options: Options, environ: Mapping[str, str]) -> list[Path]:
    """The kubeconfig files to merge, in kubectl's order; empty when none exists (then in-cluster)."""
    if options.kubeconfig:
        path = Path(options.kubeconfig).expanduser()
        if not path.is_file():
            raise ConnectError(f"--kubeconfig {options.kubeconfig}: no such file")
        return [path]
    listed = environ.get("KUBECONFIG", "")
    if listed:
        return [Path(p).expanduser() for p in listed.split(os.pathsep) if p and Path(p).expanduser().is_file()]
    default = Path(environ.get("HOME", "~")).expanduser() / ".kube" / "config"
    return [default] if default.is_file() else []


def _context(files: str, wanted: str | None) -> dict[str, Any]:
    try:
        contexts, active = config.list_kube_config_contexts(config_file=files)  # type: ignore[no-untyped-call]
    except config.ConfigException as error:
        raise ConnectError(f"kubeconfig {files}: {error}") from error
    if wanted is None:
        if not active:
            raise ConnectError(f"kubeconfig {files}: no current-context (give --context NAME)")
        return dict(active)
    for found in contexts or []:
        if found.get("name") == wanted:
            return dict(found)
    names = ", ".join(sorted(c.get("name", "") for c in contexts or [])) or "none"
    raise ConnectError(f"--context {wanted}: no such context in {files} (contexts: {names})")


def _in_cluster_namespace(environ: Mapping[str, str]) -> str:
    if environ.get("POD_NAMESPACE"):
        return environ["POD_NAMESPACE"]
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "default"
    except OSError:
        return "default"


def connect(options: Options, environ: Mapping[str, str] | None = None) -> Connection:
    """A client and the namespace to work in, by kubectl's precedence (module docstring)."""
    environ = os.environ if environ is None else environ
    if options.as_groups and not options.as_user:
        raise ConnectError("--as-group: impersonating groups needs --as USER too (as with kubectl)")
    if len(options.as_groups) > 1:  # the client keeps one value per header name
        raise ConnectError("--as-group: give one group (this client sends one Impersonate-Group header)")
    configuration = client.Configuration()
    files = kubeconfig_files(options, environ)
    if files:
        joined = os.pathsep.join(str(f) for f in files)
        context = _context(joined, options.context)
        try:
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=joined,
                context=context["name"],
                client_configuration=configuration,
                persist_config=False,
            )
        except (config.ConfigException, OSError, ValueError) as error:
            raise ConnectError(f"kubeconfig {joined}, context {context['name']}: {error}") from error
        namespace = options.namespace or context.get("context", {}).get("namespace") or "default"
        source = f"kubeconfig {joined} (context {context['name']})"
    elif environ.get("KUBERNETES_SERVICE_HOST"):
        if options.context:
            raise ConnectError(f"--context {options.context}: no kubeconfig found, and in-cluster has no contexts")
        try:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except config.ConfigException as error:
            raise ConnectError(f"in-cluster credentials: {error}") from error
        namespace = options.namespace or _in_cluster_namespace(environ)
        source = "in-cluster"
    else:
        where = (
            f"KUBECONFIG={environ['KUBECONFIG']} names no existing file"
            if environ.get("KUBECONFIG")
            else "no ~/.kube/config and KUBECONFIG is not set"
        )
        raise ConnectError(f"no kubeconfig: {where}, and not running in a Pod (give --kubeconfig FILE)")
    api_client = client.ApiClient(configuration)
    if options.as_user:
        api_client.set_default_header("Impersonate-User", options.as_user)  # type: ignore[no-untyped-call]
    for group in options.as_groups:
        api_client.set_default_header("Impersonate-Group", group)  # type: ignore[no-untyped-call]
    return Connection(api_client, namespace, source, str(configuration.host))


def contexts(options: Options, environ: Mapping[str, str] | None = None) -> list[str]:
    """The kubeconfig's context names (shell completion of ``--context``); empty when there is none."""
    environ = os.environ if environ is None else environ
    try:
        files = kubeconfig_files(options, environ)
        if not files:
            return []
        found, _ = config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
            config_file=os.pathsep.join(str(f) for f in files)
        )
    except (ConnectError, config.ConfigException, OSError):
        return []
    return sorted(str(c.get("name")) for c in found or [])
