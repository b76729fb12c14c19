FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --bins

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/forewarn /src/target/release/forewarn-sim /usr/local/bin/
COPY models /models
EXPOSE 8080
CMD ["forewarn", "serve"]
