"""The only kopf user: one thin, idempotent module per kind. Importing this package registers the handlers."""

from . import admission, indexchange, operator, recommendation, target

__all__ = ["admission", "indexchange", "operator", "recommendation", "target"]
