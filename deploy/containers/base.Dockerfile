# Local base images, for machines that reach no image registry.
#
# The service Dockerfiles start FROM public images by default (golang,
# node, python, debian, distroless). Where no registry answers, `make
# docker-build` makes a Debian bookworm root file system with debootstrap
# (from Debian's package archive), imports it as
# localhost/shop-base/rootfs:bookworm, builds these targets on it, and passes
# them to the service Dockerfiles as their base build arguments:
#
#   localhost/shop-base/debian:bookworm   the root file system with this machine's
#                                     trusted certificate authorities (a machine
#                                     without a registry may reach PyPI, npm and
#                                     the Go proxy only through a TLS-inspecting
#                                     gateway whose CA its own trust store holds)
#   localhost/shop-base/python:3.11   Debian's python3 (3.11) with venv
#   localhost/shop-base/node:20       this machine's Node 20 (the one that builds
#                                     the local stack), laid out under /usr/local
#                                     like the official node image
#   localhost/shop-base/golang:1.26   this machine's Go toolchain in /usr/local/go
#
# The context is .tmp/containers/base/ (deploy/shopstack/containers.py fills it
# with ca-certificates.crt, node.tar and go.tar).

ARG ROOTFS_IMAGE=localhost/shop-base/rootfs:bookworm

FROM ${ROOTFS_IMAGE} AS debian
# Outside /etc/ssl/certs, which Debian's ca-certificates package rewrites
# when a later apt-get install pulls it in. Go and OpenSSL (Python) read
# SSL_CERT_FILE, pip PIP_CERT, Node NODE_EXTRA_CA_CERTS.
COPY ca-certificates.crt /etc/ssl/host-ca-certificates.crt
ENV SSL_CERT_FILE=/etc/ssl/host-ca-certificates.crt \
    PIP_CERT=/etc/ssl/host-ca-certificates.crt \
    NODE_EXTRA_CA_CERTS=/etc/ssl/host-ca-certificates.crt

FROM debian AS python
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python-is-python3 \
 && rm -rf /var/lib/apt/lists/*

FROM debian AS node
# node, npm and the headers node-gyp compiles better-sqlite3 against.
ADD node.tar /

FROM debian AS golang
ADD go.tar /usr/local/
ENV PATH=/usr/local/go/bin:$PATH
