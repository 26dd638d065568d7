"""Notifications: what happened, said to the sinks people watch (webhook, Slack, Alertmanager). Message building is
pure (``messages``); delivery is I/O (``deliver``)."""
