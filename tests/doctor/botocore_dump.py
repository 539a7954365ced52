"""What botocore itself makes of config files and credential setups, as JSON (for keyward-doctor's tests).

  python botocore_dump.py parse FILE...   -> [{"file", "raw": {"ok", "sections"|"error"}, "profiles": [...]|null}]
  python botocore_dump.py resolve < scenarios.json
      scenarios: [{"env": {NAME: VALUE}, "profile": NAME|null}]
      -> [{"ok": true, "method", "access_key", "secret_key", "token", "region"} | {"ok": false, "error": CLASS}]

Runs offline: scenarios must not configure roles, SSO or processes, and AWS_EC2_METADATA_DISABLED is forced.
"""
import json
import os
import sys

import botocore.configloader
import botocore.exceptions
import botocore.session


def parse(paths):
    out = []
    for path in paths:
        entry = {"file": os.path.basename(path)}
        try:
            entry["raw"] = {"ok": True, "sections": botocore.configloader.raw_config_parse(path)}
        except Exception as e:  # noqa: BLE001 - the class name is the result
            entry["raw"] = {"ok": False, "error": type(e).__name__}
        try:
            cfg = botocore.configloader.load_config(path)
            entry["profiles"] = list(cfg["profiles"].keys())
        except Exception:  # noqa: BLE001
            entry["profiles"] = None
        out.append(entry)
    return out


def resolve(scenarios):
    out = []
    saved = dict(os.environ)
    for sc in scenarios:
        os.environ.clear()
        os.environ.update(sc["env"])
        os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
        try:
            session = botocore.session.Session(profile=sc.get("profile"))
            # The CLI reads the region (the scoped config) before credentials: ProfileNotFound surfaces here.
            region = session.get_config_variable("region")
            creds = session.get_credentials()
            if creds is None:
                out.append({"ok": False, "error": "NoCredentialsError"})
            else:
                out.append({
                    "ok": True,
                    "method": creds.method,
                    "access_key": creds.access_key,
                    "secret_key": creds.secret_key,
                    "token": creds.token,
                    "region": region,
                })
        except Exception as e:  # noqa: BLE001
            out.append({"ok": False, "error": type(e).__name__})
    os.environ.clear()
    os.environ.update(saved)
    return out


def main():
    mode = sys.argv[1]
    if mode == "parse":
        result = parse(sys.argv[2:])
    elif mode == "resolve":
        result = resolve(json.load(sys.stdin))
    else:
        raise SystemExit(f"unknown mode {mode}")
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
