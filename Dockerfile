# wreg-server: the registry API. Stateless: point it at PostgreSQL and S3 (see
# docker-compose.yml and README "Deploying"); with neither it keeps SQLite + files under
# /data, which only makes sense for a single replica with a volume on /data.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    WREG_DATA=/data \
    WREG_LOG_FORMAT=json

RUN groupadd --system --gid 10001 wreg \
    && useradd --system --uid 10001 --gid wreg --home-dir /data --no-create-home wreg \
    && mkdir -p /data && chown wreg:wreg /data

WORKDIR /src
COPY pyproject.toml README.md ./
COPY client ./client
COPY server ./server
COPY migrations ./migrations
RUN pip install ".[server]" && rm -rf /src

WORKDIR /data
USER wreg
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=2).status != 200)"]
CMD ["wreg-server", "serve", "--host", "0.0.0.0", "--port", "8080"]
