#!/usr/bin/env bash
# Push/pull benchmark: lade vs docker against a fresh loopback docker-registry (issue 6).
# Usage: testdata/bench-pushpull.sh [WORKDIR]   (root, dockerd running, release lade built)
# Workload: a 4-layer ~203 MB image built by docker: busybox rootfs (2 MB), 80 MB random,
# 3000 base64-of-random files of 20 kB (61 MB, compressible to ~76 %), 60 random 1 MB files.
set -euo pipefail
W=${1:-/tmp/lade-pp-bench}
HERE=$(cd "$(dirname "$0")" && pwd)
LADE=${LADE:-$HERE/../target/release/lade}
DOCKER=/usr/bin/docker
RUNS=${RUNS:-5}
mkdir -p "$W"
cd "$W"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
REG=127.0.0.1:$port
cat > reg.yml <<EOF
version: 0.1
log: {level: error}
storage:
  filesystem: {rootdirectory: $W/storage}
  delete: {enabled: true}
http: {addr: $REG}
EOF
docker-registry serve reg.yml > reg.log 2>&1 &
REG_PID=$!
trap 'kill $REG_PID 2>/dev/null || true' EXIT
until curl -fs "http://$REG/v2/" >/dev/null; do sleep 0.1; done

# The image, built once.
# Legacy builder (DOCKER_BUILDKIT=0): BuildKit's cache would keep the layers after `docker rmi`,
# and docker pull would find them. The base gets a unique file so no other image shares it.
if [ ! -f bench.tar ]; then
  rm -rf rootfs && "$HERE/mkrootfs.sh" rootfs >/dev/null
  head -c 32 /dev/urandom | base64 > rootfs/etc/bench-id
  tar -C rootfs -cf rootfs.tar .
  $DOCKER import rootfs.tar lade-pp-bench/base:1 >/dev/null
  mkdir -p ctx
  cat > ctx/Dockerfile <<'EOF'
FROM lade-pp-bench/base:1
RUN head -c 80000000 /dev/urandom > /big.bin
RUN mkdir /small && for i in $(seq 1 3000); do head -c 15000 /dev/urandom | base64 > /small/f$i; done
RUN mkdir /mid && for i in $(seq 1 60); do head -c 1000000 /dev/urandom > /mid/m$i; done
EOF
  DOCKER_BUILDKIT=0 $DOCKER build -q --network=none -t lade-pp-bench/app:1 ctx >/dev/null
  $DOCKER save -o bench.tar lade-pp-bench/app:1
fi
$DOCKER image inspect lade-pp-bench/app:1 >/dev/null 2>&1 || $DOCKER load -q -i bench.tar >/dev/null
$DOCKER tag lade-pp-bench/app:1 "$REG/bench/docker:1"
rm -rf store && "$LADE" --root store load -q -i bench.tar >/dev/null
"$LADE" --root store tag lade-pp-bench/app:1 "$REG/bench/lade:1"
wipe="sh -c 'rm -rf $W/storage/docker; sync'"

# The "blobs remembered" case: one untimed push records the compressed blobs in store/.
"$LADE" --root store push -q "$REG/bench/lade:1" >/dev/null
echo "== push to a fresh registry (storage wiped before every run)"
hyperfine -N -r "$RUNS" --export-markdown push.md \
  --prepare "sh -c 'rm -rf $W/storage/docker $W/cold; $LADE --root $W/cold load -q -i $W/bench.tar >/dev/null; $LADE --root $W/cold tag lade-pp-bench/app:1 $REG/bench/lade:1; sync'" \
  "$LADE --root $W/cold push -q $REG/bench/lade:1" \
  --prepare "$wipe" \
  "$LADE --root $W/store push -q $REG/bench/lade:1" \
  --prepare "$wipe" \
  "$DOCKER push -q $REG/bench/docker:1"

echo "== pull into an empty store / docker without the image"
rm -rf "$W/storage/docker"
$DOCKER push -q "$REG/bench/docker:1" >/dev/null
# docker must not find the layers locally: drop every image that shares them.
$DOCKER rmi -f lade-pp-bench/app:1 lade-pp-bench/base:1 "$REG/bench/docker:1" >/dev/null
$DOCKER image prune -f >/dev/null
hyperfine -N -r "$RUNS" --export-markdown pull.md \
  --prepare "sh -c 'rm -rf $W/pulled; sync'" \
  "$LADE --root $W/pulled pull -q $REG/bench/docker:1" \
  --prepare "sh -c 'rm -rf $W/pulled; sync'" \
  "sh -c '$LADE --root $W/pulled pull -q $REG/bench/docker:1 && $LADE --root $W/pulled system unpack $REG/bench/docker:1'" \
  --prepare "sh -c '$DOCKER rmi -f $REG/bench/docker:1 >/dev/null 2>&1; $DOCKER image prune -f >/dev/null; sync'" \
  "$DOCKER pull -q $REG/bench/docker:1"

echo "== peak memory (/usr/bin/time -v)"
mem() { /usr/bin/time -v "$@" 2>&1 >/dev/null | awk -F': ' '/Elapsed/{e=$2} /Maximum resident/{m=$2} END{printf "wall %s, max RSS %.1f MB\n", e, m/1024}'; }
rm -rf "$W/storage/docker" "$W/cold"
"$LADE" --root "$W/cold" load -q -i bench.tar >/dev/null
"$LADE" --root "$W/cold" tag lade-pp-bench/app:1 "$REG/bench/lade:1"
echo "lade push (compressing): $(mem "$LADE" --root "$W/cold" push -q "$REG/bench/lade:1")"
rm -rf "$W/storage/docker"
echo "lade push (blobs remembered): $(mem "$LADE" --root "$W/cold" push -q "$REG/bench/lade:1")"
rm -rf "$W/pulled"
echo "lade pull (empty store): $(mem "$LADE" --root "$W/pulled" pull -q "$REG/bench/lade:1")"
$DOCKER rmi -f "$REG/bench/docker:1" >/dev/null 2>&1 || true
$DOCKER image prune -f >/dev/null
