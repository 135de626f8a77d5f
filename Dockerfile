FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY common common
COPY services services
COPY bots bots
RUN pip install --no-cache-dir .
ENTRYPOINT []
