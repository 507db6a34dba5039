"""moto 5.2.1's Identity Store, extended with what it drops, and seeded straight into its backend.

moto keeps users as a fixed NamedTuple without UserStatus or Extensions (nor ExternalIds, Photos,
Website, Birthdate, Roles, CreatedAt...). Those members are kept beside moto's record, in a dict
attached to moto's per-store data (so resetting moto's backend forgets them too), and merged into
ListUsers and DescribeUser responses the way the real service returns them: UserStatus always,
Extensions only those asked for with `Extensions=[...]` and only when the user has some.
"""

from __future__ import annotations

import datetime
import json
import uuid
from typing import Any, Mapping

from botocore.paginate import TokenDecoder
from moto.core import DEFAULT_ACCOUNT_ID
from moto.core.exceptions import InvalidToken
from moto.identitystore.exceptions import ValidationException
from moto.identitystore.models import Group, IdentityStoreData, Name, User, identitystore_backends
from moto.identitystore.responses import IdentityStoreResponse
from moto.ssoadmin.models import Instance, ssoadmin_backends
from moto.utilities.paginator import Paginator

from runas_agent.directory import parse_document
from runas_agent.errors import SnapshotError
from tests.endpoint.shapes import service_model

MOTO_USER_FIELDS = frozenset(User._fields)
#: The User members of the installed botocore's model: the endpoint speaks the API as it knows it.
USER_MEMBERS = service_model("identitystore").shape_for("User").members
_TIMESTAMP_MEMBERS = frozenset(name for name, shape in USER_MEMBERS.items() if shape.type_name == "timestamp")


def user_extras(store: IdentityStoreData) -> dict[str, dict[str, Any]]:
    """user_id -> the User members moto does not keep, for one store."""
    extras = getattr(store, "runas_user_extras", None)
    if extras is None:
        extras = store.runas_user_extras = {}
    return extras


def _epoch(value: Any) -> Any:
    """Timestamps travel as epoch seconds in the JSON 1.1 protocol; a document may hold ISO 8601."""
    if isinstance(value, str):
        parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=datetime.timezone.utc)
        return parsed.timestamp()
    return value


def complete_user(user: Mapping[str, Any], store: IdentityStoreData | None, extensions: Any) -> dict[str, Any]:
    """moto's user record with the members moto dropped, as the real service would return it."""
    extras = user_extras(store).get(user.get("UserId"), {}) if store is not None else {}
    out = {k: v for k, v in user.items() if v is not None}
    for key, value in extras.items():
        # a member the installed model does not know is one its botocore would drop anyway
        if key != "Extensions" and value is not None and key in USER_MEMBERS:
            out[key] = _epoch(value) if key in _TIMESTAMP_MEMBERS else value
    out.setdefault("UserStatus", "ENABLED")
    wanted = set(extensions or ())
    chosen = {k: v for k, v in (extras.get("Extensions") or {}).items() if k in wanted}
    if chosen:
        out["Extensions"] = chosen
    if isinstance(out.get("Name"), dict):
        out["Name"] = {k: v for k, v in out["Name"].items() if v is not None}
    return out


def fill_server_assigned(value: Any, shape: Any) -> None:
    """Add the required members the service assigns and moto does not know (in newer models:
    UserArn, GroupArn, MembershipArn derived from the id, and Revision), wherever the installed
    model requires them. Any other missing required member is left for the model check to report."""
    if shape.type_name == "structure" and isinstance(value, dict):
        for name in shape.required_members:
            if name in value:
                continue
            if name.endswith("Arn") and isinstance(value.get(name[:-3] + "Id"), str):
                value[name] = f"arn:aws:identitystore:::{name[:-3].lower()}/{value[name[:-3] + 'Id']}"
            elif name == "Revision":
                value[name] = "1"
        for name, member in shape.members.items():
            if name in value:
                fill_server_assigned(value[name], member)
    elif shape.type_name == "list" and isinstance(value, list):
        for item in value:
            fill_server_assigned(item, shape.member)


def _group(group: dict[str, Any]) -> dict[str, Any]:
    """moto writes `ExternalIds: []` for a group without any; the model's list has at least one."""
    return {k: v for k, v in group.items() if not (k == "ExternalIds" and not v)}


class ExtendedIdentityStoreResponse(IdentityStoreResponse):
    """moto's Identity Store responses plus UserStatus and Extensions."""

    def _store(self) -> IdentityStoreData | None:
        return self.identitystore_backend.identity_stores.get(self._get_param("IdentityStoreId") or "")

    def create_user(self) -> str:
        body = super().create_user()
        user_id = json.loads(body)["UserId"]
        store = self._store()
        kept = {
            key: self._get_param(key)
            for key in service_model("identitystore").operation_model("CreateUser").input_shape.members
            if key not in MOTO_USER_FIELDS and self._get_param(key) is not None
        }
        if store is not None:
            user_extras(store)[user_id] = kept
        return body

    def describe_user(self) -> str:
        user = json.loads(super().describe_user())
        return json.dumps(complete_user(user, self._store(), self._get_param("Extensions")))

    def list_users(self) -> str:
        store = self._store()
        try:
            if self._get_param("Filters") or store is None:
                body = json.loads(super().list_users())
            else:
                body = self._list_users_unfiltered(store)
        except InvalidToken:
            raise ValidationException(message="The pagination token is invalid or has expired") from None
        extensions = self._get_param("Extensions")
        body["Users"] = [complete_user(u, store, extensions) for u in body["Users"]]
        return json.dumps(body)

    def _list_users_unfiltered(self, store: IdentityStoreData) -> dict[str, Any]:
        """moto's ListUsers turns every user of the store into a dict for every page (O(users) per
        page, 50 ms a page at 10,000 users); this converts only the page, with moto's own paginator
        and token format."""
        users = list(store.users.values())
        token = self._get_param("NextToken")
        start = 0
        if token:
            try:
                wanted = TokenDecoder().decode(token).get("uniqueAttributes")
            except (ValueError, TypeError, UnicodeDecodeError, AttributeError):
                wanted = None
            start = next((i for i, user in enumerate(users) if user.UserId == wanted), 0)
        paginator = Paginator(
            max_results=self._get_param("MaxResults"),
            max_results_default=100,
            starting_token=token,
            unique_attribute="UserId",
            param_values_to_check={"identity_store_id": self._get_param("IdentityStoreId")},
        )
        page, next_token = paginator.paginate(users[start:])
        records = []
        for user in page:
            record = user._asdict()
            if user.Name is not None:
                record["Name"] = user.Name._asdict()
            records.append(record)
        return {"Users": records, "NextToken": next_token}

    def list_groups(self) -> str:
        try:
            body = json.loads(super().list_groups())
        except InvalidToken:
            raise ValidationException(message="The pagination token is invalid or has expired") from None
        body["Groups"] = [_group(g) for g in body["Groups"]]
        return json.dumps(body)

    def describe_group(self) -> str:
        return json.dumps(_group(json.loads(super().describe_group())))

    def list_group_memberships(self) -> str:
        try:
            return super().list_group_memberships()
        except InvalidToken:
            raise ValidationException(message="The pagination token is invalid or has expired") from None


#: moto backend name -> the response class that replaces moto's for it
RESPONSES = {"identitystore": ExtendedIdentityStoreResponse}


def seed(document: Mapping[str, Any], region: str, account_id: str = DEFAULT_ACCOUNT_ID) -> str:
    """Load a directory document ({"IdentityStoreId", "Users", "Groups", "GroupMemberships"}) into
    moto's backend directly (no API calls), replacing any store with the same id, and make it the
    only IAM Identity Center instance sso-admin ListInstances shows in that region. Returns the id.

    The document is read by runas-agent's own parser (`directory.parse_document`, the file source's):
    one it refuses, or in which it reports a malformed user record, is refused here (ValueError naming
    why), since the Identity Store never returns such records; what is stored is exactly the records
    it read. So a document means the same directory from a file as through this endpoint."""
    try:
        directory = parse_document(document, "seed")
    except SnapshotError as exc:
        raise ValueError(str(exc)) from None
    if directory.problems:
        raise ValueError("the Identity Store never returns these records: "
                         + "; ".join(f"{p.identity}: {p.reason}" for p in directory.problems))
    store_id = directory.identity_store_id or "d-0000000000"
    store = IdentityStoreData()
    _seed_users(store, store_id, directory)
    for record in document.get("Groups") or []:
        group_id = record["GroupId"]
        store.groups[group_id] = Group(group_id, record.get("DisplayName"), record.get("ExternalIds") or [], record.get("Description"), store_id)
    for record in document.get("GroupMemberships") or []:
        membership_id = record.get("MembershipId") or str(uuid.uuid4())
        store.group_memberships[membership_id] = {
            "IdentityStoreId": store_id,
            "MembershipId": membership_id,
            "GroupId": record["GroupId"],
            "MemberId": {"UserId": record["MemberId"]["UserId"]},
        }
    identitystore_backends[account_id][region].identity_stores[store_id] = store
    set_instances([store_id], region, account_id)
    return store_id


def _seed_users(store: IdentityStoreData, store_id: str, directory: Any) -> None:
    extras = user_extras(store)
    for user in directory.users:
        record = user.record
        fields = {name: record.get(name) for name in User._fields}
        fields.update(UserId=user.user_id, IdentityStoreId=store_id, Name=Name.from_dict(record.get("Name") or {}))
        store.users[user.user_id] = User(**fields)
        extras[user.user_id] = {k: v for k, v in record.items() if k not in MOTO_USER_FIELDS}


def set_instances(store_ids: list[str], region: str, account_id: str = DEFAULT_ACCOUNT_ID) -> None:
    """The IAM Identity Center instances sso-admin ListInstances shows: one per store id."""
    instances = []
    for store_id in store_ids:
        instance = Instance(account_id, region)
        instance.identity_store_id = store_id
        instances.append(instance)
    ssoadmin_backends[account_id][region].instances = instances


def reset(region: str, account_id: str = DEFAULT_ACCOUNT_ID) -> None:
    """Forget every store and instance in that region."""
    identitystore_backends[account_id][region].reset()
    ssoadmin_backends[account_id][region].reset()
