"""Exit statuses of every runas-agent command, in one place."""

import enum


class Exit(enum.IntEnum):
    OK = 0
    #: An error: nothing (or, for a sync, nothing further) was changed.
    ERROR = 1
    #: `plan`: the sync would change something (like `terraform plan -detailed-exitcode`).
    CHANGES = 2
    #: `--once`: the sync ran, but some identities were skipped or some actions failed.
    PARTIAL = 3
    #: The safety checks refused the plan (empty directory, too many disables); nothing changed.
    REFUSED = 4
    #: `doctor`: at least one link of the Run As chain is broken (warnings alone exit 0).
    UNHEALTHY = 5
    #: The command line cannot be parsed, or combines options that mean nothing together (sysexits
    #: EX_USAGE; argparse's own 2 would read as `plan`'s "changes").
    USAGE = 64
    #: Another sync holds the lock and did not release it in time.
    BUSY = 75
    #: The configuration is invalid (sysexits EX_CONFIG); systemd must not restart-loop on it.
    CONFIG = 78
