"""python -m tests.endpoint --port N [--seed FILE] [--region R]: serve a local Identity Store."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading

from tests.endpoint import ssm_documents, ssoadmin_abac  # noqa: F401  (register sso-admin ABAC and SSM documents)
from tests.endpoint.server import Endpoint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.endpoint", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on stdout)")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--seed", metavar="FILE", help="a directory document (JSON) to load")
    parser.add_argument("--no-check", action="store_true", help="do not check responses against botocore's model (benchmarks)")
    args = parser.parse_args(argv)

    endpoint = Endpoint(region=args.region, host=args.host, port=args.port, strict=not args.no_check)
    endpoint.start()
    if args.seed:
        with open(args.seed, encoding="utf-8") as handle:
            store_id = endpoint.seed(json.load(handle))
        print(f"seeded {store_id} from {args.seed}", file=sys.stderr)
    print(endpoint.url, flush=True)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    endpoint.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
