# syntax=docker/dockerfile:1
#
# The Tidegate operator image.
#
#   docker build -t tidegate:0.1.0 .
#
# Two stages: the builder installs the pinned runtime dependencies (requirements.lock)
# and then the tidegate package itself (without resolving anything) into a virtualenv;
# the final stage is the same slim base plus that virtualenv only: no compiler, no
# package cache, no sources. It runs as a numeric non-root user and needs no writable
# path but /tmp, so it works with readOnlyRootFilesystem (the chart mounts an emptyDir
# at /tmp). Pinned by full Python version; pin the digest too when you mirror it.

ARG PYTHON_IMAGE=python:3.11.15-slim-bookworm

# ---------------------------------------------------------------------------- builder
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/tidegate

# Dependencies first: this layer is rebuilt only when the lock changes. --no-deps
# because the lock is the complete closure; pip check proves it is.
COPY requirements.lock /src/requirements.lock
RUN /opt/tidegate/bin/pip install --no-deps --requirement /src/requirements.lock

# Then the package, without its dependencies (already there, pinned).
COPY pyproject.toml README.md /src/
COPY operator /src/operator
RUN /opt/tidegate/bin/pip install --no-deps /src \
 && /opt/tidegate/bin/pip check \
 && /opt/tidegate/bin/python -m compileall -q /opt/tidegate/lib \
 && /opt/tidegate/bin/pip uninstall --yes pip setuptools

# ------------------------------------------------------------------------------ final
FROM ${PYTHON_IMAGE}

LABEL org.opencontainers.image.title="tidegate" \
      org.opencontainers.image.description="Progressive delivery operator for Kubernetes" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY --from=builder /opt/tidegate /opt/tidegate

# Read-only root filesystem: bytecode was compiled in the builder and is never written
# here; HOME and TMPDIR point at /tmp, the only writable mount. No _created series
# (they double the counters' series count for little use).
ENV PATH=/opt/tidegate/bin:$PATH \
    HOME=/tmp \
    TMPDIR=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PROMETHEUS_DISABLE_CREATED_SERIES=True

# The chart and the kustomize base set the same user and group in the pod spec.
USER 65532:65532
WORKDIR /tmp

# /metrics, /healthz, /readyz
EXPOSE 8080

# Flags (--namespace, --metrics-port, --log-level, --log-format) come from the pod's args.
ENTRYPOINT ["tidegate", "operator"]
