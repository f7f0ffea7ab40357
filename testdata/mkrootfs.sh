#!/usr/bin/env bash
# Makes a small base rootfs for tests and the examples, offline.
#
#   testdata/mkrootfs.sh DEST            # rootfs directory at DEST
#   testdata/mkrootfs.sh --tar FILE      # the same rootfs as a tarball (for `lade import`,
#                                        # `docker import`)
#
# Uses busybox-static (/bin/busybox from Debian's package) when installed: one static binary
# plus a symlink per applet. Otherwise copies a few host binaries and the libraries they need.
# The result is deterministic for a given busybox: fixed mtimes, root ownership, sorted tar.
set -euo pipefail

usage() { echo "usage: $0 DEST | --tar FILE" >&2; exit 2; }
[ $# -ge 1 ] || usage

tar_out=""
if [ "$1" = "--tar" ]; then
  [ $# -eq 2 ] || usage
  tar_out=$2
  dest=$(mktemp -d)
  trap 'rm -rf "$dest"' EXIT
else
  [ $# -eq 1 ] || usage
  dest=$1
  mkdir -p "$dest"
fi

chmod 755 "$dest"
mkdir -p "$dest"/{bin,sbin,etc,root,tmp,proc,sys,dev,home/lade,usr/bin,usr/sbin,var/tmp}
chmod 1777 "$dest/tmp" "$dest/var/tmp"
chmod 700 "$dest/root"

# A static busybox (busybox-static), not the dynamic one of Debian's `busybox` package: the
# rootfs has no libraries. Told apart with ldd (libc-bin, always installed; `file` may not be),
# which says so for a static binary (and exits 1, hence the `|| true`).
is_static() {
  local out
  out=$(ldd "$1" 2>&1 || true)
  case "$out" in
    *"not a dynamic executable"* | *"statically linked"*) return 0 ;;
    *) return 1 ;;
  esac
}

busybox=""
for cand in /bin/busybox /usr/bin/busybox; do
  if [ -x "$cand" ] && is_static "$cand"; then
    busybox=$cand
    break
  fi
done

if [ -n "$busybox" ]; then
  cp "$busybox" "$dest/bin/busybox"
  chmod 755 "$dest/bin/busybox"
  for applet in $("$busybox" --list); do
    [ "$applet" = busybox ] && continue
    [ -e "$dest/bin/$applet" ] || ln -s busybox "$dest/bin/$applet"
  done
else
  echo "mkrootfs: busybox-static not installed; copying host binaries" >&2
  for b in sh ls cat echo true false env id mkdir rm cp mv ln chmod touch sleep stat readlink \
           head tail wc grep sed sort printf test uname hostname ps kill find tr cut; do
    src=$(type -P "$b") || continue  # the file, not a shell builtin of that name
    src=$(readlink -f "$src")
    cp "$src" "$dest/bin/$b"
    ldd "$src" 2>/dev/null | grep -oE '/[^ ]+' | while read -r lib; do
      [ -e "$lib" ] || continue
      mkdir -p "$dest$(dirname "$lib")"
      cp -L "$lib" "$dest$lib"
    done
  done
fi

cat > "$dest/etc/passwd" <<'PW'
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
lade:x:1000:1000:Lade test user:/home/lade:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PW
cat > "$dest/etc/group" <<'GR'
root:x:0:
daemon:x:1:
wheel:x:10:lade
audio:x:29:lade
lade:x:1000:
nogroup:x:65534:
GR
chown 1000:1000 "$dest/home/lade" 2>/dev/null || true
: > "$dest/etc/hosts"
: > "$dest/etc/resolv.conf"
echo "lade-base" > "$dest/etc/hostname"

# Deterministic metadata so two runs give the same tar (same diffID).
find "$dest" -exec touch -h -d @0 {} +

if [ -n "$tar_out" ]; then
  tar --sort=name --numeric-owner --mtime=@0 -C "$dest" -cf "$tar_out" .
fi
