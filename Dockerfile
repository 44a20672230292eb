# The vigie binary in a small runtime image.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --bin vigie

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/vigie /usr/local/bin/vigie
USER 65534
ENTRYPOINT ["/usr/local/bin/vigie"]
