"""Fault injection and call counting for the local Identity Store endpoint (pure bookkeeping, thread-safe).

A fault fires on page `page` of one operation (page 1 is the request without a NextToken, page k the
request carrying the NextToken that page k-1 returned), so a retried page is still the same page.
It fires `times` times (None: every time) and then lets the page through.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from typing import Any

#: What each kind of fault does to the matched request.
KINDS = {
    "throttle": "400 ThrottlingException, with RetryAfterSeconds when given",
    "internal": "500 InternalServerException, with RetryAfterSeconds when given",
    "unavailable": "503 with a non-JSON body, as a load balancer in front of the service would answer",
    "access_denied": "400 AccessDeniedException naming the IAM action",
    "not_found": "400 ResourceNotFoundException for the identity store (or the group)",
    "invalid_token": "400 ValidationException: the request's NextToken is refused as invalid or expired",
    "bad_next_token": "the page is answered, but its NextToken is replaced by one the service will refuse",
    "stall": "the answer is held back `seconds` seconds (None: until the fault is cleared or the endpoint stops)",
    "drop_field": "the page is answered without the member `member` in any user record, as an SDK, proxy or "
                  "endpoint that does not know it would return it (still within the model: it is optional)",
    "user_field": "the page is answered with `member` set to `value` in the record of user `user_id`: off the model "
                  "on purpose (a future value, or a broken proxy), so that response is not checked",
}


@dataclass
class Fault:
    operation: str
    kind: str
    page: int | None = None
    times: int | None = None
    retry_after: int | None = None
    seconds: float | None = None
    #: ListGroupMemberships only: the group whose listing is hit (None: any group)
    group_id: str | None = None
    #: drop_field and user_field: the member of the user records, and (user_field) the user and the value
    member: str | None = None
    user_id: str | None = None
    value: Any = None
    fired: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; one of {', '.join(KINDS)}")

    def alter(self, body: dict[str, Any]) -> None:
        """Change a successful answer: bad_next_token its NextToken, drop_field and user_field the
        user records of a ListUsers answer."""
        if self.kind == "bad_next_token" and body.get("NextToken"):
            body["NextToken"] = "bm90LWEtdG9rZW4="
        if self.kind not in ("drop_field", "user_field"):
            return
        for record in body.get("Users") or []:
            if self.kind == "drop_field":
                record.pop(self.member, None)
            elif record.get("UserId") == self.user_id:
                record[self.member] = self.value

    def matches(self, operation: str, page: int, params: dict[str, Any]) -> bool:
        return (
            self.operation == operation
            and (self.page is None or self.page == page)
            and (self.group_id is None or self.group_id == params.get("GroupId"))
            and (self.times is None or self.fired < self.times)
        )


class Ledger:
    """Faults to inject, calls received, and which page each NextToken leads to."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._calls: dict[str, int] = {}
        self._token_pages: dict[tuple[str, str], int] = {}
        #: set to let stalled requests go (cleared faults, or the endpoint stopping)
        self.release = threading.Event()

    # faults
    def inject(self, operation: str, kind: str, **options: Any) -> Fault:
        fault = Fault(operation, kind, **options)
        with self._lock:
            self._faults.append(fault)
            self.release.clear()
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()
            self.release.set()

    def faults(self) -> list[dict[str, Any]]:
        with self._lock:
            return [asdict(f) for f in self._faults]

    # calls and pages
    def receive(self, operation: str, params: dict[str, Any]) -> tuple[int, Fault | None]:
        """Count one request; return its page number (0: a NextToken this endpoint never issued) and
        the fault to apply, if any."""
        token = params.get("NextToken")
        with self._lock:
            self._calls[operation] = self._calls.get(operation, 0) + 1
            page = 1 if token is None else self._token_pages.get((operation, str(token)), 0)
            for fault in self._faults:
                if fault.matches(operation, page, params):
                    fault.fired += 1
                    return page, fault
            return page, None

    def issued(self, operation: str, token: str, page: int) -> None:
        """A response of page `page` carried `token`: a request with it asks for page + 1."""
        with self._lock:
            self._token_pages[(operation, token)] = page + 1

    def calls(self) -> dict[str, int]:
        with self._lock:
            return dict(self._calls)

    def reset_calls(self) -> None:
        with self._lock:
            self._calls.clear()

    def reset(self) -> None:
        """Forget faults, calls and issued tokens (between tests)."""
        self.clear_faults()
        with self._lock:
            self._calls.clear()
            self._token_pages.clear()
