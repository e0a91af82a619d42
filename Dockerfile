# Omnichat: one image for the gateway (default), the stream workers and the migrations.
#   docker build -t omnichat .
#   docker run omnichat                    -> omnichat gateway
#   docker run omnichat omnichat worker    -> a Faust stream worker
#   docker run omnichat omnichat migrate   -> apply the SQL migrations
# No torch: the image installs only pyproject.toml's dependencies and none of them needs it
# (remote embeddings come from the OpenAI-compatible endpoint, OMNICHAT_EMBEDDING_*).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# Every dependency ships a manylinux wheel for CPython 3.11: no compiler in the image.
WORKDIR /src

# Dependencies first, in a layer of their own that changes only with pyproject.toml.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# Then the project itself.
COPY README.md ./
COPY omnichat ./omnichat
COPY gateway ./gateway
COPY streams ./streams
COPY agents_pipeline ./agents_pipeline
COPY storage ./storage
RUN pip install . && cd / && rm -rf /src

# Non-root. Its home is the working directory: Faust writes its data dir (<app id>-data)
# in the working directory, so it must be writable.
RUN groupadd --system --gid 10001 omnichat \
    && useradd --system --uid 10001 --gid omnichat --home-dir /var/lib/omnichat \
       --create-home --shell /usr/sbin/nologin omnichat
USER omnichat:omnichat
WORKDIR /var/lib/omnichat

# The gateway binds 0.0.0.0 in a container (its default, 127.0.0.1, is unreachable from
# outside it); 8080 is the gateway, 6066 a worker's Faust web (/metrics).
ENV OMNICHAT_GATEWAY_HOST=0.0.0.0
EXPOSE 8080 6066

CMD ["omnichat", "gateway"]
