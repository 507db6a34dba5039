"""The local Identity Store endpoint: moto's server (real JSON 1.1 wire protocol, so the real boto3
client is used unchanged) with the Identity Store extension, fault injection, call counting and a
check of every Identity Store and sso-admin response against botocore's service model.

It serves moto's other services too, with two corrections where runas-agent's trust rests on them:
S3 refuses a request whose ExpectedBucketOwner is not the bucket's owner (403 AccessDenied, as S3
does; moto ignores the header), and KMS `Sign`/`GetPublicKey` on keys made with `signing_key()` are
answered by a stand-in that signs like KMS (tests/endpoint/kms.py), checked against botocore's model.

In-process:
    with Endpoint(region="eu-west-1") as endpoint:
        endpoint.seed(document)
        endpoint.inject("ListUsers", "throttle", page=3, times=2, retry_after=1)
        ... boto3.client("identitystore", endpoint_url=endpoint.url, region_name="eu-west-1") ...
        endpoint.calls()          # {"ListUsers": 5, ...}

Out of process (`python -m tests.endpoint --port N --seed FILE`), the same controls are at
`/_endpoint/...` (see `_Wire.control`).

moto keeps its state per process: run one endpoint per process at a time.
"""

from __future__ import annotations

import io
import json
import threading
import time
import uuid
from typing import Any, Iterable

from moto.core import DEFAULT_ACCOUNT_ID
from moto.core.utils import convert_to_flask_response
from moto.identitystore.exceptions import request_id as MOTO_REQUEST_ID
from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import WSGIRequestHandler, make_server

from tests.endpoint import extension, shapes
from tests.endpoint.faults import Fault, Ledger
from tests.endpoint.kms import SigningKeys

#: X-Amz-Target prefix -> botocore service name
TARGETS = {"AWSIdentityStore": "identitystore", "SWBExternalService": "sso-admin"}


def counter_key(service: str, operation: str) -> str:
    """Call counters use bare operation names for the Identity Store and `sso-admin:Op` otherwise."""
    return operation if service == "identitystore" else f"{service}:{operation}"


def _create_app(service: str) -> Any:
    """moto's Flask app for a backend, with the extended response class where there is one."""
    app = create_backend_app(service)
    replacement = extension.RESPONSES.get(service)
    if replacement is not None:
        original = f"{replacement.__mro__[1].__name__}.dispatch"
        for name in list(app.view_functions):
            if name.startswith(original):
                app.view_functions[name] = convert_to_flask_response(replacement.dispatch)
    return app


def _drop_nulls(value: Any) -> Any:
    """The real service omits absent members; moto writes them as null."""
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def _json_response(start_response: Any, status: int, body: Any, extra: Iterable[tuple[str, str]] = ()) -> list[bytes]:
    data = json.dumps(body).encode()
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 500: "Internal Server Error"}.get(status, "Error")
    headers = [("Content-Type", "application/x-amz-json-1.1"), ("Content-Length", str(len(data))), *extra]
    start_response(f"{status} {reason}", headers)
    return [data]


class _Wire:
    """WSGI middleware in front of moto: counts, injects faults, tracks pages, checks shapes."""

    def __init__(self, app: Any, endpoint: "Endpoint"):
        self.app = app
        self.endpoint = endpoint

    def __call__(self, environ: dict, start_response: Any) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "").startswith("/_endpoint/"):
            return self.control(environ, start_response)
        prefix, _, operation = environ.get("HTTP_X_AMZ_TARGET", "").partition(".")
        service = TARGETS.get(prefix)
        if service is None:
            return self.other(environ, start_response, prefix, operation)

        raw = _read_body(environ)
        try:
            params = json.loads(raw or b"{}")
        except ValueError:
            params = {}
        key = counter_key(service, operation)
        page, fault = self.endpoint.ledger.receive(key, params)
        if fault is not None:
            answer = self._fault(fault, service, operation, params, start_response)
            if answer is not None:
                return answer

        status, headers, body = _call(self.app, environ)
        try:
            document = json.loads(body) if body else {}
        except ValueError:
            document = None
        if isinstance(document, dict):
            document = self._complete(document, service, operation, status, (key, page), fault)
            return _json_response(start_response, status, document, [h for h in headers if h[0].lower() not in ("content-type", "content-length")])
        start_response(f"{status} {'OK' if status == 200 else 'Error'}", headers)
        return [body]

    def _complete(self, document: dict, service: str, operation: str, status: int, page: tuple[str, int],
                  fault: Fault | None) -> dict:
        """moto's JSON answer as the service gives it, with the fault applied, checked against the model."""
        document = _as_the_service(document, service, operation, status)
        if fault is not None and status == 200:
            fault.alter(document)
        if status == 200 and document.get("NextToken"):
            self.endpoint.ledger.issued(page[0], document["NextToken"], page[1])
        if fault is None or fault.kind != "user_field":  # that one leaves the model on purpose
            self.endpoint.check(service, operation, status, document)
        return document

    def other(self, environ: dict, start_response: Any, prefix: str, operation: str) -> Iterable[bytes]:
        """Services other than the Identity Store and sso-admin: KMS through the signing stand-in, S3
        with ExpectedBucketOwner enforced, the rest moto's own."""
        if prefix == "TrentService":
            return self.kms(environ, start_response, operation)
        if _is_s3(environ):
            refused = _wrong_bucket_owner(environ, start_response)
            if refused is not None:
                return refused
        return self.app(environ, start_response)

    def kms(self, environ: dict, start_response: Any, operation: str) -> Iterable[bytes]:
        """KMS: the stand-in's keys answered here, every other call moto's."""
        raw = _read_body(environ)
        try:
            params = json.loads(raw or b"{}")
        except ValueError:
            params = {}
        answer = self.endpoint.kms.answer(operation, params)
        if answer is None:
            return self.app(environ, start_response)
        self.endpoint.ledger.receive(f"kms:{operation}", params)
        status, body = answer
        self.endpoint.check("kms", operation, status, body)
        return _json_response(start_response, status, body)

    def _fault(self, fault: Fault, service: str, operation: str, params: dict, start_response: Any) -> list[bytes] | None:
        """The response a fault replaces the real one with, or None to answer normally (after a stall)."""
        store = params.get("IdentityStoreId", "")
        action = f"{'sso' if service == 'sso-admin' else service}:{operation}"
        if fault.kind == "stall":
            if fault.seconds is None:
                self.endpoint.ledger.release.wait()
            else:
                self.endpoint.ledger.release.wait(fault.seconds)
            return None
        if fault.kind in ("bad_next_token", "drop_field", "user_field"):
            return None
        if fault.kind == "unavailable":
            data = b"<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>"
            start_response("503 Service Unavailable", [("Content-Type", "text/html"), ("Content-Length", str(len(data)))])
            return [data]
        body: dict[str, Any]
        status = 400
        if fault.kind == "throttle":
            body = {"__type": "ThrottlingException", "Message": "Rate exceeded"}
            if fault.retry_after is not None:
                body["RetryAfterSeconds"] = fault.retry_after
        elif fault.kind == "internal":
            status = 500
            body = {"__type": "InternalServerException", "Message": "An internal error occurred"}
            if fault.retry_after is not None:
                body["RetryAfterSeconds"] = fault.retry_after
        elif fault.kind == "access_denied":
            body = {
                "__type": "AccessDeniedException",
                "Message": f"User: arn:aws:sts::{DEFAULT_ACCOUNT_ID}:assumed-role/runas-agent/i-0123456789abcdef0 "
                f"is not authorized to perform: {action} on resource: arn:aws:identitystore::{DEFAULT_ACCOUNT_ID}:identitystore/{store}",
            }
        elif fault.kind == "not_found":
            if operation == "ListGroupMemberships":
                body = {"__type": "ResourceNotFoundException", "Message": "GROUP not found.", "ResourceType": "GROUP"}
            else:
                body = {"__type": "ResourceNotFoundException", "Message": "IDENTITY_STORE not found.", "ResourceType": "IDENTITY_STORE"}
        else:  # invalid_token
            body = {"__type": "ValidationException", "Message": "The pagination token is invalid or has expired"}
        body["RequestId"] = "00000000-0000-4000-8000-000000000000"
        # sso-admin's errors have neither RequestId nor RetryAfterSeconds: send only what the model has
        members = shapes.service_model(service).shape_for(body["__type"]).members
        body = {k: v for k, v in body.items() if k == "__type" or k in members}
        self.endpoint.check(service, operation, status, body)
        return _json_response(start_response, status, body)

    def control(self, environ: dict, start_response: Any) -> list[bytes]:
        """GET calls | POST reset-calls | GET/POST/DELETE faults | POST seed | GET problems | POST reset."""
        what = environ["PATH_INFO"][len("/_endpoint/"):].strip("/")
        method = environ.get("REQUEST_METHOD", "GET")
        raw = _read_body(environ)
        endpoint = self.endpoint
        try:
            payload = json.loads(raw) if raw else {}
            if what == "calls" and method == "GET":
                return _json_response(start_response, 200, {"calls": endpoint.calls()})
            if what == "reset-calls" and method == "POST":
                endpoint.reset_calls()
                return _json_response(start_response, 200, {})
            if what == "faults" and method == "GET":
                return _json_response(start_response, 200, {"faults": endpoint.ledger.faults()})
            if what == "faults" and method == "POST":
                endpoint.inject(**payload)
                return _json_response(start_response, 200, {"faults": endpoint.ledger.faults()})
            if what == "faults" and method == "DELETE":
                endpoint.clear_faults()
                return _json_response(start_response, 200, {})
            if what == "seed" and method == "POST":
                return _json_response(start_response, 200, {"IdentityStoreId": endpoint.seed(payload)})
            if what == "problems" and method == "GET":
                return _json_response(start_response, 200, {"problems": list(endpoint.problems)})
            if what == "reset" and method == "POST":
                endpoint.reset()
                return _json_response(start_response, 200, {})
        except (TypeError, ValueError, KeyError) as exc:
            return _json_response(start_response, 400, {"error": str(exc)})
        return _json_response(start_response, 404, {"error": f"no control {method} /_endpoint/{what}"})


def _as_the_service(document: dict, service: str, operation: str, status: int) -> dict:
    """moto's answer with what the service does differently: no nulls, the members the service
    assigns, a request id that is a UUID."""
    document = _drop_nulls(document)
    model = shapes.service_model(service)
    output = model.operation_model(operation).output_shape if operation in model.operation_names else None
    if service == "identitystore" and status == 200 and output is not None:
        extension.fill_server_assigned(document, output)
    if document.get("RequestId") == MOTO_REQUEST_ID:
        # moto's fixed "...example" id is not a UUID, as the model requires
        document["RequestId"] = str(uuid.uuid4())
    return document


def _is_s3(environ: dict) -> bool:
    """A SigV4-signed S3 request (the credential scope names the service)."""
    return "/s3/aws4_request" in environ.get("HTTP_AUTHORIZATION", "")


def _wrong_bucket_owner(environ: dict, start_response: Any) -> list[bytes] | None:
    """S3's answer to a request whose ExpectedBucketOwner is not the bucket's owner: 403 AccessDenied
    (path-style requests: the endpoint is an address, so botocore never puts the bucket in the host).
    None when the header is absent, the bucket unknown (moto answers) or the owner right."""
    from moto.s3.models import s3_backends

    expected = environ.get("HTTP_X_AMZ_EXPECTED_BUCKET_OWNER")
    name = environ.get("PATH_INFO", "").lstrip("/").split("/", 1)[0]
    if not expected or not name:
        return None
    bucket = s3_backends[DEFAULT_ACCOUNT_ID]["global"].buckets.get(name)
    if bucket is None or bucket.account_id == expected:
        return None
    data = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code><Message>Access Denied'
            b'</Message><RequestId>0000000000000000</RequestId><HostId>runas-agent-test-endpoint</HostId></Error>')
    start_response("403 Forbidden", [("Content-Type", "application/xml"), ("Content-Length", str(len(data)))])
    return [data]


def _read_body(environ: dict) -> bytes:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    raw = environ["wsgi.input"].read(length) if length else b""
    environ["wsgi.input"] = io.BytesIO(raw)
    return raw


def _call(app: Any, environ: dict) -> tuple[int, list[tuple[str, str]], bytes]:
    captured: dict[str, Any] = {}

    def start_response(status: str, headers: list, exc_info: Any = None) -> Any:
        captured["status"] = int(status.split(" ", 1)[0])
        captured["headers"] = list(headers)
        return lambda data: None

    chunks = app(environ, start_response)
    try:
        body = b"".join(chunks)
    finally:
        if hasattr(chunks, "close"):
            chunks.close()
    return captured["status"], captured["headers"], body


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


class _Server(ThreadedMotoServer):
    """moto's ThreadedMotoServer, serving the extended app behind the middleware."""

    def __init__(self, endpoint: "Endpoint", host: str, port: int):
        super().__init__(ip_address=host, port=port, verbose=False)
        self._endpoint = endpoint

    def _server_entry(self) -> None:
        app = _Wire(DomainDispatcherApplication(_create_app), self._endpoint)
        self._server = make_server(self._ip_address, self._port, app, threaded=True, request_handler=_QuietHandler)
        self._server_ready_event.set()
        self._server.serve_forever(poll_interval=0.05)

    def stop(self) -> None:
        super().stop()
        if self._server is not None:
            self._server.server_close()


class Endpoint:
    """A local Identity Store (and sso-admin ListInstances) endpoint for one region."""

    def __init__(self, region: str = "us-east-1", host: str = "127.0.0.1", port: int = 0, strict: bool = True):
        self.region = region
        self.strict = strict
        self.ledger = Ledger()
        #: KMS signing keys answered by the stand-in (tests/endpoint/kms.py)
        self.kms = SigningKeys(region)
        #: responses that did not match botocore's model (checked when strict)
        self.problems: list[str] = []
        self._lock = threading.Lock()
        self._server = _Server(self, host, port)
        self.url = ""

    def start(self) -> "Endpoint":
        extension.reset(self.region)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.url = f"http://{host}:{port}"
        return self

    def stop(self) -> None:
        self.ledger.release.set()
        self._server.stop()

    def __enter__(self) -> "Endpoint":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # directory
    def seed(self, document: dict) -> str:
        return extension.seed(document, self.region)

    def set_instances(self, store_ids: list[str]) -> None:
        extension.set_instances(store_ids, self.region)

    def signing_key(self, alias: str | None = None, **options: Any) -> str:
        """A KMS signing key (RSA_3072, SIGN_VERIFY) that signs like KMS; returns its ARN."""
        return self.kms.create(alias, **options)

    def reset(self) -> None:
        """Forget stores, signing keys, faults, counters and problems."""
        extension.reset(self.region)
        self.kms.reset()
        self.ledger.reset()
        with self._lock:
            self.problems.clear()

    # faults and counters
    def inject(self, operation: str, kind: str, **options: Any) -> Fault:
        return self.ledger.inject(operation, kind, **options)

    def clear_faults(self) -> None:
        self.ledger.clear_faults()

    def calls(self) -> dict[str, int]:
        return self.ledger.calls()

    def reset_calls(self) -> None:
        self.ledger.reset_calls()

    # model check
    def check(self, service: str, operation: str, status: int, body: Any) -> None:
        if not self.strict:
            return
        if status == 200:
            found = shapes.check_output(service, operation, body)
        else:
            found = shapes.check_error(service, operation, status, body)
        if found:
            with self._lock:
                self.problems.extend(found)


def wait_until_ready(url: str, timeout: float = 10.0) -> None:
    """Poll the control API until a separately started endpoint answers."""
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_endpoint/calls", timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
