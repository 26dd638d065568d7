"""The only kopf user: one thin, idempotent module per kind. Importing this package registers the handlers."""

# `operator` first: kopf runs startup handlers in the order they were registered, and its `configure` fills the memo
# (settings, the API client) the others read.
from . import operator  # isort: skip
from . import benchmark, indexchange, lifetime, live, recommendation, retry, target

# `admission` is registered by run_operator() only when the webhook server is configured: kopf refuses to start
# with admission handlers and no server.
__all__ = ["benchmark", "indexchange", "lifetime", "live", "operator", "recommendation", "retry", "target"]
