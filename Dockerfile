# The same build CI runs (`cargo build --release --bins`), then a slim runtime image that
# runs as an unprivileged user. `docker compose` builds it once (see docker-compose.yml).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --bins

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 forewarn \
    && useradd --system --uid 10001 --gid forewarn --home-dir /var/lib/forewarn --create-home forewarn
COPY --from=build /src/target/release/forewarn /src/target/release/forewarn-sim /usr/local/bin/
# Relative paths in the configuration (models/, data/) resolve here, writable by forewarn.
WORKDIR /var/lib/forewarn
COPY --chown=forewarn:forewarn models ./models
USER forewarn
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s CMD ["forewarn", "healthcheck"]
CMD ["forewarn", "serve"]
