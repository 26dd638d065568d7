# First version: the operator's package on a Python base. Issue 11 makes it multi-stage, non-root by default checks,
# and adds the PostgreSQL client tools for sandboxes. BASE can be a locally built image where registries are
# unreachable (see `make image`, arriving with issue 11).
ARG BASE=python:3.11-slim
FROM ${BASE}
ARG PIP_CERT=
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY operator ./operator
RUN pip install --no-cache-dir ${PIP_CERT:+--cert "$PIP_CERT"} -c constraints.txt . \
 && useradd --system --uid 10001 --no-create-home optischema
USER 10001
ENTRYPOINT ["optischema"]
CMD ["--help"]
