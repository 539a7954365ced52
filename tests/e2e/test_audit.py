"""The audit trail end to end: CloudTrail LookupEvents through the real aws CLI and boto3, the
hash-chained log file and `keyward audit verify`, on SQLite and PostgreSQL."""
import json
import os
import re
import stat
import subprocess
import urllib.request
from datetime import datetime, timezone

import botocore.exceptions
import pytest

from conftest import ACCOUNT, BIN, PG_URL, ROOT_KEY_ID, Server, fresh_database


@pytest.fixture(params=["sqlite", "postgres"])
def audited(request, tmp_path):
    """A server with --audit-log, on each backend."""
    url = None
    if request.param == "postgres":
        if not PG_URL:
            if os.environ.get("CI"):
                pytest.fail("KEYWARD_TEST_DATABASE_URL is not set in CI: run the suite through scripts/test")
            pytest.skip("no PostgreSQL (run through scripts/with-postgres)")
        url = fresh_database()
    log = tmp_path / "audit" / "trail.jsonl"
    log.parent.mkdir()
    s = Server(tmp_path / "data", database_url=url, args=["--audit-log", str(log)]).start()
    s.audit_log = log
    yield s
    s.stop()


def lines(path):
    return [json.loads(l) for l in path.read_text().splitlines()]


def verify(path):
    p = subprocess.run([BIN, "audit", "verify", str(path)], capture_output=True, text=True, timeout=30)
    return p.returncode, p.stdout + p.stderr


def lookup(server, *attrs, **kw):
    """All events of a CLI lookup (the CLI follows NextToken itself)."""
    args = ["cloudtrail", "lookup-events"]
    for k, v in attrs:
        args += ["--lookup-attributes", f"AttributeKey={k},AttributeValue={v}"]
    for k, v in kw.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    _, out, _ = server.aws(*args)
    return out["Events"]


def eventually(fetch, ready, timeout=10):
    """Read-only calls and failures do not wait for their event (docs/audit.md): poll briefly."""
    import time

    deadline = time.time() + timeout
    while True:
        got = fetch()
        if ready(got) or time.time() > deadline:
            return got
        time.sleep(0.05)


def new_user_key(server, name):
    iam = server.client("iam")
    iam.create_user(UserName=name)
    k = iam.create_access_key(UserName=name)["AccessKey"]
    return k["AccessKeyId"], k["SecretAccessKey"]


def test_lookup_by_access_key_with_the_cli(audited):
    kid, secret = new_user_key(audited, "alice")
    sts = audited.client("sts", key_id=kid, secret=secret, region="eu-west-1")
    sts.get_caller_identity()
    # Another last character, whatever the random secret ends with (a fixed "x" was the same
    # secret once in 64 runs).
    bad = audited.client("sts", key_id=kid, secret=secret[:-1] + ("x" if secret[-1] != "x" else "y"))
    with pytest.raises(botocore.exceptions.ClientError):
        bad.get_caller_identity()
    events = eventually(lambda: lookup(audited, ("AccessKeyId", kid)), lambda ev: len(ev) >= 2)
    assert [e["EventName"] for e in events] == ["GetCallerIdentity", "GetCallerIdentity"]
    failed, ok = (json.loads(e["CloudTrailEvent"]) for e in events)  # newest first
    assert failed["errorCode"] == "SignatureDoesNotMatch"
    assert "errorCode" not in ok and ok["awsRegion"] == "eu-west-1"
    for ev in (failed, ok):
        assert ev["eventSource"] == "sts.amazonaws.com" and ev["eventType"] == "AwsApiCall"
        assert ev["sourceIPAddress"] == "127.0.0.1" and ev["readOnly"] is True
        assert ev["userIdentity"]["accessKeyId"] == kid
        assert ev["userIdentity"]["accountId"] == ACCOUNT
        assert "Boto3" in ev["userAgent"] or "botocore" in ev["userAgent"]
    assert ok["userIdentity"]["type"] == "IAMUser" and ok["userIdentity"]["userName"] == "alice"
    assert events[0]["Username"] == "alice"
    # Each event carries the request id its client was answered with, in the store and in the
    # log file alike, and its own event id.
    answered = sts.get_caller_identity()["ResponseMetadata"]["RequestId"]
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", answered)
    stored = eventually(lambda: lookup(audited, ("AccessKeyId", kid)), lambda ev: len(ev) >= 3)[0]
    stored_ev = json.loads(stored["CloudTrailEvent"])
    assert stored_ev["requestID"] == answered and stored_ev["eventID"] == stored["EventId"]
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", stored["EventId"])
    logged = eventually(lambda: [e for e in lines(audited.audit_log) if e.get("requestID") == answered], bool)
    assert len(logged) == 1 and logged[0]["eventID"] == stored["EventId"]
    # The secret of CreateAccessKey is nowhere: not in the store's events, not in the file.
    created = lookup(audited, ("EventName", "CreateAccessKey"))
    assert len(created) == 1
    body = json.loads(created[0]["CloudTrailEvent"])
    assert body["responseElements"]["accessKey"]["accessKeyId"] == kid
    assert secret not in created[0]["CloudTrailEvent"]
    assert secret not in audited.audit_log.read_text()
    # A change's event (on PostgreSQL stored in the write's own transaction) is the same event in
    # the store and in the file.
    logged = [e for e in lines(audited.audit_log) if e.get("eventName") == "CreateAccessKey"]
    assert [e["eventID"] for e in logged] == [created[0]["EventId"]]


def test_a_retired_key_is_still_traced_to_its_account(audited):
    kid, secret = new_user_key(audited, "bob")
    iam = audited.client("iam")
    iam.update_access_key(UserName="bob", AccessKeyId=kid, Status="Inactive")
    iam.delete_access_key(UserName="bob", AccessKeyId=kid)
    code, _, err = audited.aws("sts", "get-caller-identity", key_id=kid, secret=secret, check=False)
    assert code != 0 and "InvalidClientTokenId" in err
    events = eventually(lambda: lookup(audited, ("AccessKeyId", kid)), lambda ev: "errorCode" in ev[0]["CloudTrailEvent"])
    ev = json.loads(events[0]["CloudTrailEvent"])
    assert ev["errorCode"] == "InvalidClientTokenId" and ev["eventName"] == "GetCallerIdentity"
    assert ev["userIdentity"]["accountId"] == ACCOUNT and ev["userIdentity"]["accessKeyId"] == kid
    assert ev["sourceIPAddress"] == "127.0.0.1"
    # The management calls on the key are in the trail too, made by root.
    names = [e["EventName"] for e in lookup(audited, ("ReadOnly", "false"))]
    for op in ("DeleteAccessKey", "UpdateAccessKey", "CreateAccessKey", "CreateUser"):
        assert op in names
    assert all(e["ReadOnly"] == "false" for e in lookup(audited, ("ReadOnly", "false")))


def test_a_failure_with_an_existing_key_names_its_owner(audited):
    kid, secret = new_user_key(audited, "carol")
    audited.client("iam").update_access_key(UserName="carol", AccessKeyId=kid, Status="Inactive")
    code, _, err = audited.aws("sts", "get-caller-identity", key_id=kid, secret=secret, check=False)
    assert code != 0 and "InvalidClientTokenId" in err
    code, _, err = audited.aws("sts", "get-caller-identity", key_id=kid, secret="x" * 40, check=False)
    assert code != 0 and "InvalidClientTokenId" in err
    events = eventually(
        lambda: lookup(audited, ("AccessKeyId", kid)),
        lambda ev: sum("errorCode" in e["CloudTrailEvent"] for e in ev) >= 2,
    )
    failures = [json.loads(e["CloudTrailEvent"]) for e in events if "errorCode" in e["CloudTrailEvent"]]
    assert len(failures) == 2
    for ev in failures:
        assert ev["userIdentity"]["type"] == "IAMUser", ev["userIdentity"]
        assert ev["userIdentity"]["userName"] == "carol"
        assert ev["userIdentity"]["accessKeyId"] == kid


def test_pagination_filters_and_errors_with_boto3(audited):
    ct = audited.client("cloudtrail")
    sts = audited.client("sts")
    for _ in range(5):
        sts.get_caller_identity()
    everything = eventually(
        lambda: ct.lookup_events(LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": "GetCallerIdentity"}]),
        lambda r: len(r["Events"]) >= 5,
    )
    assert len(everything["Events"]) == 5 and "NextToken" not in everything
    times = [e["EventTime"] for e in everything["Events"]]
    assert times == sorted(times, reverse=True)
    seen, token, pages = [], None, 0
    while True:
        kw = {"NextToken": token} if token else {}
        page = ct.lookup_events(
            LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": "GetCallerIdentity"}], MaxResults=2, **kw
        )
        pages += 1
        seen += [e["EventId"] for e in page["Events"]]
        token = page.get("NextToken")
        if not token:
            break
    assert pages == 3 and seen == [e["EventId"] for e in everything["Events"]]

    def error(**kw):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            ct.lookup_events(**kw)
        return e.value.response["Error"]["Code"]

    first = ct.lookup_events(MaxResults=1)
    assert error(MaxResults=1, NextToken=first["NextToken"],
                 LookupAttributes=[{"AttributeKey": "ReadOnly", "AttributeValue": "true"}]) == "InvalidNextTokenException"
    assert error(NextToken="00" * 40) == "InvalidNextTokenException"
    assert error(MaxResults=51) == "InvalidMaxResultsException"
    two = [{"AttributeKey": "EventName", "AttributeValue": "a"}, {"AttributeKey": "ReadOnly", "AttributeValue": "true"}]
    assert error(LookupAttributes=two) == "InvalidLookupAttributesException"
    assert error(StartTime=datetime(2030, 1, 1, tzinfo=timezone.utc),
                 EndTime=datetime(2029, 1, 1, tzinfo=timezone.utc)) == "InvalidTimeRangeException"
    # A time window that ends before the first call finds nothing.
    old = ct.lookup_events(EndTime=datetime(2001, 1, 1, tzinfo=timezone.utc))
    assert old["Events"] == []
    # An IAM user may not read the trail (no policy engine yet): AWS's JSON-protocol denial.
    kid, secret = new_user_key(audited, "carol")
    user_ct = audited.client("cloudtrail", key_id=kid, secret=secret)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        user_ct.lookup_events()
    assert e.value.response["Error"]["Code"] == "AccessDeniedException"
    assert "cloudtrail:LookupEvents" in e.value.response["Error"]["Message"]
    # The other account's root sees none of this account's events.
    other = audited.env.copy()
    p = subprocess.run([BIN, "account", "create", "other", "--data-dir", str(audited.data_dir),
                        *(["--database-url", audited.database_url] if audited.database_url else [])],
                       capture_output=True, text=True, env=other, timeout=30)
    assert p.returncode == 0, p.stderr
    creds = dict(l.split(" = ") for l in p.stdout.splitlines())
    octl = audited.client("cloudtrail", key_id=creds["aws_access_key_id"], secret=creds["aws_secret_access_key"])
    assert octl.lookup_events()["Events"] == []
    assert octl.lookup_events(LookupAttributes=[{"AttributeKey": "AccessKeyId", "AttributeValue": ROOT_KEY_ID}])[
        "Events"] == []


def test_trail_agrees_with_get_access_key_last_used(audited):
    kid, secret = new_user_key(audited, "dave")
    audited.client("sts", key_id=kid, secret=secret, region="ap-south-1").get_caller_identity()
    audited.client("iam", key_id=kid, secret=secret).list_access_keys()
    last = audited.client("iam").get_access_key_last_used(AccessKeyId=kid)["AccessKeyLastUsed"]
    found = eventually(lambda: lookup(audited, ("AccessKeyId", kid)), lambda ev: ev[0]["EventName"] == "ListAccessKeys")
    ok = [json.loads(e["CloudTrailEvent"]) for e in found]
    ok = [e for e in ok if "errorCode" not in e]
    newest = ok[0]
    assert newest["eventName"] == "ListAccessKeys"
    assert newest["eventSource"] == last["ServiceName"] + ".amazonaws.com"
    assert newest["awsRegion"] == last["Region"]
    when = datetime.strptime(newest["eventTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    assert when == last["LastUsedDate"].replace(microsecond=0)


def test_audit_log_chain_verify_and_restart(audited, tmp_path):
    audited.client("iam").create_user(UserName="erin")
    audited.client("sts").get_caller_identity()
    log = audited.audit_log
    assert stat.S_IMODE(os.stat(log).st_mode) == 0o600
    audited.stop()
    code, out = verify(log)
    assert code == 0 and "OK" in out, out
    n = len(lines(log))
    assert n >= 2 and [l["keywardChain"]["seq"] for l in lines(log)] == list(range(1, n + 1))
    # The chain continues across a restart.
    audited.start()
    audited.client("sts").get_caller_identity()
    audited.stop()
    code, out = verify(log)
    assert code == 0 and f"{n + 1} lines" in out, out

    text = log.read_text().splitlines(keepends=True)
    edited = tmp_path / "edited.jsonl"
    edited.write_text("".join(text).replace('"userName":"erin"', '"userName":"mallory"', 1))
    code, out = verify(edited)
    assert code == 1 and "altered" in out, out
    removed = tmp_path / "removed.jsonl"
    removed.write_text("".join(text[:1] + text[2:]))
    code, out = verify(removed)
    assert code == 1 and "line 2" in out and "removed" in out, out
    inserted = tmp_path / "inserted.jsonl"
    inserted.write_text("".join(text[:2] + text[:1] + text[2:]))
    code, out = verify(inserted)
    assert code == 1 and "line 3" in out and "inserted" in out, out


def test_acknowledged_change_survives_kill_9(audited):
    iam = audited.client("iam")
    iam.create_user(UserName="frank")
    # Acknowledged: already on disk, before anything else happens.
    assert any(l["eventName"] == "CreateUser" and l["requestParameters"] == {"userName": "frank"}
               for l in lines(audited.audit_log))
    with urllib.request.urlopen(audited.url + "/_keyward/metrics", timeout=5) as r:
        metrics = r.read().decode()
    assert "keyward_audit_dropped_total 0" in metrics and "keyward_audit_failures_total 0" in metrics
    assert int(re.search(r"keyward_audit_events_total (\d+)", metrics).group(1)) >= 1
    audited.kill9()
    audited.start()
    events = lookup(audited, ("EventName", "CreateUser"))
    assert len(events) == 1 and json.loads(events[0]["CloudTrailEvent"])["requestParameters"]["userName"] == "frank"
    audited.stop()
    assert verify(audited.audit_log)[0] == 0


def test_events_read_as_cloudtrail_writes_them(audited):
    """Root's events are found by Username=root (as LookupEvents' documentation pages through
    them), times inside responseElements and requestParameters are in CloudTrail's words, and
    integer parameters are numbers."""
    ct_time = re.compile(r"[A-Z][a-z]{2} \d{1,2}, \d{4}, \d{1,2}:\d{2}:\d{2} [AP]M")
    audited.client("iam").create_user(UserName="tina")
    audited.client("sts").get_session_token(DurationSeconds=900)
    roots = eventually(lambda: lookup(audited, ("Username", "root")), lambda ev: len(ev) >= 2)
    assert {"CreateUser", "GetSessionToken"} <= {e["EventName"] for e in roots}
    assert all(e["Username"] == "root" for e in roots)
    created = json.loads(lookup(audited, ("EventName", "CreateUser"))[0]["CloudTrailEvent"])
    assert ct_time.fullmatch(created["responseElements"]["user"]["createDate"]), created
    session = json.loads(eventually(lambda: lookup(audited, ("EventName", "GetSessionToken")), bool)[0]["CloudTrailEvent"])
    assert session["requestParameters"]["durationSeconds"] == 900
    assert ct_time.fullmatch(session["responseElements"]["credentials"]["expiration"]), session
    # LookupEvents' own times.
    ct = audited.client("cloudtrail")
    ct.lookup_events(StartTime=datetime(2026, 1, 2, 15, 4, 5, tzinfo=timezone.utc), EndTime=datetime(2030, 1, 1, tzinfo=timezone.utc))
    ev = eventually(lambda: [json.loads(e["CloudTrailEvent"]) for e in lookup(audited, ("EventName", "LookupEvents"))],
                    lambda evs: any("startTime" in (e["requestParameters"] or {}) for e in evs))
    params = next(e["requestParameters"] for e in ev if "startTime" in (e["requestParameters"] or {}))
    assert params["startTime"] == "Jan 2, 2026, 3:04:05 PM" and params["endTime"] == "Jan 1, 2030, 12:00:00 AM", params
