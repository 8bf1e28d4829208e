#!/usr/bin/env bash
# The scoring service image (service/Dockerfile), built locally with podman: there is no Docker daemon
# here and no image registry, so the base image is made once from Debian packages (debootstrap).
#   scripts/container.sh          install the tools if missing, make the base image once, build the image
#   scripts/container.sh base     only the tools and the base image
#   scripts/container.sh app      the Streamlit app's image (app.Dockerfile, context: the repository)
# Settings (environment): IMAGE (localhost/encrypted-mnist-scoring:dev), BASE_IMAGE
# (localhost/debian:bookworm), DEBIAN_MIRROR (default: the Debian mirror apt uses here).
# Each step prints how long it took. Needs root (apt-get, debootstrap, podman as root). In Azure the same
# Dockerfile builds with --build-arg BASE_IMAGE=<Azure's inference base image>, see README.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-localhost/encrypted-mnist-scoring:dev}
BASE_IMAGE=${BASE_IMAGE:-localhost/debian:bookworm}
SUITE=bookworm
# crun fails on this machine's cgroups; runc works.
PODMAN=(podman --runtime runc)

log() { echo "container: $*" >&2; }

# timed LABEL CMD...: run CMD and print how long it took.
timed() {
  local label=$1 start end
  shift
  start=$(date +%s.%N)
  "$@"
  end=$(date +%s.%N)
  log "$label took $(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }') s"
}

# The first mirror apt uses for $SUITE: deb822 *.sources stanzas, then one-line *.list entries.
debian_mirror() {
  local f uri
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    uri=$(awk -v suite="$SUITE" 'BEGIN { RS = ""; FS = "\n" }
      { types = ""; uris = ""; suites = ""
        for (i = 1; i <= NF; i++) {
          line = $i
          if (line ~ /^[ \t]*#/) continue
          if (sub(/^Types:[ \t]*/, "", line)) types = line
          else if (sub(/^URIs:[ \t]*/, "", line)) uris = line
          else if (sub(/^Suites:[ \t]*/, "", line)) suites = line
        }
        if ((" " types " ") ~ / deb / && (" " suites " ") ~ (" " suite " ")) { split(uris, u, " "); print u[1]; exit }
      }' "$f")
    [ -n "$uri" ] && { echo "$uri"; return; }
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    uri=$(awk -v suite="$SUITE" '$1 == "deb" {
        i = 2
        if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
        if ($(i + 1) == suite) { print $i; exit }
      }' "$f")
    [ -n "$uri" ] && { echo "$uri"; return; }
  done
  return 1
}

install_tools() {
  if command -v podman >/dev/null && command -v runc >/dev/null && command -v debootstrap >/dev/null; then
    log "podman, runc and debootstrap are installed"
    return
  fi
  log "installing podman, runc and debootstrap (apt-get)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc debootstrap >/dev/null
}

make_base_image() {
  if "${PODMAN[@]}" image exists "$BASE_IMAGE"; then
    log "base image $BASE_IMAGE exists"
    return
  fi
  local mirror rootfs
  mirror=${DEBIAN_MIRROR:-$(debian_mirror)} || { log "no Debian $SUITE mirror in /etc/apt; set DEBIAN_MIRROR"; exit 1; }
  rootfs=$(mktemp -d /var/tmp/debian-rootfs.XXXXXX)
  # shellcheck disable=SC2064  # expand now: the trap must remove this folder
  trap "rm -rf '$rootfs'" EXIT
  log "debootstrap --variant=minbase $SUITE from $mirror"
  timed "debootstrap" debootstrap --variant=minbase "$SUITE" "$rootfs" "$mirror" >/dev/null
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  import_rootfs() { tar -C "$rootfs" -c . | "${PODMAN[@]}" import --quiet --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >/dev/null; }
  timed "podman import ($BASE_IMAGE)" import_rootfs
  rm -rf "$rootfs"
  trap - EXIT
}

# build_image IMAGE DOCKERFILE CONTEXT
build_image() {
  local image=$1 dockerfile=$2 context=$3
  log "building $image from $dockerfile (context: $context)"
  # The host's CA bundle, read-only and only while building: pip reaches the package index through it.
  # Mounted beside /etc/ssl/certs, not over it: the image's own ca-certificates package writes there.
  timed "podman build ($image)" "${PODMAN[@]}" build --network=host -v /etc/ssl/certs:/run/host-certs:ro \
    --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$image" -f "$dockerfile" "$context"
  log "$image: $("${PODMAN[@]}" image inspect --format '{{.Size}}' "$image" | awk '{ printf "%.0f MB", $1 / 1e6 }')"
}

APP_IMAGE=${APP_IMAGE:-localhost/encrypted-mnist-app:dev}

case "${1:-build}" in
  base) timed "tools" install_tools; make_base_image ;;
  # The service's context is service/ alone: what a deployment ships.
  build) timed "tools" install_tools; make_base_image; build_image "$IMAGE" service/Dockerfile service ;;
  app) timed "tools" install_tools; make_base_image
       bash scripts/setup.sh >/dev/null  # builds static/browser_encryption.js, which the image copies
       build_image "$APP_IMAGE" app.Dockerfile . ;;
  *) echo "usage: $0 [build|base|app]" >&2; exit 2 ;;
esac
