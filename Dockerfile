# bookme-crm: the API with an embedded worker on SQLite by default.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
RUN useradd --create-home --uid 10001 --user-group --shell /usr/sbin/nologin app

COPY pyproject.toml README.md ./
COPY adapter ./adapter
COPY outbox ./outbox
RUN pip install --no-cache-dir . && mkdir -p /app/var && chown app:app /app/var
COPY mappings ./mappings

USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=3)"]
CMD ["bookme-crm", "serve", "--host", "0.0.0.0", "--port", "8000"]
