"""Start-up, persistence, crash safety, secrets at rest and in logs, several accounts."""
import os
import stat
import subprocess
import threading
import time

import botocore.exceptions
import pytest

from conftest import ACCOUNT, BIN, ROOT_KEY_ID, ROOT_SECRET, Server, error_of


def test_restart_keeps_everything(tmp):
    s = Server(tmp / "data").start()
    iam = s.client("iam")
    iam.create_user(UserName="p")
    k = iam.create_access_key(UserName="p")["AccessKey"]
    s.client("sts", k["AccessKeyId"], k["SecretAccessKey"]).get_caller_identity()
    s.restart()
    assert s.client("iam").get_user(UserName="p")["User"]["UserName"] == "p"
    assert s.client("sts", k["AccessKeyId"], k["SecretAccessKey"]).get_caller_identity()["Arn"].endswith("user/p")
    # Last-used survives a graceful stop (flushed on shutdown).
    assert s.client("iam").get_access_key_last_used(AccessKeyId=k["AccessKeyId"])["AccessKeyLastUsed"]["ServiceName"] == "sts"
    s.stop()


def test_kill9_loses_no_acknowledged_write(tmp):
    # The check below presents hundreds of deactivated keys from one address, which is what
    # failed-authentication throttling exists to refuse: turn it off for this server.
    s = Server(tmp / "data", args=["--auth-failures-per-source", "0", "--auth-failures-per-key", "0"]).start()
    iam = s.client("iam")
    acked, deactivated, uncertain = [], [], set()
    stop = threading.Event()

    def writer():
        i = 0
        while not stop.is_set():
            name = f"w{i}"
            try:
                iam.create_user(UserName=name)
                k = iam.create_access_key(UserName=name)["AccessKey"]
                acked.append((name, k["AccessKeyId"], k["SecretAccessKey"]))
                if i % 3 == 0:
                    # Sent but not acknowledged when the kill lands: either outcome is right.
                    uncertain.add(k["AccessKeyId"])
                    iam.update_access_key(UserName=name, AccessKeyId=k["AccessKeyId"], Status="Inactive")
                    uncertain.discard(k["AccessKeyId"])
                    deactivated.append(k["AccessKeyId"])
            except Exception:
                return
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    time.sleep(3)
    s.kill9()
    stop.set()
    t.join(timeout=30)
    assert len(acked) > 10, len(acked)
    s.start()
    try:
        inactive = set(deactivated)
        for name, kid, secret in acked:
            if kid in uncertain:
                continue
            sts = s.client("sts", kid, secret)
            if kid in inactive:
                with pytest.raises(botocore.exceptions.ClientError) as e:
                    sts.get_caller_identity()
                assert error_of(e)[0] == "InvalidClientTokenId"
            else:
                assert sts.get_caller_identity()["Arn"].endswith(f"user/{name}")
    finally:
        s.stop()


def test_no_secret_in_clear_on_disk_or_in_logs(tmp):
    s = Server(tmp / "data").start()
    iam = s.client("iam")
    secrets = [ROOT_SECRET]
    iam.create_user(UserName="s")
    k = iam.create_access_key(UserName="s")["AccessKey"]
    secrets.append(k["SecretAccessKey"])
    sess = s.client("sts", k["AccessKeyId"], k["SecretAccessKey"]).get_session_token()["Credentials"]
    secrets += [sess["SecretAccessKey"], sess["SessionToken"]]
    s.client("sts", sess["AccessKeyId"], sess["SecretAccessKey"], sess["SessionToken"]).get_caller_identity()
    # Failures too: a wrong secret must not be echoed either.
    with pytest.raises(botocore.exceptions.ClientError):
        s.client("sts", k["AccessKeyId"], "x" * 40).get_caller_identity()
    s.stop()
    logs = s.output()
    assert "keyward" in logs
    for f in (tmp / "data").iterdir():
        if f.name == "root-credentials":
            continue
        data = f.read_bytes()
        for secret in secrets:
            assert secret.encode() not in data, f"secret in clear in {f.name}"
    for secret in secrets:
        assert secret not in logs


def test_files_are_private(tmp):
    s = Server(tmp / "data", env={"KEYWARD_ROOT_ACCESS_KEY_ID": None, "KEYWARD_ROOT_SECRET_ACCESS_KEY": None}).start()
    s.stop()
    out = s.output()
    creds = tmp / "data" / "root-credentials"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp / "data" / "master.key").stat().st_mode) == 0o600
    text = creds.read_text()
    assert "aws_access_key_id = AKIA" in text and "endpoint_url = http://127.0.0.1:" in text
    key_line = [l for l in text.splitlines() if l.startswith("aws_secret_access_key")][0]
    # Shown once at creation, with a ready-to-paste profile.
    assert key_line in out and "[profile keyward]" in out
    # Second start: nothing printed again.
    s2 = Server(tmp / "data", env={"KEYWARD_ROOT_ACCESS_KEY_ID": None, "KEYWARD_ROOT_SECRET_ACCESS_KEY": None}, port=s.port)
    s2.log_path = tmp / "second.log"
    s2.start()
    s2.stop()
    assert key_line not in s2.output()
    # The generated credentials work.
    kid = [l for l in text.splitlines() if l.startswith("aws_access_key_id")][0].split("= ")[1]
    secret = key_line.split("= ")[1]
    s3 = Server(tmp / "data", env={"KEYWARD_ROOT_ACCESS_KEY_ID": None, "KEYWARD_ROOT_SECRET_ACCESS_KEY": None}).start()
    try:
        assert s3.client("sts", kid, secret).get_caller_identity()["Arn"].endswith(":root")
    finally:
        s3.stop()


def test_group_readable_master_key_is_refused(tmp):
    key = tmp / "mk"
    key.write_text("00" * 32)
    os.chmod(key, 0o644)
    p = subprocess.run([BIN, "serve", "--data-dir", str(tmp / "d"), "--listen", "127.0.0.1:0"], env={**os.environ, "KEYWARD_MASTER_KEY_FILE": str(key)}, capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and str(key) in p.stderr, p.stderr


@pytest.mark.parametrize(
    "env,words",
    [
        ({"KEYWARD_ROOT_ACCESS_KEY_ID": "AKIAQAAAAAAAAAAAAAAA"}, "set both or neither"),
        ({"KEYWARD_ROOT_ACCESS_KEY_ID": "akia-bad", "KEYWARD_ROOT_SECRET_ACCESS_KEY": ROOT_SECRET}, "is not a long-term access key id"),
        ({"KEYWARD_ROOT_ACCESS_KEY_ID": ROOT_KEY_ID, "KEYWARD_ROOT_SECRET_ACCESS_KEY": "short"}, "is not a secret access key"),
    ],
)
def test_bad_bootstrap_credentials(tmp, env, words):
    e = {k: v for k, v in os.environ.items() if not k.startswith("KEYWARD_")}
    e.update(env)
    p = subprocess.run([BIN, "serve", "--data-dir", str(tmp / "d"), "--listen", "127.0.0.1:0"], env=e, capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and words in p.stderr, p.stderr


def test_second_account_created_while_running_is_isolated(server):
    db = ["--database-url", server.database_url] if server.database_url else []
    p = subprocess.run([BIN, "account", "create", "acme", "--data-dir", str(server.data_dir), *db], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    vals = dict(l.split(" = ", 1) for l in p.stdout.splitlines() if " = " in l)
    acct, kid, secret = vals["account_id"], vals["aws_access_key_id"], vals["aws_secret_access_key"]
    assert acct != ACCOUNT and len(acct) == 12
    other = server.client("sts", kid, secret)
    assert other.get_caller_identity()["Arn"] == f"arn:aws:iam::{acct}:root"
    assert other.get_access_key_info(AccessKeyId=kid)["Account"] == acct
    oiam = server.client("iam", kid, secret)
    oiam.create_user(UserName="shared-name")
    server.client("iam").create_user(UserName="shared-name")  # same name, other account: fine
    assert [u["UserName"] for u in oiam.list_users()["Users"]] == ["shared-name"]
    # Neither account reaches the other's keys.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        oiam.update_access_key(AccessKeyId=ROOT_KEY_ID, Status="Inactive")
    assert error_of(e)[0] == "NoSuchEntity"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        oiam.delete_access_key(AccessKeyId=ROOT_KEY_ID)
    assert error_of(e)[0] == "NoSuchEntity"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        oiam.get_access_key_last_used(AccessKeyId=ROOT_KEY_ID)
    assert error_of(e)[0] == "AccessDenied"
    assert server.client("sts").get_caller_identity()["Account"] == ACCOUNT
