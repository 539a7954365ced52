"""Malformed and abusive requests: each gets an AWS-shaped 4xx (or, for what is not HTTP at all, a bare
400 or a closed connection), the store is unchanged afterwards, and the server keeps serving."""
import contextlib
import re
import socket
import time

import botocore.auth
import botocore.awsrequest
import botocore.credentials

from conftest import ACCOUNT, ROOT_KEY_ID, ROOT_SECRET, Server
from test_auth import raw

FORM = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}


def signed(server, body: bytes, service="iam"):
    req = botocore.awsrequest.AWSRequest(method="POST", url=server.url + "/", data=body, headers=dict(FORM))
    botocore.auth.SigV4Auth(botocore.credentials.Credentials(ROOT_KEY_ID, ROOT_SECRET), service, "us-east-1").add_auth(req)
    return raw(server, body=body, headers=dict(req.prepare().headers))


def still_serving(server):
    assert server.client("sts").get_caller_identity()["Account"] == ACCOUNT


def snapshot(server):
    """What a hostile request must not change: users, their tags and keys, the root's keys, aliases."""
    iam = server.client("iam")
    users = iam.list_users()["Users"]
    return (
        [(u["UserName"], u["UserId"], iam.list_user_tags(UserName=u["UserName"])["Tags"]) for u in users],
        [(k["AccessKeyId"], k["Status"]) for u in users for k in iam.list_access_keys(UserName=u["UserName"])["AccessKeyMetadata"]],
        [(k["AccessKeyId"], k["Status"]) for k in iam.list_access_keys()["AccessKeyMetadata"]],
        iam.list_account_aliases()["AccountAliases"],
    )


@contextlib.contextmanager
def store_unchanged(server):
    """Asserts that the block leaves the store as it found it (a user with a tag and a key exists)."""
    iam = server.client("iam")
    if not iam.list_users()["Users"]:
        iam.create_user(UserName="x", Tags=[{"Key": "k", "Value": "v"}])
        iam.create_access_key(UserName="x")
    before = snapshot(server)
    yield
    still_serving(server)
    assert snapshot(server) == before


def aws_shaped(status, body, code=None):
    """A 4xx with a query-protocol or S3 error body (and the given code)."""
    assert 400 <= status < 500, (status, body)
    m = re.search(r"<Error>(?:<Type>Sender</Type>)?<Code>([A-Za-z]+)</Code><Message>[^<]*</Message>", body)
    assert m, body
    assert code is None or m.group(1) == code, (code, body)


def send_raw(server, data: bytes, timeout=10) -> bytes:
    """Sends bytes on a new connection; returns everything the server answers until it closes."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        with contextlib.suppress(ConnectionResetError, socket.timeout):
            while chunk := s.recv(65536):
                out += chunk
        return out


def status_and_body(reply: bytes):
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body.decode(errors="replace")


def test_oversized_body(server):
    with store_unchanged(server):
        status, _, body = raw(server, body=b"Action=CreateUser&UserName=big&x=" + b"a" * (8 << 20), headers=FORM)
        assert status == 413 and "<Code>RequestEntityTooLarge</Code>" in body
        status, _, body = signed(server, b"Action=CreateUser&Version=2010-05-08&UserName=big&x=" + b"a" * (8 << 20))
        assert status == 413 and "<Code>RequestEntityTooLarge</Code>" in body


def test_invalid_percent_encoding_and_utf8(server):
    with store_unchanged(server):
        for form in [
            b"Action=ListUsers&Path=%zz",
            b"Action=ListUsers&Path=%ff%fe",
            b"Action=ListUsers&Action=ListUsers",
            b"Action=CreateUser&Version=2010-05-08&UserName=%ff%fe",
            b"Action=CreateUser&Version=2010-05-08&UserName=\xff\xfeab",
            b"Action=CreateUser&Version=2010-05-08&UserName=a%2",
            b"Action=CreateUser&Action=DeleteUser&Version=2010-05-08&UserName=x",
            b"Action=Create%ffUser&Version=2010-05-08&UserName=y",
        ]:
            status, _, body = signed(server, form)
            aws_shaped(status, body, "MalformedQueryString")


def test_invalid_encoding_in_the_url(server):
    """Percent-encoding and UTF-8 errors in the path and query string of the request line."""
    with store_unchanged(server):
        for target in [b"/?Action=CreateUser&UserName=%zz", b"/?Action=CreateUser&UserName=%c3%28", b"/?Action=ListUsers&%=1"]:
            status, body = status_and_body(send_raw(server, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
            aws_shaped(status, body, "MalformedQueryString")
        for path in [b"/%zz", b"/%ff%fe", b"/a/%2e%2e/%00"]:
            status, body = status_and_body(send_raw(server, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
            aws_shaped(status, body, "AccessDenied")
        # Bytes that are not allowed in a request line at all: a bare 400 from the HTTP layer.
        for target in [b"/\xff\xfe", b"/?Action=ListUsers&Path=\xff"]:
            reply = send_raw(server, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert reply == b"" or reply.startswith(b"HTTP/1.1 400"), reply
        # A signed request on an odd path: signed and verified as sent, answered as IAM answers it.
        for path in ["/%zz", "/%ff%fe"]:
            req = botocore.awsrequest.AWSRequest(method="POST", url=server.url + path, data=b"Action=CreateUser&Version=2010-05-08&UserName=%ff", headers=dict(FORM))
            botocore.auth.SigV4Auth(botocore.credentials.Credentials(ROOT_KEY_ID, ROOT_SECRET), "iam", "us-east-1").add_auth(req)
            prepared = req.prepare()
            head = b"".join(f"{k}: {v}\r\n".encode() for k, v in prepared.headers.items())
            reply = send_raw(server, f"POST {path} HTTP/1.1\r\n".encode() + head + b"Connection: close\r\n\r\n" + prepared.body)
            aws_shaped(*status_and_body(reply), "MalformedQueryString")


def test_huge_and_negative_list_indices(server):
    with store_unchanged(server):
        huge_and_negative_list_indices(server)


def huge_and_negative_list_indices(server):
    for form in [
        b"Action=TagUser&Version=2010-05-08&UserName=x&Tags.member.99999999999999999999.Key=a&Tags.member.99999999999999999999.Value=b",
        b"Action=TagUser&Version=2010-05-08&UserName=x&Tags.member.-1.Key=a",
        b"Action=UntagUser&Version=2010-05-08&UserName=x&TagKeys.member.1000000=a",
        b"Action=UntagUser&Version=2010-05-08&UserName=x&TagKeys.member.0=k",
        b"Action=UntagUser&Version=2010-05-08&UserName=x&TagKeys.member.+1=k",
        b"Action=TagUser&Version=2010-05-08&UserName=x&Tags.member.18446744073709551617.Key=a&Tags.member.18446744073709551617.Value=b",
    ]:
        status, _, body = signed(server, form)
        assert status == 400 and "<Code>ValidationError</Code>" in body, (form, body)
    still_serving(server)


def test_thousands_of_parameters(server):
    with store_unchanged(server):
        for action in [b"ListUsers", b"DeleteUser&UserName=x"]:
            form = b"Action=" + action + b"&Version=2010-05-08&" + b"&".join(b"p%d=1" % i for i in range(5000))
            status, _, body = signed(server, form)
            aws_shaped(status, body, "MalformedQueryString")
        form = b"Action=UntagUser&Version=2010-05-08&UserName=x&" + b"&".join(b"TagKeys.member.%d=k" % i for i in range(1, 3000))
        status, _, body = signed(server, form)
        aws_shaped(status, body)


def test_oversized_headers_and_garbage(server):
    with store_unchanged(server):
        for big in [b"X-Big: " + b"a" * (200 * 1024) + b"\r\n", b"".join(b"X-H%d: v\r\n" % i for i in range(20000))]:
            reply = send_raw(server, b"POST /?Action=CreateUser&UserName=h HTTP/1.1\r\nHost: x\r\n" + big + b"\r\n")
            assert reply.startswith(b"HTTP/1.1 431") or reply == b"", reply[:200]
        reply = send_raw(server, b"\x00\xff garbage \r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 400") or reply == b"", reply


def test_content_length_with_transfer_encoding(server):
    """Both framings at once (request smuggling): refused by the HTTP layer, or the chunked framing wins
    (RFC 9112 6.3) and the request is answered as a whole; never a second request from the leftovers."""
    with store_unchanged(server):
        reply = send_raw(
            server,
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\nConnection: close\r\n\r\n"
            b"0\r\n\r\nGET /?Action=CreateUser&UserName=smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        assert reply == b"" or reply.startswith(b"HTTP/1.1 4"), reply
        assert reply.count(b"HTTP/1.1 ") <= 1, reply
        if reply.startswith(b"HTTP/1.1 403"):
            aws_shaped(*status_and_body(reply), "MissingAuthenticationToken")


def test_body_that_ends_early(server):
    with store_unchanged(server):
        body = b"Action=CreateUser&Version=2010-05-08&UserName=early"
        req = botocore.awsrequest.AWSRequest(method="POST", url=server.url + "/", data=body, headers=dict(FORM))
        botocore.auth.SigV4Auth(botocore.credentials.Credentials(ROOT_KEY_ID, ROOT_SECRET), "iam", "us-east-1").add_auth(req)
        prepared = req.prepare()
        head = b"".join(f"{k}: {v}\r\n".encode() for k, v in prepared.headers.items() if k.lower() != "content-length")
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            s.sendall(b"POST / HTTP/1.1\r\n" + head + b"Content-Length: 100\r\n\r\n" + body)
            s.shutdown(socket.SHUT_WR)
            reply = b""
            with contextlib.suppress(ConnectionResetError, socket.timeout):
                while chunk := s.recv(4096):
                    reply += chunk
        # Either the connection is closed, or the answer is S3's/IAM's IncompleteBody-style 400.
        assert reply == b"" or reply.startswith(b"HTTP/1.1 400"), reply
        if reply:
            aws_shaped(*status_and_body(reply), "IncompleteBody")


def test_body_that_stalls_is_timed_out(tmp_path):
    """A client that sends its headers and part of the body, then nothing, is answered RequestTimeout
    after --body-read-timeout and its connection closed."""
    server = Server(tmp_path / "data", args=["--body-read-timeout", "2"]).start()
    try:
        with store_unchanged(server):
            start = time.time()
            with socket.create_connection(("127.0.0.1", server.port), timeout=15) as s:
                s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
                          b"Content-Type: application/x-www-form-urlencoded\r\n\r\nAction=CreateUser&UserName=stall")
                reply = b""
                with contextlib.suppress(ConnectionResetError):
                    while chunk := s.recv(4096):
                        reply += chunk
            assert 1.5 < time.time() - start < 10
            aws_shaped(*status_and_body(reply), "RequestTimeout")
            assert b"connection: close" in reply.lower()
    finally:
        server.stop()


def test_slow_header_client_is_cut_off(server):
    """A client that dribbles its headers is closed after the header-read timeout (10 s)."""
    with store_unchanged(server):
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
            s.sendall(b"GET / HTTP/1.1\r\n")
            start = time.time()
            closed = False
            while time.time() - start < 25:
                try:
                    s.sendall(b"X")
                except OSError:
                    closed = True
                    break
                s.settimeout(1)
                try:
                    data = s.recv(4096)
                    if data == b"" or data.startswith(b"HTTP/1.1 408"):
                        closed = True
                        break
                except socket.timeout:
                    pass
            assert closed and time.time() - start < 20


def test_more_connections_than_the_limit(tmp_path):
    """Past --max-connections a new connection is closed at once; the open ones are still served, and
    once they close the server accepts again."""
    server = Server(tmp_path / "data", args=["--max-connections", "4"]).start()
    try:
        time.sleep(0.3)  # the health check's connection is gone
        idle = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(4)]
        time.sleep(0.3)
        reply = send_raw(server, b"GET /_keyward/health HTTP/1.1\r\nHost: x\r\n\r\n", timeout=5)
        assert reply == b"", reply
        # The connections already open are served.
        idle[0].sendall(b"GET /_keyward/health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert idle[0].recv(4096).startswith(b"HTTP/1.1 200")
        for s in idle:
            s.close()
        deadline = time.time() + 5
        while True:
            try:
                still_serving(server)
                break
            except Exception:
                if time.time() > deadline:
                    raise
                time.sleep(0.1)
    finally:
        server.stop()
