# Slim, non-root image that serves webhooks. Build: docker build -t shopify-receiver .
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY receiver ./receiver
COPY handlers ./handlers
COPY models ./models
COPY backfill ./backfill
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN useradd --create-home --uid 10001 receiver
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/* && rm -rf /wheels
USER receiver
WORKDIR /home/receiver
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz')"
# Inside a container the service must listen beyond loopback.
CMD ["shopify-receiver", "serve", "--host", "0.0.0.0", "--port", "8000"]
