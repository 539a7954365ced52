//! `seed-store`: fills a store directly through `keyward_store::Store` (the same code paths, checks
//! and sealing as the server's CreateUser and CreateAccessKey, without HTTP), for the
//! 1,000,000-user benchmark.
//!
//! Users are made in chunks with `Store::create_users_with_keys` (every user and key still goes
//! through the checks of a single create; on SQLite a chunk is one write operation, and the
//! writer's group commit puts the chunks in flight into one transaction), with a large page cache
//! on SQLite's write connection so that a transaction writes each page once.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use keyward_store::{MasterKey, Store, StoreError, StoreOptions};

/// Arguments of `seed-store`.
#[derive(Args)]
pub(crate) struct SeedStoreArgs {
    /// Users to create, each with one access key.
    #[arg(long)]
    users: usize,
    /// keyward's data directory: its `master.key` (created if missing, as `keyward serve` does)
    /// and, without --database-url, its `keyward.db`.
    #[arg(long)]
    data_dir: PathBuf,
    /// The store (`sqlite:PATH` or `postgres://...`); default: DATA_DIR/keyward.db.
    #[arg(long, env = "KEYWARD_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// The account that gets the users; created (named --account-name) if missing.
    #[arg(long, default_value = "123456789012")]
    account_id: String,
    /// Name of the account if it has to be created (`keyward serve`'s default account is
    /// "default").
    #[arg(long, default_value = "default")]
    account_name: String,
    /// Users per store call (`Store::create_users_with_keys`).
    #[arg(long, default_value_t = 5_000)]
    chunk: usize,
    /// Store calls in flight at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// SQLite: page cache of the write connection, MiB.
    #[arg(long, default_value_t = 512)]
    cache_mib: u32,
    /// User i is named PREFIX<i>.
    #[arg(long, default_value = "seed-")]
    user_prefix: String,
    /// Write `KEYID SECRET` lines of this many keys, spread evenly over the users, to --out.
    #[arg(long, default_value_t = 10_000)]
    sample: usize,
    /// Where to write the sampled keys (mode 0600).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Runs `seed-store`.
pub(crate) async fn seed_store(args: &SeedStoreArgs, json: bool) -> Result<ExitCode, String> {
    if args.users == 0 || args.users > 10_000_000 {
        return Err("--users must be 1..=10000000".into());
    }
    if args.concurrency == 0 || args.concurrency > 256 || args.chunk == 0 || args.chunk > 100_000 {
        return Err("--concurrency must be 1..=256 and --chunk 1..=100000".into());
    }
    std::fs::create_dir_all(&args.data_dir)
        .map_err(|e| format!("creating {}: {e}", args.data_dir.display()))?;
    let master = MasterKey::load_or_create(&args.data_dir.join("master.key"))
        .map_err(|e| format!("master key: {e}"))?;
    let url = match &args.database_url {
        Some(u) => u.clone(),
        None => format!("sqlite:{}", args.data_dir.join("keyward.db").display()),
    };
    let opened = Instant::now();
    let options = StoreOptions::default()
        .usage_flush_interval(None)
        .sqlite_write_cache_mib(Some(args.cache_mib));
    let store = Store::open_with(&url, master, options)
        .await
        .map_err(|e| format!("opening the store: {e}"))?;
    let open_s = opened.elapsed().as_secs_f64();
    match store
        .create_account(&args.account_name, Some(&args.account_id))
        .await
    {
        Ok(_) => {}
        Err(StoreError::EntityAlreadyExists(_)) => {}
        Err(e) => return Err(format!("account {}: {e}", args.account_id)),
    }
    let stride = (args.users / args.sample.max(1)).max(1);
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    let chunk = args.chunk;
    let reported = Arc::new(AtomicUsize::new(0));
    for _ in 0..args.concurrency.min(args.users.div_ceil(chunk)) {
        let (store, next, reported) = (store.clone(), next.clone(), reported.clone());
        let (users, prefix, acct) = (
            args.users,
            args.user_prefix.clone(),
            args.account_id.clone(),
        );
        tasks.spawn(async move {
            let mut sampled = Vec::new();
            loop {
                let first = next.fetch_add(chunk, Ordering::Relaxed);
                if first >= users {
                    return Ok::<_, String>(sampled);
                }
                let last = (first + chunk).min(users);
                let names: Vec<String> = (first..last).map(|i| format!("{prefix}{i}")).collect();
                let made = store
                    .create_users_with_keys(&acct, &names)
                    .await
                    .map_err(|e| format!("users {first}..{last}: {e}"))?;
                for (i, (_, key, secret)) in (first..last).zip(made) {
                    if i % stride == 0 {
                        sampled.push((i, key.key_id, secret.expose().to_owned()));
                    }
                }
                let done = reported.fetch_add(last - first, Ordering::Relaxed) + (last - first);
                if done / 100_000 != (done - (last - first)) / 100_000 {
                    eprintln!(
                        "[seed-store] {done} users, {:.0} users/s",
                        done as f64 / started.elapsed().as_secs_f64()
                    );
                }
            }
        });
    }
    let mut sampled = Vec::new();
    let mut failure = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(s)) => sampled.extend(s),
            Ok(Err(e)) => {
                failure.get_or_insert(e);
                next.store(args.users, Ordering::Relaxed);
            }
            Err(e) => {
                failure.get_or_insert(format!("seeding task failed: {e}"));
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    store
        .close()
        .await
        .map_err(|e| format!("closing the store: {e}"))?;
    sampled.sort_unstable_by_key(|s| s.0);
    sampled.truncate(args.sample);
    if let Some(out) = &args.out {
        let mut text = String::new();
        for (_, id, secret) in &sampled {
            text.push_str(id);
            text.push(' ');
            text.push_str(secret);
            text.push('\n');
        }
        crate::write_private(out, text.as_bytes())?;
    }
    let created = reported.load(Ordering::Relaxed);
    let rate = args.users as f64 / secs;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "users": args.users, "seconds": secs, "users_per_s": rate, "open_s": open_s,
                "sampled": sampled.len(), "error": failure,
            })
        );
    } else {
        eprintln!(
            "seed-store: {created} users with one key each in {secs:.1} s ({rate:.0} users/s); {} keys written",
            sampled.len()
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
