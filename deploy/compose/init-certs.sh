#!/bin/sh
# The compose cluster's certificates, made once by the one-shot `certs` service before any
# node starts (docker-compose.yml). Runs as the image's user 65532, so the nodes (same user)
# can read their keys.
#
#   $CA_DIR/ca.crt, ca.key                        the CA; only this service mounts it
#   $CERTS_DIR/<node>/ca.crt, node.crt, node.key   one directory per node, valid for the
#                                                  node's service name, localhost, 127.0.0.1
#   $CERTS_DIR/admin/ca.crt, client.admin.crt/.key for `quorum cluster ...` by an operator
#
# Whatever exists already is kept: running it again (every `docker compose up`) changes
# nothing. `docker compose down -v` deletes the volumes and so the whole set.
set -eu

QUORUM="${QUORUM:-/usr/local/bin/quorum}"
CA_DIR="${CA_DIR:-/ca}"
CERTS_DIR="${CERTS_DIR:-/certs}"
NODES="${QUORUM_NODES:?QUORUM_NODES names the nodes, e.g. quorum-1 quorum-2 quorum-3}"

if [ ! -f "$CA_DIR/ca.key" ]; then
    "$QUORUM" cert create-ca --certs-dir "$CA_DIR"
fi

# `quorum cert create-node|create-client` sign with the CA in the directory they write to;
# they work on a copy beside the CA, and only the results reach the certificates volume, so
# the CA key never does.
issue() {
    out="$1"
    shift
    work="$CA_DIR/work.$$"
    rm -rf "$work"
    mkdir -p "$work" "$out"
    cp -p "$CA_DIR/ca.crt" "$CA_DIR/ca.key" "$work/"
    "$QUORUM" cert "$@" --certs-dir "$work"
    rm -f "$work/ca.key"
    cp -p "$work"/* "$out/"
    rm -rf "$work"
}

for node in $NODES; do
    if [ ! -f "$CERTS_DIR/$node/node.key" ] || [ ! -f "$CERTS_DIR/$node/node.crt" ]; then
        issue "$CERTS_DIR/$node" create-node "$node" localhost 127.0.0.1
    fi
done

if [ ! -f "$CERTS_DIR/admin/client.admin.key" ] || [ ! -f "$CERTS_DIR/admin/client.admin.crt" ]; then
    issue "$CERTS_DIR/admin" create-client admin
fi
echo "certificates ready in $CERTS_DIR: $NODES admin"
