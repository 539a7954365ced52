"""Malformed and abusive requests: each gets an AWS-shaped 4xx, the server keeps serving."""
import socket
import time

import botocore.auth
import botocore.awsrequest
import botocore.credentials

from conftest import ACCOUNT, ROOT_KEY_ID, ROOT_SECRET
from test_auth import raw

FORM = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}


def signed(server, body: bytes, service="iam"):
    req = botocore.awsrequest.AWSRequest(method="POST", url=server.url + "/", data=body, headers=dict(FORM))
    botocore.auth.SigV4Auth(botocore.credentials.Credentials(ROOT_KEY_ID, ROOT_SECRET), service, "us-east-1").add_auth(req)
    return raw(server, body=body, headers=dict(req.prepare().headers))


def still_serving(server):
    assert server.client("sts").get_caller_identity()["Account"] == ACCOUNT


def test_oversized_body(server):
    status, _, body = raw(server, body=b"Action=ListUsers&x=" + b"a" * (2 << 20), headers=FORM)
    assert status == 413 and "<Code>RequestEntityTooLarge</Code>" in body
    still_serving(server)


def test_invalid_percent_encoding_and_utf8(server):
    for form in [b"Action=ListUsers&Path=%zz", b"Action=ListUsers&Path=%ff%fe", b"Action=ListUsers&Action=ListUsers"]:
        status, _, body = signed(server, form)
        assert status == 400 and "<Code>MalformedQueryString</Code>" in body, (form, body)
    still_serving(server)


def test_huge_and_negative_list_indices(server):
    for form in [
        b"Action=TagUser&Version=2010-05-08&UserName=x&Tags.member.99999999999999999999.Key=a&Tags.member.99999999999999999999.Value=b",
        b"Action=TagUser&Version=2010-05-08&UserName=x&Tags.member.-1.Key=a",
        b"Action=UntagUser&Version=2010-05-08&UserName=x&TagKeys.member.1000000=a",
    ]:
        status, _, body = signed(server, form)
        assert status == 400 and "<Code>ValidationError</Code>" in body, (form, body)
    still_serving(server)


def test_thousands_of_parameters(server):
    form = b"Action=ListUsers&Version=2010-05-08&" + b"&".join(b"p%d=1" % i for i in range(5000))
    status, _, body = signed(server, form)
    assert status == 400 and "<Code>MalformedQueryString</Code>" in body
    still_serving(server)


def test_oversized_headers_and_garbage(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (200 * 1024) + b"\r\n\r\n")
        reply = s.recv(100)
        assert reply.startswith(b"HTTP/1.1 431") or reply == b"", reply
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"\x00\xff garbage \r\n\r\n")
        reply = s.recv(100)
        assert reply.startswith(b"HTTP/1.1 400") or reply == b"", reply
    still_serving(server)


def test_content_length_with_transfer_encoding(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n\r\n0\r\n\r\n"
        )
        reply = s.recv(4096)
        assert reply.startswith(b"HTTP/1.1 4") or reply == b"", reply
    still_serving(server)


def test_body_that_ends_early(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\nAction=Li")
        s.shutdown(socket.SHUT_WR)
        s.recv(4096)
    still_serving(server)


def test_slow_header_client_is_cut_off(server):
    """A client that dribbles its headers is closed after the header-read timeout (10 s)."""
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
    still_serving(server)
