# One image for every service of the cluster; docker-compose.yml runs one container per service
# with `itg service NAME`. No secrets are baked in: the database URL and keys come from the
# environment at run time.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY common common
COPY services services
COPY bots bots
RUN pip install . && useradd --system --uid 10001 --home-dir /app itg \
    && mkdir -p /data && chown itg /data
COPY config config

USER itg
VOLUME ["/data"]
EXPOSE 8000 5550-5568
STOPSIGNAL SIGTERM
ENTRYPOINT []
CMD ["itg", "--help"]
