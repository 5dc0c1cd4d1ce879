# dnsfailover (the dnsfailover-server distribution, with its fast, cluster and sns extras: an
# image serves any config) and both providers (route53, rfc2136),
# its dependencies at the versions pinned in constraints/docker.txt (./scripts/constraints).
#   docker build -t dnsfailover \
#     --build-arg SOURCE_URL="$(git remote get-url origin)" --build-arg REVISION="$(git rev-parse HEAD)" .
#   docker run -p 53:53/udp -p 53:53/tcp -p 127.0.0.1:8053:8053 \
#     -v $PWD/config.yaml:/etc/dnsfailover/config.yaml:ro -v dnsfailover-state:/var/lib/dnsfailover \
#     -e DNSFAILOVER_API_TOKEN dnsfailover
# Reload the config: docker kill --signal HUP CONTAINER.

# -- build: wheels, with a compiler for the optional batched-UDP extension ------------------
FROM python:3.11-slim AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY constraints/docker.txt ./constraints/docker.txt
COPY dnsfailover ./dnsfailover
COPY providers/route53 ./providers/route53
COPY providers/rfc2136 ./providers/rfc2136
RUN pip wheel --no-cache-dir --wheel-dir /wheels --constraint constraints/docker.txt \
       '.[fast,cluster,sns]' ./providers/route53 ./providers/rfc2136

# -- run -------------------------------------------------------------------------------------
FROM python:3.11-slim
# The version is the core's (pyproject.toml); where the source is, the builder says.
ARG VERSION=0.1.0
ARG SOURCE_URL=""
ARG REVISION=""
LABEL org.opencontainers.image.title="dnsfailover" \
      org.opencontainers.image.description="DNS-based global failover: health checks, a failover engine and an authoritative DNS server" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.revision="${REVISION}"
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10053 dnsfailover \
    && useradd --system --uid 10053 --gid dnsfailover --home-dir /var/lib/dnsfailover \
       --create-home --shell /usr/sbin/nologin dnsfailover
COPY --from=build /wheels /wheels
COPY constraints/docker.txt /tmp/constraints.txt
RUN pip install --no-cache-dir --no-index --find-links=/wheels --constraint /tmp/constraints.txt \
       'dnsfailover-server[fast,cluster,sns]' dnsfailover-route53 dnsfailover-rfc2136 \
    && rm -rf /wheels /tmp/constraints.txt
# A config that runs as it is; mount your own over it.
COPY config/example.yaml /etc/dnsfailover/config.yaml
USER dnsfailover
WORKDIR /var/lib/dnsfailover
VOLUME ["/var/lib/dnsfailover"]
# Docker (20.10+) lets unprivileged users bind ports below 1024 inside a container's own
# network namespace; with --network host use --dns 0.0.0.0:5353 instead.
EXPOSE 53/udp 53/tcp 8053/tcp
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8053/healthz', timeout=2).status != 200)"]
ENTRYPOINT ["dnsfailover"]
# The API listens on every interface so -p can publish it; reads are open, changes need
# DNSFAILOVER_API_TOKEN.  Publish it on 127.0.0.1 only, as above, unless you need more.
CMD ["serve", "/etc/dnsfailover/config.yaml", "--state", "/var/lib/dnsfailover/state.db", \
     "--dns", "0.0.0.0:53", "--api", "0.0.0.0:8053", "--log-format", "json"]
