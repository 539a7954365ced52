//! `keyward-loadgen`: drives a running `keyward serve` over HTTP/1.1 keep-alive, signing every request
//! itself with keyward-sigv4 (so it can spread load over many keys and send unique writes, which a
//! replaying tool such as wrk cannot).
//!
//! ```text
//! keyward-loadgen --endpoint http://127.0.0.1:8080 gci --root -c 8 -d 10 --warmup 2
//! keyward-loadgen --endpoint http://127.0.0.1:8080 seed --users 10000 --out keys.txt
//! keyward-loadgen --endpoint http://127.0.0.1:8080 gci --keys keys.txt -c 8 -d 10
//! keyward-loadgen --endpoint http://127.0.0.1:8080 create-delete -c 16 -d 10 --json
//! ```
//!
//! Bounded by construction: the endpoint must resolve to loopback addresses only, every request has a
//! timeout, and a run stops after its warm-up and duration. Exit status: 0 when every reply was the
//! expected one, 1 when any request failed (the failures are counted and samples printed), 2 when the
//! run could not be set up.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use clap::{Args, Parser, Subcommand, ValueEnum};
use http::{HeaderMap, HeaderValue, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use keyward_sigv4::sign::{sign_headers, SigningParams};
use keyward_sigv4::SecretKey;
use tokio::net::TcpStream;

const CONTENT_TYPE: &str = "application/x-www-form-urlencoded; charset=utf-8";
const GCI_BODY: &str = "Action=GetCallerIdentity&Version=2011-06-15";
const IAM_VERSION: &str = "2010-05-08";
/// Error replies kept verbatim (shortened) for the report.
const MAX_SAMPLES: usize = 5;

mod seed_store;

#[derive(Parser)]
#[command(name = "keyward-loadgen", version, about, long_about = None)]
struct Cli {
    /// The keyward endpoint; must resolve to loopback addresses only.
    #[arg(long, global = true, default_value = "http://127.0.0.1:8080")]
    endpoint: String,
    /// Access key id of the account's root (used by `--root`, `seed` and `create-delete`).
    #[arg(long, global = true, env = "KEYWARD_ROOT_ACCESS_KEY_ID")]
    access_key_id: Option<String>,
    /// Its secret access key.
    #[arg(
        long,
        global = true,
        env = "KEYWARD_ROOT_SECRET_ACCESS_KEY",
        hide_env_values = true
    )]
    secret_access_key: Option<String>,
    /// Region of the credential scope.
    #[arg(long, global = true, default_value = "us-east-1")]
    region: String,
    /// Seconds one request may take before it counts as an error.
    #[arg(long, global = true, default_value_t = 5.0)]
    timeout: f64,
    /// Print the result as one JSON object.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// STS GetCallerIdentity, spread over many credentials; every reply must be 200 with a
    /// GetCallerIdentityResult.
    Gci(GciArgs),
    /// Each connection loops CreateAccessKey then DeleteAccessKey for its own IAM user (durable
    /// writes); the users are created (or emptied of keys) first.
    CreateDelete(CreateDeleteArgs),
    /// Creates N users with one access key each and writes `KEYID SECRET` lines to a file (mode 0600).
    Seed(SeedArgs),
    /// Fills a store directly through keyward_store (no server): N users with one key each, for
    /// the 1,000,000-user benchmark; writes a spread sample of the keys to a file (mode 0600).
    SeedStore(seed_store::SeedStoreArgs),
}

#[derive(Args, Clone, Copy)]
struct RunArgs {
    /// Concurrent keep-alive connections.
    #[arg(short = 'c', long, default_value_t = 8)]
    connections: usize,
    /// Measured seconds.
    #[arg(short = 'd', long, default_value_t = 10.0)]
    duration: f64,
    /// Warm-up seconds before the measurement (requests sent, not counted).
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
}

#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
enum Order {
    /// Each request takes a key at random.
    Random,
    /// Keys in turn, globally round-robin over the connections.
    RoundRobin,
}

#[derive(Args)]
#[group(id = "creds", required = true, multiple = false, args = ["keys", "root"])]
struct GciArgs {
    #[command(flatten)]
    run: RunArgs,
    /// File of `KEYID SECRET` lines (as `seed` writes).
    #[arg(long)]
    keys: Option<PathBuf>,
    /// Use the root credentials only (one hot key).
    #[arg(long)]
    root: bool,
    /// How requests pick a key from the file.
    #[arg(long, value_enum, default_value_t = Order::Random)]
    order: Order,
    /// Sign one request per key before the run and send those again and again (as wrk replays
    /// one signed request), instead of signing each request: the load generator then needs less
    /// CPU (signing live it shared the bottleneck with keyward, more so with many keys), and
    /// keyward's cost is what is measured. keyward checks every signature either way. The run must end within the 15 minutes a signature is valid.
    #[arg(long)]
    presigned: bool,
}

#[derive(Args)]
struct CreateDeleteArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Connection i works on user PREFIX<i>.
    #[arg(long, default_value = "loadgen-cd-")]
    user_prefix: String,
}

#[derive(Args)]
struct SeedArgs {
    /// Users to create (each with one access key).
    #[arg(long)]
    users: usize,
    /// Where to write `KEYID SECRET` lines (created with mode 0600, replaced if it exists).
    #[arg(long)]
    out: PathBuf,
    /// Concurrent connections.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// User i is named PREFIX<i>.
    #[arg(long, default_value = "loadgen-seed-")]
    user_prefix: String,
}

/// A credential to sign with.
struct Cred {
    key_id: String,
    secret: SecretKey,
}

/// Where and how to talk to keyward.
struct Target {
    addr: SocketAddr,
    host: HeaderValue,
    region: String,
    timeout: Duration,
}

/// One keep-alive HTTP/1.1 connection, reopened after a failure.
struct Client {
    target: Arc<Target>,
    sender: Option<http1::SendRequest<Full<Bytes>>>,
}

impl Client {
    fn new(target: Arc<Target>) -> Client {
        Client {
            target,
            sender: None,
        }
    }

    async fn connect(&mut self) -> Result<(), String> {
        let stream = TcpStream::connect(self.target.addr)
            .await
            .map_err(|e| format!("connect {}: {e}", self.target.addr))?;
        stream
            .set_nodelay(true)
            .map_err(|e| format!("TCP_NODELAY: {e}"))?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP/1.1 handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        self.sender = Some(sender);
        Ok(())
    }

    /// The headers of `body` POSTed to `/` for `service`, signed with `cred` at the current time.
    fn signed_headers(&self, service: &str, body: &str, cred: &Cred) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::HOST, self.target.host.clone());
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static(CONTENT_TYPE),
        );
        let params = SigningParams {
            access_key_id: &cred.key_id,
            secret: &cred.secret,
            session_token: None,
            region: &self.target.region,
            service,
            time: SystemTime::now(),
        };
        sign_headers("POST", "/", "", &mut headers, body.as_bytes(), &params);
        headers
    }

    /// Signs `body` for `service` with `cred` (at the current time) and POSTs it to `/`.
    /// Returns the status and the reply body, and how long the exchange took (signing excluded).
    async fn call(
        &mut self,
        service: &str,
        body: String,
        cred: &Cred,
    ) -> (Result<(u16, Bytes), String>, Duration) {
        let headers = self.signed_headers(service, &body, cred);
        self.send(Bytes::from(body), headers).await
    }

    /// POSTs `body` to `/` with `headers` (signed already).
    async fn send(
        &mut self,
        body: Bytes,
        headers: HeaderMap,
    ) -> (Result<(u16, Bytes), String>, Duration) {
        let mut req = Request::post("/")
            .body(Full::new(body))
            .expect("a POST / request is well-formed");
        *req.headers_mut() = headers;
        let started = Instant::now();
        let timeout = self.target.timeout;
        let result = match tokio::time::timeout(timeout, self.exchange(req)).await {
            Ok(r) => r,
            Err(_) => Err(format!("no reply within {timeout:?}")),
        };
        if result.is_err() {
            // The connection's state is unknown: start a new one for the next request.
            self.sender = None;
        }
        (result, started.elapsed())
    }

    async fn exchange(&mut self, req: Request<Full<Bytes>>) -> Result<(u16, Bytes), String> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            self.connect().await?;
        }
        let sender = self.sender.as_mut().expect("connected above");
        sender
            .ready()
            .await
            .map_err(|e| format!("connection not ready: {e}"))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("reading the reply: {e}"))?
            .to_bytes();
        Ok((status, body))
    }
}

/// The text of the first `<tag>…</tag>` in `xml`.
fn elem<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&close)? + start;
    Some(&xml[start..end])
}

/// Every `<tag>…</tag>` text in `xml`.
fn elems<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let start = i + open.len();
        let Some(len) = rest[start..].find(&close) else {
            break;
        };
        out.push(&rest[start..start + len]);
        rest = &rest[start + len + close.len()..];
    }
    out
}

/// A short description of an unexpected reply.
fn describe(what: &str, status: u16, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let code = elem(&text, "Code").unwrap_or("");
    let msg = elem(&text, "Message").unwrap_or("");
    if code.is_empty() {
        let short: String = text.chars().take(200).collect();
        format!("{what}: HTTP {status}: {short}")
    } else {
        format!("{what}: HTTP {status} {code}: {msg}")
    }
}

/// Percent-encodes a form value (user names are plain, but be exact).
fn form(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn iam_body(action: &str, params: &[(&str, &str)]) -> String {
    let mut s = format!("Action={action}");
    for (k, v) in params {
        let _ = write!(s, "&{k}={}", form(v));
    }
    let _ = write!(s, "&Version={IAM_VERSION}");
    s
}

/// xorshift64*: enough to spread requests over keys without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// What one connection saw.
#[derive(Default)]
struct Tally {
    /// Latencies (µs) of the requests that started and ended inside the measured window.
    latencies_us: Vec<u32>,
    /// Successful creations inside the window (create-delete).
    creates: u64,
    errors: u64,
    warmup_errors: u64,
    samples: Vec<String>,
    /// Requests sent in all (warm-up and requests ending after the window included).
    sent: u64,
}

impl Tally {
    fn error(&mut self, in_window: bool, what: String) {
        if in_window {
            self.errors += 1;
        } else {
            self.warmup_errors += 1;
        }
        if self.samples.len() < MAX_SAMPLES {
            self.samples.push(what);
        }
    }

    fn merge(&mut self, other: Tally) {
        self.latencies_us.extend(other.latencies_us);
        self.creates += other.creates;
        self.errors += other.errors;
        self.warmup_errors += other.warmup_errors;
        self.sent += other.sent;
        for s in other.samples {
            if self.samples.len() < MAX_SAMPLES {
                self.samples.push(s);
            }
        }
    }
}

/// The measured window of a run.
#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    end: Instant,
}

impl Window {
    fn new(run: &RunArgs) -> Window {
        let start = Instant::now() + Duration::from_secs_f64(run.warmup);
        Window {
            start,
            end: start + Duration::from_secs_f64(run.duration),
        }
    }

    fn running(&self) -> bool {
        Instant::now() < self.end
    }

    /// Whether a request that started `elapsed` ago (and just ended) is measured, and whether it
    /// started inside the window (its errors count).
    fn classify(&self, elapsed: Duration) -> (bool, bool) {
        let now = Instant::now();
        let started = now - elapsed;
        let in_window = started >= self.start;
        (in_window && now <= self.end, in_window)
    }
}

fn record(t: &mut Tally, w: &Window, elapsed: Duration, ok: Result<(), String>) -> bool {
    t.sent += 1;
    let (measured, in_window) = w.classify(elapsed);
    match ok {
        Ok(()) => {
            if measured {
                t.latencies_us
                    .push(u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX));
            }
            measured
        }
        Err(e) => {
            t.error(in_window, e);
            false
        }
    }
}

/// What a GetCallerIdentity connection sends: signed per request, or signed once per key.
enum GciLoad {
    Live(Arc<Vec<Cred>>),
    Presigned(Arc<Vec<HeaderMap>>),
}

impl GciLoad {
    fn len(&self) -> usize {
        match self {
            GciLoad::Live(c) => c.len(),
            GciLoad::Presigned(h) => h.len(),
        }
    }
}

async fn gci_conn(
    target: Arc<Target>,
    load: Arc<GciLoad>,
    idx: usize,
    conns: usize,
    order: Order,
    w: Window,
) -> Tally {
    let mut client = Client::new(target);
    let mut t = Tally::default();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((idx as u64 + 1) * 0xD1B5_4A32_D192_ED03));
    let mut next = idx;
    let n = load.len();
    while w.running() {
        let i = match order {
            Order::Random => (rng.next() % n as u64) as usize,
            Order::RoundRobin => {
                let i = next % n;
                next = next.wrapping_add(conns);
                i
            }
        };
        let (res, elapsed) = match &*load {
            GciLoad::Live(creds) => client.call("sts", GCI_BODY.to_owned(), &creds[i]).await,
            GciLoad::Presigned(headers) => {
                client
                    .send(Bytes::from_static(GCI_BODY.as_bytes()), headers[i].clone())
                    .await
            }
        };
        let ok = match res {
            Ok((200, body)) if memchr(&body, b"<GetCallerIdentityResult>") => Ok(()),
            Ok((status, body)) => Err(describe("GetCallerIdentity", status, &body)),
            Err(e) => Err(format!("GetCallerIdentity: {e}")),
        };
        record(&mut t, &w, elapsed, ok);
    }
    t
}

fn memchr(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Makes sure `user` exists and has no access key.
async fn prepare_user(client: &mut Client, root: &Cred, user: &str) -> Result<(), String> {
    let (res, _) = client
        .call("iam", iam_body("CreateUser", &[("UserName", user)]), root)
        .await;
    match res? {
        (200, _) => {}
        (409, body) if memchr(&body, b"EntityAlreadyExists") => {}
        (s, body) => return Err(describe("CreateUser", s, &body)),
    }
    let (res, _) = client
        .call(
            "iam",
            iam_body("ListAccessKeys", &[("UserName", user)]),
            root,
        )
        .await;
    let (s, body) = res?;
    if s != 200 {
        return Err(describe("ListAccessKeys", s, &body));
    }
    let text = String::from_utf8_lossy(&body);
    for key in elems(&text, "AccessKeyId") {
        let (res, _) = client
            .call(
                "iam",
                iam_body(
                    "DeleteAccessKey",
                    &[("UserName", user), ("AccessKeyId", key)],
                ),
                root,
            )
            .await;
        let (s, body) = res?;
        if s != 200 {
            return Err(describe("DeleteAccessKey", s, &body));
        }
    }
    Ok(())
}

async fn create_delete_conn(
    target: Arc<Target>,
    root: Arc<Cred>,
    user: String,
    w: Window,
) -> Tally {
    let mut client = Client::new(target);
    let mut t = Tally::default();
    while w.running() {
        let (res, elapsed) = client
            .call(
                "iam",
                iam_body("CreateAccessKey", &[("UserName", &user)]),
                &root,
            )
            .await;
        let key = match res {
            Ok((200, body)) => {
                let text = String::from_utf8_lossy(&body);
                match elem(&text, "AccessKeyId") {
                    Some(k) if memchr(&body, b"<SecretAccessKey>") => Ok(k.to_owned()),
                    _ => Err(describe(
                        "CreateAccessKey (no key in the reply)",
                        200,
                        &body,
                    )),
                }
            }
            Ok((s, body)) => Err(describe("CreateAccessKey", s, &body)),
            Err(e) => Err(format!("CreateAccessKey: {e}")),
        };
        let key = match key {
            Ok(k) => {
                if record(&mut t, &w, elapsed, Ok(())) {
                    t.creates += 1;
                }
                k
            }
            Err(e) => {
                record(&mut t, &w, elapsed, Err(e));
                // The user may hold keys we do not know of: empty it before going on.
                let _ = prepare_user(&mut client, &root, &user).await;
                continue;
            }
        };
        let (res, elapsed) = client
            .call(
                "iam",
                iam_body(
                    "DeleteAccessKey",
                    &[("UserName", &user), ("AccessKeyId", &key)],
                ),
                &root,
            )
            .await;
        let ok = match res {
            Ok((200, _)) => Ok(()),
            Ok((s, body)) => Err(describe("DeleteAccessKey", s, &body)),
            Err(e) => Err(format!("DeleteAccessKey: {e}")),
        };
        if ok.is_err() {
            record(&mut t, &w, elapsed, ok);
            let _ = prepare_user(&mut client, &root, &user).await;
        } else {
            record(&mut t, &w, elapsed, ok);
        }
    }
    t
}

/// Latency summary (µs) of sorted samples: nearest-rank percentiles.
fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn fmt_us(us: u32) -> String {
    if us >= 1000 {
        format!("{:.2} ms", f64::from(us) / 1000.0)
    } else {
        format!("{us} µs")
    }
}

struct Report {
    mode: &'static str,
    connections: usize,
    run: RunArgs,
    keys: Option<usize>,
    order: Option<&'static str>,
    /// Requests signed once per key and replayed (`gci --presigned`).
    presigned: bool,
    tally: Tally,
}

impl Report {
    fn print(mut self, json: bool) -> ExitCode {
        let t = &mut self.tally;
        t.latencies_us.sort_unstable();
        let n = t.latencies_us.len();
        let rps = n as f64 / self.run.duration;
        let lat = |p| percentile(&t.latencies_us, p);
        let max = t.latencies_us.last().copied().unwrap_or(0);
        let mean = if n == 0 {
            0.0
        } else {
            t.latencies_us.iter().map(|&x| f64::from(x)).sum::<f64>() / n as f64
        };
        let creates_per_s = t.creates as f64 / self.run.duration;
        if json {
            let v = serde_json::json!({
                "mode": self.mode,
                "connections": self.connections,
                "duration_s": self.run.duration,
                "warmup_s": self.run.warmup,
                "keys": self.keys,
                "order": self.order,
                "presigned": self.presigned,
                "requests": n,
                "requests_per_s": rps,
                "creates": (self.mode == "create-delete").then_some(t.creates),
                "creates_per_s": (self.mode == "create-delete").then_some(creates_per_s),
                "latency_us": {
                    "p50": lat(50.0), "p90": lat(90.0), "p99": lat(99.0), "max": max, "mean": mean,
                },
                "errors": t.errors,
                "warmup_errors": t.warmup_errors,
                "sent": t.sent,
                "error_samples": t.samples,
            });
            println!("{v}");
        } else {
            let keys = match (self.keys, self.order) {
                (Some(k), Some(o)) => format!(
                    ", {k} key{} ({o}{})",
                    if k == 1 { "" } else { "s" },
                    if self.presigned { ", pre-signed" } else { "" }
                ),
                _ => String::new(),
            };
            println!(
                "{}: {} connection{}, {} s measured after {} s warm-up{keys}",
                self.mode,
                self.connections,
                if self.connections == 1 { "" } else { "s" },
                self.run.duration,
                self.run.warmup
            );
            println!("requests  {n} ({rps:.0} req/s)");
            if self.mode == "create-delete" {
                println!(
                    "creates   {} ({creates_per_s:.0} CreateAccessKey/s, each followed by a DeleteAccessKey)",
                    t.creates
                );
            }
            println!(
                "latency   p50 {}  p90 {}  p99 {}  max {}  mean {}",
                fmt_us(lat(50.0)),
                fmt_us(lat(90.0)),
                fmt_us(lat(99.0)),
                fmt_us(max),
                fmt_us(mean as u32)
            );
            println!("errors    {} (warm-up: {})", t.errors, t.warmup_errors);
        }
        for s in &t.samples {
            eprintln!("keyward-loadgen: error: {s}");
        }
        if t.errors + t.warmup_errors > 0 {
            eprintln!(
                "keyward-loadgen: {} request(s) failed: the run does not count",
                t.errors + t.warmup_errors
            );
            ExitCode::from(1)
        } else if n == 0 {
            eprintln!("keyward-loadgen: no request completed in the measured window");
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        }
    }
}

fn read_keys(path: &PathBuf) -> Result<Vec<Cred>, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.split_whitespace();
        match (parts.next(), parts.next(), parts.next()) {
            (Some(id), Some(secret), None) => out.push(Cred {
                key_id: id.to_owned(),
                secret: SecretKey::new(secret.to_owned()),
            }),
            _ => {
                return Err(format!(
                    "{}:{}: expected `KEYID SECRET`",
                    path.display(),
                    n + 1
                ))
            }
        }
    }
    if out.is_empty() {
        return Err(format!("{}: no keys", path.display()));
    }
    Ok(out)
}

fn root_cred(cli: &Cli) -> Result<Cred, String> {
    match (&cli.access_key_id, &cli.secret_access_key) {
        (Some(id), Some(secret)) => Ok(Cred {
            key_id: id.clone(),
            secret: SecretKey::new(secret.clone()),
        }),
        _ => Err(
            "root credentials needed: --access-key-id and --secret-access-key \
             (or KEYWARD_ROOT_ACCESS_KEY_ID and KEYWARD_ROOT_SECRET_ACCESS_KEY)"
                .into(),
        ),
    }
}

/// Resolves the endpoint, refusing anything that is not loopback.
async fn target(cli: &Cli) -> Result<Target, String> {
    let uri: http::Uri = cli
        .endpoint
        .parse()
        .map_err(|e| format!("--endpoint {:?}: {e}", cli.endpoint))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!(
            "--endpoint {:?}: only http:// is supported",
            cli.endpoint
        ));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| format!("--endpoint {:?}: no host", cli.endpoint))?;
    let port = authority.port_u16().unwrap_or(80);
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("resolving {host}: {e}"))?
        .collect();
    if addrs.is_empty() || addrs.iter().any(|a| !a.ip().is_loopback()) {
        return Err(format!(
            "--endpoint {:?} resolves to {addrs:?}: only loopback addresses are allowed",
            cli.endpoint
        ));
    }
    if !(cli.timeout > 0.0 && cli.timeout <= 600.0) {
        return Err("--timeout must be in (0, 600] seconds".into());
    }
    Ok(Target {
        addr: addrs[0],
        host: HeaderValue::from_str(authority.as_str())
            .map_err(|e| format!("--endpoint host: {e}"))?,
        region: cli.region.clone(),
        timeout: Duration::from_secs_f64(cli.timeout),
    })
}

fn check_run(run: &RunArgs) -> Result<(), String> {
    if run.connections == 0 || run.connections > 1024 {
        return Err("--connections must be 1..=1024".into());
    }
    let duration_ok = run.duration > 0.0 && run.duration <= 3600.0;
    if !duration_ok || !(0.0..=600.0).contains(&run.warmup) {
        return Err("--duration must be in (0, 3600] s and --warmup in [0, 600] s".into());
    }
    Ok(())
}

async fn gci(cli: &Cli, args: &GciArgs) -> Result<Report, String> {
    check_run(&args.run)?;
    let target = Arc::new(target(cli).await?);
    let creds = match &args.keys {
        Some(path) => read_keys(path)?,
        None => vec![root_cred(cli)?],
    };
    let keys = creds.len();
    let load = if args.presigned {
        let signer = Client::new(target.clone());
        let headers = creds
            .iter()
            .map(|c| signer.signed_headers("sts", GCI_BODY, c))
            .collect();
        GciLoad::Presigned(Arc::new(headers))
    } else {
        GciLoad::Live(Arc::new(creds))
    };
    let load = Arc::new(load);
    let w = Window::new(&args.run);
    let tasks: Vec<_> = (0..args.run.connections)
        .map(|i| {
            tokio::spawn(gci_conn(
                target.clone(),
                load.clone(),
                i,
                args.run.connections,
                args.order,
                w,
            ))
        })
        .collect();
    let mut tally = Tally::default();
    for t in tasks {
        tally.merge(
            t.await
                .map_err(|e| format!("a connection task failed: {e}"))?,
        );
    }
    Ok(Report {
        mode: "gci",
        connections: args.run.connections,
        run: args.run,
        keys: Some(keys),
        order: Some(match args.order {
            Order::Random => "random",
            Order::RoundRobin => "round-robin",
        }),
        presigned: args.presigned,
        tally,
    })
}

async fn create_delete(cli: &Cli, args: &CreateDeleteArgs) -> Result<Report, String> {
    check_run(&args.run)?;
    let target = Arc::new(target(cli).await?);
    let root = Arc::new(root_cred(cli)?);
    // Users first (not measured), one per connection, with no key.
    let prep: Vec<_> = (0..args.run.connections)
        .map(|i| {
            let (target, root) = (target.clone(), root.clone());
            let user = format!("{}{i}", args.user_prefix);
            tokio::spawn(async move {
                let mut c = Client::new(target);
                prepare_user(&mut c, &root, &user)
                    .await
                    .map_err(|e| format!("preparing user {user}: {e}"))
            })
        })
        .collect();
    for p in prep {
        p.await.map_err(|e| format!("a setup task failed: {e}"))??;
    }
    let w = Window::new(&args.run);
    let tasks: Vec<_> = (0..args.run.connections)
        .map(|i| {
            tokio::spawn(create_delete_conn(
                target.clone(),
                root.clone(),
                format!("{}{i}", args.user_prefix),
                w,
            ))
        })
        .collect();
    let mut tally = Tally::default();
    for t in tasks {
        tally.merge(
            t.await
                .map_err(|e| format!("a connection task failed: {e}"))?,
        );
    }
    Ok(Report {
        mode: "create-delete",
        connections: args.run.connections,
        run: args.run,
        keys: None,
        order: None,
        presigned: false,
        tally,
    })
}

async fn seed(cli: &Cli, args: &SeedArgs) -> Result<ExitCode, String> {
    if args.users == 0 || args.users > 1_000_000 {
        return Err("--users must be 1..=1000000".into());
    }
    if args.concurrency == 0 || args.concurrency > 1024 {
        return Err("--concurrency must be 1..=1024".into());
    }
    let target = Arc::new(target(cli).await?);
    let root = Arc::new(root_cred(cli)?);
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..args.concurrency.min(args.users))
        .map(|_| {
            let (target, root, next) = (target.clone(), root.clone(), next.clone());
            let (users, prefix) = (args.users, args.user_prefix.clone());
            tokio::spawn(async move {
                let mut c = Client::new(target);
                let mut made: Vec<(usize, String, String)> = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= users {
                        return Ok(made);
                    }
                    let user = format!("{prefix}{i}");
                    let (res, _) = c
                        .call("iam", iam_body("CreateUser", &[("UserName", &user)]), &root)
                        .await;
                    let (s, body) = res.map_err(|e| format!("CreateUser {user}: {e}"))?;
                    if s != 200 {
                        return Err(describe(&format!("CreateUser {user}"), s, &body));
                    }
                    let (res, _) = c
                        .call(
                            "iam",
                            iam_body("CreateAccessKey", &[("UserName", &user)]),
                            &root,
                        )
                        .await;
                    let (s, body) = res.map_err(|e| format!("CreateAccessKey {user}: {e}"))?;
                    let text = String::from_utf8_lossy(&body);
                    match (
                        s,
                        elem(&text, "AccessKeyId"),
                        elem(&text, "SecretAccessKey"),
                    ) {
                        (200, Some(id), Some(secret)) => {
                            made.push((i, id.to_owned(), secret.to_owned()))
                        }
                        _ => return Err(describe(&format!("CreateAccessKey {user}"), s, &body)),
                    }
                }
            })
        })
        .collect();
    let mut all = Vec::with_capacity(args.users);
    let mut failure = None;
    for t in tasks {
        match t.await {
            Ok(Ok(made)) => all.extend(made),
            Ok(Err(e)) => failure = failure.or(Some(e)),
            Err(e) => failure = failure.or(Some(format!("a seeding task failed: {e}"))),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable_by_key(|m| m.0);
    let mut text = String::with_capacity(all.len() * 62);
    for (_, id, secret) in &all {
        let _ = writeln!(text, "{id} {secret}");
    }
    write_private(&args.out, text.as_bytes())?;
    let rate = all.len() as f64 / elapsed;
    if cli.json {
        println!(
            "{}",
            serde_json::json!({
                "mode": "seed", "users": all.len(), "requested": args.users, "seconds": elapsed,
                "users_per_s": rate, "out": args.out.display().to_string(), "error": failure,
            })
        );
    } else {
        println!(
            "seed: {} users with one key each in {elapsed:.1} s ({rate:.0} users/s, {} connections); keys in {}",
            all.len(),
            args.concurrency.min(args.users),
            args.out.display()
        );
    }
    match failure {
        Some(e) => {
            eprintln!("keyward-loadgen: seeding stopped early: {e}");
            Ok(ExitCode::from(1))
        }
        None => Ok(ExitCode::SUCCESS),
    }
}

/// Writes `data` to `path` with mode 0600 (an existing file is replaced, not reused).
fn write_private(path: &PathBuf, data: &[u8]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("replacing {}: {e}", path.display())),
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("creating {}: {e}", path.display()))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("writing {}: {e}", path.display()))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Sized by the CPU affinity mask: `taskset -c 0 keyward-loadgen ...` runs one worker.
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("keyward-loadgen: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = rt.block_on(async {
        match &cli.command {
            Command::Gci(a) => gci(&cli, a).await.map(|r| r.print(cli.json)),
            Command::CreateDelete(a) => create_delete(&cli, a).await.map(|r| r.print(cli.json)),
            Command::Seed(a) => seed(&cli, a).await,
            Command::SeedStore(a) => seed_store::seed_store(a, cli.json).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("keyward-loadgen: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&[7], 50.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
    }

    #[test]
    fn xml_helpers() {
        let x = "<a><AccessKeyId>AKIA1</AccessKeyId><AccessKeyId>AKIA2</AccessKeyId></a>";
        assert_eq!(elem(x, "AccessKeyId"), Some("AKIA1"));
        assert_eq!(elems(x, "AccessKeyId"), vec!["AKIA1", "AKIA2"]);
        assert_eq!(elem(x, "Nope"), None);
    }

    #[test]
    fn form_bodies_are_encoded() {
        assert_eq!(
            iam_body("CreateUser", &[("UserName", "a+b@c")]),
            "Action=CreateUser&UserName=a%2Bb%40c&Version=2010-05-08"
        );
    }
}
