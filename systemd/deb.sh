#!/usr/bin/env bash
# Builds the Debian package of this checkout: `deb.sh OUTDIR`, called by `make deb` (after `make build`).
#
# The package holds what `install.sh files` lays out (the app with its production node_modules and the pinned
# Node runtime, the wrapper, the units, sysusers and logrotate files, the default /etc/sluice/sluice.env and
# ulogd.conf as conffiles) and nothing per box: the maintainer scripts run the installed copy of install.sh
# (configure / deconfigure / purge), which creates the backup key, the state and log dirs, the user and
# enables the units, exactly as `make install` does. The bundled Node makes the package architecture-specific.
#
# DEB_COMPRESS (default xz) and DEB_LEVEL (default 6) pick dpkg-deb's compression (tests use gzip -1);
# DEB_MAINTAINER sets the Maintainer field for whoever publishes the package.
set -euo pipefail

OUT="${1:?usage: deb.sh OUTDIR}"
SRC="$(cd "$(dirname "$0")/.." && pwd)"
NODE="$SRC/node_modules/node/bin/node"
test -x "$NODE" || { echo "deb.sh: the pinned Node is missing: run 'make node-deps' first" >&2; exit 1; }
command -v dpkg-deb >/dev/null || { echo "deb.sh: dpkg-deb is missing (this builds on Debian)" >&2; exit 1; }

VERSION="$("$NODE" -p 'require(process.argv[1]).version' "$SRC/package.json")"
ARCH="$(dpkg --print-architecture)"
STAGE="$(mktemp -d)"
trap 'rm -rf "$STAGE"' EXIT
ROOT="$STAGE/root"

# The package's paths are install.sh's defaults, whatever the builder's environment says (a PREFIX exported
# for something else would move the wrapper away from where the maintainer scripts expect it).
env -u APPDIR -u PREFIX -u UNITDIR -u CONFDIR -u STATEDIR -u LOGDIR DESTDIR="$ROOT" \
  bash "$SRC/systemd/install.sh" files

mkdir -p "$ROOT/DEBIAN"
# The package's own list: dpkg keeps these on remove and asks before replacing one the installer changed.
cat >"$ROOT/DEBIAN/conffiles" <<EOF
/etc/sluice/sluice.env
/etc/sluice/ulogd.conf
/etc/logrotate.d/sluice
EOF

for script in postinst prerm postrm; do
  install -m 0755 "$SRC/systemd/deb/$script" "$ROOT/DEBIAN/$script"
done

cat >"$ROOT/DEBIAN/control" <<EOF
Package: sluice
Version: $VERSION
Architecture: $ARCH
Maintainer: ${DEB_MAINTAINER:-Sluice developers <sluice@localhost>}
Installed-Size: $(du -sk --exclude=DEBIAN "$ROOT" | cut -f1)
Depends: nftables, ulogd2, ulogd2-json, procps, openssl, util-linux
Section: net
Priority: optional
Description: edge gateway firewall for industrial (OT) networks
 Sluice enforces the IEC 62443 zone and conduit model on a Linux gateway: a YAML policy is checked,
 linted and compiled into one nftables table loaded atomically, and Modbus TCP and OPC UA flows pass
 through protocol filters. Ships its own pinned Node.js runtime.
EOF

mkdir -p "$OUT"
DEB="$OUT/sluice_${VERSION}_${ARCH}.deb"
dpkg-deb --root-owner-group -Z"${DEB_COMPRESS:-xz}" -z"${DEB_LEVEL:-6}" --build "$ROOT" "$DEB" >/dev/null
echo "$DEB"
