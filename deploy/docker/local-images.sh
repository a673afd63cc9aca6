#!/bin/sh
# Makes, from Debian packages only, local stand-ins for the base images the Dockerfile and
# the compose file name, so that they build and run on a machine that cannot pull from a
# registry (CI, air-gapped hosts):
#
#   quorum-local/cc:nonroot        for gcr.io/distroless/cc-debian12:nonroot (the runtime)
#   quorum-local/cc:debug-nonroot  the same plus busybox at /busybox/sh (the certs-init stage)
#   quorum-local/haproxy:bookworm  for haproxy:3.0 (the compose file's load balancer)
#   quorum-local/managed:bookworm  for debian:bookworm-slim with the managed image's runtimes
#                                  (python3, python3-venv, nodejs) already installed
#
# Needs root, mmdebstrap and a Debian mirror (apt's). Then, from the repository root:
#
#   cargo build --release --bin quorum
#   DOCKER_BUILDKIT=1 docker build -f deploy/docker/Dockerfile --target runtime \
#     --build-arg RUNTIME_IMAGE=quorum-local/cc:nonroot \
#     --build-arg QUORUM_BINARY=target/release/quorum -t quorum:dev .
#
# Images that exist already are kept; FORCE=1 remakes them. DOCKER names the client
# (default: docker). SUITE the Debian release (default: bookworm, as the distroless base).
set -eu

DOCKER="${DOCKER:-docker}"
SUITE="${SUITE:-bookworm}"
FORCE="${FORCE:-0}"

RUNTIME_TAG=quorum-local/cc:nonroot
DEBUG_TAG=quorum-local/cc:debug-nonroot
HAPROXY_TAG=quorum-local/haproxy:$SUITE
MANAGED_TAG=quorum-local/managed:$SUITE

# The Dockerfile's MANAGED_PACKAGES: installed here, so its managed stage finds them and
# needs no mirror.
MANAGED_PACKAGES=python3,python3-venv,nodejs

# What distroless/cc holds: glibc, libgcc, libssl, CA certificates, time zones, netbase.
BASE_PACKAGES=base-files,netbase,tzdata,ca-certificates,libc6,libgcc-s1,libssl3

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

exists() {
    [ "$FORCE" != 1 ] && "$DOCKER" image inspect "$1" >/dev/null 2>&1
}

# extract_root DIR PACKAGES: the packages (and what they depend on) unpacked into DIR, no
# maintainer scripts run, then the users and directories distroless images have: nonroot
# (65532) with its home, root, and /tmp writable by all.
extract_root() {
    dir="$1"
    mmdebstrap --quiet --variant=extract --include="$2" "$SUITE" "$dir"
    rm -rf "$dir/var/cache/apt" "$dir/var/lib/apt/lists" "$dir/usr/share/doc" \
        "$dir/usr/share/man" "$dir/usr/share/info"
    mkdir -p "$dir/etc" "$dir/tmp" "$dir/home/nonroot" "$dir/root"
    cat >"$dir/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
    cat >"$dir/etc/group" <<'EOF'
root:x:0:
nobody:x:65534:
nonroot:x:65532:
EOF
    chmod 1777 "$dir/tmp"
    chown 65532:65532 "$dir/home/nonroot"
}

# import DIR TAG CHANGE...: the directory as a one-layer image.
import() {
    dir="$1"
    tag="$2"
    shift 2
    tar -C "$dir" -c . | "$DOCKER" import "$@" - "$tag" >/dev/null
    echo "made $tag"
}

if exists "$RUNTIME_TAG"; then
    echo "kept $RUNTIME_TAG"
else
    extract_root "$work/cc" "$BASE_PACKAGES"
    import "$work/cc" "$RUNTIME_TAG" --change 'USER 65532:65532' --change 'WORKDIR /home/nonroot'
fi

if exists "$DEBUG_TAG"; then
    echo "kept $DEBUG_TAG"
else
    extract_root "$work/debug" "$BASE_PACKAGES,busybox"
    # The distroless debug images keep busybox and a link per applet (sh, cp, ...) in /busybox.
    mkdir -p "$work/debug/busybox"
    for applet in $("$work/debug/bin/busybox" --list); do
        ln -sf /bin/busybox "$work/debug/busybox/$applet"
    done
    import "$work/debug" "$DEBUG_TAG" --change 'USER 65532:65532' \
        --change 'WORKDIR /home/nonroot' --change 'ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin:/busybox'
fi

if exists "$HAPROXY_TAG"; then
    echo "kept $HAPROXY_TAG"
else
    extract_root "$work/haproxy" "$BASE_PACKAGES,haproxy"
    # The official image reads its configuration here; the compose file mounts it there.
    mkdir -p "$work/haproxy/usr/local/etc/haproxy"
    import "$work/haproxy" "$HAPROXY_TAG" --change 'USER 65532:65532' \
        --change 'ENTRYPOINT ["/usr/sbin/haproxy", "-W", "-db", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]'
fi

if exists "$MANAGED_TAG"; then
    echo "kept $MANAGED_TAG"
else
    # A Debian like debian:bookworm-slim (the essential and required packages: a shell,
    # dpkg, apt, useradd) with the runtimes. Unlike the distroless stand-ins, maintainer
    # scripts run, so the packages are configured as on any Debian.
    mmdebstrap --quiet --variant=minbase --include="$MANAGED_PACKAGES" "$SUITE" "$work/managed"
    rm -rf "$work/managed/var/cache/apt/archives"/*.deb "$work/managed/var/lib/apt/lists"/* \
        "$work/managed/usr/share/doc" "$work/managed/usr/share/man" "$work/managed/usr/share/info"
    import "$work/managed" "$MANAGED_TAG" --change 'CMD ["bash"]'
fi
