#!/bin/sh
# runas-agent post-removal (deb postrm, rpm %postun). Removal deletes what the post-install script
# built (the venv; the package manager removes the wheels, the unit and the program link). Purge
# (deb) also deletes state that only describes this host's last sync: the directory snapshot and
# the session tracking state. It never deletes managed accounts, their homes, their sudoers
# drop-ins, the ledger of owned accounts (/var/lib/runas-agent/ledger.json, sudoers.json,
# sudoers-backup/) or the session audit log: a reinstall takes the accounts over again from them.
set -eu
LIB=/usr/lib/runas-agent
STATE=/var/lib/runas-agent

case "${1:-}" in
    remove|purge|0) ;;   # deb remove/purge, rpm erase (1 = upgrade)
    *) exit 0 ;;
esac

rm -rf "$LIB/venv" "$LIB"/venv.*
rmdir "$LIB" 2>/dev/null || true

if [ "$1" = purge ]; then
    rm -f "$STATE/directory.json" "$STATE/sessions.json" "$STATE/sync.lock"
    rm -rf /run/runas-agent
    rmdir "$STATE" 2>/dev/null || true
    rmdir /etc/runas-agent 2>/dev/null || true
fi

if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
fi
exit 0
