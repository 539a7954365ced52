"""IAM through boto3 and the aws CLI: users, tags, access keys, aliases, validation, authorization."""
import botocore.exceptions
import pytest

from conftest import ACCOUNT, ROOT_KEY_ID, error_of, new_user_with_key


def expect(call, code, status, contains=None):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        call()
    got = error_of(e)
    assert got[:2] == (code, status), got
    if contains is not None:
        assert contains in got[2], got
    return got[2]


def test_user_lifecycle(server):
    iam = server.client("iam")
    u = iam.create_user(UserName="alice", Path="/eng/", Tags=[{"Key": "team", "Value": "core"}])["User"]
    assert u["UserName"] == "alice" and u["Path"] == "/eng/"
    assert u["Arn"] == f"arn:aws:iam::{ACCOUNT}:user/eng/alice"
    assert u["UserId"].startswith("AIDA") and len(u["UserId"]) == 21
    assert u["Tags"] == [{"Key": "team", "Value": "core"}]
    got = iam.get_user(UserName="alice")["User"]
    assert got["UserId"] == u["UserId"] and got["CreateDate"] == u["CreateDate"]
    # Names are unique regardless of case, and lookups ignore case as IAM does.
    expect(lambda: iam.create_user(UserName="ALICE"), "EntityAlreadyExists", 409, "User with name ALICE already exists.")
    expect(lambda: iam.get_user(UserName="nobody"), "NoSuchEntity", 404, "The user with name nobody cannot be found.")
    iam.update_user(UserName="alice", NewUserName="alice2", NewPath="/ops/")
    u2 = iam.get_user(UserName="alice2")["User"]
    assert u2["Arn"] == f"arn:aws:iam::{ACCOUNT}:user/ops/alice2" and u2["UserId"] == u["UserId"]
    expect(lambda: iam.get_user(UserName="alice"), "NoSuchEntity", 404)
    iam.delete_user(UserName="alice2")
    expect(lambda: iam.delete_user(UserName="alice2"), "NoSuchEntity", 404)


def test_get_user_without_name_is_the_caller(server):
    root = server.client("iam").get_user()["User"]
    assert root["Arn"] == f"arn:aws:iam::{ACCOUNT}:root" and root["UserId"] == ACCOUNT
    kid, secret = new_user_with_key(server, "erin")
    me = server.client("iam", kid, secret).get_user()["User"]
    assert me["UserName"] == "erin"


def test_list_users_paginates_and_filters(server):
    iam = server.client("iam")
    for i in range(7):
        iam.create_user(UserName=f"u{i}", Path="/a/" if i % 2 else "/b/")
    first = iam.list_users(MaxItems=3)
    assert [u["UserName"] for u in first["Users"]] == ["u0", "u1", "u2"]
    assert first["IsTruncated"] is True and first["Marker"]
    rest = iam.list_users(Marker=first["Marker"], MaxItems=100)
    assert [u["UserName"] for u in rest["Users"]] == ["u3", "u4", "u5", "u6"] and rest["IsTruncated"] is False
    assert [u["UserName"] for u in iam.list_users(PathPrefix="/a/")["Users"]] == ["u1", "u3", "u5"]
    pages = iam.get_paginator("list_users").paginate(PaginationConfig={"PageSize": 2})
    assert sum(len(p["Users"]) for p in pages) == 7
    _, out, _ = server.aws("iam", "list-users", "--path-prefix", "/b/")
    assert [u["UserName"] for u in out["Users"]] == ["u0", "u2", "u4", "u6"]


def test_key_and_tag_listings_paginate(server):
    # ListAccessKeys and ListUserTags honour MaxItems and Marker as ListUsers does: a client that
    # asks for one item per page gets one, with IsTruncated and a Marker for the rest.
    iam = server.client("iam")
    iam.create_user(UserName="pager", Tags=[{"Key": k, "Value": "v"} for k in ("b", "A", "c", "D", "e")])
    made = [iam.create_access_key(UserName="pager")["AccessKey"]["AccessKeyId"] for _ in range(2)]
    first = iam.list_access_keys(UserName="pager", MaxItems=1)
    assert [k["AccessKeyId"] for k in first["AccessKeyMetadata"]] == made[:1]
    assert first["IsTruncated"] is True and first["Marker"]
    rest = iam.list_access_keys(UserName="pager", MaxItems=1, Marker=first["Marker"])
    assert [k["AccessKeyId"] for k in rest["AccessKeyMetadata"]] == made[1:]
    assert rest["IsTruncated"] is False and "Marker" not in rest
    # A Marker still leads on once its key is gone.
    iam.delete_access_key(UserName="pager", AccessKeyId=made[0])
    again = iam.list_access_keys(UserName="pager", Marker=first["Marker"])
    assert [k["AccessKeyId"] for k in again["AccessKeyMetadata"]] == made[1:]
    pages = iam.get_paginator("list_user_tags").paginate(UserName="pager", PaginationConfig={"PageSize": 2})
    assert [[t["Key"] for t in p["Tags"]] for p in pages] == [["A", "b"], ["c", "D"], ["e"]]
    _, out, _ = server.aws("iam", "list-access-keys", "--user-name", "pager", "--max-items", "1")
    assert [k["AccessKeyId"] for k in out["AccessKeyMetadata"]] == made[1:] and "NextToken" not in out
    # A Marker that is not one of the server's is the client's error, not a server failure.
    for call in (lambda: iam.list_users(Marker="zz"),
                 lambda: iam.list_access_keys(UserName="pager", Marker="not-hex"),
                 lambda: iam.list_user_tags(UserName="pager", Marker="zz")):
        expect(call, "ValidationError", 400, "Invalid Marker.")


def test_tags(server):
    iam = server.client("iam")
    iam.create_user(UserName="t")
    iam.tag_user(UserName="t", Tags=[{"Key": "a", "Value": "1"}, {"Key": "b", "Value": ""}])
    iam.tag_user(UserName="t", Tags=[{"Key": "a", "Value": "2"}])
    assert sorted((x["Key"], x["Value"]) for x in iam.list_user_tags(UserName="t")["Tags"]) == [("a", "2"), ("b", "")]
    iam.untag_user(UserName="t", TagKeys=["a"])
    assert iam.list_user_tags(UserName="t")["Tags"] == [{"Key": "b", "Value": ""}]
    expect(lambda: iam.tag_user(UserName="t", Tags=[{"Key": "bad*key", "Value": "x"}]), "ValidationError", 400, "at 'tags.1.member.key' failed to satisfy constraint")
    expect(lambda: iam.list_user_tags(UserName="zz"), "NoSuchEntity", 404)
    # IAM reserves the aws: prefix for tag keys and values, in any case.
    for tag in [{"Key": "aws:x", "Value": "v"}, {"Key": "AWS:x", "Value": "v"}, {"Key": "k", "Value": "aws:v"}]:
        expect(lambda: iam.tag_user(UserName="t", Tags=[tag]), "InvalidInput", 400, "aws:")
    expect(lambda: iam.create_user(UserName="t2", Tags=[{"Key": "Aws:team", "Value": "x"}]), "InvalidInput", 400)
    expect(lambda: iam.get_user(UserName="t2"), "NoSuchEntity", 404)
    assert iam.list_user_tags(UserName="t")["Tags"] == [{"Key": "b", "Value": ""}]
    iam.tag_user(UserName="t", Tags=[{"Key": "awsx", "Value": "aws"}])
    # A key twice, in any case: IAM's InvalidInput.
    dup = [{"Key": "team", "Value": "a"}, {"Key": "TEAM", "Value": "b"}]
    for call in (lambda: iam.tag_user(UserName="t", Tags=dup), lambda: iam.create_user(UserName="t3", Tags=dup)):
        expect(call, "InvalidInput", 400, "Duplicate tag keys found. Please note that Tag keys are case insensitive.")
    # UntagUser reports a bad key at the list, with every constraint of its members.
    raw = server.client("iam", parameter_validation=False)
    msg = expect(lambda: raw.untag_user(UserName="t", TagKeys=["bad!key"]), "ValidationError", 400)
    assert msg == (r"1 validation error detected: Value at 'tagKeys' failed to satisfy constraint: Member must satisfy constraint: "
                   r"[Member must have length less than or equal to 128, Member must have length greater than or equal to 1, "
                   r"Member must satisfy regular expression pattern: [\p{L}\p{Z}\p{N}_.:/=+\-@]+, Member must not be null]"), msg


def test_access_keys_limit_and_lifecycle(server):
    iam = server.client("iam")
    iam.create_user(UserName="k")
    a = iam.create_access_key(UserName="k")["AccessKey"]
    assert a["Status"] == "Active" and a["AccessKeyId"].startswith("AKIA") and len(a["SecretAccessKey"]) == 40
    b = iam.create_access_key(UserName="k")["AccessKey"]
    iam.update_access_key(UserName="k", AccessKeyId=a["AccessKeyId"], Status="Inactive")
    # Inactive keys count towards the limit.
    expect(lambda: iam.create_access_key(UserName="k"), "LimitExceeded", 409, "Cannot exceed quota for AccessKeysPerUser: 2")
    listed = {k["AccessKeyId"]: k["Status"] for k in iam.list_access_keys(UserName="k")["AccessKeyMetadata"]}
    assert listed == {a["AccessKeyId"]: "Inactive", b["AccessKeyId"]: "Active"}
    # The secret is shown once: never in a listing.
    assert "SecretAccessKey" not in str(iam.list_access_keys(UserName="k"))
    expect(lambda: iam.delete_user(UserName="k"), "DeleteConflict", 409)
    for k in (a, b):
        iam.delete_access_key(UserName="k", AccessKeyId=k["AccessKeyId"])
    expect(lambda: iam.delete_access_key(UserName="k", AccessKeyId=a["AccessKeyId"]), "NoSuchEntity", 404, a["AccessKeyId"])
    iam.delete_user(UserName="k")
    expect(lambda: iam.create_access_key(UserName="k"), "NoSuchEntity", 404)


def test_access_key_of_another_user_is_not_found(server):
    iam = server.client("iam")
    ka, _ = new_user_with_key(server, "ua")
    iam.create_user(UserName="ub")
    expect(lambda: iam.update_access_key(UserName="ub", AccessKeyId=ka, Status="Inactive"), "NoSuchEntity", 404)
    expect(lambda: iam.update_access_key(UserName="ua", AccessKeyId=ka, Status="Expired"), "InvalidInput", 400)


def test_a_permissions_boundary_names_a_policy_that_does_not_exist(server):
    """keyward has no managed policies: a boundary is IAM's answer for a policy that does not
    exist, and the user is not created (it used to be created without its boundary)."""
    iam = server.client("iam")
    arn = "arn:aws:iam::aws:policy/PowerUserAccess"
    expect(lambda: iam.create_user(UserName="pb", PermissionsBoundary=arn), "NoSuchEntity", 404, f"Scope ARN: {arn} does not exist or is not attachable.")
    expect(lambda: iam.get_user(UserName="pb"), "NoSuchEntity", 404)


def test_last_used_of_an_unknown_key_is_denied_in_iams_words(server):
    msg = expect(lambda: server.client("iam").get_access_key_last_used(AccessKeyId="AKIAIOSFODNN7EXAMPLE"), "AccessDenied", 403)
    assert msg == f"User: arn:aws:iam::{ACCOUNT}:root is not authorized to perform iam:GetAccessKeyLastUsed on resource: access key AKIAIOSFODNN7EXAMPLE"


def test_last_used(server):
    kid, secret = new_user_with_key(server, "lu")
    iam = server.client("iam")
    never = iam.get_access_key_last_used(AccessKeyId=kid)
    assert never["UserName"] == "lu"
    assert never["AccessKeyLastUsed"]["ServiceName"] == "N/A" and "LastUsedDate" not in never["AccessKeyLastUsed"]
    server.client("sts", kid, secret, region="eu-west-1").get_caller_identity()
    used = iam.get_access_key_last_used(AccessKeyId=kid)["AccessKeyLastUsed"]
    assert used["ServiceName"] == "sts" and used["Region"] == "eu-west-1" and used["LastUsedDate"]


def test_validation_errors(server):
    iam = server.client("iam", parameter_validation=False)
    msg = expect(lambda: iam.create_user(UserName="bad name!"), "ValidationError", 400)
    # IAM's messages name the member, not its value (recorded from AWS in LocalStack's validated
    # IAM snapshots; STS's still quote it).
    assert msg == r"1 validation error detected: Value at 'userName' failed to satisfy constraint: Member must satisfy regular expression pattern: [\w+=,.@-]+"
    expect(lambda: iam.get_user(UserName="x" * 200), "ValidationError", 400, "Member must have length less than or equal to 128")
    expect(lambda: iam.create_user(UserName="x" * 65), "ValidationError", 400, "Member must have length less than or equal to 64")
    expect(lambda: iam.create_user(UserName="ok", Path="noslash"), "ValidationError", 400, "at 'path'")
    expect(lambda: iam.list_users(MaxItems=0), "ValidationError", 400, "Member must have value greater than or equal to 1")
    expect(lambda: iam.update_access_key(AccessKeyId="AKIAQAAAAAAAAAAAAAAA", Status="On"), "ValidationError", 400, "Value at 'status' failed to satisfy constraint: Member must satisfy enum value set")
    msg = expect(lambda: iam.create_user(), "ValidationError", 400)
    assert "Value at 'userName' failed to satisfy constraint: Member must not be null" in msg
    # A control character quoted back stays well-formed XML (boto3 raises the error instead of
    # failing to parse the reply), shown as text: STS quotes values.
    sts = server.client("sts", parameter_validation=False)
    msg = expect(lambda: sts.get_session_token(SerialNumber="arn:aws:iam::1:mfa/a\x01b"), "ValidationError", 400)
    assert "Value 'arn:aws:iam::1:mfa/a\\u0001b' at 'serialNumber'" in msg, msg
    # A well-formed name longer than any user's (65 to 128 characters) names nobody.
    for call in (lambda n: iam.get_user(UserName=n), lambda n: iam.delete_user(UserName=n),
                 lambda n: iam.create_access_key(UserName=n), lambda n: iam.list_user_tags(UserName=n),
                 lambda n: iam.tag_user(UserName=n, Tags=[{"Key": "k", "Value": "v"}])):
        expect(lambda: call("a" * 100), "NoSuchEntity", 404, f"The user with name {'a' * 100} cannot be found.")
    # IAM's pathPrefixType allows DEL, which no path can hold: nothing matches.
    assert iam.list_users(PathPrefix="/\x7f")["Users"] == []


def test_user_self_service_and_access_denied(server):
    kid, secret = new_user_with_key(server, "self")
    me = server.client("iam", kid, secret)
    assert [k["AccessKeyId"] for k in me.list_access_keys()["AccessKeyMetadata"]] == [kid]
    k2 = me.create_access_key()["AccessKey"]
    assert k2["UserName"] == "self"
    me.update_access_key(AccessKeyId=k2["AccessKeyId"], Status="Inactive")
    me.delete_access_key(AccessKeyId=k2["AccessKeyId"])
    server.client("iam").create_user(UserName="other")
    arn = f"arn:aws:iam::{ACCOUNT}:user/self"
    msg = expect(me.list_users, "AccessDenied", 403)
    assert msg.startswith(f"User: {arn} is not authorized to perform: iam:ListUsers on resource: ")
    assert msg.endswith("because no identity-based policy allows the iam:ListUsers action")
    expect(lambda: me.create_user(UserName="x"), "AccessDenied", 403, "iam:CreateUser")
    # CreateUser names the user by ARN (with its path), the older actions as `user NAME` (as in
    # AccessDenied messages of AWS quoted in public reports).
    expect(lambda: me.create_user(UserName="x", Path="/team/"), "AccessDenied", 403, f"on resource: arn:aws:iam::{ACCOUNT}:user/team/x because")
    expect(lambda: me.get_user(UserName="other"), "AccessDenied", 403, f"User: {arn} is not authorized to perform: iam:GetUser on resource: user other because no identity-based policy allows the iam:GetUser action")
    expect(lambda: me.create_access_key(UserName="other"), "AccessDenied", 403, "iam:CreateAccessKey on resource: user other because")
    expect(lambda: me.list_access_keys(UserName="other"), "AccessDenied", 403, "iam:ListAccessKeys on resource: user other because")
    expect(lambda: me.tag_user(UserName="other", Tags=[]), "AccessDenied", 403, f"iam:TagUser on resource: arn:aws:iam::{ACCOUNT}:user/other because")
    expect(lambda: me.list_account_aliases(), "AccessDenied", 403)


def test_account_aliases(server):
    iam = server.client("iam")
    assert iam.list_account_aliases()["AccountAliases"] == []
    iam.create_account_alias(AccountAlias="my-org")
    assert iam.list_account_aliases()["AccountAliases"] == ["my-org"]
    expect(lambda: iam.create_account_alias(AccountAlias="Bad--Alias"), "ValidationError", 400, "accountAlias")
    iam.delete_account_alias(AccountAlias="my-org")
    expect(lambda: iam.delete_account_alias(AccountAlias="my-org"), "NoSuchEntity", 404)


def test_root_keys(server):
    iam = server.client("iam")
    keys = iam.list_access_keys()["AccessKeyMetadata"]
    assert [k["AccessKeyId"] for k in keys] == [ROOT_KEY_ID]
    new = iam.create_access_key()["AccessKey"]
    assert server.client("sts", new["AccessKeyId"], new["SecretAccessKey"]).get_caller_identity()["Arn"].endswith(":root")
    expect(iam.create_access_key, "LimitExceeded", 409)
    iam.delete_access_key(AccessKeyId=new["AccessKeyId"])


def test_cli_copy_paste_session(server):
    """The README's session: create user, create key, call as the user, deactivate, see InvalidClientTokenId."""
    server.aws("iam", "create-user", "--user-name", "readme")
    _, out, _ = server.aws("iam", "create-access-key", "--user-name", "readme")
    k = out["AccessKey"]
    _, who, _ = server.aws("sts", "get-caller-identity", key_id=k["AccessKeyId"], secret=k["SecretAccessKey"])
    assert who["Arn"] == f"arn:aws:iam::{ACCOUNT}:user/readme"
    _, lst, _ = server.aws("iam", "list-access-keys", "--user-name", "readme")
    assert lst["AccessKeyMetadata"][0]["Status"] == "Active"
    server.aws("iam", "update-access-key", "--user-name", "readme", "--access-key-id", k["AccessKeyId"], "--status", "Inactive")
    rc, _, err = server.aws("sts", "get-caller-identity", key_id=k["AccessKeyId"], secret=k["SecretAccessKey"], check=False)
    assert rc != 0 and "(InvalidClientTokenId)" in err and "The security token included in the request is invalid" in err


def test_concurrent_requests_to_one_node_keep_the_limits(server):
    """Racing CreateAccessKey never leaves more than two keys; racing CreateUser makes one user."""
    import threading

    iam_clients = [server.client("iam") for _ in range(10)]
    server.client("iam").create_user(UserName="racer")
    results = []

    def call(fn):
        try:
            fn()
            results.append("ok")
        except botocore.exceptions.ClientError as e:
            results.append(e.response["Error"]["Code"])

    threads = [threading.Thread(target=call, args=(lambda c=c: c.create_access_key(UserName="racer"),)) for c in iam_clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("ok") == 2 and results.count("LimitExceeded") == 8, results
    assert len(server.client("iam").list_access_keys(UserName="racer")["AccessKeyMetadata"]) == 2
    results.clear()
    names = ["Twin", "twin", "TWIN", "tWin", "twiN"] * 2
    threads = [threading.Thread(target=call, args=(lambda c=c, n=n: c.create_user(UserName=n),)) for c, n in zip(iam_clients, names)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("ok") == 1 and results.count("EntityAlreadyExists") == 9, results
