"""`keyward serve` over TLS, seen by the real aws CLI, boto3, curl and Python's ssl module.

Each test makes its own CA and server certificates with the `openssl` CLI (Debian's openssl
package; scripts/with-postgres installs it when missing).
"""
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import botocore.exceptions
import pytest

from conftest import BIN, PG_URL, PSQL, Server, free_port, fresh_database

OPENSSL = shutil.which("openssl")
pytestmark = pytest.mark.skipif(OPENSSL is None, reason="needs the openssl CLI to make certificates")


def openssl(*args):
    p = subprocess.run([OPENSSL, *map(str, args)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def make_ca(d: Path, name: str):
    """A self-signed CA: (certificate PEM, key PEM)."""
    d.mkdir(parents=True, exist_ok=True)
    cert, key = d / f"{name}.pem", d / f"{name}.key"
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-days", "2", "-subj", f"/CN={name}", "-keyout", key, "-out", cert)
    return cert, key


def issue(d: Path, ca, cn: str, serial: int, san="DNS:localhost,IP:127.0.0.1"):
    """A server certificate for 127.0.0.1/localhost signed by `ca`: (certificate PEM, key PEM)."""
    cert, key, csr, ext = d / f"{cn}.crt", d / f"{cn}.key", d / f"{cn}.csr", d / f"{cn}.ext"
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-subj", f"/CN={cn}", "-keyout", key, "-out", csr)
    ext.write_text(f"subjectAltName={san}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-set_serial", serial,
            "-days", "2", "-extfile", ext, "-out", cert)
    return cert, key


@pytest.fixture
def pki(tmp_path):
    """A CA, a server pair `one` (serial 1001) installed at live paths, and a spare pair `two`."""
    d = tmp_path / "pki"
    ca = make_ca(d, "keyward-test-ca")
    one = issue(d, ca, "one", 1001)
    two = issue(d, ca, "two", 2002)
    live_cert, live_key = d / "live.crt", d / "live.key"
    shutil.copy(one[0], live_cert)
    shutil.copy(one[1], live_key)
    return {"dir": d, "ca": ca, "one": one, "two": two, "cert": live_cert, "key": live_key}


@pytest.fixture
def tls_server(tmp_path, pki):
    s = Server(tmp_path / "data", tls=(pki["cert"], pki["key"], pki["ca"][0])).start()
    yield s
    s.stop()


def peer_cert(port, ca, alpn=None, host="127.0.0.1"):
    """(the server certificate as Python decodes it, the ALPN protocol chosen) of a new handshake."""
    ctx = ssl.create_default_context(cafile=str(ca))
    if alpn:
        ctx.set_alpn_protocols(alpn)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=host) as s:
            return s.getpeercert(), s.selected_alpn_protocol()


def serial_of(port, ca):
    return int(peer_cert(port, ca)[0]["serialNumber"], 16)


def wait_for_log(server, text, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if text in server.output():
            return
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not logged: {server.output()[-3000:]}")


def test_aws_cli_and_boto3_over_tls(tls_server):
    assert tls_server.url.startswith("https://")
    _, ident, _ = tls_server.aws("sts", "get-caller-identity")
    assert ident["Account"] == "123456789012"
    _, created, _ = tls_server.aws("iam", "create-user", "--user-name", "tls-cli")
    assert created["User"]["UserName"] == "tls-cli"

    iam = tls_server.client("iam")
    assert iam.get_user(UserName="tls-cli")["User"]["UserName"] == "tls-cli"
    iam.create_user(UserName="tls-boto3")
    assert tls_server.client("sts").get_caller_identity()["Account"] == "123456789012"
    # AWS's errors come through TLS unchanged.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        iam.get_user(UserName="nobody-here")
    assert e.value.response["Error"]["Code"] == "NoSuchEntity"


def test_a_wrong_ca_is_an_ssl_error(tls_server, pki):
    other_ca = make_ca(pki["dir"], "someone-else")
    code, _, err = tls_server.aws("sts", "get-caller-identity", check=False)
    assert code == 0, err
    tls_server.ca_bundle = str(other_ca[0])
    code, _, err = tls_server.aws("sts", "get-caller-identity", check=False)
    assert code != 0
    assert "SSL" in err and "certificate verify failed" in err, err
    with pytest.raises(botocore.exceptions.SSLError):
        tls_server.client("sts").get_caller_identity()
    # Plain HTTP to the TLS port gets nowhere, and the server shrugs it off.
    with socket.create_connection(("127.0.0.1", tls_server.port), timeout=5) as s:
        s.sendall(b"GET /_keyward/health HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(5)
        try:
            answer = s.recv(100)
        except OSError:
            answer = b""
        assert not answer.startswith(b"HTTP/1.1 200")
    tls_server.ca_bundle = str(pki["ca"][0])
    assert tls_server.client("sts").get_caller_identity()["Account"] == "123456789012"
    assert "TLS handshake failed" in tls_server.output()


def test_http2_and_http11_by_alpn(tls_server, pki):
    ca = pki["ca"][0]
    assert peer_cert(tls_server.port, ca, ["h2", "http/1.1"])[1] == "h2"
    assert peer_cert(tls_server.port, ca, ["http/1.1"])[1] == "http/1.1"
    # The certificate names both 127.0.0.1 and localhost.
    assert peer_cert(tls_server.port, ca, host="localhost")[0]["subject"] == ((("commonName", "one"),),)
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("no curl for a real HTTP/2 request")
    out = subprocess.run(
        [curl, "-sS", "--http2", "--cacert", str(ca), "-o", "/dev/null", "-w", "%{http_version} %{http_code}",
         tls_server.url + "/_keyward/health"],
        capture_output=True, text=True, timeout=30,
    )
    assert out.stdout == "2 200", out
    # A signed request over HTTP/2: curl's own SigV4 (--aws-sigv4), answered as AWS would.
    out = subprocess.run(
        [curl, "-sS", "--http2", "--cacert", str(ca), "--aws-sigv4", "aws:amz:us-east-1:sts",
         "--user", f"{tls_server.env['KEYWARD_ROOT_ACCESS_KEY_ID']}:{tls_server.env['KEYWARD_ROOT_SECRET_ACCESS_KEY']}",
         "-d", "Action=GetCallerIdentity&Version=2011-06-15", "-w", "\n%{http_version} %{http_code}",
         tls_server.url + "/"],
        capture_output=True, text=True, timeout=30,
    )
    assert out.stdout.endswith("\n2 200"), out
    assert "<Account>123456789012</Account>" in out.stdout, out


def test_sighup_reloads_the_pair_while_clients_keep_calling(tls_server, pki):
    port, ca = tls_server.port, pki["ca"][0]
    assert serial_of(port, ca) == 1001
    failures, calls, stop = [], [0], threading.Event()

    def hammer():
        sts = tls_server.client("sts")  # keeps its connections open across the reload
        while not stop.is_set():
            try:
                assert sts.get_caller_identity()["Account"] == "123456789012"
                peer_cert(port, ca)  # and a new handshake each round
                calls[0] += 1
            except Exception as e:  # noqa: BLE001 - every failure counts
                failures.append(repr(e))

    threads = [threading.Thread(target=hammer) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        # New pair in place (copy, then rename, as a certificate manager would), then SIGHUP.
        for src, dst in ((pki["two"][0], pki["cert"]), (pki["two"][1], pki["key"])):
            shutil.copy(src, str(dst) + ".new")
            Path(str(dst) + ".new").rename(dst)
        tls_server.proc.send_signal(signal.SIGHUP)
        wait_for_log(tls_server, "TLS certificate and key reloaded")
        deadline = time.time() + 5
        while serial_of(port, ca) != 2002 and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert failures == []
    assert calls[0] > 10
    cert, _ = peer_cert(port, ca)
    assert int(cert["serialNumber"], 16) == 2002
    assert cert["subject"] == ((("commonName", "two"),),)
    assert tls_server.proc.poll() is None


def test_a_bad_pair_on_sighup_keeps_the_old_one(tls_server, pki):
    port, ca = tls_server.port, pki["ca"][0]
    other_ca = make_ca(pki["dir"], "other")
    stranger = issue(pki["dir"], other_ca, "stranger", 3003)
    good_key = pki["key"].read_bytes()
    cases = [
        ("garbage key", lambda: pki["key"].write_text("not a key\n"), "holds no usable PEM private key"),
        ("mismatched key", lambda: pki["key"].write_bytes(stranger[1].read_bytes()), "does not belong to certificate"),
        ("missing key", lambda: pki["key"].unlink(), "cannot read private key"),
        ("garbage certificate", lambda: pki["cert"].write_text("garbage\n"), "holds no PEM certificate"),
    ]
    for n, (what, damage, message) in enumerate(cases, 1):
        cert_before = pki["cert"].read_bytes()
        damage()
        tls_server.proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 10
        while tls_server.output().count("TLS reload failed") < n and time.time() < deadline:
            time.sleep(0.05)
        log = tls_server.output()
        assert log.count("TLS reload failed") == n, (what, log[-2000:])
        assert message in log, (what, log[-2000:])
        assert tls_server.proc.poll() is None, what
        assert serial_of(port, ca) == 1001, what
        assert tls_server.client("sts").get_caller_identity()["Account"] == "123456789012", what
        # Repair for the next case.
        pki["key"].write_bytes(good_key)
        pki["cert"].write_bytes(cert_before)
    assert "TLS certificate and key reloaded" not in tls_server.output()


def test_sighup_without_tls_is_harmless(server):
    server.proc.send_signal(signal.SIGHUP)
    wait_for_log(server, "no TLS certificate configured, nothing to reload")
    assert server.proc.poll() is None
    assert server.client("sts").get_caller_identity()["Account"] == "123456789012"


def test_tls_connections_count_against_the_limit_and_a_silent_handshake_is_closed(tmp_path, pki):
    s = Server(tmp_path / "data", tls=(pki["cert"], pki["key"], pki["ca"][0]), args=["--max-connections", "2"]).start()
    try:
        idle = [socket.create_connection(("127.0.0.1", s.port), timeout=15) for _ in range(2)]
        time.sleep(0.3)
        with pytest.raises((ssl.SSLError, OSError)):
            peer_cert(s.port, pki["ca"][0])
        # A socket that never starts its handshake is closed after the header-read timeout (10 s).
        t0 = time.time()
        assert idle[0].recv(10) == b""
        assert time.time() - t0 < 14
        idle[1].close()
        deadline = time.time() + 5
        while time.time() < deadline:
            try:
                peer_cert(s.port, pki["ca"][0])
                break
            except (ssl.SSLError, OSError):
                time.sleep(0.05)
        assert s.client("sts").get_caller_identity()["Account"] == "123456789012"
        assert "TLS handshake not finished in time" in s.output()
    finally:
        s.stop()
    assert s.proc.returncode == 0
    assert "keyward: stopped" in s.output()


def run_serve(tmp_path, listen, *args, wait=3.0):
    """Starts `keyward serve` on `listen`; returns (process, log path) after `wait` seconds or its exit."""
    log = tmp_path / f"serve-{abs(hash(listen))}.log"
    with open(log, "wb") as out:
        env = Server(tmp_path / "data").env  # the fixed root credentials, KEYWARD_LOG=debug
        p = subprocess.Popen([BIN, "serve", "--listen", listen, "--data-dir", str(tmp_path / "data"), *args],
                             stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        p.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        pass
    return p, log


@pytest.mark.parametrize("host", ["0.0.0.0", "[::]"])
def test_plain_http_on_a_non_loopback_address_is_refused(tmp_path, host):
    p, log = run_serve(tmp_path, f"{host}:{free_port()}", wait=20)
    assert p.returncode == 2, log.read_text()
    text = log.read_text()
    assert "refusing to serve plain HTTP on" in text and "not a loopback address" in text, text
    assert "--tls-cert" in text and "--allow-plain-http" in text


def test_allow_plain_http_starts_and_warns(tmp_path):
    port = free_port()
    p, log = run_serve(tmp_path, f"0.0.0.0:{port}", "--allow-plain-http")
    try:
        assert p.poll() is None, log.read_text()
        s = Server(tmp_path / "data", port=port)
        assert s.client("sts").get_caller_identity()["Account"]
        assert "warning: serving plain HTTP on 0.0.0.0" in log.read_text()
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=15)


def test_tls_on_a_non_loopback_address_needs_no_flag(tmp_path, pki):
    port = free_port()
    p, log = run_serve(tmp_path, f"0.0.0.0:{port}", "--tls-cert", str(pki["cert"]), "--tls-key", str(pki["key"]))
    try:
        assert p.poll() is None, log.read_text()
        assert serial_of(port, pki["ca"][0]) == 1001
        assert "keyward: warning" not in log.read_text()
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=15)


def test_start_up_errors_for_tls_flags(tmp_path, pki):
    p, log = run_serve(tmp_path, f"127.0.0.1:{free_port()}", "--tls-cert", str(pki["cert"]), wait=20)
    assert p.returncode == 2 and "--tls-key" in log.read_text()
    p, log = run_serve(tmp_path, f"127.0.0.1:{free_port()}", "--tls-cert", str(pki["cert"]),
                       "--tls-key", str(pki["two"][1]), wait=20)
    assert p.returncode == 2
    assert "cannot load the TLS certificate and key" in log.read_text()
    assert "does not belong to certificate" in log.read_text()


@pytest.mark.skipif(not PG_URL, reason="no PostgreSQL (run through scripts/with-postgres)")
def test_keyward_to_postgresql_verify_full(tmp_path):
    """keyward serve with sslmode=verify-full, and the server's own view (pg_stat_ssl) of it."""
    import os
    import uuid

    ca = os.environ.get("KEYWARD_TEST_PG_CA")
    if not ca:
        pytest.skip("scripts/with-postgres without KEYWARD_TEST_PG_CA")
    url = fresh_database()
    app = "kwe2e" + uuid.uuid4().hex[:8]
    # The throwaway cluster's certificate names localhost only; hostaddr keeps it on IPv4.
    url = url.replace("@127.0.0.1:", "@localhost:") + f"?hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert={ca}&application_name={app}"
    s = Server(tmp_path / "data", database_url=url).start()
    try:
        assert s.client("iam").create_user(UserName="over-tls")["User"]["UserName"] == "over-tls"
        out = subprocess.run(
            [PSQL, "-X", "-A", "-t", PG_URL, "-c",
             "SELECT bool_and(s.ssl), count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) "
             f"WHERE a.application_name = '{app}'"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
        encrypted, count = out.split("|")
        assert encrypted == "t" and int(count) >= 1, out
    finally:
        s.stop()
    # The wrong host name for that certificate is refused at start-up, clearly.
    bad = url.replace("@localhost:", "@127.0.0.1:").replace("hostaddr=127.0.0.1&", "")
    p, log = run_serve(tmp_path, f"127.0.0.1:{free_port()}", "--database-url", bad, wait=30)
    assert p.returncode == 2
    assert 'not valid for name "127.0.0.1"' in log.read_text(), log.read_text()
