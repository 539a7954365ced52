"""Signs a corpus of requests with botocore, for keyward-sigv4's cross-implementation test.

stdin: JSON list of cases {id, form: header|presign|presign-v2, service, region, method, url, params,
headers, body, token, unsigned_payload}. stdout: JSON list of {id, method, url, headers, body_hex} as
botocore would send them. Only botocore's public signer classes are used; the clock is botocore's own.
"""
import json
import sys

import botocore
from botocore import auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

AKID = "AKIDEXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
V2_MOVED = ("date", "content-type", "content-md5")


def sign(case):
    creds = Credentials(AKID, SECRET, case.get("token"))
    headers = botocore.awsrequest.HTTPHeaders()
    for k, v in case.get("headers", []):
        headers[k] = v  # email.message semantics: appends, so repeated names stay repeated
    req = AWSRequest(
        method=case["method"],
        url=case["url"],
        data=case.get("body", "").encode("utf-8"),
        headers=headers,
        params=[tuple(p) for p in case["params"]] if case.get("params") else None,
    )
    s3 = case["service"] == "s3"
    form = case["form"]
    if case.get("unsigned_payload"):
        req.context["client_config"] = Config(s3={"payload_signing_enabled": False})
    if form == "header":
        signer = auth.S3SigV4Auth if s3 else auth.SigV4Auth
        signer(creds, case["service"], case["region"]).add_auth(req)
    elif form == "presign":
        signer = auth.S3SigV4QueryAuth if s3 else auth.SigV4QueryAuth
        signer(creds, case["service"], case["region"], expires=3600).add_auth(req)
    elif form == "presign-v2":
        auth.HmacV1QueryAuth(creds, expires=3600).add_auth(req)
    else:
        raise ValueError(form)
    prepared = req.prepare()
    # AWSPreparedRequest keeps one value per header name (a dict), but the signer joined repeated
    # headers: send what was signed, every value, plus what prepare() added (Content-Length).
    items = list(req.headers.items())
    signed_names = {k.lower() for k, _ in items}
    items += [(k, v) for k, v in prepared.headers.items() if k.lower() not in signed_names]
    out_headers = []
    for k, v in items:
        if isinstance(v, bytes):
            v = v.decode("utf-8")
        if form == "presign-v2" and (k.lower() in V2_MOVED or k.lower().startswith("x-amz-")):
            continue  # moved into the query string by botocore; a URL user does not send them
        out_headers.append([k, v])
    body = prepared.body or b""
    if isinstance(body, str):
        body = body.encode("utf-8")
    return {
        "id": case["id"],
        "method": prepared.method,
        "url": prepared.url,
        "headers": out_headers,
        "body_hex": body.hex(),
    }


def main():
    cases = json.load(sys.stdin)
    json.dump({"botocore": botocore.__version__, "signed": [sign(c) for c in cases]}, sys.stdout)


if __name__ == "__main__":
    main()
