# syntax=docker/dockerfile:1
# A small non-root image: a release build on Debian, run on distroless (glibc, no shell), for
# those who build with a container engine. The image the test command builds and checks is made
# without one by scripts/build-image (umoci, skopeo; the same layout, from Debian packages), which
# takes its ENTRYPOINT, CMD, USER and EXPOSE from this file; tests/packaging.rs checks that they
# parse with the binary and that the shipped config is valid.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# The simulated cluster (feature `sim`) stays out of the production image.
RUN cargo build --release --locked --no-default-features \
 && install -D -m 0755 target/release/deploy-watchdog /out/deploy-watchdog \
 && ln -s deploy-watchdog /out/kubectl-watchdog

FROM gcr.io/distroless/cc-debian12:nonroot
# /usr/local/bin/kubectl-watchdog: the same binary as a kubectl plugin (`kubectl watchdog status`).
COPY --from=build /out/ /usr/local/bin/
COPY config/deploy-watchdog.yaml /etc/deploy-watchdog/config.yaml
USER 65532:65532
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/deploy-watchdog"]
CMD ["run", "--config", "/etc/deploy-watchdog/config.yaml", "--log-format", "json"]
