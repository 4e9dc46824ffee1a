# The bot's image. Multi-stage: dependencies are built once in a builder, the runtime stage carries only
# the virtualenv and the source, and runs as a non-root user. Start: migrations, then the bot.
FROM python:3.11-slim-bookworm AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first so source edits don't rebuild them.
# setup.py builds the one C module (bot/faces/_native.c), so its source comes along.
COPY pyproject.toml setup.py README.md ./
COPY bot/faces/_native.c ./bot/faces/
RUN mkdir -p bot cogs storage worker sim && touch bot/__init__.py cogs/__init__.py storage/__init__.py \
       worker/__init__.py sim/__init__.py \
    && pip install . && pip uninstall -y loraops
COPY bot ./bot
COPY cogs ./cogs
COPY storage ./storage
COPY worker ./worker
COPY sim ./sim
RUN pip install --no-deps .

FROM python:3.11-slim-bookworm AS runtime
# libgl/libglib: OpenCV (insightface) needs them at import.
RUN apt-get update && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 loraops
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 DATA_DIR=/data
RUN mkdir -p /data && chown loraops:loraops /data
VOLUME ["/data"]
USER loraops
WORKDIR /home/loraops
# `loraops run` applies migrations before it connects; `loraops migrate` is the same step alone.
CMD ["sh", "-c", "loraops migrate && exec loraops run"]
