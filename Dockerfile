# KeyStake signer appliance container.
#
# Built from a local Debian base made with debootstrap (no registry images needed):
#   firmware/build-base.sh                       # -> localhost/keystake-base:bookworm
#   cargo build --release --locked --bin keystake-signer
#   podman build -t keystake-signer .
# Run (configuration, certificates, PIN files and data mounted from the host; for a hardware HSM
# also mount its PKCS#11 module and device, and set hsm.module accordingly):
#   podman run --rm -p 9000:9000 -v /etc/keystake:/etc/keystake:ro \
#     -v /var/lib/keystake:/var/lib/keystake keystake-signer
ARG BASE_TAG=bookworm
FROM localhost/keystake-base:${BASE_TAG}

# softhsm2 for demos/tests; production images mount the vendor's PKCS#11 module instead.
RUN apt-get update \
 && apt-get install -y --no-install-recommends softhsm2=2.6.* ca-certificates=20230311* \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/keystake --shell /usr/sbin/nologin keystake \
 && mkdir -p /etc/keystake /var/lib/keystake \
 && chown keystake:keystake /var/lib/keystake \
 && chmod 0700 /var/lib/keystake

COPY target/release/keystake-signer /usr/local/bin/keystake-signer

USER 10001:10001
WORKDIR /var/lib/keystake
VOLUME ["/var/lib/keystake"]
EXPOSE 9000
# The signer disables its own core dumps; the health probe needs a client certificate, so
# orchestrators should probe /upcheck with one (see README) rather than a plain TCP check.
ENTRYPOINT ["/usr/local/bin/keystake-signer"]
CMD ["serve", "--config", "/etc/keystake/signer.toml"]
