"""Who is calling, and may they: a TokenReview and a SubjectAccessReview, asked of the API server.

The operator's live endpoint (``handlers/live.py``) is reached through the API server's service proxy, which
forwards no identity (it drops the caller's ``Authorization`` header once it has authenticated it), and from
inside the cluster directly, with no proxy at all. So the endpoint asks the API server itself: whose token is
this (TokenReview, the way ``kube-rbac-proxy`` and aggregated API servers delegate authentication), and may that
user ``get`` this PostgresTarget (SubjectAccessReview with the reviewed user's name, uid, groups and extra, so that
every authorizer — RBAC, webhooks — decides exactly as it would for the user's own request). The operator's
ServiceAccount needs ``create`` on ``tokenreviews`` and ``subjectaccessreviews`` (``system:auth-delegator``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client

from optischema.api.resources import GROUP


@dataclass(frozen=True)
class Caller:
    """A user the API server authenticated."""

    name: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: dict[str, list[str]] = field(default_factory=dict)


class Reviews:
    """The two reviews, each one request to the API server (in a worker thread: the client is synchronous)."""

    def __init__(self, api_client: client.ApiClient | None = None) -> None:
        self.authentication = client.AuthenticationV1Api(api_client)
        self.authorization = client.AuthorizationV1Api(api_client)

    async def authenticate(self, token: str) -> Caller | None:
        """The user ``token`` belongs to, or None when the API server does not accept it."""
        review = client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token))
        done: Any = await asyncio.to_thread(self.authentication.create_token_review, review)
        status = done.status
        if status is None or not status.authenticated or status.user is None:
            return None
        user = status.user
        return Caller(
            name=user.username or "",
            uid=user.uid or "",
            groups=tuple(user.groups or ()),
            extra={k: list(v) for k, v in (user.extra or {}).items()},
        )

    async def may_get(self, caller: Caller, plural: str, namespace: str, name: str) -> tuple[bool, str]:
        """Whether ``caller`` may ``get`` the object ``plural/name`` of our group in ``namespace``, and the
        authorizer's reason (empty when it gave none)."""
        review = client.V1SubjectAccessReview(
            spec=client.V1SubjectAccessReviewSpec(
                user=caller.name,
                uid=caller.uid or None,
                groups=list(caller.groups) or None,
                extra=caller.extra or None,
                resource_attributes=client.V1ResourceAttributes(
                    group=GROUP, resource=plural, verb="get", namespace=namespace, name=name
                ),
            )
        )
        done: Any = await asyncio.to_thread(self.authorization.create_subject_access_review, review)
        status = done.status
        return bool(status and status.allowed and not status.denied), str((status and status.reason) or "")
