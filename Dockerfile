# fedrec coordinator. Build: docker build -t fedrec .   Run: docker run -p 8000:8000 -v fedrec:/data fedrec
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FEDREC_HOST=0.0.0.0 \
    FEDREC_PORT=8000 \
    FEDREC_DATA_DIR=/data

RUN useradd --create-home --uid 10001 fedrec && mkdir /data && chown fedrec /data
WORKDIR /app

# Dependency layer: rebuilt only when pyproject.toml changes (empty stand-in packages).
COPY pyproject.toml README.md ./
RUN mkdir -p coordinator participant_sdk fedrec migrations \
    && touch coordinator/__init__.py participant_sdk/__init__.py fedrec/__init__.py
RUN pip install ".[server,s3]"

# Project layer.
COPY coordinator ./coordinator
COPY participant_sdk ./participant_sdk
COPY fedrec ./fedrec
COPY migrations ./migrations
RUN pip install --no-deps --force-reinstall .

USER fedrec
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('FEDREC_PORT', '8000'), timeout=4)"
ENTRYPOINT ["fedrec", "serve"]
