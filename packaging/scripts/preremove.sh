#!/bin/sh
# runas-agent pre-removal (deb prerm, rpm %preun). On removal (not on upgrade) stop the service and
# disable it: its program is about to go. Managed accounts, homes, sudoers drop-ins and the ledger
# stay as they are (see docs/packages.md).
set -eu
UNIT=runas-agent.service

case "${1:-}" in
    remove) ;;      # deb
    0) ;;           # rpm: erase (1 = upgrade)
    *) exit 0 ;;
esac

if [ -d /run/systemd/system ]; then
    systemctl stop "$UNIT" || true
fi
systemctl disable "$UNIT" >/dev/null 2>&1 || true
exit 0
