"""Failed-authentication throttling, seen by the real aws CLI and boto3.

All clients run on this host; on Linux the whole of 127/8 is loopback, so a raw client that binds its
socket to 127.0.0.2 or 127.0.0.3 stands for "another source". Throttling never touches the store, so
these tests run on the SQLite backend only.
"""
import http.client
import time
import urllib.request

import boto3
import botocore.auth
import botocore.awsrequest
import botocore.config
import botocore.credentials
import botocore.exceptions
import pytest

from conftest import ACCOUNT, ROOT_KEY_ID, ROOT_SECRET, Server, error_of, key_id_for, new_user_with_key

BAD_KEY = key_id_for(ACCOUNT, "B")
FORM = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}


@pytest.fixture
def limited(tmp_path):
    """Start a server with throttle flags; stopped at the end of the test."""
    servers = []

    def start(*args):
        s = Server(tmp_path / f"data{len(servers)}", args=list(args)).start()
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.stop()


def call_from(server, source, key_id, secret, service="sts", body=b"Action=GetCallerIdentity&Version=2011-06-15"):
    """A SigV4-signed query-protocol POST sent from the loopback address `source`: (status, body)."""
    req = botocore.awsrequest.AWSRequest(method="POST", url=server.url + "/", data=body, headers=dict(FORM))
    botocore.auth.SigV4Auth(botocore.credentials.Credentials(key_id, secret), service, "us-east-1").add_auth(req)
    prepared = req.prepare()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10, source_address=(source, 0))
    try:
        conn.request("POST", "/", body=body, headers=dict(prepared.headers))
        r = conn.getresponse()
        return r.status, r.read().decode()
    finally:
        conn.close()


def code_of(body):
    return body.split("<Code>", 1)[1].split("</Code>", 1)[0] if "<Code>" in body else body


def fail(call, code, status):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        call()
    got = error_of(e)
    assert got[:2] == (code, status), got
    return e.value.response


def hammer(call, limit, code, status):
    """Fails `call` `limit` times with `code`, then until it is throttled: the sliding window weighs the
    previous bucket by the part of it still inside the window, so a bucket boundary crossed during the
    run lets a few failures slide out. Returns the number of failures answered with `code`."""
    for _ in range(limit):
        fail(call, code, status)
    for extra in range(4):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            call()
        got = error_of(e)
        if got[0] == "Throttling":
            assert got[1:] == (400, "Rate exceeded"), got
            return limit + extra
        assert got[:2] == (code, status), got
    raise AssertionError("never throttled")


def metric(server, line_start):
    with urllib.request.urlopen(server.url + "/_keyward/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(line_start):
                return int(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no metric {line_start}")


def test_source_past_the_limit_gets_throttling_others_do_not(limited):
    server = limited("--auth-failures-per-source", "5", "--auth-failures-per-key", "0")
    bad = server.client("sts", BAD_KEY, ROOT_SECRET)
    failures = hammer(bad.get_caller_identity, 5, "InvalidClientTokenId", 403)
    resp = fail(bad.get_caller_identity, "Throttling", 400)
    assert resp["Error"]["Message"] == "Rate exceeded" and resp["Error"]["Type"] == "Sender"
    # The source is refused whatever it presents: the right key too, over IAM as well.
    fail(server.client("sts").get_caller_identity, "Throttling", 400)
    fail(server.client("iam").list_users, "Throttling", 400)
    # The aws CLI shows the code (no retries: AWS_MAX_ATTEMPTS=1).
    rc, _, err = server.aws("iam", "list-users", check=False)
    assert rc != 0 and "(Throttling)" in err and "Rate exceeded" in err, err
    # S3's form of it.
    fail(server.client("s3").list_buckets, "SlowDown", 503)
    rc, _, err = server.aws("s3", "ls", check=False)
    assert rc != 0 and "SlowDown" in err, err
    # Another source is not affected.
    status, body = call_from(server, "127.0.0.2", ROOT_KEY_ID, ROOT_SECRET)
    assert status == 200 and f"<Account>{ACCOUNT}</Account>" in body, body
    status, body = call_from(server, "127.0.0.2", BAD_KEY, ROOT_SECRET)
    assert (status, code_of(body)) == (403, "InvalidClientTokenId"), body
    assert metric(server, 'keyward_auth_throttled_total{reason="source"}') >= 5
    assert metric(server, 'keyward_throttle_entries{table="source"}') == 2
    assert metric(server, 'keyward_auth_failures_counted_total') == failures + 1


def test_boto3_standard_retries_back_off_from_throttling(limited):
    server = limited("--auth-failures-per-source", "2", "--auth-failures-per-key", "0")
    bad = server.client("iam", BAD_KEY, ROOT_SECRET)
    hammer(bad.list_users, 2, "InvalidClientTokenId", 403)
    attempts = []
    retrying = boto3.client(
        "iam",
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id=ROOT_KEY_ID,
        aws_secret_access_key=ROOT_SECRET,
        config=botocore.config.Config(retries={"max_attempts": 3, "mode": "standard"}),
    )
    retrying.meta.events.register("before-send.iam.ListUsers", lambda **kw: attempts.append(1))
    resp = fail(retrying.list_users, "Throttling", 400)
    # botocore treats Throttling as retryable: `max_attempts` retries after the first attempt.
    assert len(attempts) == 4 and resp["ResponseMetadata"]["RetryAttempts"] == 3, (attempts, resp)
    assert resp["ResponseMetadata"]["MaxAttemptsReached"] is True
    s3 = boto3.client(
        "s3",
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id=ROOT_KEY_ID,
        aws_secret_access_key=ROOT_SECRET,
        config=botocore.config.Config(retries={"max_attempts": 2, "mode": "standard"}),
    )
    resp = fail(s3.list_buckets, "SlowDown", 503)
    assert resp["ResponseMetadata"]["RetryAttempts"] == 2, resp


def test_window_slides_and_the_source_recovers(limited):
    server = limited("--auth-failures-per-source", "3", "--auth-failure-window", "3")
    bad = server.client("sts", BAD_KEY, ROOT_SECRET)
    hammer(bad.get_caller_identity, 3, "InvalidClientTokenId", 403)
    fail(server.client("sts").get_caller_identity, "Throttling", 400)
    time.sleep(6.5)  # two windows: nothing left
    assert server.client("sts").get_caller_identity()["Account"] == ACCOUNT


def test_hot_key_does_not_lock_out_its_holder(limited):
    server = limited("--auth-failures-per-source", "0", "--auth-failures-per-key", "4")
    key_id, secret = new_user_with_key(server, "alice")
    wrong = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    # An attacker at 127.0.0.1 guesses alice's secret until her key id is hot.
    guesser = server.client("sts", key_id, wrong)
    hammer(guesser.get_caller_identity, 4, "SignatureDoesNotMatch", 403)
    # Alice, elsewhere, keeps working with the right secret, with the CLI too.
    status, body = call_from(server, "127.0.0.2", key_id, secret)
    assert status == 200 and "<Arn>arn:aws:iam::%s:user/alice</Arn>" % ACCOUNT in body, body
    # A fresh source that guesses wrong for the hot key gets Throttling at once, then is refused.
    status, body = call_from(server, "127.0.0.3", key_id, wrong)
    assert (status, code_of(body)) == (400, "Throttling"), body
    status, body = call_from(server, "127.0.0.3", key_id, secret)
    assert (status, code_of(body)) == (400, "Throttling"), body
    # Other keys are not affected, even from the attacker's address.
    assert server.client("sts").get_caller_identity()["Account"] == ACCOUNT
    rc, out, err = server.aws("sts", "get-caller-identity")
    assert rc == 0 and out["Account"] == ACCOUNT, err
    assert metric(server, 'keyward_auth_throttled_total{reason="key"}') >= 2
    assert metric(server, 'keyward_auth_throttled_total{reason="key_failed"}') == 1


def test_zero_disables(limited):
    server = limited("--auth-failures-per-source", "0", "--auth-failures-per-key", "0")
    bad = server.client("sts", BAD_KEY, ROOT_SECRET)
    for _ in range(80):
        fail(bad.get_caller_identity, "InvalidClientTokenId", 403)
    assert server.client("sts").get_caller_identity()["Account"] == ACCOUNT
    assert metric(server, 'keyward_throttle_entries{table="source"}') == 0


def test_default_limit_is_generous_and_real(limited):
    """Defaults: 60 failures a minute from one address are answered as they are; the 61st is throttled."""
    server = limited()
    bad = server.client("sts", BAD_KEY, ROOT_SECRET)
    hammer(bad.get_caller_identity, 60, "InvalidClientTokenId", 403)


def test_failures_of_secret_holders_do_not_count(limited):
    """A request whose signature matched but whose clock is off is an honest mistake, not a guess."""
    server = limited("--auth-failures-per-source", "2", "--clock-offset", "3600")
    for _ in range(5):
        resp = fail(server.client("sts").get_caller_identity, "SignatureDoesNotMatch", 403)
        assert "Signature expired" in resp["Error"]["Message"], resp
    assert metric(server, 'keyward_auth_failures_counted_total') == 0


def test_unauthenticated_requests_do_not_count(limited):
    server = limited("--auth-failures-per-source", "2")
    for _ in range(5):
        req = urllib.request.Request(server.url + "/?Action=GetCallerIdentity&Version=2011-06-15")
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=5)
        assert e.value.code == 403 and b"<Code>MissingAuthenticationToken</Code>" in e.value.read()
    assert server.client("sts").get_caller_identity()["Account"] == ACCOUNT


def test_json_dialect_throttling_exception(limited):
    server = limited("--auth-failures-per-source", "1", "--auth-failures-per-key", "0")
    fail(server.client("sts", BAD_KEY, ROOT_SECRET).get_caller_identity, "InvalidClientTokenId", 403)
    body = b"{}"
    req = botocore.awsrequest.AWSRequest(
        method="POST",
        url=server.url + "/",
        data=body,
        headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "AWSCloudTrail_20131101.LookupEvents"},
    )
    botocore.auth.SigV4Auth(botocore.credentials.Credentials(ROOT_KEY_ID, ROOT_SECRET), "cloudtrail", "us-east-1").add_auth(req)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("POST", "/", body=body, headers=dict(req.prepare().headers))
    r = conn.getresponse()
    text = r.read().decode()
    conn.close()
    assert r.status == 400 and r.getheader("x-amzn-ErrorType") == "ThrottlingException", (r.status, text)
    assert '"message":"Rate exceeded"' in text
