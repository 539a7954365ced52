"""Authentication failures, each as AWS answers it: code, HTTP status and message."""
import datetime
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET

import botocore.exceptions
import pytest

from conftest import ACCOUNT, ROOT_KEY_ID, ROOT_SECRET, Server, error_of, key_id_for, new_user_with_key

INVALID_TOKEN = "The security token included in the request is invalid."
SIG_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. Check your AWS Secret "
    "Access Key and signing method. Consult the service documentation for details."
)


def expect(call, code, status, message=None):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        call()
    got = error_of(e)
    assert got[:2] == (code, status), got
    if message is not None:
        assert got[2] == message, got
    return got


def test_unknown_key_is_invalid_client_token_id(server):
    for service, call in [("sts", "get_caller_identity"), ("iam", "list_users")]:
        c = server.client(service, key_id_for(ACCOUNT, "B"), ROOT_SECRET)
        expect(getattr(c, call), "InvalidClientTokenId", 403, INVALID_TOKEN)
    rc, _, err = server.aws("sts", "get-caller-identity", key_id=key_id_for("210987654321"), check=False)
    assert rc != 0 and "InvalidClientTokenId" in err and INVALID_TOKEN in err


def test_wrong_secret_is_signature_does_not_match(server):
    c = server.client("sts", ROOT_KEY_ID, ROOT_SECRET[:-1] + "X")
    expect(c.get_caller_identity, "SignatureDoesNotMatch", 403, SIG_MISMATCH)
    rc, _, err = server.aws("iam", "list-users", secret=ROOT_SECRET.lower(), check=False)
    assert rc != 0 and "SignatureDoesNotMatch" in err


def test_inactive_then_deleted_key_then_reactivated(server):
    kid, secret = new_user_with_key(server, "carol")
    iam, sts = server.client("iam"), server.client("sts", kid, secret)
    assert sts.get_caller_identity()["Account"] == ACCOUNT
    iam.update_access_key(UserName="carol", AccessKeyId=kid, Status="Inactive")
    expect(sts.get_caller_identity, "InvalidClientTokenId", 403, INVALID_TOKEN)
    iam.update_access_key(UserName="carol", AccessKeyId=kid, Status="Active")
    assert sts.get_caller_identity()["Account"] == ACCOUNT
    iam.delete_access_key(UserName="carol", AccessKeyId=kid)
    expect(sts.get_caller_identity, "InvalidClientTokenId", 403, INVALID_TOKEN)


def test_cli_deactivate_flow(server):
    server.aws("iam", "create-user", "--user-name", "dave")
    _, out, _ = server.aws("iam", "create-access-key", "--user-name", "dave")
    k = out["AccessKey"]
    _, who, _ = server.aws("sts", "get-caller-identity", key_id=k["AccessKeyId"], secret=k["SecretAccessKey"])
    assert who["Arn"].endswith(":user/dave")
    server.aws("iam", "update-access-key", "--user-name", "dave", "--access-key-id", k["AccessKeyId"], "--status", "Inactive")
    rc, _, err = server.aws("sts", "get-caller-identity", key_id=k["AccessKeyId"], secret=k["SecretAccessKey"], check=False)
    assert rc == 255 and "InvalidClientTokenId" in err, (rc, err)  # aws CLI v1: 255 for a service error


def raw(server, method="POST", path="/", body=b"", headers=None):
    req = urllib.request.Request(server.url + path, data=body if method == "POST" else None, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read().decode()


def test_no_authentication(server):
    form = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
    status, headers, body = raw(server, body=b"Action=GetCallerIdentity&Version=2011-06-15", headers=form)
    assert status == 403
    assert "<Code>MissingAuthenticationToken</Code>" in body and "<Message>Request is missing Authentication Token</Message>" in body
    assert 'xmlns="https://sts.amazonaws.com/doc/2011-06-15/"' in body
    assert headers.get("x-amzn-requestid") and f"<RequestId>{headers['x-amzn-requestid']}</RequestId>" in body
    status, _, body = raw(server, body=b"Action=ListUsers&Version=2010-05-08", headers=form)
    assert status == 403 and 'xmlns="https://iam.amazonaws.com/doc/2010-05-08/"' in body
    status, _, body = raw(server, method="GET", path="/?Action=GetCallerIdentity&Version=2011-06-15")
    assert status == 403 and "MissingAuthenticationToken" in body
    # S3 shape: GET / with no Action.
    status, _, body = raw(server, method="GET", path="/")
    assert status == 403 and "<Code>AccessDenied</Code>" in body and "<Message>Access Denied</Message>" in body


def test_malformed_authorization_header(server):
    form = {
        "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
        "Authorization": "AWS4-HMAC-SHA256 SignedHeaders=host;x-amz-date",
        "X-Amz-Date": "20240101T000000Z",
    }
    status, _, body = raw(server, body=b"Action=GetCallerIdentity&Version=2011-06-15", headers=form)
    assert status == 400 and "<Code>IncompleteSignature</Code>" in body, body


@pytest.mark.parametrize("offset,words", [(1200, "Signature expired"), (-1200, "Signature not yet current")])
def test_clock_skew(tmp, offset, words):
    s = Server(tmp / "data", args=["--clock-offset", str(offset)]).start()
    try:
        _, _, msg = expect(s.client("sts").get_caller_identity, "SignatureDoesNotMatch", 403)
        assert msg.startswith(words), msg
        if offset > 0:
            assert " is now earlier than " in msg and msg.endswith(" - 15 min.)")
        else:
            assert " is still later than " in msg and msg.endswith(" + 15 min.)")
        # S3 words it as RequestTimeTooSkewed.
        _, _, _ = expect(s.client("s3").list_buckets, "RequestTimeTooSkewed", 403)
    finally:
        s.stop()


def test_small_skew_is_accepted(tmp):
    s = Server(tmp / "data", args=["--clock-offset", "600"]).start()
    try:
        assert s.client("sts").get_caller_identity()["Account"] == ACCOUNT
    finally:
        s.stop()


def test_region_is_taken_from_the_scope(server):
    for region in ["eu-west-1", "ap-southeast-2", "us-gov-west-1"]:
        assert server.client("sts", region=region).get_caller_identity()["Account"] == ACCOUNT
        assert "Users" in server.client("iam", region=region).list_users()


def signed_form(server, form: bytes, service="iam"):
    import botocore.auth
    import botocore.awsrequest
    import botocore.credentials

    req = botocore.awsrequest.AWSRequest(method="POST", url=server.url + "/", data=form, headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
    botocore.auth.SigV4Auth(botocore.credentials.Credentials(ROOT_KEY_ID, ROOT_SECRET), service, "us-east-1").add_auth(req)
    return raw(server, body=form, headers=dict(req.prepare().headers))


def test_invalid_action(server):
    status, _, body = signed_form(server, b"Action=NoSuchThing&Version=2010-05-08")
    assert status == 400 and "<Code>InvalidAction</Code>" in body
    assert "Could not find operation NoSuchThing for version 2010-05-08" in body


def test_an_operation_is_found_by_its_name_and_version(server):
    """As AWS: a query request names its API version; none, or another, finds no operation."""
    for service, form, version in [
        ("sts", b"Action=GetCallerIdentity", "NO_VERSION_SPECIFIED"),
        ("sts", b"Action=GetCallerIdentity&Version=2010-05-08", "2010-05-08"),
        ("iam", b"Action=ListUsers", "NO_VERSION_SPECIFIED"),
        ("iam", b"Action=ListUsers&Version=2099-01-01", "2099-01-01"),
    ]:
        status, _, body = signed_form(server, form, service)
        assert status == 400 and "<Code>InvalidAction</Code>" in body, (form, body)
        action = form.split(b"&")[0].split(b"=")[1].decode()
        assert f"<Message>Could not find operation {action} for version {version}</Message>" in body, body
    status, _, body = signed_form(server, b"Action=GetCallerIdentity&Version=2011-06-15", "sts")
    assert status == 200, body


def test_a_credential_scoped_to_another_service_is_refused(server):
    """AWS's endpoints refuse a signature scoped to another service, naming their own."""
    for form, expected in [
        (b"Action=ListUsers&Version=2010-05-08", "iam"),
        (b"Action=GetCallerIdentity&Version=2011-06-15", "sts"),
    ]:
        status, _, body = signed_form(server, form, "ec2")
        assert status == 403 and "<Code>SignatureDoesNotMatch</Code>" in body, body
        message = ET.fromstring(body).find("{*}Error/{*}Message").text
        assert message == f"Credential should be scoped to correct service: '{expected}'.", body


def test_s3_dialect(server):
    s3 = server.client("s3")
    out = s3.list_buckets()
    assert out["Buckets"] == [] and out["Owner"]["ID"]
    bad = server.client("s3", key_id_for(ACCOUNT, "C"), ROOT_SECRET)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        bad.list_buckets()
    assert error_of(e)[:2] == ("InvalidAccessKeyId", 403)
    assert e.value.response["Error"]["AWSAccessKeyId"] == key_id_for(ACCOUNT, "C")
    wrong = server.client("s3", ROOT_KEY_ID, ROOT_SECRET[:-1] + "Z")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        wrong.list_buckets()
    err = e.value.response["Error"]
    assert err["Code"] == "SignatureDoesNotMatch"
    assert err["StringToSign"].startswith("AWS4-HMAC-SHA256\n")
    assert err["CanonicalRequest"].startswith("GET\n/\n")
    assert err["StringToSignBytes"].startswith("41 57 53 34")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket="b", Key="k")
    assert error_of(e)[:2] == ("NotImplemented", 501)


def test_s3_list_buckets_shape(server):
    """The owner is the account's canonical id, without DisplayName (S3 stopped returning it in
    November 2025); a Prefix sent is echoed; max-buckets must be 1 to 10,000."""
    s3 = server.client("s3")
    out = s3.list_buckets(Prefix="foo", MaxBuckets=5)
    assert out["Prefix"] == "foo" and "DisplayName" not in out["Owner"] and len(out["Owner"]["ID"]) == 64
    raw_s3 = server.client("s3", parameter_validation=False)
    for bad in (0, 10001):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            raw_s3.list_buckets(MaxBuckets=bad)
        assert error_of(e)[:2] == ("InvalidArgument", 400)


def test_s3_cli_ls_is_a_credential_check(server):
    rc, out, err = server.aws("s3", "ls")
    assert rc == 0, err
    rc, _, err = server.aws("s3", "ls", key_id=key_id_for(ACCOUNT, "D"), check=False)
    assert rc != 0 and "InvalidAccessKeyId" in err


def test_s3_presigned_urls(server):
    s3 = server.client("s3")
    url = s3.generate_presigned_url("list_buckets", ExpiresIn=60)
    status, _, body = raw(server, method="GET", path=url[len(server.url):])
    assert status == 200 and "<ListAllMyBucketsResult" in body, body
    tampered = url.replace("Expires=", "Expires=1") if "Expires=" in url else url + "x"
    status, _, body = raw(server, method="GET", path=tampered[len(server.url):])
    assert status == 403, body


def test_s3_sigv4_presigned_expiry(server):
    s3 = server.client("s3", signature_version="s3v4")
    url = s3.generate_presigned_url("list_buckets", ExpiresIn=60)
    assert "X-Amz-Signature=" in url
    status, _, body = raw(server, method="GET", path=url[len(server.url):])
    assert status == 200, body
    import botocore.auth

    real = botocore.auth.get_current_datetime
    botocore.auth.get_current_datetime = lambda: real() - datetime.timedelta(seconds=120)
    try:
        old = s3.generate_presigned_url("list_buckets", ExpiresIn=60)
    finally:
        botocore.auth.get_current_datetime = real
    status, _, body = raw(server, method="GET", path=old[len(server.url):])
    assert status == 403 and "<Code>AccessDenied</Code>" in body and "Request has expired" in body, body


def test_health_and_metrics(server):
    status, _, body = raw(server, method="GET", path="/_keyward/health")
    assert status == 200
    server.client("sts").get_caller_identity()
    status, _, body = raw(server, method="GET", path="/_keyward/metrics")
    assert status == 200 and "keyward_auth_success_total" in body
    ok = [l for l in body.splitlines() if l.startswith("keyward_auth_success_total ")]
    assert ok and int(ok[0].split()[1]) >= 1


def test_json_protocol_dialect(server):
    """X-Amz-Target services get the JSON protocol's errors."""
    bad = server.client("kms", key_id_for(ACCOUNT, "E"), ROOT_SECRET)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        bad.list_keys()
    assert error_of(e)[:2] == ("UnrecognizedClientException", 400)
    wrong = server.client("kms", ROOT_KEY_ID, ROOT_SECRET[:-1] + "Q")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        wrong.list_keys()
    assert error_of(e)[:2] == ("InvalidSignatureException", 400)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        server.client("kms").list_keys()
    assert error_of(e)[:2] == ("UnknownOperationException", 400)


def test_missing_action(server):
    import botocore.auth
    import botocore.awsrequest
    import botocore.credentials

    form = b"Version=2011-06-15"
    req = botocore.awsrequest.AWSRequest(method="POST", url=server.url + "/", data=form, headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
    botocore.auth.SigV4Auth(botocore.credentials.Credentials(ROOT_KEY_ID, ROOT_SECRET), "sts", "us-east-1").add_auth(req)
    status, _, body = raw(server, body=form, headers=dict(req.prepare().headers))
    assert status == 400 and "<Code>MissingAction</Code>" in body, body
    assert 'xmlns="https://sts.amazonaws.com/doc/2011-06-15/"' in body
