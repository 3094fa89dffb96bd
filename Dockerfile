# KeyStake signer container: a minimal runtime (no shell, no package manager) holding only the
# signer, the SoftHSM2 PKCS#11 module and the shared libraries both need.
#
#   firmware/build-base.sh                      # Debian base from debootstrap -> localhost/keystake-base:bookworm
#   cargo build --release --locked --bin keystake-signer
#   podman build --format docker -t keystake-signer .
#
# The release binary comes from the build context: the base has no Rust toolchain recent enough
# (the workspace needs Rust >= 1.85), and the builder stage's job is to collect the runtime's files.
# Configuration, certificates and PIN files are mounted at /etc/keystake (owned by uid 10001, mode
# 0600/0700), the data volume at /var/lib/keystake; nothing secret is in the image. Run it with a
# read-only root (firmware/container-test.sh does all of this):
#   podman run --read-only -v /srv/keystake/etc:/etc/keystake:ro -v /srv/keystake/data:/var/lib/keystake \
#     -p 9000:9000 keystake-signer           # after `… keystake-signer init` and `keys import` once
# For a hardware HSM, mount its PKCS#11 module and device instead and set hsm.module.
ARG BASE_TAG=bookworm

FROM localhost/keystake-base:${BASE_TAG} AS builder
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
COPY target/release/keystake-signer /out/usr/local/bin/keystake-signer
# The signer's and the PKCS#11 module's shared libraries (and the dynamic loader), nothing else.
RUN cp --parents /usr/lib/softhsm/libsofthsm2.so /out/ \
 && { ldd /out/usr/local/bin/keystake-signer; ldd /usr/lib/softhsm/libsofthsm2.so; } \
    | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u \
    | xargs -I{} cp -L --parents {} /out/ \
 && mkdir -p /out/etc/keystake /out/var/lib/keystake /out/tmp \
 && echo 'keystake:x:10001:10001:KeyStake signer:/var/lib/keystake:/nonexistent' > /out/etc/passwd \
 && echo 'keystake:x:10001:' > /out/etc/group

FROM scratch
COPY --from=builder /out/ /
COPY --from=builder --chown=10001:10001 /out/var/lib/keystake /var/lib/keystake
USER 10001:10001
WORKDIR /var/lib/keystake
VOLUME ["/var/lib/keystake"]
EXPOSE 9000
# /upcheck over mutual TLS, with the [client] identity named in the mounted configuration.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
  CMD ["/usr/local/bin/keystake-signer", "healthcheck", "--config", "/etc/keystake/signer.toml"]
ENTRYPOINT ["/usr/local/bin/keystake-signer"]
CMD ["serve", "--config", "/etc/keystake/signer.toml"]
