//! Requests signed by botocore (the Python SDK's signer, pinned in scripts/requirements-test.txt) verify,
//! and every single mutation of them fails.
//!
//! Needs `KEYWARD_TEST_PYTHON` (set by scripts/test to the venv python). Without it the test fails
//! when `CI` is set and skips loudly otherwise.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use keyward_sigv4::SigningKeyCache;
use serde_json::{json, Value};

fn python() -> Option<String> {
    match std::env::var("KEYWARD_TEST_PYTHON") {
        Ok(p) if !p.is_empty() => Some(p),
        _ if std::env::var_os("CI").is_some() => {
            panic!("KEYWARD_TEST_PYTHON is not set but CI is: the botocore cross test must run in CI (use scripts/test)")
        }
        _ => {
            eprintln!("\n!!!!!! SKIPPING the botocore cross-implementation test: KEYWARD_TEST_PYTHON is not set.");
            eprintln!("!!!!!! Run scripts/test, or: python3 -m venv .venv && .venv/bin/pip install -r scripts/requirements-test.txt");
            eprintln!("!!!!!! then KEYWARD_TEST_PYTHON=$PWD/.venv/bin/python cargo test -p keyward-sigv4\n");
            None
        }
    }
}

fn specs() -> Vec<Value> {
    let mut out = Vec::new();
    for s in common::corpus() {
        let mut forms = vec!["header"];
        if s.body.is_empty() || s.service != "s3" {
            forms.push("presign");
        }
        if s.service == "s3" && s.method == "GET" {
            forms.push("presign-v2");
        }
        for form in forms {
            let presign = form != "header";
            let url = if s.raw_query.is_empty() {
                s.url.to_owned()
            } else {
                format!("{}?{}", s.url, s.raw_query)
            };
            out.push(json!({
                "id": format!("{}/{form}", s.id),
                "form": form,
                "service": s.service,
                "region": if s.id.contains("us-west-2") { "us-west-2" } else { "us-east-1" },
                "method": s.method,
                "url": url,
                "params": s.params,
                "headers": s.headers,
                "body": if presign { "" } else { s.body },
                "token": if s.token { Some(common::TOKEN) } else { None },
                "unsigned_payload": s.unsigned_payload,
            }));
        }
    }
    out
}

#[test]
fn botocore_signed_requests_verify_and_mutations_fail() {
    let Some(python) = python() else { return };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/botocore_sign.py");
    let specs = specs();
    let mut child = Command::new(&python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(&specs).unwrap().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "botocore signer failed");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let signed = v["signed"].as_array().unwrap();
    assert_eq!(signed.len(), specs.len());
    let cache = SigningKeyCache::new(64);
    let mut mutations = 0;
    let mut forms = std::collections::BTreeMap::new();
    for s in signed {
        let id = s["id"].as_str().unwrap();
        let headers: Vec<(String, String)> = s["headers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| {
                (
                    h[0].as_str().unwrap().to_owned(),
                    h[1].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let body = hex::decode(s["body_hex"].as_str().unwrap()).unwrap();
        let w = common::wire(
            s["method"].as_str().unwrap(),
            s["url"].as_str().unwrap(),
            &headers,
            body,
        );
        mutations += common::check(id, &w, &cache);
        *forms
            .entry(id.rsplit('/').next().unwrap().to_owned())
            .or_insert(0) += 1;
    }
    eprintln!(
        "botocore {}: {} signed requests verified ({forms:?}), {mutations} mutations all refused",
        v["botocore"],
        signed.len()
    );
    assert!(forms.get("presign-v2").copied().unwrap_or(0) >= 2);
    assert!(mutations > 100);
}
