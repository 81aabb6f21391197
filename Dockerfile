# sluice container image. Build: docker build -t sluice .
# CI lints this file with hadolint and, with no Docker engine on the CI machine, checks
# that the build stage's cargo command works from exactly what it COPYs
# (scripts/docker-context.sh).
# Debian packages are not pinned (DL3008): a pinned version leaves bookworm's archive
# with the next security update, and the build then fails; the base images are pinned.

# --- build -------------------------------------------------------------------------
FROM rust:1.95-slim-bookworm AS build
# librdkafka (bundled, built from source) needs make and perl; OpenSSL headers for
# Kafka TLS/SASL; pkg-config to find them.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends make perl pkg-config libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Everything the workspace's manifests name (its crates, the root package's test and
# bench targets). The image is built without the lab (--no-default-features): the
# worker and its operator commands, no emulator, load generator or capacity tools.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY crates ./crates
COPY tests ./tests
COPY benches ./benches
RUN cargo build --release --locked --bin sluice --no-default-features

# --- run ---------------------------------------------------------------------------
FROM debian:bookworm-slim
# CA certificates: TLS to a broker, an API or Redis signed by a public CA.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libssl3 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 sluice \
 && useradd --uid 10001 --gid sluice --no-create-home --shell /usr/sbin/nologin sluice
COPY --from=build /src/target/release/sluice /usr/local/bin/sluice
COPY config/sluice.toml /etc/sluice/sluice.toml
USER 10001:10001
ENV SLUICE_CONFIG=/etc/sluice/sluice.toml \
    SLUICE_LOG_FORMAT=json
EXPOSE 9464
# The binary checks its own /healthz: no curl in the image.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD ["sluice", "healthcheck", "--url", "http://127.0.0.1:9464/healthz"]
ENTRYPOINT ["sluice"]
CMD ["run"]
