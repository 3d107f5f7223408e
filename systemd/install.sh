#!/usr/bin/env bash
# Installs or removes Sluice on a gateway: `install.sh install|uninstall`, called by `make install|uninstall`.
# The Debian package (systemd/deb.sh) uses the same steps one by one:
#   files                  lay out the software and the default configuration (what the package ships)
#   configure [OLDVERSION] backup key, state and log dirs; on a live system the user, systemd reload, the
#                          units enabled on a first configure (no OLDVERSION) or when the daemon's unit is
#                          not enabled (after a remove), and the running units restarted
#   deconfigure            on a live system: disable and stop the units (the ruleset stays in the kernel)
#   purge                  remove the configuration, state, logs and the user
# install = files + configure; uninstall = deconfigure + remove the files (+ purge with PURGE=1).
#
# Layout (each overridable from the environment; DESTDIR is prepended to all of them):
#   APPDIR=/opt/sluice          the built app (dist/, bin/, docs/, examples/) with its production node_modules,
#                               including the pinned Node runtime (node_modules/node/bin/node)
#   PREFIX=/usr                 PREFIX/bin/sluice: a wrapper that runs the app on the pinned Node
#   UNITDIR=/lib/systemd/system the units of systemd/
#   CONFDIR=/etc/sluice         sluice.env and ulogd.conf (written only when absent), backup.key (0600, created
#                               once and printed once: `sluice backup` signs archives with it)
#   STATEDIR=/var/lib/sluice    state, mode 0700: created if missing, its contents are never touched (upgrade
#                               keeps the policy versions, the running policy, users and audit log)
#   LOGDIR=/var/log/sluice      ulogd2's JSON hand-over file
# On a live system (DESTDIR empty and systemd running) it also creates the `sluice` user, reloads systemd and
# enables the units; an upgrade restarts the units that were running. Anything else only lays out files, so
# packaging (DESTDIR=…) and tests never touch the host. The package's maintainer scripts pass dpkg's
# DPKG_ROOT as DESTDIR, so an install into another root stays inside it.
# `uninstall` removes the software but keeps CONFDIR (the installer's settings and the backup key, like
# Debian conffiles), STATEDIR and LOGDIR; PURGE=1 removes those (and the user) too.
set -euo pipefail

ACTION="${1:-}"
SRC="$(cd "$(dirname "$0")/.." && pwd)"
DESTDIR="${DESTDIR:-}"
APPDIR="${APPDIR:-/opt/sluice}"
PREFIX="${PREFIX:-/usr}"
UNITDIR="${UNITDIR:-/lib/systemd/system}"
CONFDIR="${CONFDIR:-/etc/sluice}"
STATEDIR="${STATEDIR:-/var/lib/sluice}"
LOGDIR="${LOGDIR:-/var/log/sluice}"
PURGE="${PURGE:-0}"
UNITS=(sluice-boot.service sluice-ulogd.service sluice.service sluice-ui.service)

D="$DESTDIR"
live=0
if [ -z "$DESTDIR" ] && [ -d /run/systemd/system ]; then live=1; fi

say() { echo "sluice install: $*" >&2; }

# Unit files name the default paths; rewrite them when the layout differs.
render_unit() {
  sed -e "s#/opt/sluice#${APPDIR}#g" -e "s#/etc/sluice#${CONFDIR}#g" \
    -e "s#/var/lib/sluice#${STATEDIR}#g" -e "s#/var/log/sluice#${LOGDIR}#g" "$1"
}

copy_app() {
  local stage="$D$APPDIR.new.$$"
  rm -rf "$stage"
  mkdir -p "$stage/bin" "$stage/node_modules"
  cp "$SRC/package.json" "$SRC/package-lock.json" "$stage/"
  cp "$SRC/bin/sluice.js" "$stage/bin/"
  cp -R "$SRC/dist" "$stage/dist"
  # This script ships with the app: the package's maintainer scripts run its configure/deconfigure/purge.
  mkdir -p "$stage/systemd"
  cp "$SRC/systemd/install.sh" "$SRC/systemd/install-deps.sh" "$stage/systemd/"
  for d in docs examples web-ui/public; do
    if [ -d "$SRC/$d" ]; then
      mkdir -p "$stage/$(dirname "$d")"
      cp -R "$SRC/$d" "$stage/$d"
    fi
  done
  rm -f "$stage"/examples/*.test.ts
  # Production dependencies only: the closure npm itself computes from the installed, lockfile-pinned tree
  # (no network, no dev tools, the `node` package with its binary included). A package nested under another
  # one's node_modules comes along with its parent.
  local list
  list="$(cd "$SRC" && npm ls --omit=dev --all --parseable 2>/dev/null | tail -n +2 | sed "s#^$SRC/node_modules/##" | sort -u)"
  [ -n "$list" ] || { say "no production dependencies found: run 'make node-deps' first"; exit 1; }
  local last=''
  while IFS= read -r rel; do
    if [ -n "$last" ] && [[ "$rel" == "$last"/* ]]; then continue; fi
    mkdir -p "$stage/node_modules/$(dirname "$rel")"
    cp -R "$SRC/node_modules/$rel" "$stage/node_modules/$rel"
    last="$rel"
  done <<<"$list"
  mkdir -p "$stage/node_modules/.bin"
  ln -sf ../node/bin/node "$stage/node_modules/.bin/node"
  test -x "$stage/node_modules/node/bin/node" || { say "the pinned Node runtime is missing from node_modules/node"; exit 1; }
  chmod -R u=rwX,go=rX "$stage"
  # Swap the whole tree in one rename, so a running daemon's next restart never sees half an upgrade.
  if [ -e "$D$APPDIR" ]; then
    rm -rf "$D$APPDIR.old.$$"
    mv "$D$APPDIR" "$D$APPDIR.old.$$"
    mv "$stage" "$D$APPDIR"
    rm -rf "$D$APPDIR.old.$$"
  else
    mkdir -p "$(dirname "$D$APPDIR")"
    mv "$stage" "$D$APPDIR"
  fi
}

write_ulogd_conf() {
  local conf="$D$CONFDIR/ulogd.conf"
  [ -e "$conf" ] && return 0
  # The text comes from the same function the lab uses (gateway/ulogd.ts), run on the bundled Node. The
  # plugin dir is the target's multiarch path; when ulogd2 is not installed here, Debian's for this machine.
  local multiarch
  multiarch="$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -print-multiarch 2>/dev/null || echo "$(uname -m)-linux-gnu")"
  "$D$APPDIR/node_modules/node/bin/node" --input-type=module -e "
    const u = await import('$D$APPDIR/dist/gateway/ulogd.js');
    const t = await import('$D$APPDIR/dist/policies/types.js');
    process.stdout.write(u.ulogdConfig({
      group: t.DEFAULT_COMPILE_OPTIONS.nflogGroup,
      jsonFile: '$LOGDIR/ulogd.json',
      pluginDir: u.findUlogdPluginDir() ?? '/usr/lib/$multiarch/ulogd',
    }));" >"$conf.tmp"
  chmod 0644 "$conf.tmp"
  mv "$conf.tmp" "$conf"
}

# The per-gateway backup key: 32 random bytes as hex, readable by root only. Created once, never replaced
# (archives made with it could no longer be restored), and printed once so the installer can keep a copy
# offline: a replacement box restores the old box's archives with `sluice restore --key-file`. A package
# built with DESTDIR must not ship this file (every box would share the key): delete it from the image.
# $1 = 0 names the file instead of printing the key: under apt, maintainer-script output is kept in
# /var/log/apt/term.log, and whoever holds the key can forge a backup that restore accepts.
write_backup_key() {
  local show="${1:-1}"
  local key="$D$CONFDIR/backup.key"
  [ -e "$key" ] && return 0
  (
    umask 077
    od -An -v -N32 -tx1 /dev/urandom | tr -d ' \n' >"$key.tmp"
    echo >>"$key.tmp"
  )
  chmod 0600 "$key.tmp"
  mv "$key.tmp" "$key"
  if [ "$show" = 1 ]; then
    say "created the backup key $CONFDIR/backup.key. Store a copy OFFLINE now (it is shown only this once);"
    say "restoring this gateway's backups on a replacement box needs it (sluice restore --key-file):"
    say "  backup key: $(cat "$key")"
  else
    say "created the backup key $CONFDIR/backup.key (root only). Store a copy OFFLINE now: 'cat $CONFDIR/backup.key';"
    say "restoring this gateway's backups on a replacement box needs it (sluice restore --key-file)"
  fi
}

# The software and the default configuration: everything a package ships, nothing per box.
lay_out_files() {
  test -f "$SRC/dist/gateway/cli.js" || { say "dist/ is missing: run 'make build' first"; exit 1; }
  copy_app

  mkdir -p "$D$PREFIX/bin"
  cat >"$D$PREFIX/bin/sluice" <<EOF
#!/bin/sh
# Runs Sluice on its own pinned Node runtime, whatever node is on PATH, with this install's paths.
: "\${SLUICE_STATE_DIR:=$STATEDIR}"
: "\${SLUICE_BACKUP_KEY_FILE:=$CONFDIR/backup.key}"
export SLUICE_STATE_DIR SLUICE_BACKUP_KEY_FILE
exec "$APPDIR/node_modules/node/bin/node" "$APPDIR/bin/sluice.js" "\$@"
EOF
  chmod 0755 "$D$PREFIX/bin/sluice"

  mkdir -p "$D$UNITDIR"
  for u in "${UNITS[@]}"; do
    render_unit "$SRC/systemd/$u" >"$D$UNITDIR/$u"
    chmod 0644 "$D$UNITDIR/$u"
  done
  install -D -m 0644 "$SRC/systemd/sluice.sysusers" "$D/usr/lib/sysusers.d/sluice.conf"
  install -D -m 0644 "$SRC/systemd/sluice.logrotate" "$D/etc/logrotate.d/sluice"

  mkdir -p "$D$CONFDIR"
  chmod 0755 "$D$CONFDIR"
  if [ ! -e "$D$CONFDIR/sluice.env" ]; then
    render_unit "$SRC/systemd/sluice.env" >"$D$CONFDIR/sluice.env"
    chmod 0644 "$D$CONFDIR/sluice.env"
  fi
  write_ulogd_conf
}

# What is per box: the backup key, the state and log dirs; on a live system the user and the units.
# $1 = 1 when the package was configured before (keep the installer's choice of enabled units), 0 to enable
# them all; $2 = 1 for `make install` (install missing Debian packages, show the new key on the terminal).
configure_box() {
  local again="$1" interactive="$2"
  write_backup_key "$interactive"

  # The state dir is created, never emptied or rewritten: an upgrade keeps the running policy.
  mkdir -p "$D$STATEDIR" "$D$LOGDIR"
  chmod 0700 "$D$STATEDIR"
  chmod 0750 "$D$LOGDIR"

  if [ "$live" = 1 ]; then
    # openssl: the UI makes its self-signed certificate with it (web-ui/tls.ts). A package declares these.
    if [ "$interactive" = 1 ]; then bash "$SRC/systemd/install-deps.sh" nftables ulogd2 ulogd2-json procps openssl; fi
    systemd-sysusers /usr/lib/sysusers.d/sluice.conf
    chown sluice:sluice "$STATEDIR" "$LOGDIR"
    systemctl daemon-reload
    # A package upgrade keeps an installer's choice (e.g. sluice-ui disabled on a box without a web UI); after
    # a remove (which disabled them all) or on a first install they are enabled.
    if [ "$again" = 0 ] || ! systemctl --quiet is-enabled sluice.service 2>/dev/null; then
      systemctl enable "${UNITS[@]}"
    fi
    local running=0
    systemctl --quiet is-active sluice.service && running=1
    # Always: a unit that is not running is left alone, one that runs old code gets the new. The daemon
    # reloads the recorded policy at start (what is recorded wins); the kernel keeps enforcing the old ruleset
    # during the restart.
    systemctl try-restart sluice-ulogd.service sluice.service sluice-ui.service
    if [ "$running" = 1 ]; then
      say "upgraded; running units restarted"
    else
      say "installed and enabled. Set SLUICE_MGMT_INTERFACE/SLUICE_MGMT_ALLOW and SLUICE_UI_LISTEN in"
      say "$CONFDIR/sluice.env, then: systemctl start sluice-boot sluice-ulogd sluice sluice-ui"
    fi
  else
    say "set up under ${DESTDIR:-/} (no systemd actions: not a live system)"
  fi
}

do_install() {
  lay_out_files
  configure_box 0 1
}

# Stopping leaves the ruleset in the kernel: removing the software must not open the plant.
# (`nft delete table inet sluice` removes it, when that is really wanted.)
deconfigure_box() {
  if [ "$live" = 1 ]; then systemctl disable --now "${UNITS[@]}" 2>/dev/null || true; fi
}

purge_box() {
  rm -rf "$D$CONFDIR" "$D$STATEDIR" "$D$LOGDIR"
  if [ "$live" = 1 ] && getent passwd sluice >/dev/null; then userdel sluice || true; fi
}

do_uninstall() {
  deconfigure_box
  for u in "${UNITS[@]}"; do rm -f "$D$UNITDIR/$u"; done
  rm -rf "$D$APPDIR"
  rm -f "$D$PREFIX/bin/sluice" "$D/usr/lib/sysusers.d/sluice.conf" "$D/etc/logrotate.d/sluice"
  if [ "$PURGE" = 1 ]; then
    purge_box
    say "removed, configuration and state purged"
  else
    # Like a Debian conffile: a reinstall finds the installer's settings and the backup key again.
    say "removed; configuration kept in $D$CONFDIR, state in $D$STATEDIR (PURGE=1 removes them)"
  fi
  if [ "$live" = 1 ]; then systemctl daemon-reload; fi
}

case "$ACTION" in
  install) do_install ;;
  uninstall) do_uninstall ;;
  files) lay_out_files ;;
  configure) configure_box "$([ -n "${2:-}" ] && echo 1 || echo 0)" 0 ;;
  deconfigure) deconfigure_box ;;
  purge) purge_box ;;
  *)
    echo "usage: $0 install|uninstall|files|configure [OLDVERSION]|deconfigure|purge" >&2
    exit 2
    ;;
esac
