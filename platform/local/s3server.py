#!/usr/bin/env python
"""The local stack's S3 server: moto's server with request signing enforced.

moto checks signatures only when IAM authentication is on (``INITIAL_NO_AUTH_ACTION_COUNT``, set
to 0 here before moto is imported). The stack's one key pair is registered as the access key of
an IAM user whose policy allows S3 and nothing else, so a request signed with it is accepted,
while an anonymous request, an unknown key or a wrong secret is refused (403). moto's own control
routes (``/moto-api/...``: reset, switch authentication off, dump the data) are refused too.
Requests without an ``Authorization`` header get S3's ``AccessDenied`` (moto would fail on them
with a 500): anonymous ones, and presigned URLs, whose query-string signature moto cannot check
(the stack's clients download artifacts through the tracking server instead).

The key pair is read from the file named by ``--credentials-file`` (``KEY=value`` lines with
``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY``, mode 600), never from the command line.

usage: s3server.py --port PORT --credentials-file FILE
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from werkzeug.serving import WSGIRequestHandler

os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"  # before moto reads its settings

USER = "shapebias-s3"
POLICY = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}


def read_key_pair(path: str) -> tuple[str, str]:
    values = {}
    with open(path) as f:
        for line in f:
            key, sep, value = line.strip().partition("=")
            if sep and not key.startswith("#"):
                values[key] = value
    return values["AWS_ACCESS_KEY_ID"], values["AWS_SECRET_ACCESS_KEY"]


def register_key_pair(key_id: str, secret: str) -> None:
    """An IAM user allowed s3:* whose only access key is the stack's key pair."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.iam.models import iam_backends

    iam = iam_backends[DEFAULT_ACCOUNT_ID]["aws"]
    iam.create_user(region_name="us-east-1", user_name=USER)
    iam.put_user_policy(USER, "s3-all", json.dumps(POLICY))
    key = iam.create_access_key(USER)
    key.access_key_id, key.secret_access_key = key_id, secret


def _denied(start_response, message: str) -> list[bytes]:
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code><Message>{message}</Message></Error>'
    )
    start_response("403 Forbidden", [("Content-Type", "application/xml")])
    return [body.encode()]


def guard(app):
    """WSGI middleware: 403 for moto's control API and for unsigned requests (moto itself would
    answer those with a 500)."""

    def wrapped(environ, start_response):
        if environ.get("PATH_INFO", "").startswith("/moto-api"):
            return _denied(start_response, "moto's control API is disabled on this server")
        if "HTTP_AUTHORIZATION" not in environ:  # presigned URLs too: moto cannot check their signature
            return _denied(start_response, "requests must be signed in the Authorization header")
        return app(environ, start_response)

    return wrapped


def handler_without_queries(base: type[WSGIRequestHandler]) -> type[WSGIRequestHandler]:
    """moto's request handler, logging each request's path without its query string (a presigned
    URL's query holds the access key id)."""

    class Handler(base):  # type: ignore[valid-type,misc]  # a class chosen at run time
        def log_request(self, code="-", size="-") -> None:
            self.log(
                "info", '"%s %s" %s %s', self.command, self.path.split("?", 1)[0], getattr(code, "value", code), size
            )

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--credentials-file", required=True)
    args = parser.parse_args(argv)

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import run_simple

    register_key_pair(*read_key_pair(args.credentials_file))
    app = DomainDispatcherApplication(create_backend_app)
    print(f"S3 (moto, signed requests only) on 127.0.0.1:{args.port}", flush=True)
    run_simple(
        "127.0.0.1", args.port, guard(app), threaded=True, request_handler=handler_without_queries(MotoRequestHandler)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
