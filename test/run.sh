#!/usr/bin/env bash
# The project's test command (`npm test`): installs what the tests need on a fresh Debian machine,
# builds, runs every vitest suite, and ends with one plain line "N passed, N failed[, N skipped]".
# Extra arguments are passed to vitest (e.g. `npm test -- test/e2e/ranges.test.ts`).
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export DEBIAN_FRONTEND=noninteractive

# System tools the tests drive: a real registry, real clients, FUSE, openssl, curl, and for the
# converter's tests zstd (fixtures), setfattr (xattrs) and python3 (hand-made tar members); nginx as
# a reference server for `skiff check-ranges`. The CRI suite runs pods: runc, the CNI plugins
# (bridge, host-local, loopback in /usr/lib/cni), ip (iproute2) for its bridge, debootstrap for its
# Debian image, and gcc with libc's static archive (libc6-dev) for its sandbox image. buildah builds
# skiff's own image (deploy/image/build.sh); python3-yaml reads the Kubernetes manifest.
need=()
for bin in docker-registry skopeo containerd ctr fusermount3 openssl curl zstd setfattr python3 nginx runc ip debootstrap gcc buildah; do
  command -v "$bin" >/dev/null 2>&1 || need+=("$bin")
done
# fuse-native's binary links libfuse 2 (libfuse.so.2), which fuse3 doesn't provide.
ldconfig -p 2>/dev/null | grep -q 'libfuse\.so\.2 ' || need+=(libfuse.so.2)
[ -x /usr/lib/cni/bridge ] && [ -x /usr/lib/cni/host-local ] && [ -x /usr/lib/cni/loopback ] || need+=(cni-plugins)
# `gcc -static` needs libc.a; gcc answers a bare name when it has none.
command -v gcc >/dev/null 2>&1 && [ -f "$(gcc -print-file-name=libc.a)" ] || need+=(libc.a)
python3 -c 'import yaml' >/dev/null 2>&1 || need+=(python3-yaml)
packages="docker-registry skopeo containerd fuse3 libfuse2 openssl curl zstd attr python3 python3-yaml nginx runc containernetworking-plugins iproute2 debootstrap gcc libc6-dev buildah"
if [ "${#need[@]}" -gt 0 ]; then
  echo "run.sh: missing ${need[*]}: installing Debian packages" >&2
  if [ "$(id -u)" -ne 0 ]; then
    echo "run.sh: not root; install $packages first" >&2
    exit 1
  fi
  apt-get update -q || exit 1
  # shellcheck disable=SC2086 # a list of package names
  apt-get install -y -q \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    $packages || exit 1
  # The packages start system services; the tests run their own private instances.
  for svc in docker-registry containerd nginx; do
    if command -v systemctl >/dev/null 2>&1; then systemctl stop "$svc" >/dev/null 2>&1 || true; fi
  done
fi

# Again when package-lock.json changed since the last install (a pull that added a package).
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm install --no-audit --no-fund || exit 1
fi

npm run build || exit 1

mkdir -p .test-results
rm -f .test-results/vitest*.json
# Each run: its JSON results and vitest's exit status.
runs=()
npx --no-install vitest run --reporter=default --reporter=json --outputFile=.test-results/vitest.json "$@"
runs+=(".test-results/vitest.json" "$?")

# The unit tests again on the container image's Node (deploy/image/node-binary.sh), when the whole
# suite runs: the image runs another Node than this machine's, with other code paths (node:zlib's
# zstd) and another HTTP parser.
if [ "$#" -eq 0 ]; then
  if image_node=$(deploy/image/node-binary.sh); then
    echo "run.sh: the unit tests on the image's Node, $("$image_node" --version)"
    "$image_node" node_modules/vitest/vitest.mjs run test/unit --reporter=default --reporter=json --outputFile=.test-results/vitest-image-node.json
    runs+=(".test-results/vitest-image-node.json" "$?")
  else
    # Counted as a failure, said as what it is rather than as missing results.
    runs+=(".test-results/vitest-image-node.json" "no-node")
  fi
fi

node - "${runs[@]}" <<'NODE'
const fs = require("node:fs");
const args = process.argv.slice(2);
let passed = 0;
let failed = 0;
let skipped = 0;
let broken = 0;
let statusFailed = false;
for (let i = 0; i < args.length; i += 2) {
  const [file, status] = [args[i], args[i + 1]];
  let r;
  try {
    r = JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (e) {
    if (status === "no-node") console.log("run.sh: the image's Node could not be had (deploy/image/node-binary.sh failed): the unit tests did not run on it");
    else console.log(`run.sh: no test results in ${file} (vitest exit status ${status})`);
    broken++;
    continue;
  }
  passed += r.numPassedTests ?? 0;
  failed += r.numFailedTests ?? 0;
  skipped += (r.numPendingTests ?? 0) + (r.numTodoTests ?? 0);
  // A file that failed without a failing test (load error, failing beforeAll/afterAll: its tests are
  // reported as skipped) counts as one failure.
  for (const s of r.testResults ?? []) {
    if (s.status === "failed" && !(s.assertionResults ?? []).some((a) => a.status === "failed")) {
      console.log(`run.sh: ${s.name}: ${String(s.message ?? "failed outside its tests").split("\n")[0]}`);
      broken++;
    }
  }
  if (Number(status) !== 0 && (r.numFailedTests ?? 0) === 0) {
    console.log(`run.sh: vitest exited with status ${status} (errors outside tests) for ${file}`);
    statusFailed = true;
  }
}
const totalFailed = failed + broken;
if (passed + totalFailed === 0) console.log("run.sh: no test ran");
console.log(`${passed} passed, ${totalFailed} failed${skipped > 0 ? `, ${skipped} skipped` : ""}`);
if (totalFailed > 0 || passed === 0 || statusFailed) process.exit(1);
NODE
