"""The only kopf user: one thin, idempotent module per kind. Importing this package registers the handlers."""

from . import indexchange, operator, recommendation, target

__all__ = ["indexchange", "operator", "recommendation", "target"]
