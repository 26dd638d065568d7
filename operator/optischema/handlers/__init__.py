"""The only kopf user: one thin, idempotent module per kind, plus admission."""
