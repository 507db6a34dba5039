#!/bin/sh
# runas-agent post-install (deb postinst, rpm %post). Builds the agent's venv from the wheels the
# package carries, with no network access: python3 -m venv --system-site-packages (the
# distribution's PyYAML, psutil and systemd-python), then pip install --no-index --find-links.
# Each build goes to a fresh /usr/lib/runas-agent/venv.XXXXXXXX and the venv symlink is switched
# to it in one rename, so a running service never sees a half-built venv. The service is never
# enabled or started here; on an upgrade it is restarted only if it was running.
set -eu

LIB=/usr/lib/runas-agent
WHEELS=$LIB/wheels
PYTHON=/usr/bin/python3
UNIT=runas-agent.service

case "${1:-}" in
    configure|abort-upgrade|abort-remove|abort-deconfigure) ;;   # deb
    triggered) ;;                  # deb: python3 changed (see nfpm.yaml): rebuild on the new one
    [0-9]*) ;;                                                   # rpm: 1 install, 2+ upgrade
    *) exit 0 ;;
esac

new=$(mktemp -d "$LIB/venv.XXXXXXXX")
cleanup() { [ -z "$new" ] || rm -rf "$new"; }
trap cleanup EXIT
chmod 0755 "$new"

"$PYTHON" -m venv --without-pip --system-site-packages "$new"

# Any pip wheel will do (during an rpm upgrade the old package's may still be there).
set -- "$WHEELS"/pip-*.whl
[ -f "$1" ] || { echo "runas-agent: no pip wheel in $WHEELS" >&2; exit 1; }
pip_wheel=$1

# pip runs from its wheel and is not installed. PIP_CONFIG_FILE=/dev/null: no pip.conf of this
# host (an index, constraints) applies; no cache is left in root's home (nor in images built here). --ignore-installed: the venv gets its own copies even where
# the distribution has (older) boto3/botocore.
pip() {
    PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PIP_NO_CACHE_DIR=1 \
        "$new/bin/python" "$pip_wheel/pip" install --quiet --no-index --find-links "$WHEELS" \
        --no-warn-script-location "$@"
}
# Exact pins (requirements.txt, agent.txt): the wheels of a package being upgraded may still be
# next to them. The agent itself without its dependency metadata: PyYAML, psutil and systemd-python
# are the distribution's, whatever their version.
pip --ignore-installed -r "$WHEELS/requirements.txt"
pip --no-deps -r "$WHEELS/agent.txt"

# Refuse a venv that cannot run the agent: the distribution's modules must import, and botocore
# must know the Identity Store fields the agent depends on.
"$new/bin/python" -c '
import yaml, psutil, systemd.daemon, systemd.journal, boto3
from runas_agent.sources.identitystore import check_botocore
check_botocore()
'
"$new/bin/runas-agent" --version >/dev/null

ln -sfn "$(basename "$new")" "$LIB/venv.link"
if [ -d "$LIB/venv" ] && [ ! -L "$LIB/venv" ]; then
    rm -rf "$LIB/venv"
fi
mv -Tf "$LIB/venv.link" "$LIB/venv"
current=$new
new=""

if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
    # Only a running service is restarted (it then runs the new code); enabling is the operator's
    # or the Ansible role's decision, once the configuration is written.
    systemctl try-restart "$UNIT" || echo "runas-agent: restarting $UNIT failed; see: journalctl -u $UNIT" >&2
fi

for old in "$LIB"/venv.*; do
    [ "$old" = "$current" ] || [ ! -d "$old" ] || rm -rf "$old"
done
exit 0
