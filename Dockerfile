# One image for every hookrun service; the command chooses the service:
#
#   docker run IMAGE                                  # gateway (the default CMD)
#   docker run IMAGE python -m hookrun.status
#   docker run IMAGE python -m hookrun.runner
#   docker run IMAGE python -m hookrun.notifier
#   docker run IMAGE python -m hookrun.dev.receiver  # the demo completion-webhook receiver
#
# Build: docker build -t hookrun .

FROM python:3.11-slim AS base

# Same uv as `make setup` (Makefile UV_VERSION), so it reads uv.lock the same way.
RUN pip install --no-cache-dir uv==0.13.8

ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    PYTHONUNBUFFERED=1 \
    PATH="/app/.venv/bin:$PATH"

WORKDIR /app

# Third-party dependencies first (a layer that survives source changes): the lock file and
# every workspace member's pyproject.toml are all uv needs to resolve them.
COPY pyproject.toml uv.lock ./
COPY libs/events/pyproject.toml libs/events/
COPY libs/config/pyproject.toml libs/config/
COPY libs/dev/pyproject.toml libs/dev/
COPY libs/cli/pyproject.toml libs/cli/
COPY services/gateway/pyproject.toml services/gateway/
COPY services/runner/pyproject.toml services/runner/
COPY services/status/pyproject.toml services/status/
COPY services/notifier/pyproject.toml services/notifier/
RUN uv sync --frozen --no-dev --no-install-workspace

# Then the workspace itself (see .dockerignore for what stays out).
COPY . .
RUN uv sync --frozen --no-dev

# Executions run as subprocesses of the runner; nothing here needs root.
RUN useradd --create-home --uid 10001 hookrun \
    && mkdir -p /data/status /data/runner \
    && chown -R hookrun:hookrun /data
USER hookrun

EXPOSE 8000 8001


FROM base AS runtime
CMD ["python", "-m", "hookrun.gateway"]
