"""The LLM cache and token counts in ConfigMaps, where the operator and analysis Jobs both see them.

Why ConfigMaps: an analysis may run inline in the operator or in a Job of the target's namespace, and both already
talk to the API server; a table in the target database would mean writing to it, which analysis never does. One
ConfigMap per target (``<target>-llm``, owned by the target, so it goes with it) holds the recent replies and the
target's tokens per day; one in the operator's namespace (``optischema-llm-usage``) the cluster's tokens per day.
Updates are read-modify-write with the resourceVersion, retried on conflict. Replies are capped in number and size
so the ConfigMap stays far below its 1 MiB limit.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from optischema.api.resources import owner_reference

MAX_REPLIES = 8
MAX_REPLY_BYTES = 64 * 1024
DAYS_KEPT = 7
KEY = "state.json"


class ConfigMapStore:
    def __init__(self, target: dict[str, Any], operator_namespace: str) -> None:
        self.core: Any = client.CoreV1Api()
        self.target = target
        self.namespace = target["metadata"]["namespace"]
        self.name = f"{target['metadata']['name'][:240]}-llm"
        self.operator_namespace = operator_namespace

    async def _read(self, namespace: str, name: str) -> tuple[dict[str, Any], str | None]:
        try:
            found = await asyncio.to_thread(self.core.read_namespaced_config_map, name, namespace)
        except ApiException as error:
            if error.status in (403, 404):
                return {}, None
            raise
        try:
            return json.loads((found.data or {}).get(KEY, "{}")), found.metadata.resource_version
        except ValueError:
            return {}, found.metadata.resource_version

    async def _update(self, namespace: str, name: str, change: Any, owned: bool) -> None:
        for _ in range(5):
            state, version = await self._read(namespace, name)
            change(state)
            body: dict[str, Any] = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "labels": {"app.kubernetes.io/name": "optischema", "app.kubernetes.io/component": "llm-cache"},
                    **({"ownerReferences": [owner_reference(self.target)]} if owned else {}),
                },
                "data": {KEY: json.dumps(state, sort_keys=True)},
            }
            try:
                if version is None:
                    await asyncio.to_thread(self.core.create_namespaced_config_map, namespace, body)
                else:
                    body["metadata"]["resourceVersion"] = version
                    await asyncio.to_thread(self.core.replace_namespaced_config_map, name, namespace, body)
                return
            except ApiException as error:
                if error.status == 403:
                    return  # e.g. a Job without access to the operator's namespace: counted by its target only
                if error.status != 409:
                    raise
        raise RuntimeError(f"ConfigMap {namespace}/{name} kept changing under us")

    async def cached(self, key: str) -> str | None:
        state, _ = await self._read(self.namespace, self.name)
        entry = (state.get("replies") or {}).get(key)
        return entry.get("text") if isinstance(entry, dict) else None

    async def remember(self, key: str, text: str) -> None:
        if len(text.encode()) > MAX_REPLY_BYTES:
            return

        def change(state: dict[str, Any]) -> None:
            replies = state.setdefault("replies", {})
            replies[key] = {"text": text, "at": datetime.now(UTC).isoformat()}
            for old in sorted(replies, key=lambda k: replies[k].get("at", ""))[:-MAX_REPLIES]:
                del replies[old]

        await self._update(self.namespace, self.name, change, owned=True)

    async def spent(self, day: str) -> tuple[int, int]:
        mine, _ = await self._read(self.namespace, self.name)
        everyone, _ = await self._read(self.operator_namespace, "optischema-llm-usage")
        return int((mine.get("tokens") or {}).get(day, 0)), int((everyone.get("tokens") or {}).get(day, 0))

    async def spend(self, day: str, tokens: int) -> None:
        def change(state: dict[str, Any]) -> None:
            counts = state.setdefault("tokens", {})
            counts[day] = int(counts.get(day, 0)) + tokens
            for old in sorted(counts)[:-DAYS_KEPT]:
                del counts[old]

        await self._update(self.namespace, self.name, change, owned=True)
        await self._update(self.operator_namespace, "optischema-llm-usage", change, owned=False)

    async def today(self) -> int:
        mine, _ = await self._read(self.namespace, self.name)
        return int((mine.get("tokens") or {}).get(datetime.now(UTC).date().isoformat(), 0))
