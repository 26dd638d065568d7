"""Taking kopf's finalizer off the objects earlier versions left it on (each daemon held one).

kopf removes a finalizer no handler needs any more on the first event it handles for an object, but it does not
watch a namespace that is already Terminating: exactly the namespace an earlier version wedged (deleted while the
operator was away) would stay so. At start-up the operator therefore lists its kinds in the namespaces it watches
and takes the finalizer off itself, with the ``resourceVersion`` it read (a concurrent change wins, and kopf
handles that object on its own).
"""

from __future__ import annotations

import asyncio
import fnmatch
from collections.abc import Sequence
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from optischema.api.resources import GROUP, VERSION

#: kopf's finalizer (its default ``settings.persistence.finalizer``, which the operator keeps).
KOPF_FINALIZER = "kopf.zalando.org/KopfFinalizerMarker"
#: The kinds an earlier version put it on (daemons on targets and changes; recommendations for safety).
KINDS = ("postgrestargets", "indexchanges", "tuningrecommendations")


def remaining(finalizers: Sequence[str] | None) -> list[str] | None:
    """The finalizers without kopf's, or None when it is not among them (nothing to do)."""
    if not finalizers or KOPF_FINALIZER not in finalizers:
        return None
    return [f for f in finalizers if f != KOPF_FINALIZER]


def watched(namespace: str, patterns: Sequence[str], clusterwide: bool) -> bool:
    """Whether the operator watches ``namespace``: every one when cluster-wide, else one a pattern names (kopf's
    globs, ``!pattern`` excluding)."""
    if clusterwide or not patterns:
        return True
    included = any(fnmatch.fnmatchcase(namespace, p) for p in patterns if not p.startswith("!"))
    excluded = any(fnmatch.fnmatchcase(namespace, p[1:]) for p in patterns if p.startswith("!"))
    return included and not excluded


def _exact(patterns: Sequence[str]) -> list[str] | None:
    """The namespaces themselves when every pattern is a plain name (namespaced lists suffice), else None."""
    if any(set(p) & set("*?[]!") for p in patterns):
        return None
    return list(patterns)


async def release(patterns: Sequence[str], clusterwide: bool) -> list[str]:
    """Take kopf's finalizer off every object of :data:`KINDS` the operator watches; ``kind/namespace/name`` of each
    one released. Needs list and patch on the kinds where they are watched (the operator's own rights)."""
    api: Any = client.CustomObjectsApi()
    exact = None if clusterwide else _exact(patterns)
    released = []
    for plural in KINDS:
        if exact is not None:
            items = []
            for namespace in exact:
                found = await asyncio.to_thread(api.list_namespaced_custom_object, GROUP, VERSION, namespace, plural)
                items += found.get("items", [])
        else:
            found = await asyncio.to_thread(api.list_cluster_custom_object, GROUP, VERSION, plural)
            items = found.get("items", [])
        for item in items:
            meta = item["metadata"]
            rest = remaining(meta.get("finalizers"))
            if rest is None or not watched(meta["namespace"], patterns, clusterwide):
                continue
            patch = {"metadata": {"finalizers": rest, "resourceVersion": meta["resourceVersion"]}}
            try:
                await asyncio.to_thread(
                    api.patch_namespaced_custom_object, GROUP, VERSION, meta["namespace"], plural, meta["name"], patch
                )
            except ApiException as error:
                if error.status in (404, 409):  # gone, or changed since read: kopf sees that change itself
                    continue
                raise
            released.append(f"{plural}/{meta['namespace']}/{meta['name']}")
    return released
