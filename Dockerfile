# sluice container image. Build: docker build -t sluice .
# CI lints this file with hadolint; no Docker engine runs on the CI machine, so the build
# steps below are the same commands scripts/test.sh proves (cargo build --release --locked).

# --- build -------------------------------------------------------------------------
FROM rust:1.95-slim-bookworm AS build
# librdkafka (bundled, built from source) needs make and perl; OpenSSL headers for
# Kafka TLS/SASL; pkg-config to find them.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      make=4.3-4.1 perl=5.36.0-7+deb12u2 pkg-config=1.8.1-1 libssl-dev=3.0.19-1~deb12u2 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY tests ./tests
RUN cargo build --release --locked --bin sluice

# --- run ---------------------------------------------------------------------------
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libssl3=3.0.19-1~deb12u2 \
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
