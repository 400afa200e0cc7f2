# The `nomaly` binary in a small image: one image for the scheduler, the executors and the client.
#   docker build -t nomaly .
#   docker compose up -d        (docker-compose.yml: a scheduler and two executors)
#
# Stage 1 builds a release binary (about 30 minutes cold on 2 cores; the cache mounts keep the
# registry and target directory between builds). Stage 2 is Debian slim with that binary only.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p nomaly-cli \
    && install -m 0755 target/release/nomaly /usr/local/bin/nomaly

FROM debian:bookworm-slim
# CA certificates for s3://, gs://, az:// and https:// inputs.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/nomaly /usr/local/bin/nomaly
RUN useradd --system --uid 10001 --home-dir /var/lib/nomaly nomaly \
    && mkdir -p /data/out /var/lib/nomaly/work \
    && chown -R nomaly /data /var/lib/nomaly
USER nomaly
WORKDIR /data
# Ballista's scheduler (gRPC, REST API and Flight SQL) and an executor's ports.
EXPOSE 50050 50051 50052 50053
CMD ["nomaly", "--help"]
