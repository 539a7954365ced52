"""End-to-end fixtures: the real `keyward` binary, driven by the real aws CLI and boto3.

The binary comes from KEYWARD_BIN (scripts/test builds it); the aws CLI from KEYWARD_TEST_AWS or PATH.
Every server runs on a free loopback port with its own temporary data directory.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import boto3
import botocore.config
import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = os.environ.get("KEYWARD_BIN") or str(ROOT / "target" / "release" / "keyward")
AWS = os.environ.get("KEYWARD_TEST_AWS") or shutil.which("aws") or "aws"

# Fixed bootstrap credentials of the default account (AWS's documentation-style values, valid shapes).
ROOT_KEY_ID = "AKIAQAAAAAAAAAFAAAAA"  # encodes account 000000000010? recomputed below
ROOT_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def key_id_for(account: str, fill: str = "A") -> str:
    """An AKIA key id that encodes `account` (the public encoding keyward uses)."""
    import base64

    acct = int(account)
    head = base64.b32encode((acct // 2 + 2**39).to_bytes(5, "big")).decode()
    ninth = "Q" if acct % 2 else "A"
    return ("AKIA" + head + ninth + fill * 20)[:20]


ACCOUNT = "123456789012"
ROOT_KEY_ID = key_id_for(ACCOUNT)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One `keyward serve` process."""

    def __init__(self, data_dir, env=None, args=(), port=None, database_url=None, tls=None):
        """`tls`: (certificate PEM, key PEM, CA bundle PEM) to serve HTTPS, trusting that CA."""
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.ca_bundle = str(tls[2]) if tls else None
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.env = dict(os.environ)
        self.env.update(
            {
                "KEYWARD_ROOT_ACCESS_KEY_ID": ROOT_KEY_ID,
                "KEYWARD_ROOT_SECRET_ACCESS_KEY": ROOT_SECRET,
                "KEYWARD_ACCOUNT_ID": ACCOUNT,
                "KEYWARD_LOG": "debug",
            }
        )
        for k, v in (env or {}).items():
            if v is None:
                self.env.pop(k, None)
            else:
                self.env[k] = v
        self.args = list(args)
        if tls:
            self.args += ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
        self.database_url = database_url
        if database_url:
            self.args += ["--database-url", database_url]
        self.proc = None
        self.log_path = self.data_dir.parent / f"server-{self.port}.log"

    def start(self):
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [BIN, "serve", "--listen", f"127.0.0.1:{self.port}", "--data-dir", str(self.data_dir), *self.args],
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 20
        context = None
        if self.ca_bundle:
            import ssl

            context = ssl.create_default_context(cafile=self.ca_bundle)
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"keyward exited with {self.proc.returncode}: {self.output()}")
            try:
                with urllib.request.urlopen(self.url + "/_keyward/health", timeout=1, context=context) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("keyward did not become healthy: " + self.output())

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "log", None):
            self.log.close()

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.log.close()

    def restart(self):
        self.stop()
        return self.start()

    def client(self, service, key_id=ROOT_KEY_ID, secret=ROOT_SECRET, token=None, region="us-east-1", **cfg):
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name=region,
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
            aws_session_token=token,
            verify=self.ca_bundle,
            config=botocore.config.Config(retries={"max_attempts": 1, "mode": "standard"}, **cfg),
        )

    def aws(self, *args, key_id=ROOT_KEY_ID, secret=ROOT_SECRET, token=None, region="us-east-1", check=True):
        """Runs the aws CLI against this server; returns (returncode, parsed JSON or text, stderr)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        home = self.data_dir.parent / "home"
        home.mkdir(exist_ok=True)
        env.update(
            {
                "HOME": str(home),
                "AWS_ACCESS_KEY_ID": key_id,
                "AWS_SECRET_ACCESS_KEY": secret,
                "AWS_DEFAULT_REGION": region,
                "AWS_MAX_ATTEMPTS": "1",
                "AWS_CONFIG_FILE": str(home / "nonexistent-config"),
                "AWS_SHARED_CREDENTIALS_FILE": str(home / "nonexistent-credentials"),
            }
        )
        if token:
            env["AWS_SESSION_TOKEN"] = token
        tls = ["--ca-bundle", self.ca_bundle] if self.ca_bundle else []
        p = subprocess.run(
            [AWS, "--endpoint-url", self.url, *tls, "--output", "json", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and p.returncode != 0:
            raise AssertionError(f"aws {' '.join(args)} failed ({p.returncode}): {p.stderr}")
        out = p.stdout
        try:
            out = json.loads(out) if out.strip() else {}
        except ValueError:
            pass
        return p.returncode, out, p.stderr


@pytest.fixture
def tmp(tmp_path):
    return tmp_path


PG_URL = os.environ.get("KEYWARD_TEST_DATABASE_URL")
PSQL = os.environ.get("KEYWARD_TEST_PSQL", "psql")


def fresh_database():
    """A new, empty PostgreSQL database on the throwaway cluster of scripts/with-postgres."""
    import uuid

    name = "kw_" + uuid.uuid4().hex[:12]
    subprocess.run([PSQL, "-X", "-q", PG_URL, "-c", f"CREATE DATABASE {name}"], check=True, capture_output=True)
    return PG_URL.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(params=["sqlite", "postgres"])
def server(request, tmp_path):
    """One server, on each backend: the embedded SQLite file, and PostgreSQL when the harness runs one."""
    url = None
    if request.param == "postgres":
        if not PG_URL:
            if os.environ.get("CI"):
                pytest.fail("KEYWARD_TEST_DATABASE_URL is not set in CI: run the suite through scripts/test")
            pytest.skip("no PostgreSQL (run through scripts/with-postgres)")
        url = fresh_database()
    s = Server(tmp_path / "data", database_url=url).start()
    yield s
    s.stop()


def error_of(exc):
    """(code, HTTP status, message) of a botocore ClientError."""
    e = exc.value.response
    return e["Error"]["Code"], e["ResponseMetadata"]["HTTPStatusCode"], e["Error"].get("Message", "")


def new_user_with_key(server, name="alice", **kw):
    iam = server.client("iam")
    iam.create_user(UserName=name, **kw)
    k = iam.create_access_key(UserName=name)["AccessKey"]
    return k["AccessKeyId"], k["SecretAccessKey"]
