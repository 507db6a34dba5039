"""Accounts that `account_kind: auto` made shared (pure): a warning for each that several people
hold, so that a Run As expression that is not unique per person (`${path:name.givenName}`) is
not quietly taken for a team account.

`auto` means person accounts for `${path:userName}` and shared accounts for every other
expression, since only the UserName is unique per person. For an expression meant to group people
(`${path:enterprise.organization}`) that is the point; for one that merely happens to repeat (two
Alices' given name) it puts two people in one account and one home.
"""

from __future__ import annotations

from runas_agent.core.desired import Desired, DesiredAccount
from runas_agent.core.display import shown

#: How many accounts a warning names before it says "and N more".
NAMED = 5


def warnings(desired: Desired, expression: str, configured_kind: str) -> list[str]:
    """One warning naming the accounts several people share, when `auto` chose shared accounts."""
    if configured_kind != "auto":
        return []
    held = sorted((name, account) for name, account in desired.accounts.items()
                  if account.kind == "shared" and len({i.user_id for i in account.identities}) > 1)
    if not held:
        return []
    named = "; ".join(_people(name, account) for name, account in held[:NAMED])
    more = f"; and {len(held) - NAMED} more accounts" if len(held) > NAMED else ""
    return [f"run_as.account_kind auto made accounts shared, since run_as.expression {shown(expression)} is not "
            f"unique per person, and {len(held)} of them hold several people, who share the account and its home "
            f"({named}{more}); set run_as.account_kind: shared if that is meant, or person to give each their own "
            "account (people whose Run As name repeats are then skipped)"]


def _people(name: str, account: DesiredAccount) -> str:
    """`alice: alice.a@example.com, alice.b@example.com` (three at most, then how many more)."""
    shown_people = ", ".join(shown(i.user_name) for i in account.identities[:3])
    rest = len(account.identities) - 3
    return f"{shown(name)}: {shown_people}" + (f" and {rest} more" if rest > 0 else "")
