#!/usr/bin/env bash
# Installs and starts everything the test suite needs, on a fresh machine, as root.
# Idempotent: a second run only checks. Used by `make test` (and so by .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(runc crun docker.io skopeo umoci buildah docker-registry busybox-static
              debootstrap apache2-utils openssl iproute2 ca-certificates git
              bsdutils e2fsprogs util-linux coreutils tar mount libseccomp2
              openssh-client)
CACHE=${PYBUILD_TEST_CACHE:-/var/cache/pybuild-tests}

log() { printf '[setup] %s\n' "$*"; }

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    log "apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

log "pip install -e .[test,bench]"
python3 -m pip install -q -e '.[test,bench]'

# crun 1.8 refuses "cgroups in hybrid mode" when the cgroup v2 hierarchy holds controllers
# (hugetlb on these VMs): mount each of them as a v1 hierarchy, as the other controllers are.
# (cgroup files report size 0, so test their content, not `-s`.)
if [ "$(stat -fc %T /sys/fs/cgroup)" = tmpfs ] && [ -n "$(cat /sys/fs/cgroup/unified/cgroup.controllers 2>/dev/null)" ]; then
    for c in $(cat /sys/fs/cgroup/unified/cgroup.controllers); do
        mkdir -p "/sys/fs/cgroup/$c"
        mountpoint -q "/sys/fs/cgroup/$c" || mount -t cgroup -o "$c" cgroup "/sys/fs/cgroup/$c" || true
    done
fi

# The reference builder: docker's engine, with no bridge and no iptables (loopback/host only).
mkdir -p /etc/docker
want='{"bridge":"none","iptables":false,"ip-masq":false}'
if [ "$(cat /etc/docker/daemon.json 2>/dev/null)" != "$want" ]; then
    echo "$want" > /etc/docker/daemon.json
fi
if ! docker info >/dev/null 2>&1; then
    log "starting dockerd"
    # its own session: a job runner that ends the caller's process group must not take dockerd
    # down with it (the tests after that would all fail at their docker fixture)
    setsid nohup dockerd >/var/log/pybuild-test-dockerd.log 2>&1 < /dev/null &
    for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
    docker info >/dev/null 2>&1 || { log "dockerd did not start; see /var/log/pybuild-test-dockerd.log"; exit 1; }
fi

# A Debian bookworm minbase root file system for apt-based tests, made once and cached.
mkdir -p "$CACHE"
if [ ! -s "$CACHE/bookworm-minbase.tar" ]; then
    log "debootstrap bookworm (minbase) into $CACHE (once)"
    tmp=$(mktemp -d "$CACHE/debootstrap.XXXXXX")
    debootstrap --variant=minbase bookworm "$tmp" http://deb.debian.org/debian >"$CACHE/debootstrap.log" 2>&1
    rm -rf "$tmp"/var/cache/apt/archives/*.deb "$tmp"/var/lib/apt/lists/*
    tar --numeric-owner --xattrs -C "$tmp" -cf "$CACHE/bookworm-minbase.tar.part" .
    mv "$CACHE/bookworm-minbase.tar.part" "$CACHE/bookworm-minbase.tar"
    rm -rf "$tmp"
fi
log "ready"
