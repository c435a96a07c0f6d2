# `gridkv node` as a container image: python:3.11-slim, non-root (uid 10001).
#
#   docker build -t gridkv:0.1.0 .
#   docker run --rm -p 7946:7946 -p 6379:6379 -p 8080:8080 gridkv:0.1.0
#
# Arguments after the image go to `gridkv node` (`--config /etc/gridkv/node.yaml`,
# `--health HOST:PORT`); every configuration key can also be set by a GRIDKV_* variable
# (docs/configuration.md#environment-variables). docs/deployment.md explains the rest, and
# examples/kubernetes/ runs a cluster of three from this image.

FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY gridkv-core/ gridkv-core/
COPY gridkv-transport-tcp/ gridkv-transport-tcp/
COPY gridkv-metrics/ gridkv-metrics/
# One virtual environment holds everything; the final stage copies it and nothing else.
RUN python -m venv /opt/gridkv \
    && /opt/gridkv/bin/pip install --no-cache-dir \
        ./gridkv-core "./gridkv-transport-tcp[uvloop]" ./gridkv-metrics

FROM python:3.11-slim
RUN groupadd --gid 10001 gridkv \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin gridkv
COPY --from=build /opt/gridkv /opt/gridkv
# Listen on every interface inside the container; a node of a cluster must still be told
# the address the others reach it at (GRIDKV_LOCAL_ADDRESS, the pod's IP in Kubernetes).
ENV PATH="/opt/gridkv/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GRIDKV_NETWORK__BIND_ADDR=0.0.0.0:7946 \
    GRIDKV_HEALTH__LISTEN=0.0.0.0:8080
USER 10001:10001
# 7946: between nodes (tcp); 6379: the Redis-protocol door (resp.listen); 8080: /livez, /readyz
EXPOSE 7946 6379 8080
ENTRYPOINT ["gridkv", "node"]
