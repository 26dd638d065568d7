# The operator's image: `optischema` (run, analyze, analyze-target, benchmark) on Python 3.11 with the PostgreSQL 15
# client tools (pg_dump and pg_restore for sandboxes). `make image` builds it with buildah from wheels built on the
# host; `docker build .` works the same way once dist/wheels exists (make image builds them).
ARG BASE=python:3.11-slim

FROM ${BASE} AS build
COPY dist/wheels /wheels
RUN python3 -m venv /opt/optischema \
 && /opt/optischema/bin/pip install --no-index --find-links /wheels --no-compile optischema-operator \
 && /opt/optischema/bin/pip uninstall -y pip \
 && find /opt/optischema -name '__pycache__' -prune -exec rm -rf {} +

FROM ${BASE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-client-15 \
 && rm -rf /var/lib/apt/lists/* \
 && echo 'optischema:x:10001:10001::/nonexistent:/usr/sbin/nologin' >> /etc/passwd \
 && echo 'optischema:x:10001:' >> /etc/group
COPY --from=build /opt/optischema /opt/optischema
ENV PATH=/opt/optischema/bin:/usr/lib/postgresql/15/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    OPTISCHEMA_PG_BINDIR=/usr/lib/postgresql/15/bin
# Writes go to /tmp only (certificates, schema dumps), so the root filesystem can be read-only.
WORKDIR /tmp
USER 10001:10001
ENTRYPOINT ["optischema"]
CMD ["run", "--all-namespaces"]
