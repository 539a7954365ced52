"""Malformed signatures answered in each service's own codes and words: S3's (as real S3
responses quoted in public reports and ceph's s3-tests show them) and STS's."""
import datetime
import html
import re

import botocore.auth
import botocore.awsrequest
import botocore.credentials

from conftest import ROOT_KEY_ID, ROOT_SECRET
from test_auth import raw

CREDS = botocore.credentials.Credentials(ROOT_KEY_ID, ROOT_SECRET)
FORM = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}


def s3_headers(server, extra=None):
    """The headers of a ListBuckets signed by botocore's S3 signer (header auth)."""
    req = botocore.awsrequest.AWSRequest(method="GET", url=server.url + "/", headers=extra or {})
    botocore.auth.S3SigV4Auth(CREDS, "s3", "us-east-1").add_auth(req)
    return dict(req.prepare().headers)


def element(body, name):
    m = re.search(f"<{name}>(.*?)</{name}>", body, re.S)
    return m and html.unescape(m.group(1))


def test_s3_malformed_authorization_headers(server):
    good = s3_headers(server)
    auth = good["Authorization"]
    assert raw(server, method="GET", headers=good)[0] == 200

    def answer(**changes):
        h = dict(good)
        for k, v in changes.items():
            k = k.replace("_", "-")
            if v is None:
                h.pop(k, None)
            else:
                h[k] = v
        status, _, body = raw(server, method="GET", headers=h)
        return status, element(body, "Code"), element(body, "Message"), body

    no_sig = auth.split(", Signature=")[0]
    assert answer(Authorization=no_sig)[:3] == (400, "AuthorizationHeaderMalformed", "The authorization header is malformed; the authorization header requires three components: Credential, SignedHeaders, and Signature.")
    four = auth.replace("/us-east-1/s3/", "/us-east-1/")
    assert answer(Authorization=four)[:3] == (400, "AuthorizationHeaderMalformed", 'The authorization header is malformed; the Credential is mal-formed; expecting "<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".')
    other_day = re.sub(r"/(\d{8})/", "/20200101/", auth)
    assert answer(Authorization=other_day)[:3] == (400, "AuthorizationHeaderMalformed", "The authorization header is malformed; Invalid credential date. Date is not the same as X-Amz-Date.")
    # An unknown scheme, and SigV2's.
    sha512 = auth.replace("AWS4-HMAC-SHA256", "AWS4-HMAC-SHA512")
    status, code, message, body = answer(Authorization=sha512)
    assert (status, code, message) == (400, "InvalidArgument", "Unsupported Authorization Type")
    assert element(body, "ArgumentName") == "Authorization" and element(body, "ArgumentValue") == sha512
    assert answer(Authorization=f"AWS {ROOT_KEY_ID}:c2lnbmF0dXJl")[:3] == (400, "InvalidRequest", "The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256.")
    # No date, or one S3 cannot read: 403 AccessDenied.
    no_date = "AWS authentication requires a valid Date or x-amz-date header"
    assert answer(X_Amz_Date=None)[:3] == (403, "AccessDenied", no_date)
    assert answer(X_Amz_Date="2026-11-27T02:20:00Z")[:3] == (403, "AccessDenied", no_date)
    # x-amz-content-sha256: missing, or not a hash nor a payload mode.
    assert answer(X_Amz_Content_SHA256=None)[:3] == (400, "InvalidRequest", "Missing required header for this request: x-amz-content-sha256")
    status, code, _, body = answer(X_Amz_Content_SHA256="garbage")
    assert (status, code) == (400, "InvalidArgument")
    assert element(body, "ArgumentName") == "x-amz-content-sha256" and element(body, "ArgumentValue") == "garbage"


def test_s3_header_and_query_auth_together(server):
    url = server.client("s3", signature_version="s3v4").generate_presigned_url("list_buckets", ExpiresIn=60)
    headers = s3_headers(server)
    status, _, body = raw(server, method="GET", path=url[len(server.url):], headers=headers)
    assert (status, element(body, "Code")) == (400, "InvalidArgument"), body
    assert element(body, "ArgumentName") == "Authorization"


def test_s3_refuses_headers_it_requires_signed(server):
    # An x-amz-* header sent but not signed (added after signing).
    headers = s3_headers(server)
    headers["x-amz-meta-foo"] = "bar"
    status, _, body = raw(server, method="GET", headers=headers)
    assert (status, element(body, "Code"), element(body, "Message")) == (403, "AccessDenied", "There were headers present in the request which were not signed"), body
    assert element(body, "HeadersNotSigned") == "x-amz-meta-foo"
    # host left out of SignedHeaders.
    req = botocore.awsrequest.AWSRequest(method="GET", url=server.url + "/")
    signer = botocore.auth.S3SigV4Auth(CREDS, "s3", "us-east-1")
    original = signer.headers_to_sign

    def without_host(request):
        h = original(request)
        del h["host"]
        return h

    signer.headers_to_sign = without_host
    signer.add_auth(req)
    h = dict(req.prepare().headers)
    assert "SignedHeaders=x-amz-content-sha256;x-amz-date," in h["Authorization"], h["Authorization"]
    status, _, body = raw(server, method="GET", headers=h)
    assert (status, element(body, "Code"), element(body, "HeadersNotSigned")) == (403, "AccessDenied", "host"), body
    # A presigned URL that signs no header.
    url = server.client("s3", signature_version="s3v4").generate_presigned_url("list_buckets", ExpiresIn=60)
    empty = re.sub(r"X-Amz-SignedHeaders=[^&]*", "X-Amz-SignedHeaders=", url)
    status, _, body = raw(server, method="GET", path=empty[len(server.url):])
    assert (status, element(body, "Code"), element(body, "HeadersNotSigned")) == (403, "AccessDenied", "host"), body
    # Signed, they pass.
    assert raw(server, method="GET", headers=s3_headers(server, {"x-amz-meta-foo": "bar"}))[0] == 200


def test_s3_sigv2_presigned_expiry_names_no_x_amz_expires(server):
    s3 = server.client("s3", signature_version="s3")
    real = botocore.auth.HmacV1QueryAuth._get_date
    past = int(datetime.datetime.now().timestamp()) - 120
    botocore.auth.HmacV1QueryAuth._get_date = lambda self: str(past)
    try:
        url = s3.generate_presigned_url("list_buckets", ExpiresIn=60)
    finally:
        botocore.auth.HmacV1QueryAuth._get_date = real
    assert "AWSAccessKeyId=" in url, url
    status, _, body = raw(server, method="GET", path=url[len(server.url):])
    assert (status, element(body, "Code"), element(body, "Message")) == (403, "AccessDenied", "Request has expired"), body
    assert "<X-Amz-Expires>" not in body and element(body, "Expires") and element(body, "ServerTime")


def sts_auth_headers(server, body):
    req = botocore.awsrequest.AWSRequest(method="POST", url=server.url + "/", data=body, headers=dict(FORM))
    botocore.auth.SigV4Auth(CREDS, "sts", "us-east-1").add_auth(req)
    return dict(req.prepare().headers)


def test_sts_credential_scope_errors_are_signature_failures(server):
    body = b"Action=GetCallerIdentity&Version=2011-06-15"
    h = sts_auth_headers(server, body)
    for bad, words in [
        (re.sub(r"/(\d{8})/", "/20200101/", h["Authorization"]), "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP"),
        (h["Authorization"].replace("/aws4_request", "/aws5_request"), "Credential should be scoped with a valid terminator: 'aws4_request', not 'aws5_request'."),
    ]:
        status, _, text = raw(server, body=body, headers={**h, "Authorization": bad})
        assert (status, element(text, "Code")) == (403, "SignatureDoesNotMatch"), text
        assert words in element(text, "Message"), text
        assert 'xmlns="https://sts.amazonaws.com/doc/2011-06-15/"' in text


def test_sts_malformed_query_is_answered_as_sts(server):
    for path in ["/?Action=GetCallerIdentity&Version=2011-06-15&Version=2011-06-15", "/?Action=GetCallerIdentity&Version=2011-06-15&x=%zz"]:
        status, _, text = raw(server, method="GET", path=path)
        assert status == 400 and element(text, "Code") == "MalformedQueryString", text
        assert 'xmlns="https://sts.amazonaws.com/doc/2011-06-15/"' in text, text
    status, _, text = raw(server, method="GET", path="/?Action=ListUsers&Version=2010-05-08&x=%zz")
    assert status == 400 and 'xmlns="https://iam.amazonaws.com/doc/2010-05-08/"' in text, text
