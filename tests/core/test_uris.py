"""setec_core.uris.redact: credentials never reach a message through a URI."""

from __future__ import annotations

import pytest

from setec_core.uris import redact


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("postgresql://app:hunter2@db:5432/setec", "postgresql://***@db:5432/setec"),
        ("s3://AKIAEXAMPLE:s3cr3t@bucket/prefix?region=x", "s3://***@bucket/prefix?region=x"),
        ("s3://bucket/prefix", "s3://bucket/prefix"),
        ("dir:///var/backups", "dir:///var/backups"),
        ("user:pw@host", "***@host"),
        ("http://[::1:pw@h", "http://***@h"),
        ("postgresql://app:hun/ter2@db/setec", "postgresql://***@db/setec"),
        ("s3://u:p?w#d@bucket/p", "s3://***@bucket/p"),
        ("dir:///srv/backups@2", "dir:///srv/backups@2"),
        ("arn:aws:kms:us-east-1:1:key/x", "arn:aws:kms:us-east-1:1:key/x"),
        ("postgresql://db/setec?password=hunter2", "postgresql://db/setec?password=***"),
        (
            "postgres://app@db/s?sslmode=require&sslpassword=pp&pass%77ord=x",
            "postgres://***@db/s?sslmode=require&sslpassword=***&pass%77ord=***",
        ),
        ("postgresql://db/setec?passwords=no", "postgresql://db/setec?passwords=no"),
    ],
)
def test_redact(uri: str, shown: str) -> None:
    """userinfo and password query values become ***; everything else stays as given."""
    assert redact(uri) == shown
