"""Deactivation propagation across two keyward nodes on one PostgreSQL (driven by bench/nodes)."""
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import botocore.exceptions

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))
from conftest import Server, fresh_database  # noqa: E402

trials = int(sys.argv[1])
tmp = Path(tempfile.mkdtemp(prefix="keyward-nodes-"))
key = tmp / "master.key"
key.write_text(os.urandom(32).hex())
os.chmod(key, 0o600)
env = {"KEYWARD_MASTER_KEY_FILE": str(key), "KEYWARD_LOG": "warn"}
url = fresh_database()
# Every trial makes node B refuse the key many times (polled every 2 ms until refused, then until it
# works again): with failed-authentication throttling on (60 per key per minute by default) B would
# start answering Throttling after a few trials, so it is off here.
no_throttle = ["--auth-failures-per-key", "0", "--auth-failures-per-source", "0"]
a = Server(tmp / "a", env=env, args=no_throttle, database_url=url).start()
b = Server(tmp / "b", env=env, args=no_throttle, database_url=url).start()
try:
    iam = a.client("iam")
    iam.create_user(UserName="bench")
    k = iam.create_access_key(UserName="bench")["AccessKey"]
    kid, secret = k["AccessKeyId"], k["SecretAccessKey"]
    sts_b = b.client("sts", kid, secret)
    delays = []
    for _ in range(trials):
        iam.update_access_key(UserName="bench", AccessKeyId=kid, Status="Active")
        deadline = time.monotonic() + 5
        while True:  # active again and cached on B
            try:
                sts_b.get_caller_identity()
                break
            except botocore.exceptions.ClientError:
                assert time.monotonic() < deadline, "reactivation not seen on B"
                time.sleep(0.002)
        iam.update_access_key(UserName="bench", AccessKeyId=kid, Status="Inactive")
        t0 = time.monotonic()
        while True:
            try:
                sts_b.get_caller_identity()
            except botocore.exceptions.ClientError as e:
                assert e.response["Error"]["Code"] == "InvalidClientTokenId"
                delays.append(time.monotonic() - t0)
                break
            assert time.monotonic() - t0 < 5, "deactivation not seen on B within 5 s"
            time.sleep(0.002)
    delays.sort()
    q = statistics.quantiles(delays, n=100, method="inclusive")
    print(f"deactivation on A refused on B: {trials} trials")
    print("| p50 | p99 | max | min |")
    print("|---:|---:|---:|---:|")
    print(f"| {q[49]*1000:.1f} ms | {q[98]*1000:.1f} ms | {delays[-1]*1000:.1f} ms | {delays[0]*1000:.1f} ms |")
finally:
    a.stop()
    b.stop()
