#!/usr/bin/env bash
# Builds every image deploy/docker-compose.yml needs with no container
# registry: nothing is pulled, only Debian packages (apt) and Go modules
# (the Go module proxy) are downloaded.
#
#   deploy/offline/build-images.sh
#   docker-compose -f deploy/docker-compose.yml -f deploy/docker-compose.offline.yml up -d
#
# Images (project-local names, never a public image's):
#   zcluster-local/zcluster:offline  FROM scratch: the static zcluster binary
#   zcluster-local/etcd:offline      Debian's etcd-server + etcdctl
#   zcluster-local/redis:offline     Debian's redis-server + redis-cli
# (ZC_IMAGE_TAG=T builds :T instead; the compose override reads it too.)
# The etcd and Redis images are built FROM zcluster-local/debian:<key>, a
# minimal Debian root made with debootstrap and `docker import`. That base
# is built once per machine and reused while it exists (its tag changes
# when the package list below changes); ZC_REBUILD_BASE=1 forces a rebuild.
#
# Needs: root (debootstrap, chroot), Go, debootstrap, a Docker engine.
set -euo pipefail
cd "$(dirname "$0")/../.."
here=deploy/offline

suite=${DEBIAN_SUITE:-bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
packages="etcd-server etcd-client redis-server redis-tools"
# The base's tag names its content: suite + package list (+ a recipe version).
key=$(printf '%s %s v2' "$suite" "$packages" | sha256sum | cut -c1-12)
base=zcluster-local/debian:$suite-$key
tag=${ZC_IMAGE_TAG:-offline}

work=$(mktemp -d /tmp/zcluster-images.XXXXXX)
trap 'rm -rf "$work"' EXIT
log() { printf '== %s (%ss)\n' "$*" "$SECONDS"; }

# --- zcluster: static binary FROM scratch -----------------------------------
log "zcluster binary (CGO_ENABLED=0)"
mkdir -p "$work/zcluster/etc"
version=$(git describe --always --dirty 2>/dev/null || echo dev)
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X github.com/zcluster/zcluster.buildVersion=$version" \
  -o "$work/zcluster/zcluster" ./cmd/zcluster
# A non-root user for USER (scratch has no /etc/passwd of its own).
echo 'nonroot:x:65532:65532:nonroot:/:/sbin/nologin' > "$work/zcluster/etc/passwd"
echo 'nonroot:x:65532:' > "$work/zcluster/etc/group"
log "image zcluster-local/zcluster:$tag"
docker build -q -f "$here/zcluster.Dockerfile" -t "zcluster-local/zcluster:$tag" "$work/zcluster" >/dev/null

# --- Debian base (cached) ---------------------------------------------------
if [ "${ZC_REBUILD_BASE:-0}" != 1 ] && docker image inspect "$base" >/dev/null 2>&1; then
  log "base $base: cached"
else
  log "base $base: debootstrap $suite ($mirror)"
  root="$work/root"
  debootstrap --variant=minbase "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 ||
    { tail -n 30 "$work/debootstrap.log"; exit 1; }
  # No service starts inside the chroot while packages install.
  printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
  chmod +x "$root/usr/sbin/policy-rc.d"
  log "apt-get install $packages"
  chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  chroot "$root" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends $packages >"$work/apt.log" 2>&1 ||
    { tail -n 30 "$work/apt.log"; exit 1; }
  chroot "$root" apt-get clean
  # What the etcd and Redis images need, done here so that their
  # Dockerfiles hold no RUN step (no container to start and commit).
  ln -s /usr/bin/etcd "$root/usr/local/bin/etcd"
  mkdir -p "$root/etcd-data" "$root/data"
  chroot "$root" chown etcd:etcd /etcd-data
  chroot "$root" chown redis:redis /data
  chmod 700 "$root/etcd-data"
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/log/* \
    "$root"/usr/share/doc "$root"/usr/share/man "$root"/usr/share/info "$root"/usr/share/locale \
    "$root/usr/sbin/policy-rc.d"
  log "docker import $base"
  tar -C "$root" -c . | docker import \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'LABEL org.zcluster.offline=base' -c 'CMD ["/bin/bash"]' - "$base" >/dev/null
fi

# --- etcd and Redis on the base ---------------------------------------------
for svc in etcd redis; do
  log "image zcluster-local/$svc:$tag"
  docker build -q --build-arg "BASE=$base" -f "$here/$svc.Dockerfile" \
    -t "zcluster-local/$svc:$tag" "$here" >/dev/null
done
# Earlier builds of these tags, now untagged, go.
docker image prune -f --filter label=org.zcluster.offline >/dev/null
log "done"
docker image ls --filter reference='zcluster-local/*'
