#!/usr/bin/env bash
# Crash-consistency soak: SIGKILL `lade load` of ARCHIVE at random moments N times on one store;
# after every kill the store must pass `lade system check` and every listed image must inspect.
# Then a final load must succeed and `lade system check --verify` re-hash every blob cleanly.
#
#   cli/tests/kill9-load.sh ARCHIVE [N]      (LADE=path/to/lade, default target/release/lade)
#
# The normal test suite runs a smaller version of this (it::store::kill_9_during_load_...).
set -euo pipefail
archive=${1:?usage: $0 ARCHIVE [N]}
n=${2:-20}
lade=${LADE:-target/release/lade}
root=$(mktemp -d /tmp/lade-kill9.XXXXXX)
trap 'rm -rf "$root" "$root.probe"' EXIT

# How long does an uninterrupted load take? Kill points are drawn from [0, 1.3 x that].
t0=$(date +%s%N)
"$lade" --root "$root.probe" load -i "$archive" >/dev/null
full_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
echo "uninterrupted load: ${full_ms} ms"

killed=0
for i in $(seq 1 "$n"); do
  # Up to 1.1x the full time, so some loads are killed while publishing and a few finish.
  delay_ms=$(( RANDOM % (full_ms * 11 / 10 + 1) ))
  "$lade" --root "$root" load -i "$archive" >/dev/null 2>&1 &
  pid=$!
  sleep "$(printf '0.%03d' "$delay_ms")"
  if kill -9 "$pid" 2>/dev/null; then killed=$((killed + 1)); state=killed; else state=finished; fi
  wait "$pid" 2>/dev/null || true
  check=$("$lade" --root "$root" system check) || { echo "run $i: CHECK FAILED"; echo "$check"; exit 1; }
  for id in $("$lade" --root "$root" images -q --no-trunc); do
    "$lade" --root "$root" inspect "$id" >/dev/null || { echo "run $i: image $id unreadable"; exit 1; }
  done
  printf 'run %2d: %-8s at %4d ms: %s\n' "$i" "$state" "$delay_ms" "$(echo "$check" | head -1)"
  # A load that got to the end leaves nothing for the next one to write: empty the store
  # (through rmi + prune, which must also cope with what earlier kills left) so every run
  # is killed while it writes, not while it skips blobs the store already has.
  if "$lade" --root "$root" images -q | grep -q .; then
    "$lade" --root "$root" rmi -f $("$lade" --root "$root" images -q) >/dev/null
    "$lade" --root "$root" prune >/dev/null
    "$lade" --root "$root" system check >/dev/null || { echo "run $i: CHECK FAILED after prune"; exit 1; }
  fi
done
echo "killed $killed of $n loads"
"$lade" --root "$root" load -i "$archive"
"$lade" --root "$root" images
"$lade" --root "$root" system check --verify
"$lade" --root "$root" prune
