"""s3://: the backup-sink contract against moto's S3 on loopback, through real boto3 and
real HTTP with the endpoint taken from the environment; prefixes, regions, AssumeRole
(seen by a loopback proxy that records which credentials each request was signed with),
and errors that name the bucket and key but never the data or a credential."""

from __future__ import annotations

import http.client
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from peers.moto_server import MotoServer

from setec_core import ConfigError, NotFound, Plugins, StorageError
from setec_core.backup import BackupSink
from setec_core.testing import BackupSinkContract
from setec_core.testing.backup_contract import NAME, NAMES
from setec_plugins.s3_backup import S3BackupSink

REGION = "us-east-1"
ROLE = "arn:aws:iam::123456789012:role/setec-backup"
SECRET_KEY = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"
ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"

_CREDENTIAL = re.compile(r"Credential=([^/]+)/[^/]+/([^/]+)/([^/]+)/aws4_request")


@dataclass
class Seen:
    """One request the proxy passed on: who signed it, for which service."""

    method: str
    path: str
    service: str
    region: str
    access_key: str
    headers: dict[str, str]
    body: bytes


class RecordingProxy:
    """A loopback HTTP proxy in front of moto that records every request and can answer
    chosen ones itself: ``fail("s3", 503, xml, times=1)``. ``sts_lifetime`` rewrites
    the expiry of AssumeRole answers, to make botocore refresh early."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.removeprefix("http://")
        self.seen: list[Seen] = []
        self.faults: dict[str, list[tuple[int, bytes]]] = {}
        self.sts_lifetime: timedelta | None = None
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def handle_any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                match = _CREDENTIAL.search(self.headers.get("Authorization", ""))
                key, region, service = match.groups() if match else ("", "", "")
                headers = {k.lower(): v for k, v in self.headers.items()}
                proxy.seen.append(
                    Seen(self.command, self.path, service, region, key, headers, body)
                )
                queued = proxy.faults.get(service)
                if queued:
                    status, data = queued.pop(0)
                    reply_headers = [("Content-Type", "application/xml")]
                else:
                    status, reply_headers, data = proxy.forward(
                        self.command, self.path, headers, body
                    )
                    if service == "sts" and proxy.sts_lifetime is not None:
                        expiry = datetime.now(UTC) + proxy.sts_lifetime
                        data = re.sub(
                            rb"<Expiration>[^<]*</Expiration>",
                            f"<Expiration>{expiry:%Y-%m-%dT%H:%M:%SZ}</Expiration>".encode(),
                            data,
                        )
                self.send_response(status)
                for name, value in reply_headers:
                    if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def do_GET(self) -> None:
                self.handle_any()

            def do_PUT(self) -> None:
                self.handle_any()

            def do_POST(self) -> None:
                self.handle_any()

            def do_DELETE(self) -> None:
                self.handle_any()

            def do_HEAD(self) -> None:
                self.handle_any()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def forward(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(self.upstream, timeout=10)
        try:
            conn.request(method, path, body, headers)
            resp = conn.getresponse()
            return resp.status, resp.getheaders(), resp.read()
        finally:
            conn.close()

    def fail(self, service: str, status: int, code: str, message: str, *, times: int = 1) -> None:
        """Answer the next ``times`` requests for ``service`` with an AWS error."""
        xml = (
            f"<Error><Code>{code}</Code><Message>{message}</Message>"
            f"<RequestId>1</RequestId></Error>"
        )
        if service == "sts":
            xml = f"<ErrorResponse><Error><Type>Sender</Type>{xml[7:-8]}</Error></ErrorResponse>"
        self.faults.setdefault(service, []).extend([(status, xml.encode())] * times)

    def of(self, service: str) -> list[Seen]:
        return [s for s in self.seen if s.service == service]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, moto: MotoServer, tmp_path: Path) -> None:
    """Dummy credentials, no shared config, no instance metadata, S3 and STS at moto."""
    import os

    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto.url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", moto.url)


@pytest.fixture
def proxy(moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[RecordingProxy]:
    p = RecordingProxy(moto.url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", p.url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", p.url)
    yield p
    p.close()


def new_bucket(moto: MotoServer, region: str = REGION) -> str:
    """Create a bucket with a unique name in ``region``; return its name."""
    name = f"setec-{uuid.uuid4().hex[:12]}"
    s3 = moto.client("s3", region)
    if region == "us-east-1":
        s3.create_bucket(Bucket=name)
    else:
        s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": region})
    return name


@pytest.fixture
def bucket(moto: MotoServer) -> str:
    return new_bucket(moto)


@pytest.fixture
def open_sink() -> Iterator[Callable[[str], S3BackupSink]]:
    """Build sinks from URIs; every one is closed after the test."""
    sinks: list[S3BackupSink] = []

    def open_sink(uri: str) -> S3BackupSink:
        sink = S3BackupSink.from_uri(uri)
        sinks.append(sink)
        return sink

    yield open_sink
    for sink in sinks:
        sink.close()


def keys(moto: MotoServer, bucket: str) -> list[str]:
    out = moto.client("s3").list_objects_v2(Bucket=bucket)
    return sorted(item["Key"] for item in out.get("Contents", ()))


class TestS3BackupContract(BackupSinkContract):
    """S3BackupSink under a prefix, with the region in the URI, meets the contract."""

    @pytest.fixture
    def sink(self, bucket: str) -> Iterator[BackupSink]:
        s = S3BackupSink.from_uri(f"s3://{bucket}/backups/setec?region={REGION}")
        yield s
        s.close()


class TestS3BackupWithRoleContract(BackupSinkContract):
    """S3BackupSink at the top of a bucket, through an assumed role, meets the
    contract (reopening from its URI keeps the role)."""

    @pytest.fixture
    def sink(self, bucket: str) -> Iterator[BackupSink]:
        s = S3BackupSink(bucket, role=ROLE)
        yield s
        s.close()


# --- URIs and parameters ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "bucket", "prefix", "region", "role"),
    [
        ("s3://bkt", "bkt", "", None, None),
        ("s3://bkt/", "bkt", "", None, None),
        ("s3://bkt/a/b/", "bkt", "a/b", None, None),
        ("s3://bkt//a/b", "bkt", "a/b", None, None),
        ("s3://bkt/p?region=eu-west-1", "bkt", "p", "eu-west-1", None),
        (f"s3://bkt?role={ROLE}", "bkt", "", None, ROLE),
        (f"s3://bkt/p?role={ROLE}&region=eu-west-1", "bkt", "p", "eu-west-1", ROLE),
        ("s3://bkt?region=&role=", "bkt", "", None, None),
        ("S3://my.bucket_1/x:y=z", "my.bucket_1", "x:y=z", None, None),
    ],
)
def test_uri_parsing(uri: str, bucket: str, prefix: str, region: str, role: str) -> None:
    """s3://BUCKET[/PREFIX][?region=R&role=ARN]: slashes around the prefix are dropped,
    empty parameters mean none."""
    sink = S3BackupSink.from_uri(uri)
    try:
        assert (sink.bucket, sink.prefix, sink._region, sink._role) == (
            bucket,
            prefix,
            region,
            role,
        )
    finally:
        sink.close()


@pytest.mark.parametrize(
    "uri",
    [
        "s3://",
        "s3:///prefix",
        "s3://b/x",
        "s3://bucket:9000/x",
        "s3://bad bucket/x",
        "s3://bucket/a//b",
        "s3://bucket/a/../b",
        "s3://bucket/a%2Fb",
        "s3://bucket?region=Not_A_Region",
        "s3://bucket?role=arn:aws:iam::123:user/bob",
        "s3://bucket?region=us-east-1&region=eu-west-1",
        "s3://bucket?endpoint=http://evil",
        "s3://bucket?region",
        "s3://bucket#frag",
        "s3:/bucket",
        "gs://bucket",
    ],
)
def test_malformed_uri_is_a_config_error(uri: str) -> None:
    """A bad bucket, prefix, region, role, parameter or scheme is a ConfigError."""
    with pytest.raises(ConfigError):
        S3BackupSink.from_uri(uri)


def test_malformed_uri_errors_show_the_form() -> None:
    """The URI errors show the expected form."""
    with pytest.raises(ConfigError, match=re.escape("s3://BUCKET[/PREFIX][?region=")):
        S3BackupSink.from_uri("s3://bucket?colour=blue")


def test_credentials_in_the_uri_are_refused_unechoed() -> None:
    """A URI with user:password@ is refused without repeating the credentials."""
    with pytest.raises(ConfigError, match="holds credentials") as info:
        S3BackupSink.from_uri(f"s3://{ACCESS_KEY}:{SECRET_KEY}@bucket/x")
    assert SECRET_KEY not in str(info.value)
    assert ACCESS_KEY not in str(info.value)


def test_unknown_parameter_is_named_but_its_value_not_echoed() -> None:
    """A stray query parameter is named, its value (maybe a secret) is not repeated."""
    with pytest.raises(ConfigError, match="'aws_secret_access_key'") as info:
        S3BackupSink.from_uri(f"s3://bucket?aws_secret_access_key={SECRET_KEY}")
    assert SECRET_KEY not in str(info.value)


@pytest.mark.parametrize(
    "role",
    [ROLE, "arn:aws:iam::123456789012:role/path/to/name+x=y,z@w.v"],
)
def test_uri_round_trips(role: str) -> None:
    """The URI names bucket, prefix, region and role, and rebuilds the same sink;
    repr shows only the URI."""
    sink = S3BackupSink("bkt", prefix="/a/b/", region="eu-west-1", role=role)
    again = S3BackupSink.from_uri(sink.uri)
    try:
        assert sink.uri.startswith("s3://bkt/a/b?region=eu-west-1&role=arn:aws:iam::")
        assert again.uri == sink.uri
        assert again._role == role
        assert repr(sink) == f"S3BackupSink({sink.uri!r})"
    finally:
        sink.close()
        again.close()


def test_keyword_constructor_matches_the_uri() -> None:
    """S3BackupSink(bucket, prefix=, region=, role=) is the sink its URI describes."""
    sink = S3BackupSink("bkt", prefix="p", region="eu-west-1", role=ROLE)
    try:
        assert sink.uri == f"s3://bkt/p?region=eu-west-1&role={ROLE}"
        assert sink.key(NAME) == f"p/{NAME}"
    finally:
        sink.close()


def test_selected_by_scheme_through_the_entry_point(bucket: str) -> None:
    """s3:// URIs select S3BackupSink among the installed plugins."""
    sink = Plugins.load().backup_sink(f"s3://{bucket}/x")
    try:
        assert isinstance(sink, S3BackupSink)
    finally:
        sink.close()


# --- keys, prefixes and regions --------------------------------------------------------


def test_objects_live_under_the_prefix(
    moto: MotoServer, bucket: str, open_sink: Callable[[str], S3BackupSink]
) -> None:
    """A backup is the object PREFIX/NAME (one slash between), the object NAME with no
    prefix; list sees only its own prefix and skips folder markers and odd keys."""
    s3 = moto.client("s3")
    for key in ("backups", "backups/", "backupsx/y", "other/z", "backups/odd key", "backups/a//b"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"")
    prefixed = open_sink(f"s3://{bucket}/backups/")
    top = open_sink(f"s3://{bucket}")
    prefixed.put(NAME, b"p")
    top.put(NAMES[1], b"t")
    assert f"backups/{NAME}" in keys(moto, bucket)
    assert NAMES[1] in keys(moto, bucket)
    assert prefixed.list() == [NAME]
    assert NAMES[1] in top.list()
    assert f"backups/{NAME}" in top.list()
    assert top.get(f"backups/{NAME}") == b"p"


def test_list_pages_through_many_objects(
    moto: MotoServer, bucket: str, open_sink: Callable[[str], S3BackupSink]
) -> None:
    """More objects than one ListObjectsV2 page (1000) are all listed, sorted."""
    s3 = moto.client("s3")
    names = [f"2026/11/23/db-{i:05d}.json" for i in range(1005)]
    for name in names:
        s3.put_object(Bucket=bucket, Key=f"p/{name}", Body=b"")
    assert open_sink(f"s3://{bucket}/p").list() == names


def test_region_comes_from_the_query(
    moto: MotoServer, open_sink: Callable[[str], S3BackupSink], proxy: RecordingProxy
) -> None:
    """?region=R signs and sends requests for R, not AWS_DEFAULT_REGION, and a bucket
    there works."""
    bucket = new_bucket(moto, "eu-west-1")
    sink = open_sink(f"s3://{bucket}?region=eu-west-1")
    assert sink._client.meta.region_name == "eu-west-1"
    sink.put(NAME, b"x")
    assert sink.get(NAME) == b"x"
    assert {s.region for s in proxy.of("s3")} == {"eu-west-1"}


def test_region_defaults_to_the_sdk_resolution(
    open_sink: Callable[[str], S3BackupSink], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without ?region the SDK's own resolution (AWS_DEFAULT_REGION) applies, as in Go
    setec."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", "ap-southeast-2")
    assert open_sink("s3://bucket")._client.meta.region_name == "ap-southeast-2"


# --- put ---------------------------------------------------------------------------------


def test_put_sends_if_none_match_and_nothing_else(
    bucket: str, open_sink: Callable[[str], S3BackupSink], proxy: RecordingProxy
) -> None:
    """put is one PutObject with If-None-Match: * and no SSE, ACL or metadata options."""
    open_sink(f"s3://{bucket}/p").put(NAME, b"data")
    (put,) = proxy.of("s3")
    assert put.method == "PUT"
    assert urllib.parse.unquote(put.path) == f"/{bucket}/p/{NAME}"
    assert put.headers["if-none-match"] == "*"
    assert put.body == b"data"
    extra = [h for h in put.headers if h.startswith("x-amz-server-side") or h == "x-amz-acl"]
    assert extra == []
    assert not [h for h in put.headers if h.startswith("x-amz-meta-")]


def test_get_head_is_one_ranged_get(
    bucket: str, open_sink: Callable[[str], S3BackupSink], proxy: RecordingProxy
) -> None:
    """get_head asks S3 for the first bytes only (a Range header), in one GetObject."""
    sink = open_sink(f"s3://{bucket}/p")
    sink.put(NAME, bytes(range(256)) * 64)
    proxy.seen.clear()
    assert sink.get_head(NAME, 100) == bytes(range(100))
    (get,) = proxy.of("s3")
    assert get.method == "GET"
    assert urllib.parse.unquote(get.path) == f"/{bucket}/p/{NAME}"
    assert get.headers["range"] == "bytes=0-99"


def test_stamps_change_when_an_object_is_overwritten_behind_the_sinks_back(
    moto: MotoServer, bucket: str, open_sink: Callable[[str], S3BackupSink]
) -> None:
    """An object overwritten by another writer (PutObject without If-None-Match) gets
    another stamp, even with the same size: retention then reads it again."""
    sink = open_sink(f"s3://{bucket}")
    sink.put(NAME, b"genuine backup")
    before = sink.list_stamps()[NAME]
    moto.client("s3").put_object(Bucket=bucket, Key=NAME, Body=b"planted bytes!")
    assert sink.list_stamps()[NAME] != before


def test_moto_answers_412_for_an_existing_key(
    moto: MotoServer, bucket: str, open_sink: Callable[[str], S3BackupSink]
) -> None:
    """moto (like S3) refuses If-None-Match: * on an existing key with 412
    PreconditionFailed, which put reports as 'already exists' naming the key."""
    moto.client("s3").put_object(Bucket=bucket, Key=NAME, Body=b"there first")
    with pytest.raises(StorageError, match=f"already exists at s3://{bucket}/{re.escape(NAME)}"):
        open_sink(f"s3://{bucket}").put(NAME, b"mine")
    assert moto.client("s3").get_object(Bucket=bucket, Key=NAME)["Body"].read() == b"there first"


def test_without_if_none_match_put_checks_first(
    bucket: str, open_sink: Callable[[str], S3BackupSink], proxy: RecordingProxy
) -> None:
    """With a botocore too old for IfNoneMatch, put asks HeadObject first and refuses an
    existing name."""
    sink = open_sink(f"s3://{bucket}")
    sink._if_none_match = False  # what an old botocore's model would give
    sink.put(NAME, b"one")
    assert [s.method for s in proxy.of("s3")] == ["HEAD", "PUT"]
    assert "if-none-match" not in proxy.of("s3")[1].headers
    with pytest.raises(StorageError, match="already exists"):
        sink.put(NAME, b"two")
    assert sink.get(NAME) == b"one"


def test_a_transient_error_is_retried(
    bucket: str, open_sink: Callable[[str], S3BackupSink], proxy: RecordingProxy
) -> None:
    """A 503 SlowDown is retried (bounded) and the put then succeeds."""
    sink = open_sink(f"s3://{bucket}")
    proxy.fail("s3", 503, "SlowDown", "Please reduce your request rate.")
    sink.put(NAME, b"x")
    assert [s.method for s in proxy.of("s3")] == ["PUT", "PUT"]
    assert sink.get(NAME) == b"x"


def test_persistent_errors_stop_after_three_attempts(
    bucket: str, open_sink: Callable[[str], S3BackupSink], proxy: RecordingProxy
) -> None:
    """A 500 that does not go away is a StorageError after three attempts."""
    sink = open_sink(f"s3://{bucket}")
    proxy.fail("s3", 500, "InternalError", "We encountered an internal error.", times=10)
    with pytest.raises(StorageError, match="InternalError: We encountered an internal error"):
        sink.list()
    assert len(proxy.of("s3")) == 3


# --- AssumeRole ------------------------------------------------------------------------


def test_role_is_assumed_through_sts(
    bucket: str, open_sink: Callable[[str], S3BackupSink], proxy: RecordingProxy
) -> None:
    """With role=, the ambient credentials call STS AssumeRole on that role once and S3
    sees only the role's temporary credentials, which are reused while valid."""
    sink = open_sink(f"s3://{bucket}?role={ROLE}")
    assert proxy.seen == []  # nothing is fetched until used
    sink.put(NAME, b"x")
    sink.list()
    sink.get(NAME)
    (sts,) = proxy.of("sts")
    assert sts.access_key == "testing"
    assert b"Action=AssumeRole" in sts.body
    assert f"RoleArn={ROLE}".encode() in sts.body.replace(b"%3A", b":").replace(b"%2F", b"/")
    assert b"RoleSessionName=setec-backup" in sts.body
    s3_keys = {s.access_key for s in proxy.of("s3")}
    assert len(s3_keys) == 1
    assert s3_keys != {"testing"}
    assert all("x-amz-security-token" in s.headers for s in proxy.of("s3"))


def test_role_credentials_are_refreshed_before_they_expire(
    bucket: str, open_sink: Callable[[str], S3BackupSink], proxy: RecordingProxy
) -> None:
    """Credentials due to expire within botocore's refresh window (here: in 5 minutes)
    are replaced by a new AssumeRole before the next call."""
    proxy.sts_lifetime = timedelta(minutes=5)
    sink = open_sink(f"s3://{bucket}?role={ROLE}")
    sink.put(NAME, b"x")
    assert len(proxy.of("sts")) == 1
    sink.get(NAME)
    assert len(proxy.of("sts")) == 2
    proxy.sts_lifetime = timedelta(hours=1)
    sink.list()
    sink.list()
    assert len(proxy.of("sts")) == 3


def test_assume_role_refused_names_the_role(
    bucket: str, open_sink: Callable[[str], S3BackupSink], proxy: RecordingProxy
) -> None:
    """An STS refusal is a StorageError naming the role, the bucket and STS's error, and
    S3 is never called with the ambient credentials instead."""
    sink = open_sink(f"s3://{bucket}?role={ROLE}")
    proxy.fail("sts", 403, "AccessDenied", "not authorized to perform: sts:AssumeRole")
    with pytest.raises(StorageError) as info:
        sink.put(NAME, b"x")
    message = str(info.value)
    assert ROLE in message
    assert bucket in message
    assert "AccessDenied: not authorized to perform: sts:AssumeRole" in message
    assert proxy.of("s3") == []


# --- errors ----------------------------------------------------------------------------


@pytest.mark.parametrize("op", ["put", "list", "get", "delete"])
def test_missing_bucket_is_a_storage_error_naming_it(
    open_sink: Callable[[str], S3BackupSink], op: str
) -> None:
    """Every operation on a bucket that does not exist is a StorageError naming the
    bucket and NoSuchBucket (get too: it is not NotFound)."""
    sink = open_sink("s3://no-such-bucket-here/p")
    call: dict[str, Callable[[], object]] = {
        "put": lambda: sink.put(NAME, b"x"),
        "list": sink.list,
        "get": lambda: sink.get(NAME),
        "delete": lambda: sink.delete(NAME),
    }
    with pytest.raises(StorageError, match="no-such-bucket-here") as info:
        call[op]()
    assert "NoSuchBucket" in str(info.value)
    assert not isinstance(info.value, NotFound)


def test_unreachable_endpoint_fails_quickly(
    open_sink: Callable[[str], S3BackupSink], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing listening at the endpoint: a StorageError naming the bucket and the
    connection error within a few seconds (three attempts, short backoff)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{port}")
    sink = open_sink("s3://backup-bucket/p")
    started = time.monotonic()
    with pytest.raises(StorageError, match="EndpointConnectionError") as info:
        sink.put(NAME, b"x")
    assert time.monotonic() - started < 10
    assert "s3://backup-bucket/p/" in str(info.value)


def test_no_credentials_says_how_to_provide_them(
    open_sink: Callable[[str], S3BackupSink], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no credentials anywhere in the chain the error says how to provide them."""
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(StorageError, match=r"no AWS credentials found .*AWS_PROFILE"):
        open_sink("s3://bucket").list()


def test_errors_hold_no_data_and_no_credentials(
    bucket: str,
    open_sink: Callable[[str], S3BackupSink],
    proxy: RecordingProxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Error messages name the bucket and key and AWS's code and message, one line,
    but never the data, the secret key, the session token, or an access key id (even
    one that S3's message repeats)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_SESSION_TOKEN", "session-token-sentinel")
    data = b"snapshot-sentinel-" + uuid.uuid4().hex.encode()
    sink = open_sink(f"s3://{bucket}/p")
    messages = []
    proxy.fail("s3", 403, "AccessDenied", f"User key {ACCESS_KEY} may not\nwrite here")
    with pytest.raises(StorageError) as info:
        sink.put(NAME, data)
    messages.append(str(info.value))
    assert f"s3://{bucket}/p/{NAME}" in messages[0]
    assert "AccessDenied: User key <access key id> may not write here" in messages[0]
    sink.put(NAME, data)
    with pytest.raises(StorageError) as info:
        sink.put(NAME, data)
    messages.append(str(info.value))
    with pytest.raises(StorageError) as info:
        open_sink("s3://no-such-bucket-here").put(NAME, data)
    messages.append(str(info.value))
    for message in messages:
        assert "\n" not in message
        for secret in (data.decode(), SECRET_KEY, ACCESS_KEY, "session-token-sentinel"):
            assert secret not in message
    assert SECRET_KEY not in repr(sink)


@pytest.mark.parametrize("role", [None, ROLE])
def test_unusable_aws_config_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, role: str | None
) -> None:
    """A client that cannot be built (AWS_PROFILE names no profile) is a ConfigError at
    once, naming the bucket and the SDK's reason, as Go setec refuses to start."""
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")
    with pytest.raises(ConfigError, match=r"S3 client for bucket bkt: ProfileNotFound"):
        S3BackupSink("bkt", role=role)


def test_get_of_a_missing_name_is_not_found_naming_it(
    bucket: str, open_sink: Callable[[str], S3BackupSink]
) -> None:
    """NoSuchKey on GetObject is NotFound naming the backup and its key."""
    with pytest.raises(NotFound, match=f"s3://{bucket}/p/{re.escape(NAME)}"):
        open_sink(f"s3://{bucket}/p").get(NAME)


# --- packaging -------------------------------------------------------------------------


def test_missing_boto3_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without boto3 the sink is a ConfigError naming the extra to install."""
    monkeypatch.setitem(sys.modules, "boto3", None)
    with pytest.raises(ConfigError, match=r"pip install 'pysetec\[aws\]'"):
        Plugins.load().backup_sink("s3://bucket/p")


def test_registering_does_not_import_boto3() -> None:
    """Loading the plugins leaves boto3 unimported until an s3:// sink is built."""
    code = (
        "import sys; from setec_core import Plugins; p = Plugins.load(); "
        "assert p.backup_sinks.by_name('s3'); "
        "assert 'boto3' not in sys.modules and 'botocore' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
