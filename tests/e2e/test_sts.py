"""STS through boto3 and the aws CLI: callers of every kind, key info, session tokens."""
import datetime

import botocore.exceptions
import pytest

from conftest import ACCOUNT, ROOT_KEY_ID, error_of, key_id_for, new_user_with_key


def test_root_caller_identity_with_boto3_and_cli(server):
    ident = server.client("sts").get_caller_identity()
    assert ident["Account"] == ACCOUNT
    assert ident["UserId"] == ACCOUNT
    assert ident["Arn"] == f"arn:aws:iam::{ACCOUNT}:root"
    _, out, _ = server.aws("sts", "get-caller-identity")
    assert out == {"UserId": ACCOUNT, "Account": ACCOUNT, "Arn": f"arn:aws:iam::{ACCOUNT}:root"}


def test_user_caller_identity(server):
    server.client("iam").create_user(UserName="alice", Path="/team/")
    k = server.client("iam").create_access_key(UserName="alice")["AccessKey"]
    ident = server.client("sts", k["AccessKeyId"], k["SecretAccessKey"]).get_caller_identity()
    user = server.client("iam").get_user(UserName="alice")["User"]
    assert ident["Arn"] == f"arn:aws:iam::{ACCOUNT}:user/team/alice"
    assert ident["UserId"] == user["UserId"] and ident["UserId"].startswith("AIDA") and len(ident["UserId"]) == 21
    assert ident["Account"] == ACCOUNT


def test_get_access_key_info_decodes_any_well_formed_key(server):
    sts = server.client("sts")
    assert sts.get_access_key_info(AccessKeyId=ROOT_KEY_ID)["Account"] == ACCOUNT
    # AWS's published example and a key of another account that this server never saw.
    assert sts.get_access_key_info(AccessKeyId="AKIARZPUZDIKGB2VALC4")["Account"] == "123456789012"
    assert sts.get_access_key_info(AccessKeyId="ASIAY34FZKBOKMUTVV7A")["Account"] == "609629065308"
    assert sts.get_access_key_info(AccessKeyId=key_id_for("999999999999"))["Account"] == "999999999999"
    # Whatever the key's state: a deleted key still names its account.
    kid, _ = new_user_with_key(server, "gone")
    server.client("iam").delete_access_key(UserName="gone", AccessKeyId=kid)
    assert sts.get_access_key_info(AccessKeyId=kid)["Account"] == ACCOUNT


def test_get_access_key_info_validation(server):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        server.client("sts", parameter_validation=False).get_access_key_info(AccessKeyId="AKIA_SHORT")
    code, status, msg = error_of(e)
    assert (code, status) == ("ValidationError", 400)
    assert "at 'accessKeyId' failed to satisfy constraint: Member must have length greater than or equal to 16" in msg


def test_session_token_for_user_works_and_identifies_user(server):
    kid, secret = new_user_with_key(server, "bob")
    creds = server.client("sts", kid, secret).get_session_token(DurationSeconds=900)["Credentials"]
    assert creds["AccessKeyId"].startswith("ASIA") and len(creds["AccessKeyId"]) == 20
    assert len(creds["SecretAccessKey"]) == 40
    left = creds["Expiration"] - datetime.datetime.now(datetime.timezone.utc)
    assert datetime.timedelta(seconds=850) < left <= datetime.timedelta(seconds=901)
    sts = server.client("sts", creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"])
    ident = sts.get_caller_identity()
    assert ident["Arn"] == f"arn:aws:iam::{ACCOUNT}:user/bob"
    # The temporary key id encodes the account too (asked with the long-term key: session
    # credentials may not call GetAccessKeyInfo).
    long_term = server.client("sts", kid, secret)
    assert long_term.get_access_key_info(AccessKeyId=creds["AccessKeyId"])["Account"] == ACCOUNT
    # And it works from the aws CLI.
    _, out, _ = server.aws("sts", "get-caller-identity", key_id=creds["AccessKeyId"], secret=creds["SecretAccessKey"], token=creds["SessionToken"])
    assert out["Arn"] == f"arn:aws:iam::{ACCOUNT}:user/bob"


def test_root_session_is_capped_at_one_hour(server):
    creds = server.client("sts").get_session_token(DurationSeconds=129600)["Credentials"]
    left = creds["Expiration"] - datetime.datetime.now(datetime.timezone.utc)
    assert left <= datetime.timedelta(seconds=3601)
    assert left > datetime.timedelta(seconds=3500)


def test_session_duration_limits(server):
    sts = server.client("sts", parameter_validation=False)
    for bad, words in [(899, "greater than or equal to 900"), (129601, "less than or equal to 129600")]:
        with pytest.raises(botocore.exceptions.ClientError) as e:
            sts.get_session_token(DurationSeconds=bad)
        code, status, msg = error_of(e)
        assert (code, status) == ("ValidationError", 400)
        assert f"Value '{bad}' at 'durationSeconds' failed to satisfy constraint: Member must have value {words}" in msg


def test_session_token_with_an_mfa_serial_is_refused_as_aws_does(server):
    # keyward has no MFA devices: a serial number is never associated with the caller.
    kid, secret = new_user_with_key(server, "mfa-user")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        server.client("sts", kid, secret).get_session_token(
            SerialNumber=f"arn:aws:iam::{ACCOUNT}:mfa/mfa-user", TokenCode="123456")
    assert error_of(e) == (
        "AccessDenied", 403,
        "MultiFactorAuthentication failed, unable to validate MFA code.  "
        "Please verify your MFA serial number is valid and associated with this user.")


def test_session_credentials_cannot_call_iam_or_get_session_token(server):
    creds = server.client("sts").get_session_token()["Credentials"]
    c = dict(key_id=creds["AccessKeyId"], secret=creds["SecretAccessKey"], token=creds["SessionToken"])
    with pytest.raises(botocore.exceptions.ClientError) as e:
        server.client("iam", **c).list_users()
    assert error_of(e)[:2] == ("InvalidClientTokenId", 403)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        server.client("sts", **c).get_session_token()
    assert error_of(e)[:2] == ("AccessDenied", 403)


def test_tampered_foreign_and_missing_session_tokens(server):
    creds = server.client("sts").get_session_token()["Credentials"]
    kid, sec, tok = creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"]
    flipped = tok[:10] + ("A" if tok[10] != "A" else "B") + tok[11:]
    other = server.client("sts").get_session_token()["Credentials"]
    for token in [flipped, other["SessionToken"], "not-a-token"]:
        with pytest.raises(botocore.exceptions.ClientError) as e:
            server.client("sts", kid, sec, token).get_caller_identity()
        assert error_of(e)[:2] == ("InvalidClientTokenId", 403), token
    with pytest.raises(botocore.exceptions.ClientError) as e:
        server.client("sts", kid, sec).get_caller_identity()
    assert error_of(e)[:2] == ("InvalidClientTokenId", 403)
    # A session token next to a long-term key.
    from conftest import ROOT_SECRET

    with pytest.raises(botocore.exceptions.ClientError) as e:
        server.client("sts", ROOT_KEY_ID, ROOT_SECRET, tok).get_caller_identity()
    assert error_of(e)[:2] == ("InvalidClientTokenId", 403)


def test_expired_session_token(tmp):
    """A token issued now is expired for a server whose clock is two hours ahead (same master key)."""
    from conftest import Server

    a = Server(tmp / "data").start()
    try:
        creds = a.client("sts").get_session_token(DurationSeconds=900)["Credentials"]
    finally:
        a.stop()
    b = Server(tmp / "data", args=["--clock-offset", "7200"]).start()
    try:
        import botocore.auth

        real = botocore.auth.get_current_datetime
        botocore.auth.get_current_datetime = lambda: real() + datetime.timedelta(seconds=7200)
        try:
            with pytest.raises(botocore.exceptions.ClientError) as e:
                b.client("sts", creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"]).get_caller_identity()
        finally:
            botocore.auth.get_current_datetime = real
        code, status, msg = error_of(e)
        assert (code, status) == ("ExpiredToken", 403)
        assert msg == "The security token included in the request is expired"
    finally:
        b.stop()


def test_deleted_user_sessions_are_refused(server):
    kid, secret = new_user_with_key(server, "temp")
    creds = server.client("sts", kid, secret).get_session_token()["Credentials"]
    iam = server.client("iam")
    iam.delete_access_key(UserName="temp", AccessKeyId=kid)
    iam.delete_user(UserName="temp")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        server.client("sts", creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"]).get_caller_identity()
    assert error_of(e)[:2] == ("InvalidClientTokenId", 403)


def test_sessions_belong_to_the_user_id_not_the_name(server):
    """As in IAM, a session is its user's unique id's: it follows a rename, and a new user who
    takes a deleted user's name does not inherit the old user's sessions."""
    iam = server.client("iam")
    kid, secret = new_user_with_key(server, "erin")
    old_id = iam.get_user(UserName="erin")["User"]["UserId"]
    creds = server.client("sts", kid, secret).get_session_token()["Credentials"]
    session = server.client("sts", creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"])
    assert session.get_caller_identity()["UserId"] == old_id
    iam.update_user(UserName="erin", NewUserName="erin-old")
    ident = session.get_caller_identity()
    assert (ident["UserId"], ident["Arn"]) == (old_id, f"arn:aws:iam::{ACCOUNT}:user/erin-old")
    # Another user named erin: the session still is the old one's.
    iam.create_user(UserName="erin")
    assert session.get_caller_identity()["UserId"] == old_id
    # The old user deleted: its session ends, whoever is called erin-old next.
    iam.delete_access_key(UserName="erin-old", AccessKeyId=kid)
    iam.delete_user(UserName="erin-old")
    iam.update_user(UserName="erin", NewUserName="erin-old")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        session.get_caller_identity()
    assert error_of(e)[:2] == ("InvalidClientTokenId", 403)


def test_session_credentials_may_call_only_get_caller_identity_of_the_sts_actions(server):
    """GetSessionToken's documentation: with its credentials no STS API but AssumeRole,
    GetCallerIdentity (and newer token APIs) may be called."""
    creds = server.client("sts").get_session_token()["Credentials"]
    sts = server.client("sts", creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"])
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sts.get_access_key_info(AccessKeyId=creds["AccessKeyId"])
    assert error_of(e) == ("AccessDenied", 403, "Cannot call GetAccessKeyInfo with session credentials")
    assert sts.get_caller_identity()["Account"] == ACCOUNT


def test_minimum_session_token_size(server):
    """GetSessionToken's MinimumSessionTokenSize (0 to 4096) pads the token, which still works;
    the answer says the token's size."""
    sts = server.client("sts")
    plain = sts.get_session_token()
    assert plain["SessionTokenSize"] == len(plain["Credentials"]["SessionToken"]) < 1000
    out = sts.get_session_token(MinimumSessionTokenSize=4000)
    token = out["Credentials"]["SessionToken"]
    assert 4000 <= len(token) < 4008 and out["SessionTokenSize"] == len(token)
    assert out["SessionTokenUtilization"] == -(-len(token) * 100 // 4096)
    creds = out["Credentials"]
    assert server.client("sts", creds["AccessKeyId"], creds["SecretAccessKey"], token).get_caller_identity()["Account"] == ACCOUNT
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sts.get_session_token(MinimumSessionTokenSize=5000)
    assert error_of(e) == ("ValidationError", 400, "1 validation error detected: Value '5000' at 'minimumSessionTokenSize' failed to satisfy constraint: Member must have value less than or equal to 4096")


def test_presigned_get_caller_identity(server):
    """The presigned STS URL that EKS tokens and Vault's IAM auth are built on."""
    from test_auth import raw

    sts = server.client("sts")
    url = sts.generate_presigned_url("get_caller_identity", ExpiresIn=60, HttpMethod="GET")
    status, _, body = raw(server, method="GET", path=url[len(server.url):])
    assert status == 200 and f"<Arn>arn:aws:iam::{ACCOUNT}:root</Arn>" in body, body
    # Signed for POST (the model's method), used with POST.
    url = sts.generate_presigned_url("get_caller_identity", ExpiresIn=60)
    status, _, body = raw(server, method="POST", path=url[len(server.url):])
    assert status == 200, body
    # The same URL with another method does not verify.
    status, _, body = raw(server, method="GET", path=url[len(server.url):])
    assert status == 403 and "<Code>SignatureDoesNotMatch</Code>" in body


def test_presigned_sts_urls_last_fifteen_minutes_whatever_they_ask(server):
    """STS ignores X-Amz-Expires (only S3 honours it): a presigned GetCallerIdentity is served
    while its X-Amz-Date is within the 15 minutes a signed header gets, so a 60-second URL works
    10 minutes later, an hour's URL is refused after 20, and EKS tokens' X-Amz-Expires=0 works."""
    import datetime
    from unittest import mock

    from test_auth import raw

    sts = server.client("sts")

    def presigned(expires, minutes_ago):
        when = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) - datetime.timedelta(minutes=minutes_ago)
        with mock.patch("botocore.auth.get_current_datetime", return_value=when):
            url = sts.generate_presigned_url("get_caller_identity", ExpiresIn=expires, HttpMethod="GET")
        return raw(server, method="GET", path=url[len(server.url):])

    for expires, minutes_ago in [(60, 10), (0, 0), (1, 14)]:
        status, _, body = presigned(expires, minutes_ago)
        assert status == 200 and "<GetCallerIdentityResult>" in body, (expires, minutes_ago, body)
    status, _, body = presigned(3600, 20)
    assert status == 403 and "<Code>SignatureDoesNotMatch</Code>" in body, body
    assert "Signature expired: " in body and "15 min." in body, body
