"""``setec-serve --kms-key-name arn:aws:kms:...`` end to end: the console script against
moto's KMS server on loopback."""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from backup_scenario import assert_no_values, round_trip
from peers.moto_server import MotoServer
from serve_process import ServeProcess, call, free_port, kms_serve_args, refused, state_files

SECRET = b"kms-e2e-secret-9c1d"


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


def aws_env(endpoint: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    """The server's environment: dummy credentials, no shared config, KMS at ``endpoint``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_CONFIG_FILE=str(tmp_path / "no-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-credentials"),
        AWS_EC2_METADATA_DISABLED="true",
        AWS_ENDPOINT_URL_KMS=endpoint,
        **extra,
    )
    return env


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "error: " in line]


def test_bare_arn_serves_restarts_and_refuses_another_key(moto: MotoServer, tmp_path: Path) -> None:
    """A bare ARN: serve, put, get, stop; restart with the same key and the secret is
    there; another key exits 1 with one error line naming it and changes nothing."""
    key, other = moto.new_kms_key(), moto.new_kms_key()
    state = tmp_path / "st"
    env = aws_env(moto.url, tmp_path)
    value = base64.b64encode(SECRET).decode()
    with ServeProcess(*kms_serve_args(state, key), cwd=tmp_path, env=env) as server:
        put = call(server.url, "put", {"Name": "prod/db", "Value": value})
        assert (put.status_code, put.text) == (200, "1")
        assert call(server.url, "get", {"Name": "prod/db"}).json()["Value"] == value
        assert server.stop() == 0
    with ServeProcess(*kms_serve_args(state, key), cwd=tmp_path, env=env) as server:
        assert call(server.url, "get", {"Name": "prod/db"}).json() == {"Value": value, "Version": 1}
        assert server.stop() == 0
    assert SECRET.decode() not in server.output

    before = state_files(state)
    # The error names the key given and the one the store was made with.
    refused(
        *kms_serve_args(state, other),
        cwd=tmp_path,
        env=env,
        error_lines=error_lines,
        naming=(other, key),
    )
    assert state_files(state) == before


def test_unreachable_kms_exits_after_the_bounded_retry(tmp_path: Path) -> None:
    """KMS unreachable at start: retried for SETEC_KMS_RETRY_SECONDS, then exit 1 naming
    the key and the connection error."""
    key = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    env = aws_env(f"http://127.0.0.1:{free_port()}", tmp_path, SETEC_KMS_RETRY_SECONDS="1")
    started = time.monotonic()
    refused(
        *kms_serve_args(tmp_path / "st", key),
        cwd=tmp_path,
        env=env,
        error_lines=error_lines,
        naming=(key, "could not be reached", "EndpointConnectionError"),
    )
    assert time.monotonic() - started >= 1


class DisabledKms:
    """A loopback stand-in for KMS that answers every call with DisabledException (a key
    state moto does not model), counting the calls."""

    def __init__(self) -> None:
        self.calls = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.calls += 1
                body = json.dumps({"__type": "DisabledException", "message": "disabled"})
                self.send_response(400)
                self.send_header("Content-Type", "application/x-amz-json-1.1")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_disabled_key_exits_at_once(tmp_path: Path) -> None:
    """A disabled key is not retried: exit 1 at the first answer, naming the key."""
    kms = DisabledKms()
    try:
        key = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
        env = aws_env(kms.url, tmp_path, SETEC_KMS_RETRY_SECONDS="30")
        refused(
            *kms_serve_args(tmp_path / "st", key),
            cwd=tmp_path,
            env=env,
            error_lines=error_lines,
            naming=(key, "DisabledException"),
            timeout=20,
        )
    finally:
        kms.close()
    assert kms.calls == 1


def test_backs_up_to_s3_and_restores(moto: MotoServer, tmp_path: Path) -> None:
    """setec-serve --kms-key-name ARN with Go's --backup-bucket
    flags backs up to S3 (moto); after a wipe, restore (naming the sink as
    --backup s3://BUCKET --backup-region) brings back every secret and version."""
    key = moto.new_kms_key()
    s3 = moto.client("s3")
    s3.create_bucket(Bucket="setec-e2e-backups")
    env = aws_env(moto.url, tmp_path, AWS_ENDPOINT_URL_S3=moto.url)
    printed = round_trip(
        key,
        serve_backup=(
            "--backup-bucket",
            "setec-e2e-backups",
            "--backup-bucket-region",
            "us-east-1",
        ),
        admin_backup=("--backup", "s3://setec-e2e-backups", "--backup-region", "us-east-1"),
        tmp_path=tmp_path,
        env=env,
    )
    assert_no_values(printed)
    stored = s3.list_objects_v2(Bucket="setec-e2e-backups")["Contents"]
    assert stored
    assert all(o["Key"].endswith(".json") for o in stored)
