"""The ``s3://`` backup sink: backups as objects in an S3 bucket, as in Go setec.

``s3://BUCKET[/PREFIX][?region=REGION&role=ROLE-ARN]`` keeps each backup as the object
``PREFIX/NAME`` (or ``NAME`` with no prefix). ``region`` is the bucket's region; without
it the SDK's ordinary resolution applies (``AWS_DEFAULT_REGION``, the shared config), as in Go
setec, which never looks the bucket's region up. Credentials come from the standard AWS
chain (environment, shared config and credentials files, SSO, container and instance
roles); with ``role``, they are only used to call STS AssumeRole on that role, whose
temporary credentials are refreshed before they expire. The endpoints come from boto3's
own settings, so ``AWS_ENDPOINT_URL_S3`` and ``AWS_ENDPOINT_URL_STS`` point the sink at
moto, MinIO or LocalStack.

``put`` is a PutObject with ``If-None-Match: *``, so S3 itself refuses to replace a
stored backup (with a botocore too old to send it, a HeadObject check comes first, which
a concurrent writer could race). No other option is sent: server-side encryption is the
bucket's default, and the data is encrypted by setec anyway. ``get_head`` is a ranged
GetObject, and ``list_stamps`` takes each object's ETag, size and modification time
from the listing itself, so retention costs one listing and a small read per new
backup. Calls have bounded timeouts and at most three attempts. boto3 is imported only
when a sink is built.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

from setec_core.backup import BackupSink, check_name, is_valid_name
from setec_core.errors import ConfigError, NotFound, SetecError, StorageError
from setec_core.hookspecs import hookimpl
from setec_core.options import Option
from setec_core.sdk import import_sdk
from setec_core.uris import redact

_FORM = "s3://BUCKET[/PREFIX][?region=REGION&role=arn:aws:iam::ACCOUNT:role/NAME]"
_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,253}[A-Za-z0-9]")
_REGION = re.compile(r"[a-z0-9][a-z0-9-]*[a-z0-9]")
_ROLE = re.compile(r"arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9_+=,.@/-]+")
_PREFIX_SEGMENT = re.compile(r"[A-Za-z0-9._:=+@,-]+")
# AWS access key ids, should an error message from a peer ever carry one.
_ACCESS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA|AROA|AIDA)[A-Z0-9]{12,}\b")
_SESSION_NAME = "setec-backup"
_CHAIN = (
    "the standard AWS chain (AWS_PROFILE, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
    "an instance or task role)"
)
_ADVICE = {
    "NoSuchBucket": "; create the bucket {bucket!r} or fix --backup",
    "AccessDenied": "; grant these credentials s3:PutObject, s3:GetObject, s3:ListBucket "
    "and s3:DeleteObject on the bucket {bucket!r} and prefix",
    "PermanentRedirect": "; the bucket {bucket!r} is in another region: set region= "
    "(--backup-region)",
    "AuthorizationHeaderMalformed": "; the bucket {bucket!r} may be in another region: "
    "set region= (--backup-region)",
}
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_EXISTS_CODES = frozenset({"PreconditionFailed", "412"})


def _import_aws() -> tuple[Any, Any]:
    """Return ``(boto3, botocore)`` with botocore's ``config``, ``credentials``,
    ``exceptions`` and ``session`` modules loaded, or say how to get them."""
    boto3, botocore, *_ = import_sdk(
        [
            "boto3",
            "botocore",
            "botocore.config",
            "botocore.credentials",
            "botocore.exceptions",
            "botocore.session",
        ],
        user="the s3 backup sink",
        packages=["boto3"],
        install="pysetec[aws]",
    )
    return boto3, botocore


_LOADER: dict[str, Any] = {}


def _new_session(botocore: Any) -> Any:
    """Return a new botocore session sharing one data loader with the others: each
    session would otherwise parse the SDK's JSON models again (a few tenths of a
    second per sink)."""
    session = botocore.session.Session()
    loader = _LOADER.setdefault("loader", session.get_component("data_loader"))
    session.register_component("data_loader", loader)
    return session


def parse_uri(uri: str) -> tuple[str, str, str | None, str | None]:
    """Split an ``s3://`` backup URI into ``(bucket, prefix, region, role)``.

    :raises ConfigError: if the URI is malformed, showing the expected form.
    """
    scheme, sep, _ = uri.partition("://")
    if scheme.lower() != "s3" or not sep:
        raise ConfigError(f"not an s3 backup URI: {redact(uri)!r}; expected {_FORM}")
    parts = urllib.parse.urlsplit(uri)
    if "@" in parts.netloc or ":" in parts.netloc:
        # Not even the "bucket" is shown: with a "/" in a password, urlsplit puts part
        # of the password there ("s3://user:pa/ss@bucket" has netloc "user:pa").
        raise ConfigError(
            "the s3 backup URI holds credentials (or a port); remove them: credentials "
            "come from the standard AWS chain (environment, shared config, instance or "
            "task role)"
        )
    # The messages below name the bucket, not the URI: a mistaken query could hold
    # something that must not reach a log.
    where = f"s3 backup URI for bucket {parts.netloc!r}"
    if parts.fragment or uri.endswith("#"):
        raise ConfigError(f"{where} has a fragment ('#...'); expected {_FORM}")
    try:
        query = urllib.parse.parse_qsl(
            parts.query, keep_blank_values=True, strict_parsing=bool(parts.query)
        )
    except ValueError:
        raise ConfigError(f"{where} has a malformed query; expected {_FORM}") from None
    options: dict[str, str] = {}
    for key, value in query:
        if key not in ("region", "role"):
            raise ConfigError(
                f"{where} has an unknown parameter {key!r}; only region and role are "
                f"known; expected {_FORM}"
            )
        if key in options:
            raise ConfigError(f"{where} gives {key!r} twice; expected {_FORM}")
        options[key] = value
    return parts.netloc, parts.path, options.get("region"), options.get("role")


class S3BackupSink(BackupSink):
    """Keeps backups as objects in an S3 bucket, under an optional key prefix.

    :param bucket: the bucket's name.
    :param prefix: the key prefix, without leading or trailing slashes (they are
        dropped); ``""`` for the top of the bucket.
    :param region: the bucket's region; the SDK's default resolution if ``None``.
    :param role: an IAM role ARN to assume for every call, or ``None`` to use the
        ambient credentials directly.
    :raises ConfigError: if a parameter is malformed or boto3 is not installed.
    """

    name = "s3"
    schemes = ("s3",)
    # The flags are the URI's region= and role= under Go setec's names.
    options = (
        Option(
            "--backup-region",
            "The S3 bucket's region (default: the AWS SDK's own resolution); the URI's region=.",
            metavar="REGION",
            aliases=("--backup-bucket-region",),
        ),
        Option(
            "--backup-role",
            "IAM role ARN to assume (STS) for S3 backups; the URI's role=.",
            metavar="ARN",
        ),
    )

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        region: str | None = None,
        role: str | None = None,
    ) -> None:
        if not _BUCKET.fullmatch(bucket) or ".." in bucket:
            raise ConfigError(
                f"invalid S3 bucket name {bucket!r}: 3 to 255 letters, digits, '.', '_' "
                f"or '-'; expected {_FORM}"
            )
        prefix = prefix.strip("/")
        region = region or None
        role = role or None
        if prefix and not all(
            _PREFIX_SEGMENT.fullmatch(s) and s not in (".", "..") for s in prefix.split("/")
        ):
            raise ConfigError(
                f"invalid key prefix {prefix!r} for S3 bucket {bucket!r}: use segments of "
                "letters, digits and . _ : = + @ , - separated by single slashes"
            )
        if region is not None and not _REGION.fullmatch(region):
            raise ConfigError(
                f"invalid AWS region {region!r} for S3 bucket {bucket!r}; "
                "expected a region name such as us-east-1"
            )
        if role is not None and not _ROLE.fullmatch(role):
            raise ConfigError(
                f"invalid IAM role ARN {role!r} for S3 bucket {bucket!r}; "
                "expected arn:aws:iam::ACCOUNT:role/NAME"
            )
        self._bucket = bucket
        self._prefix = prefix
        self._region = region
        self._role = role
        boto3, botocore = _import_aws()
        self._errors = botocore.exceptions
        client_config = botocore.config.Config(
            connect_timeout=5,
            read_timeout=60,
            retries={"total_max_attempts": 3, "mode": "standard"},
        )
        self._sts: Any = None
        try:
            self._client = self._make_clients(boto3, botocore, client_config)
        except botocore.exceptions.BotoCoreError as e:
            # A missing AWS_PROFILE, a malformed shared config: as Go setec, refuse to
            # start rather than fail every backup.
            if self._sts is not None:
                self._sts.close()
            raise ConfigError(
                f"cannot create the S3 client for bucket {bucket}: {type(e).__name__}: "
                f"{_scrub(str(e))}"
            ) from None
        operation = self._client.meta.service_model.operation_model("PutObject")
        self._if_none_match = "IfNoneMatch" in operation.input_shape.members

    def _make_clients(self, boto3: Any, botocore: Any, client_config: Any) -> Any:
        """Return the S3 client (making the STS client first, if there is a role)."""
        region = self._region
        core = _new_session(botocore)
        if self._role is not None:
            # The ambient credentials only call STS; S3 sees the role's credentials,
            # fetched on first use and refreshed by botocore before they expire.
            self._sts = boto3.session.Session(botocore_session=core, region_name=region).client(
                "sts", config=client_config
            )
            assumed = botocore.credentials.DeferredRefreshableCredentials(
                refresh_using=self._assume_role, method=_RoleProvider.METHOD
            )
            core = _new_session(botocore)
            core.register_component(
                "credential_provider",
                botocore.credentials.CredentialResolver(providers=[_RoleProvider(assumed)]),
            )
        session = boto3.session.Session(botocore_session=core, region_name=region)
        return session.client("s3", config=client_config)

    def _assume_role(self) -> dict[str, str]:
        """Call STS AssumeRole on the role; return credentials as botocore's
        RefreshableCredentials wants them."""
        role, bucket = self._role, self._bucket
        try:
            out = self._sts.assume_role(RoleArn=role, RoleSessionName=_SESSION_NAME)
        except self._errors.ClientError as e:
            raise StorageError(
                f"cannot assume role {role} for S3 bucket {bucket} (STS AssumeRole: "
                f"{_aws_error(e)}); check that the ambient credentials may "
                "sts:AssumeRole on it and that its trust policy allows them"
            ) from None
        except self._errors.NoCredentialsError:
            raise StorageError(
                f"no AWS credentials found to assume role {role} for S3 bucket {bucket}: "
                f"configure {_CHAIN}"
            ) from None
        except self._errors.BotoCoreError as e:
            raise StorageError(
                f"cannot assume role {role} for S3 bucket {bucket} (STS AssumeRole: "
                f"{type(e).__name__}: {_scrub(str(e))})"
            ) from None
        c = out["Credentials"]
        return {
            "access_key": c["AccessKeyId"],
            "secret_key": c["SecretAccessKey"],
            "token": c["SessionToken"],
            "expiry_time": c["Expiration"].isoformat(),
        }

    @classmethod
    def from_uri(
        cls, uri: str, *, read_only: bool = False, options: Mapping[str, Any] | None = None
    ) -> S3BackupSink:
        """Build from ``s3://BUCKET[/PREFIX][?region=REGION&role=ROLE-ARN]``
        (``read_only`` changes nothing: building an S3 sink creates nothing).

        :param options: ``backup_region`` and ``backup_role`` (``--backup-region``,
            ``--backup-role``): the URI's ``region`` and ``role``, if it has none.
        :raises ConfigError: if the URI is malformed, it and a flag both give the region
            or the role, or boto3 is not installed.
        """
        bucket, prefix, region, role = parse_uri(uri)
        flags = options or {}
        for key, flag, in_uri in (
            ("region", "--backup-region", region),
            ("role", "--backup-role", role),
        ):
            if in_uri and flags.get(f"backup_{key}"):
                raise ConfigError(
                    f"the s3 backup URI for bucket {bucket!r} gives {key}= and {flag} gives "
                    "it too; give one"
                )
        region = region or flags.get("backup_region") or None
        role = role or flags.get("backup_role") or None
        return cls(bucket, prefix, region=region, role=role)

    @property
    def uri(self) -> str:
        path = f"/{self._prefix}" if self._prefix else ""
        query = [(k, v) for k, v in (("region", self._region), ("role", self._role)) if v]
        text = "&".join(f"{k}={urllib.parse.quote(v, safe=':/@,')}" for k, v in query)
        return f"s3://{self._bucket}{path}{'?' + text if text else ''}"

    @property
    def bucket(self) -> str:
        """The bucket's name."""
        return self._bucket

    @property
    def prefix(self) -> str:
        """The key prefix, without slashes at either end (``""`` for none)."""
        return self._prefix

    def key(self, name: str) -> str:
        """Return the object key that holds the backup ``name``.

        :raises StorageError: if ``name`` is not a valid backup name.
        """
        check_name(name)
        return f"{self._prefix}/{name}" if self._prefix else name

    # --- the operations ----------------------------------------------------------

    def put(self, name: str, data: bytes) -> None:
        key = self.key(name)
        exists = StorageError(
            f"backup {name!r} already exists at s3://{self._bucket}/{key}; "
            "backups are never replaced"
        )
        if not self._if_none_match:
            if self._exists(key):
                raise exists
            self._call(
                "PutObject",
                key,
                lambda: self._client.put_object(Bucket=self._bucket, Key=key, Body=data),
            )
            return
        try:
            self._call(
                "PutObject",
                key,
                lambda: self._client.put_object(
                    Bucket=self._bucket, Key=key, Body=data, IfNoneMatch="*"
                ),
            )
        except _S3Error as e:
            if e.code in _EXISTS_CODES:
                raise exists from None
            raise

    def _exists(self, key: str) -> bool:
        try:
            self._call(
                "HeadObject", key, lambda: self._client.head_object(Bucket=self._bucket, Key=key)
            )
        except _S3Error as e:
            if e.code in _NOT_FOUND_CODES:
                return False
            raise
        return True

    def list(self) -> list[str]:
        return list(self.list_stamps())

    def list_stamps(self) -> dict[str, str]:
        """The stamp of an object is its ETag, size and last-modified time, which
        ListObjectsV2 gives with each key."""
        start = f"{self._prefix}/" if self._prefix else ""

        def items() -> list[dict[str, Any]]:
            found: list[dict[str, Any]] = []
            paginator = self._client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self._bucket, Prefix=start):
                found.extend(page.get("Contents", ()))
            return found

        stamps = {}
        for item in self._call("ListObjectsV2", start, items):
            name = item["Key"][len(start) :]
            # Anything else under the prefix (a console's folder marker "x/") is no backup.
            if is_valid_name(name):
                modified = item.get("LastModified")
                when = modified.isoformat() if modified is not None else ""
                stamps[name] = f"{item.get('ETag', '')}/{item.get('Size', '')}/{when}"
        return dict(sorted(stamps.items()))

    def get(self, name: str) -> bytes:
        return self._read(name, None)

    def get_head(self, name: str, size: int) -> bytes:
        """A ranged GetObject of the first ``size`` bytes."""
        if size < 1:
            raise ValueError("size must be at least 1")
        return self._read(name, size)

    def _read(self, name: str, size: int | None) -> bytes:
        key = self.key(name)
        ranged = {} if size is None else {"Range": f"bytes=0-{size - 1}"}

        def read() -> bytes:
            answer = self._client.get_object(Bucket=self._bucket, Key=key, **ranged)
            body = answer["Body"]
            try:
                # At most size bytes, whatever a server that ignores Range sends.
                return bytes(body.read() if size is None else body.read(size))
            finally:
                body.close()

        try:
            data: bytes = self._call("GetObject", key, read)
        except _S3Error as e:
            if e.code in _NOT_FOUND_CODES:
                raise NotFound(f"no backup {name!r} at s3://{self._bucket}/{key}") from None
            if e.code == "InvalidRange" and size is not None:
                return b""  # an empty object has no byte 0
            raise
        return data

    def delete(self, name: str) -> None:
        key = self.key(name)
        self._call(
            "DeleteObject", key, lambda: self._client.delete_object(Bucket=self._bucket, Key=key)
        )

    def close(self) -> None:
        self._client.close()
        if self._sts is not None:
            self._sts.close()

    # --- calling S3 --------------------------------------------------------------

    def _call(self, operation: str, key: str, call: Callable[[], Any]) -> Any:
        """Run ``call``, turning every AWS failure into a one-line StorageError naming
        the bucket and key (never the data, never a credential); an error answer from
        S3 is an :class:`_S3Error` carrying its code."""
        where = f"s3://{self._bucket}/{key}"
        try:
            return call()
        except SetecError:
            raise  # from _assume_role, already explained
        except self._errors.ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", "Unknown"))
            raise _S3Error(
                code,
                f"S3 {operation} on {where} failed: {_aws_error(e)}"
                f"{_ADVICE.get(code, '').format(bucket=self._bucket)}",
            ) from None
        except self._errors.NoCredentialsError:
            raise StorageError(
                f"no AWS credentials found for S3 {operation} on {where}: configure {_CHAIN}"
            ) from None
        except self._errors.BotoCoreError as e:
            raise StorageError(
                f"S3 {operation} on {where} failed: {type(e).__name__}: {_scrub(str(e))}"
            ) from None


class _S3Error(StorageError):
    """S3 answered with an error; :attr:`code` is its code, for callers that expect
    some (NoSuchKey on GetObject)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class _RoleProvider:
    """A botocore credential provider answering the assumed role's credentials (the
    resolver only calls ``load`` and reads ``METHOD``)."""

    METHOD = "sts-assume-role"
    CANONICAL_NAME = "setec-assume-role"

    def __init__(self, credentials: Any) -> None:
        self._credentials = credentials

    def load(self) -> Any:
        return self._credentials


def _aws_error(e: Any) -> str:
    error = e.response.get("Error", {})
    code = str(error.get("Code", "Unknown"))
    message = str(error.get("Message") or "").strip()
    return _scrub(f"{code}: {message}" if message else code)


def _scrub(text: str) -> str:
    return _ACCESS_KEY_ID.sub("<access key id>", " ".join(text.split()))


@hookimpl
def setec_register_backup_sinks(register: Any) -> None:
    """Register the ``s3://`` backup sink."""
    register(S3BackupSink)
