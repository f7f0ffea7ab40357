#!/bin/sh
# One command from a fresh checkout to a running lade-built image, offline:
#   builds lade, makes the example's busybox base image locally (testdata/mkrootfs.sh + lade
#   import), builds examples/hello (two stages, RUN steps) and runs the result.
# Needs root (the sandbox), cargo, busybox-static. Uses its own store unless LADE_ROOT is set.
set -eu
cd "$(dirname "$0")/.."
export LADE_ROOT="${LADE_ROOT:-/tmp/lade-quickstart/store}"
work=/tmp/lade-quickstart
mkdir -p "$work"

cargo build --release --quiet
lade=target/release/lade

testdata/mkrootfs.sh --tar "$work/busybox.tar" >/dev/null
$lade import --change 'CMD ["/bin/sh"]' "$work/busybox.tar" lade-example/busybox:1 >/dev/null
$lade build -t lade-example/hello:1 examples/hello

$lade run --rm lade-example/hello:1
