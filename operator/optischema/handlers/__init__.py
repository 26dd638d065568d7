"""The only kopf user: one thin, idempotent module per kind. Importing this package registers the handlers."""

from . import benchmark, indexchange, lifetime, live, operator, recommendation, retry, target

# `admission` is registered by run_operator() only when the webhook server is configured: kopf refuses to start
# with admission handlers and no server.
__all__ = ["benchmark", "indexchange", "lifetime", "live", "operator", "recommendation", "retry", "target"]
