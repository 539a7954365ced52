"""Several `keyward serve` nodes on one PostgreSQL database, driven by boto3 and the aws CLI.

Needs the throwaway cluster of scripts/with-postgres (KEYWARD_TEST_DATABASE_URL and friends); skipped
locally without it, a failure in CI.
"""
import os
import subprocess
import threading
import time

import botocore.exceptions
import pytest

from conftest import ACCOUNT, Server, error_of

PG_URL = os.environ.get("KEYWARD_TEST_DATABASE_URL")
if not PG_URL:
    if os.environ.get("CI"):
        raise RuntimeError("KEYWARD_TEST_DATABASE_URL is not set in CI: run the suite through scripts/test")
    pytest.skip("no PostgreSQL (run through scripts/with-postgres)", allow_module_level=True)

from conftest import fresh_database


@pytest.fixture
def nodes(tmp):
    """Two nodes sharing one database and one master key file, and nothing else."""
    url = fresh_database()
    key = tmp / "master.key"
    key.write_text(os.urandom(32).hex())
    os.chmod(key, 0o600)
    env = {"KEYWARD_MASTER_KEY_FILE": str(key)}
    a = Server(tmp / "a", env=env, database_url=url).start()
    b = Server(tmp / "b", env=env, database_url=url).start()
    yield a, b, url, env
    a.stop()
    b.stop()


def test_key_created_on_one_node_works_on_the_other(nodes):
    a, b, _, _ = nodes
    a.client("iam").create_user(UserName="x")
    k = a.client("iam").create_access_key(UserName="x")["AccessKey"]
    assert b.client("sts", k["AccessKeyId"], k["SecretAccessKey"]).get_caller_identity()["Arn"].endswith(":user/x")
    _, out, _ = b.aws("iam", "get-user", "--user-name", "x")
    assert out["User"]["UserName"] == "x"


def wait_refused(server, kid, secret, limit=1.0):
    """Seconds until `kid` is refused on `server` (fails past `limit`)."""
    start = time.monotonic()
    sts = server.client("sts", kid, secret)
    while True:
        try:
            sts.get_caller_identity()
        except botocore.exceptions.ClientError as e:
            assert e.response["Error"]["Code"] == "InvalidClientTokenId"
            return time.monotonic() - start
        assert time.monotonic() - start < limit, "still accepted"
        time.sleep(0.005)


def test_deactivate_and_delete_propagate_within_a_second(nodes):
    a, b, _, _ = nodes
    iam = a.client("iam")
    iam.create_user(UserName="p")
    k = iam.create_access_key(UserName="p")["AccessKey"]
    kid, secret = k["AccessKeyId"], k["SecretAccessKey"]
    assert b.client("sts", kid, secret).get_caller_identity()  # now cached on b
    iam.update_access_key(UserName="p", AccessKeyId=kid, Status="Inactive")
    assert wait_refused(b, kid, secret) < 1.0
    iam.update_access_key(UserName="p", AccessKeyId=kid, Status="Active")
    b.client("sts", kid, secret).get_caller_identity()
    iam.delete_access_key(UserName="p", AccessKeyId=kid)
    assert wait_refused(b, kid, secret) < 1.0


def test_session_tokens_work_on_every_node(nodes):
    a, b, _, _ = nodes
    creds = a.client("sts").get_session_token()["Credentials"]
    ident = b.client("sts", creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"]).get_caller_identity()
    assert ident["Arn"] == f"arn:aws:iam::{ACCOUNT}:root"


def test_races_across_nodes_keep_the_limits(nodes):
    a, b, _, _ = nodes
    a.client("iam").create_user(UserName="race")
    results = []

    def create_key(server):
        try:
            server.client("iam").create_access_key(UserName="race")
            results.append("ok")
        except botocore.exceptions.ClientError as e:
            results.append(e.response["Error"]["Code"])

    def create_user(server, name):
        try:
            server.client("iam").create_user(UserName=name)
            results.append("ok")
        except botocore.exceptions.ClientError as e:
            results.append(e.response["Error"]["Code"])

    threads = [threading.Thread(target=create_key, args=(s,)) for s in (a, b) * 5]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("ok") == 2 and results.count("LimitExceeded") == 8, results
    assert len(a.client("iam").list_access_keys(UserName="race")["AccessKeyMetadata"]) == 2
    results.clear()
    threads = [threading.Thread(target=create_user, args=(s, n)) for s, n in zip((a, b) * 4, ["Same", "same", "SAME", "sAme"] * 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("ok") == 1 and results.count("EntityAlreadyExists") == 7, results


def test_restart_of_every_node_loses_nothing(nodes, tmp):
    a, b, url, env = nodes
    a.client("iam").create_user(UserName="keep")
    k = b.client("iam").create_access_key(UserName="keep")["AccessKey"]
    a.stop()
    b.stop()
    c = Server(tmp / "c", env=env, database_url=url).start()
    try:
        assert c.client("sts", k["AccessKeyId"], k["SecretAccessKey"]).get_caller_identity()["Arn"].endswith(":user/keep")
    finally:
        c.stop()


def test_account_create_against_postgres(nodes):
    a, _, url, env = nodes
    from conftest import BIN

    p = subprocess.run([BIN, "account", "create", "pgacct", "--data-dir", str(a.data_dir), "--database-url", url],
                       env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    vals = dict(l.split(" = ", 1) for l in p.stdout.splitlines() if " = " in l)
    assert a.client("sts", vals["aws_access_key_id"], vals["aws_secret_access_key"]).get_caller_identity()["Account"] == vals["account_id"]


def test_zz_database_outage_answers_503_and_recovers(nodes):
    """Stops the shared cluster mid-test, then starts it again (last test of the module)."""
    _, b, url, env = nodes
    # A node whose verification cache trusts entries for 1 s (the default is 10 s).
    a = Server(b.data_dir.parent / "short-ttl", env=env, database_url=url, args=["--key-cache-ttl", "1"]).start()
    request_a = a
    pg_ctl, pgdata = os.environ["KEYWARD_TEST_PG_CTL"], os.environ["KEYWARD_TEST_PGDATA"]
    iam = a.client("iam")
    iam.create_user(UserName="before")
    subprocess.run([pg_ctl, "-D", pgdata, "-m", "fast", "-w", "stop"], check=True, capture_output=True)
    try:
        start = time.monotonic()
        with pytest.raises(botocore.exceptions.ClientError) as e:
            iam.create_user(UserName="during")
        assert time.monotonic() - start < 15
        assert error_of(e)[:2] == ("ServiceUnavailable", 503)
        # The node is still up and answers what needs no database.
        from test_auth import raw

        assert raw(a, method="GET", path="/_keyward/health")[0] == 200
        # Verification fails closed: once the cache lifetime (1 s here) has passed, a lookup needs the
        # database, and the answer is 503, not a stale yes.
        time.sleep(1.2)
        with pytest.raises(botocore.exceptions.ClientError) as e:
            a.client("sts").get_caller_identity()
        assert error_of(e)[:2] == ("ServiceUnavailable", 503)
    finally:
        log = os.environ.get("KEYWARD_TEST_PG_LOG", "/dev/null")
        subprocess.run([pg_ctl, "-D", pgdata, "-l", log, "-w", "start", "-o",
                        f"-p {os.environ['KEYWARD_TEST_PG_PORT']} -k {os.environ['KEYWARD_TEST_PG_SOCKET_DIR']} -c listen_addresses=127.0.0.1"],
                       check=True, capture_output=True)
    deadline = time.monotonic() + 30
    while True:
        try:
            iam.create_user(UserName="after")
            break
        except botocore.exceptions.ClientError as e:
            assert e.response["Error"]["Code"] == "ServiceUnavailable"
            assert time.monotonic() < deadline, "did not recover"
            time.sleep(0.5)
    names = {u["UserName"] for u in b.client("iam").list_users()["Users"]}
    assert {"before", "after"} <= names and "during" not in names
    request_a.stop()
