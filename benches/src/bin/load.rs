//! The load benchmark: starts the `colloquy` server (release build) on the chosen store, drives
//! it over HTTP with N concurrent clients doing a realistic mix of commands, and reports
//! commands/s and latency, projection lag, cost against history, replay speed and peak RSS,
//! beside the ceilings it is measured against (raw PostgreSQL single-row insert transactions,
//! JetStream publish-with-ack) in the same run. With `--peer` it also drives the direct
//! cqrs-es peer (`src/bin/peer.rs`) with the same mix on its own database, and reports the ratio;
//! with `--python-peer`, the same for the Python `eventsourcing` peer (`benches/python/peer.py`).
//!
//! `scripts/bench` builds and runs it; `--quick` is the CI smoke mode.

#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use rand::Rng;
use serde_json::{json, Value};
use sqlx::{Connection, Executor, PgConnection};

#[path = "load/cpu.rs"]
mod cpu;
#[path = "load/inbox.rs"]
mod inbox;
#[path = "load/reports.rs"]
mod reports;
#[path = "load/sla.rs"]
mod sla;
#[path = "load/webhooks.rs"]
mod webhooks;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StoreKind {
    /// The embedded default (an SQLite file, durable commits).
    Sqlite,
    /// PostgreSQL (with NATS JetStream when --nats).
    Postgres,
}

/// Load benchmark of the Colloquy server.
#[derive(Debug, Parser)]
struct Args {
    /// Which store the server runs on.
    #[arg(long, value_enum, default_value_t = StoreKind::Sqlite)]
    store: StoreKind,
    /// With PostgreSQL: relay to a JetStream server the harness starts.
    #[arg(long)]
    nats: bool,
    /// CI smoke mode: short runs, small data (under two minutes).
    #[arg(long)]
    quick: bool,
    /// Concurrent client counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32,64")]
    clients: Vec<usize>,
    /// Seconds per client count.
    #[arg(long)]
    seconds: Option<u64>,
    /// Events to store for the replay measurement.
    #[arg(long)]
    replay_events: Option<u64>,
    /// Instead of the command load: fill the inbox read model in PostgreSQL and measure its list
    /// and counts endpoints (first pages, sorts, cursor walks), with EXPLAIN plans.
    #[arg(long)]
    inbox: bool,
    /// Instead of the command load: the mix without and with an SLA policy (a pair, in one run),
    /// the clocks' catch-up, and the lateness of 100,000 breaches (500 with --quick) under load.
    #[arg(long)]
    sla: bool,
    /// Instead of the command load: the mix without and with the reports' facts projection (a
    /// pair, in one run, each on a fresh store); with PostgreSQL also each report over 30 days
    /// at --rows conversations of filled facts.
    #[arg(long)]
    reports: bool,
    /// Instead of the command load: webhook deliveries' events/s (a backlog replayed, structured
    /// and batched) and their lag at 1,000 events/s with 10 subscribers, one failing.
    #[arg(long)]
    webhooks: bool,
    /// With --sla: how many timers to fire (100,000; 500 with --quick).
    #[arg(long)]
    timers: Option<usize>,
    /// With --sla: the first-response threshold of the timers fired, in seconds: longer than
    /// opening them takes (150; 20 with --quick).
    #[arg(long)]
    threshold: Option<u64>,
    /// With --sla: the metrics the pair's policy times, of first_response, next_response,
    /// total_resolution and assignment_response (all four). Fewer metrics leave the clocks' acts
    /// and fewer of their events, which tells the two costs apart.
    #[arg(long, value_delimiter = ',')]
    sla_metrics: Option<Vec<String>>,
    /// With --inbox or --reports: conversations to fill (1,000,000; 20,000 with --quick).
    #[arg(long)]
    rows: Option<u64>,
    /// With --reports and PostgreSQL: the filled store's database, kept after the run and taken
    /// again by the next (filled and counted only while it has no facts), so that the reports'
    /// reads can be timed again without filling a million conversations each time.
    #[arg(long)]
    filled_database: Option<String>,
    /// With --reports: time the reports over filled facts alone, without the command pair.
    #[arg(long)]
    skip_pair: bool,
    /// The `colloquy` binary.
    #[arg(long, default_value = "target/release/colloquy")]
    binary: PathBuf,
    /// With PostgreSQL: also measure the direct cqrs-es peer (`src/bin/peer.rs`) with the same
    /// mix and client counts, on its own database, after Colloquy's command table.
    #[arg(long)]
    peer: bool,
    /// The peer's binary (default: `peer` beside --binary).
    #[arg(long)]
    peer_binary: Option<PathBuf>,
    /// With PostgreSQL: also measure the Python `eventsourcing` peer (`benches/python/peer.py`,
    /// whose library `scripts/bench` installs) with the same mix and client counts, on its own
    /// database.
    #[arg(long)]
    python_peer: bool,
    /// The Python peer's launcher.
    #[arg(long, default_value = "benches/python/peer")]
    python_peer_binary: PathBuf,
    /// PostgreSQL server on which the harness creates (and drops) its database.
    #[arg(
        long,
        env = "COLLOQUY_TEST_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    admin_url: String,
}

struct Server {
    child: Child,
    base: String,
    token: String,
    client: reqwest::Client,
    env: Vec<(String, String)>,
    binary: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Server {
    async fn start(binary: &PathBuf, mut env: Vec<(String, String)>) -> anyhow::Result<Self> {
        let port = free_port();
        let token = format!("cq_bench_{}", uuid::Uuid::new_v4().simple());
        env.push(("COLLOQUY_LISTEN".into(), format!("127.0.0.1:{port}")));
        env.push(("COLLOQUY_BOOTSTRAP_TOKEN".into(), token.clone()));
        // Quiet unless asked: `COLLOQUY_LOG=colloquy_infra::relay=debug,colloquy_projections=debug`
        // logs where each live batch's time goes (see BENCHMARKS.md).
        env.push(("COLLOQUY_LOG".into(), std::env::var("COLLOQUY_LOG").unwrap_or_else(|_| "warn".into())));
        let child = Command::new(binary)
            .arg("serve")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| {
                format!("starting {} (build it with cargo build --release -p colloquy-api)", binary.display())
            })?;
        let client = reqwest::Client::builder().pool_max_idle_per_host(128).build()?;
        let base = format!("http://127.0.0.1:{port}");
        for _ in 0..200 {
            if client.get(format!("{base}/healthz")).send().await.is_ok() {
                return Ok(Self { child, base, token, client, env, binary: binary.clone() });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("the server did not come up")
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Option<i64>, Value) {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await;
        match response {
            Ok(response) => {
                let status = response.status().as_u16();
                let position = response
                    .headers()
                    .get("colloquy-position")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok());
                let body = response.json().await.unwrap_or(Value::Null);
                (status, position, body)
            }
            Err(_) => (0, None, Value::Null),
        }
    }

    async fn call_delete(&self, path: &str) -> (u16, Value) {
        match self.client.delete(format!("{}{path}", self.base)).bearer_auth(&self.token).send().await {
            Ok(response) => (response.status().as_u16(), response.json().await.unwrap_or(Value::Null)),
            Err(_) => (0, Value::Null),
        }
    }

    async fn get(&self, path: &str) -> u16 {
        match self.client.get(format!("{}{path}", self.base)).bearer_auth(&self.token).send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let _ = response.bytes().await;
                status
            }
            Err(_) => 0,
        }
    }

    /// The server's `/metrics` text.
    async fn metrics(&self) -> Option<String> {
        let response =
            self.client.get(format!("{}/metrics", self.base)).bearer_auth(&self.token).send().await;
        response.ok()?.text().await.ok()
    }

    /// The aggregate caches as `/metrics` gives them: per type, aggregates and estimated MiB.
    async fn cached_aggregates(&self) -> Option<String> {
        let text = self.metrics().await?;
        let gauge = |name: &str, aggregate: &str| {
            gauge(&text, &format!("colloquy_aggregate_cache_{name}{{aggregate=\"{aggregate}\"}}"))
        };
        let parts: Vec<String> = ["conversation", "contact", "group"]
            .into_iter()
            .filter_map(|aggregate| {
                let count = gauge("aggregates", aggregate)?;
                let mib = gauge("bytes", aggregate)? / f64::from(1 << 20);
                Some(format!("{count:.0} {aggregate}s, {mib:.1} MiB"))
            })
            .collect();
        (!parts.is_empty()).then(|| parts.join("; "))
    }

    /// Conversations read from the store from their first event, and events read, so far
    /// (`/metrics`; `None` from the peer, which has no such figures).
    async fn conversation_reads(&self) -> Option<(f64, f64)> {
        let text = self.metrics().await?;
        let counter = |name: &str| {
            gauge(&text, &format!("colloquy_aggregate_cache_{name}_total{{aggregate=\"conversation\"}}"))
        };
        Some((counter("loads")?, counter("events_read")?))
    }

    /// The allocator's figures from `/metrics`, if the server gives them.
    async fn allocator(&self) -> Option<String> {
        let text = self.metrics().await?;
        let mib = |kind: &str| {
            gauge(&text, &format!("colloquy_allocator_bytes{{kind=\"{kind}\"}}"))
                .map(|b| b / f64::from(1 << 20))
        };
        Some(format!(
            "{:.1} MiB allocated, {:.1} MiB active, {:.1} MiB metadata, {:.1} MiB resident, {:.1} MiB retained",
            mib("allocated")?,
            mib("active")?,
            mib("metadata")?,
            mib("resident")?,
            mib("retained")?
        ))
    }

    /// A `/proc/<pid>/status` memory field of the server process (kB there), in MB.
    fn status_mb(&self, field: &str) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?;
        let kb: f64 = line.split_whitespace().next()?.parse().ok()?;
        Some(kb / 1024.0)
    }

    /// Peak resident set size of the server process.
    fn peak_rss_mb(&self) -> Option<f64> {
        self.status_mb("VmHWM")
    }

    fn current_rss_mb(&self) -> Option<f64> {
        self.status_mb("VmRSS")
    }
}

/// The value of the sample `series` (name and labels) in a `/metrics` text.
fn gauge(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))?.trim().parse().ok()
}

struct Latencies(Vec<Duration>);

impl Latencies {
    fn percentile(&mut self, p: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        self.0.sort_unstable();
        let index = ((self.0.len() as f64 - 1.0) * p).round() as usize;
        self.0[index]
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

async fn open_conversations(server: &Server, count: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(count);
    for n in 0..count {
        let (_, _, contact) = server
            .post(
                "/v1/contacts",
                json!({"first_name": format!("Customer {n}"), "phone": format!("+1415555{:04}", n % 10_000)}),
            )
            .await;
        let contact_id = contact["id"].as_str().unwrap_or_default().to_owned();
        let (status, _, conversation) = server
            .post("/v1/conversations", json!({"contact_id": contact_id, "channel": "whatsapp", "inbox_id": format!("inbox-{}", n % 20)}))
            .await;
        assert_eq!(status, 201, "{conversation}");
        ids.push(conversation["id"].as_str().unwrap().to_owned());
    }
    ids
}

/// One command of the mix on a random conversation: customer and agent messages, assignment,
/// status changes and labels, as an inbox sees them.
async fn one_command(server: &Server, conversations: &[String], n: u64) -> (u16, Option<i64>) {
    let (pick, roll) = {
        let mut rng = rand::thread_rng();
        (rng.gen_range(0..conversations.len()), rng.gen_range(0..100))
    };
    let id = &conversations[pick];
    let (status, position, _) = match roll {
        0..=39 => {
            server
                .post(&format!("/v1/conversations/{id}/messages"), json!({"sender": {"kind": "customer"}, "text": format!("Where is order #{n}?")}))
                .await
        }
        40..=69 => {
            server
                .post(
                    &format!("/v1/conversations/{id}/messages"),
                    json!({"sender": {"kind": "user", "id": format!("agent-{}", n % 100)}, "text": "Let me check that for you."}),
                )
                .await
        }
        70..=79 => {
            server.post(&format!("/v1/conversations/{id}/assignment"), json!({"assignee_id": format!("agent-{}", n % 100)})).await
        }
        80..=89 => {
            let status = if n.is_multiple_of(2) { "pending" } else { "open" };
            server.post(&format!("/v1/conversations/{id}/status"), json!({"status": status})).await
        }
        _ => server.post(&format!("/v1/conversations/{id}/labels"), json!({"add": [format!("label-{}", n % 50)]})).await,
    };
    (status, position)
}

struct LoadResult {
    clients: usize,
    ok: u64,
    refused: u64,
    failed: u64,
    per_second: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

async fn load(
    server: &Arc<Server>,
    conversations: &Arc<Vec<String>>,
    clients: usize,
    seconds: u64,
) -> LoadResult {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let counter = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (server, conversations, counter) = (server.clone(), conversations.clone(), counter.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let (mut ok, mut refused, mut failed) = (0u64, 0u64, 0u64);
                while Instant::now() < deadline {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    let started = Instant::now();
                    let (status, _) = one_command(&server, &conversations, n).await;
                    latencies.push(started.elapsed());
                    // A 409 is a command lost to contention (the peer does not retry): an error,
                    // not a refusal of bad input.
                    match status {
                        200..=299 => ok += 1,
                        409 => failed += 1,
                        400..=499 => refused += 1,
                        _ => failed += 1,
                    }
                }
                (latencies, ok, refused, failed)
            })
        })
        .collect();
    let started = Instant::now();
    let mut all = Vec::new();
    let (mut ok, mut refused, mut failed) = (0, 0, 0);
    for task in tasks {
        let (latencies, o, r, f) = task.await.unwrap();
        all.extend(latencies);
        ok += o;
        refused += r;
        failed += f;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut latencies = Latencies(all);
    LoadResult {
        clients,
        ok,
        refused,
        failed,
        per_second: (ok + refused) as f64 / elapsed,
        p50: latencies.percentile(0.50),
        p99: latencies.percentile(0.99),
        max: latencies.percentile(1.0),
    }
}

/// The mix at `clients` on `conversations`, with the CPU each process spent per command answered
/// over it (none where `/proc` cannot be read).
async fn measured(
    server: &Arc<Server>,
    conversations: &Arc<Vec<String>>,
    clients: usize,
    seconds: u64,
) -> (LoadResult, Option<cpu::PerCommand>) {
    let before = cpu::snapshot(server.child.id());
    let started = Instant::now();
    let result = load(server, conversations, clients, seconds).await;
    let elapsed = started.elapsed().as_secs_f64();
    let answered = result.ok + result.refused + result.failed;
    let cost =
        before.zip(cpu::snapshot(server.child.id())).map(|(b, a)| b.per_command(&a, answered, elapsed));
    (result, cost)
}

/// Measures the mix at each client count and prints the table (with the ratio to the raw insert
/// ceiling where one was measured).
async fn command_table(
    server: &Arc<Server>,
    conversations: &Arc<Vec<String>>,
    clients: &[usize],
    seconds: u64,
    ceilings: &[(usize, f64)],
) -> Vec<LoadResult> {
    println!("| clients | commands/s | p50 ms | p99 ms | max ms | 2xx | 4xx | 409/5xx/errors | raw insert tx/s | ratio |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut results = Vec::new();
    let mut costs = Vec::new();
    for &c in clients {
        let reads_before = server.conversation_reads().await;
        let (result, cost) = measured(server, conversations, c, seconds).await;
        let answered = result.ok + result.refused + result.failed;
        let reads = match (reads_before, server.conversation_reads().await) {
            (Some((loads, events)), Some((loads_after, events_after))) => {
                let per = |n: f64| n / answered.max(1) as f64;
                format!("{:.1} | {:.1}", 1000.0 * per(loads_after - loads), per(events_after - events))
            }
            _ => "- | -".to_owned(),
        };
        if let Some(cost) = cost {
            costs.push((c, cost, reads));
        }
        let ceiling = ceilings.iter().find(|(n, _)| *n == c).map(|(_, r)| *r);
        println!(
            "| {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} |",
            result.clients,
            result.per_second,
            ms(result.p50),
            ms(result.p99),
            ms(result.max),
            result.ok,
            result.refused,
            result.failed,
            ceiling.map_or("-".into(), |r| format!("{r:.0}")),
            ceiling.map_or("-".into(), |r| format!("{:.0}%", 100.0 * result.per_second / r)),
        );
        results.push(result);
    }
    if !costs.is_empty() {
        println!(
            "\nCPU per command answered, ms of one core (from `/proc`; the rest is the kernel's own work and \
             other processes), and the conversations the server read from the store from their first event \
             (not cached, or evicted) and the events it read, from `/metrics`:\n"
        );
        println!(
            "| clients | server | PostgreSQL | NATS | load generator | rest | cores busy | loads per 1,000 commands | events read per command |"
        );
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for (c, cost, reads) in costs {
            println!(
                "| {c} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.2} | {reads} |",
                cost.server, cost.postgres, cost.nats, cost.load, cost.rest, cost.cores_busy
            );
        }
    }
    results
}

/// A peer the same mix is measured on: a server started as `colloquy serve` is, speaking the
/// command endpoints the mix uses.
struct Peer {
    binary: PathBuf,
    /// How the comparison table names it.
    called: &'static str,
    /// Its section's heading and the line under it.
    heading: &'static str,
    about: &'static str,
}

impl Peer {
    fn cqrs_es(args: &Args) -> Self {
        Self {
            binary: args.peer_binary.clone().unwrap_or_else(|| args.binary.with_file_name("peer")),
            called: "the peer",
            heading: "The direct cqrs-es peer",
            about: "cqrs-es CqrsFramework + postgres-es event store (no snapshots), GenericQuery view after commit, axum; no retries.",
        }
    }

    fn python(args: &Args) -> Self {
        Self {
            binary: args.python_peer_binary.clone(),
            called: "the Python eventsourcing peer",
            heading: "The Python eventsourcing peer",
            about: "eventsourcing (Python) Application + PostgreSQL persistence (no snapshots, no cache), no read model, stdlib threading HTTP server, one process per core; no retries.",
        }
    }
}

/// The same mix against a peer, on a database of its own (created and dropped here).
/// Colloquy's server stays up but idle meanwhile.
async fn peer_table(
    args: &Args,
    peer: &Peer,
    env: &[(String, String)],
    seconds: u64,
    clients: &[usize],
    ceilings: &[(usize, f64)],
) -> anyhow::Result<Vec<LoadResult>> {
    let binary = &peer.binary;
    let database = format!("colloquy_peer_{}", uuid::Uuid::new_v4().simple());
    let base_url = args.admin_url.rsplit_once('/').map_or(args.admin_url.clone(), |(b, _)| b.to_owned());
    PgConnection::connect(&args.admin_url)
        .await?
        .execute(format!("CREATE DATABASE {database}").as_str())
        .await?;
    let mut peer_env: Vec<(String, String)> =
        env.iter().filter(|(k, _)| k == "COLLOQUY_DB_MAX_CONNECTIONS").cloned().collect();
    peer_env.push(("COLLOQUY_DATABASE_URL".into(), format!("{base_url}/{database}")));
    let outcome = async {
        let server = Arc::new(Server::start(binary, peer_env).await?);
        println!("\n## {}, same mix ({seconds} s per row)\n", peer.heading);
        println!("{}\n", peer.about);
        let conversations = Arc::new(open_conversations(&server, if args.quick { 50 } else { 500 }).await);
        let results = command_table(&server, &conversations, clients, seconds, ceilings).await;
        let stats = server.client.get(format!("{}/stats", server.base)).send().await?.text().await?;
        println!("\nPeer view updates that failed: {stats}");
        anyhow::Ok(results)
    }
    .await;
    if let Ok(mut admin) = PgConnection::connect(&args.admin_url).await {
        let _ = admin.execute(format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)").as_str()).await;
    }
    outcome
}

/// What one command of the lag phase saw: when it was sent (from the phase's start) and how late
/// against the fixed rate's schedule, when it was answered and how, and its probe's lag (or that
/// its probe was not answered 200: the read model did not reach the position in time, or too
/// many reads were waiting already).
struct Sent {
    at: Duration,
    late: Duration,
    answered: Duration,
    status: u16,
    lag: Option<Duration>,
    probe_failed: bool,
}

/// The lag phase's figures: lag percentiles over its probes, and every command it sent.
struct LagPhase {
    p50: Duration,
    p99: Duration,
    probes: usize,
    probes_failed: usize,
    turned_away: usize,
    sent: Vec<Sent>,
}

/// Time from a command's 2xx to its effect in the conversation list, at a fixed command rate.
async fn projection_lag(
    server: &Arc<Server>,
    conversations: &Arc<Vec<String>>,
    rate: f64,
    seconds: u64,
) -> LagPhase {
    let interval = Duration::from_secs_f64(1.0 / rate.max(1.0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut ticker = tokio::time::interval(interval);
    let mut probes = Vec::new();
    let mut n = 0u64;
    while Instant::now() < deadline {
        // A tick that is late (this process was not scheduled) is sent at once, so the rate holds
        // on average; how late it was tells a stall of the machine from one of the server.
        let due = ticker.tick().await.into_std();
        n += 1;
        let (server, conversations) = (server.clone(), conversations.clone());
        let probe = n.is_multiple_of(10);
        probes.push(tokio::spawn(async move {
            let at = Instant::now();
            let (status, position) = one_command(&server, &conversations, n).await;
            let acknowledged = Instant::now();
            let (lag, probe_failed) = match (probe, status, position) {
                (true, 200..=299, Some(position)) => {
                    let status =
                        server.get(&format!("/v1/conversations?limit=1&min_position={position}")).await;
                    ((status == 200).then(|| acknowledged.elapsed()), status != 200)
                }
                _ => (None, false),
            };
            Sent {
                at: at - started,
                late: at.saturating_duration_since(due),
                answered: acknowledged - started,
                status,
                lag,
                probe_failed,
            }
        }));
    }
    let mut sent = Vec::with_capacity(probes.len());
    for probe in probes {
        sent.push(probe.await.unwrap());
    }
    let mut lags = Latencies(sent.iter().filter_map(|s| s.lag).collect());
    LagPhase {
        p50: lags.percentile(0.5),
        p99: lags.percentile(0.99),
        probes: lags.0.len(),
        probes_failed: sent.iter().filter(|s| s.probe_failed).count(),
        turned_away: sent.iter().filter(|s| s.status == 503).count(),
        sent,
    }
}

/// The lag phase second by second, printed when its p99 is over a second or a probe went
/// unanswered, so that a stall says what stalled: commands sent late (this process, or the machine, was not running), commands
/// answered late or turned away (the server), or only the probes (the projector).
fn lag_timeline(sent: &[Sent]) -> String {
    let seconds = sent.iter().map(|s| s.at.as_secs() as usize).max().map_or(0, |last| last + 1);
    let mut table = String::from(
        "| second | sent | most late send ms | answered 2xx | turned away | slowest answer ms | probes answered | slowest probe ms | probes not answered |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for second in 0..seconds {
        let this: Vec<&Sent> = sent.iter().filter(|s| s.at.as_secs() as usize == second).collect();
        let slowest = |d: &mut dyn Iterator<Item = Duration>| d.max().map_or("-".into(), ms);
        table.push_str(&format!(
            "| {second} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            this.len(),
            slowest(&mut this.iter().map(|s| s.late)),
            this.iter().filter(|s| (200..300).contains(&s.status)).count(),
            this.iter().filter(|s| s.status == 503).count(),
            slowest(&mut this.iter().map(|s| s.answered - s.at)),
            this.iter().filter(|s| s.lag.is_some()).count(),
            slowest(&mut this.iter().filter_map(|s| s.lag)),
            this.iter().filter(|s| s.probe_failed).count(),
        ));
    }
    table
}

/// Vacuums and analyzes the server's PostgreSQL database, as pgbench does before its runs and
/// as autovacuum does about once a minute in a running deployment: by the lag phase the database
/// is younger than that, and its planner statistics are those of its first seconds. With them
/// the list query behind each lag probe was planned for a tenant of 2 rows (it had 500), read
/// all 17,000 entries of an unrelated index (one per row version) and sorted them: 10 ms at p50
/// instead of under 1 ms on the same table analyzed.
async fn settle_statistics(database_url: &str) -> anyhow::Result<()> {
    let mut connection = PgConnection::connect(database_url).await?;
    connection.execute("VACUUM (ANALYZE)").await.context("VACUUM (ANALYZE) before the lag phase")?;
    Ok(())
}

/// Latency of posting to a conversation with `history` messages against a fresh one.
async fn cost_against_history(server: &Server, history: usize, samples: usize) -> (Duration, Duration) {
    let long = open_conversations(server, 1).await.remove(0);
    let fill: Vec<_> = (0..history).collect();
    for chunk in fill.chunks(64) {
        let path = format!("/v1/conversations/{long}/messages");
        let posts = chunk.iter().map(|n| {
            server.post(&path, json!({"sender": {"kind": "customer"}, "text": format!("history {n}")}))
        });
        futures::future::join_all(posts).await;
    }
    let fresh = open_conversations(server, 1).await.remove(0);
    let measure = |id: String| async move {
        let mut latencies = Vec::new();
        for n in 0..samples {
            let started = Instant::now();
            let (status, _, _) = server
                .post(
                    &format!("/v1/conversations/{id}/messages"),
                    json!({"sender": {"kind": "user", "id": "agent-1"}, "text": format!("sample {n}")}),
                )
                .await;
            assert!((200..300).contains(&status));
            latencies.push(started.elapsed());
        }
        Latencies(latencies).percentile(0.5)
    };
    let on_fresh = measure(fresh).await;
    let on_long = measure(long).await;
    (on_fresh, on_long)
}

/// The raw ceiling: single-row insert transactions into a table shaped like the event store.
async fn raw_insert_ceiling(url: &str, clients: usize, seconds: u64) -> anyhow::Result<f64> {
    let mut setup = PgConnection::connect(url).await?;
    setup
        .execute(
            "CREATE TABLE IF NOT EXISTS bench_raw_events (
                aggregate_type text NOT NULL, aggregate_id text NOT NULL, sequence bigint NOT NULL,
                event_type text NOT NULL, event_version text NOT NULL, payload jsonb NOT NULL, metadata jsonb NOT NULL,
                PRIMARY KEY (aggregate_type, aggregate_id, sequence))",
        )
        .await?;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let count = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for client in 0..clients {
        let (url, count) = (url.to_owned(), count.clone());
        tasks.push(tokio::spawn(async move {
            let mut connection = PgConnection::connect(&url).await?;
            let aggregate = format!("raw-{client}-{}", uuid::Uuid::new_v4());
            let mut sequence = 0i64;
            let payload = json!({"MessageAdded": {"text": "Where is my order?", "sender": {"kind": "customer"}}});
            let metadata = json!({"tenant_id": "default", "event_id": uuid::Uuid::new_v4().to_string()});
            while Instant::now() < deadline {
                sequence += 1;
                sqlx::query("INSERT INTO bench_raw_events VALUES ('conversation', $1, $2, 'MessageAdded', '1.0', $3, $4)")
                    .bind(&aggregate)
                    .bind(sequence)
                    .bind(&payload)
                    .bind(&metadata)
                    .execute(&mut connection)
                    .await?;
                count.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    let started = Instant::now();
    for task in tasks {
        task.await??;
    }
    Ok(count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

/// JetStream publish-with-ack rate: one at a time, and with `in_flight` outstanding.
async fn jetstream_ceiling(url: &str, seconds: u64, in_flight: usize) -> anyhow::Result<f64> {
    let client = async_nats::connect(url).await?;
    let jetstream = async_nats::jetstream::new(client);
    let stream_name = format!("BENCH_{}", uuid::Uuid::new_v4().simple());
    jetstream
        .get_or_create_stream(async_nats::jetstream::stream::Config {
            name: stream_name.clone(),
            subjects: vec![format!("{stream_name}.>")],
            ..Default::default()
        })
        .await?;
    let payload = bytes::Bytes::from(vec![b'x'; 600]);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut sent = 0u64;
    let mut pending = std::collections::VecDeque::new();
    while Instant::now() < deadline {
        let ack = jetstream.publish(format!("{stream_name}.x"), payload.clone()).await?;
        pending.push_back(ack);
        sent += 1;
        if pending.len() >= in_flight {
            if let Some(ack) = pending.pop_front() {
                ack.await?;
            }
        }
    }
    for ack in pending {
        ack.await?;
    }
    let rate = sent as f64 / started.elapsed().as_secs_f64();
    jetstream.delete_stream(&stream_name).await?;
    Ok(rate)
}

struct Nats {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_nats() -> anyhow::Result<Nats> {
    let port = free_port();
    let dir = tempfile::tempdir()?;
    let binary = ["/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("nats-server");
    let child = Command::new(binary)
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "--store_dir"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Ok(Nats { child, url: format!("nats://127.0.0.1:{port}"), _dir: dir });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("nats-server did not come up")
}

/// Posts about `count` events over HTTP (SQLite), in the shape of the SQL seed: conversations
/// of [`SEED_EVENTS_PER_CONVERSATION`] events, each with a contact of its own (created, then
/// the conversation opened with it, then 18 messages from the customer and an agent in turn),
/// the k-th conversation's j-th event at slot k + 100 j. Ten slots are posted at a time, all at
/// once: a conversation's events are 100 slots apart, so each follows the one before it.
async fn seed_events(server: &Server, count: u64) -> anyhow::Result<()> {
    let conversations = (count / SEED_EVENTS_PER_CONVERSATION).max(1);
    let last_slot = conversations + 100 * (SEED_EVENTS_PER_CONVERSATION - 1);
    // Each conversation's contact id until it is opened, then its own id.
    let mut ids: HashMap<u64, String> = HashMap::new();
    let started = Instant::now();
    let mut done = 0u64;
    for first in (1..=last_slot).step_by(10) {
        let work: Vec<(u64, u64)> = (first..(first + 10).min(last_slot + 1))
            .flat_map(|slot| {
                (0..SEED_EVENTS_PER_CONVERSATION).filter_map(move |j| {
                    slot.checked_sub(100 * j).filter(|k| (1..=conversations).contains(k)).map(|k| (k, j))
                })
            })
            .collect();
        let posts = work.iter().map(|&(k, j)| {
            let (path, body) = match j {
                0 => ("/v1/contacts".to_owned(), json!({"first_name": format!("Customer {k}"), "phone": format!("+1415{k:07}")})),
                1 => (
                    "/v1/conversations".to_owned(),
                    json!({"contact_id": ids.get(&k).cloned().unwrap_or_default(), "channel": "whatsapp", "inbox_id": format!("inbox-{}", k % 20)}),
                ),
                _ => {
                    let sender = if j % 2 == 0 { json!({"kind": "customer"}) } else { json!({"kind": "user", "id": format!("agent-{}", k % 50)}) };
                    let id = ids.get(&k).cloned().unwrap_or_default();
                    (format!("/v1/conversations/{id}/messages"), json!({"sender": sender, "text": format!("Message {j} about order {k}")}))
                }
            };
            async move { (k, j, server.post(&path, body).await) }
        });
        for (k, j, (status, _, body)) in futures::future::join_all(posts).await {
            if !(200..300).contains(&status) {
                bail!("seeding event {j} of conversation {k}: {status} {body}");
            }
            if j < 2 {
                ids.insert(k, body["id"].as_str().unwrap_or_default().to_owned());
            }
        }
        done += work.len() as u64;
        if done % 50_000 < work.len() as u64 {
            eprintln!("  seeded {done} events ({:.0}/s)", done as f64 / started.elapsed().as_secs_f64());
        }
    }
    Ok(())
}

/// Events each conversation of the replay seed has, on either store: its contact's creation, its
/// opening, then 18 messages, the customer's and an agent's in turn.
const SEED_EVENTS_PER_CONVERSATION: u64 = 20;

/// Appends about `count` events with SQL (PostgreSQL), much faster than over HTTP, shaped like a
/// live log: conversation after conversation, each with a contact of its own (a
/// `ContactCreated`, then the `ConversationOpened`, then 18 `MessageAdded`). The contact and
/// opening payloads are copies of ones the server wrote for a conversation opened through the
/// API, with the ids and number replaced; the messages have the server's shapes. The k-th
/// conversation's j-th event goes at slot k + 100 j, so about 1,900 conversations are active at
/// any point of the log, and each page a rebuild reads touches that many rows and brings new
/// contacts.
async fn seed_events_sql(server: &Server, database_url: &str, count: u64) -> anyhow::Result<()> {
    let template = open_conversations(server, 1).await.remove(0);
    let conversations = (count / SEED_EVENTS_PER_CONVERSATION).max(1) as i64;
    let mut connection = PgConnection::connect(database_url).await?;
    let started = Instant::now();
    let last_slot = conversations + 100 * (SEED_EVENTS_PER_CONVERSATION as i64 - 1);
    for first in (1..=last_slot).step_by(1_000) {
        sqlx::query(
            "WITH template AS (
                 SELECT o.aggregate_id AS conversation_id, o.payload::text AS opened,
                        c.aggregate_id AS contact_id, c.payload::text AS created
                   FROM events o
                   JOIN events c ON c.aggregate_type = 'contact' AND c.sequence = 1
                                AND c.aggregate_id = o.payload -> 'ConversationOpened' ->> 'contact_id'
                  WHERE o.aggregate_type = 'conversation' AND o.aggregate_id = $1 AND o.sequence = 1
             ), seed AS (
                 SELECT slot.n AS slot, j.n AS j, slot.n - 100 * j.n AS k,
                        '00000000-0000-7000-8000-' || lpad(to_hex(slot.n - 100 * j.n), 12, '0') AS contact_id,
                        '00000000-0000-7000-9000-' || lpad(to_hex(slot.n - 100 * j.n), 12, '0') AS conversation_id,
                        to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS at
                   FROM generate_series($2::bigint, $3::bigint) AS slot(n),
                        generate_series(0, $4::int - 1) AS j(n)
                  WHERE slot.n - 100 * j.n BETWEEN 1 AND $5
             )
             INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
             SELECT CASE WHEN s.j = 0 THEN 'contact' ELSE 'conversation' END,
                    CASE WHEN s.j = 0 THEN s.contact_id ELSE s.conversation_id END,
                    greatest(s.j, 1),
                    CASE s.j WHEN 0 THEN 'ContactCreated' WHEN 1 THEN 'ConversationOpened' ELSE 'MessageAdded' END,
                    '1.0',
                    CASE s.j
                      WHEN 0 THEN replace(t.created, t.contact_id, s.contact_id)::json
                      WHEN 1 THEN regexp_replace(replace(replace(t.opened, t.contact_id, s.contact_id),
                                                         t.conversation_id, s.conversation_id),
                                                 '\"number\":[0-9]+', '\"number\":' || s.k)::json
                      ELSE json_build_object('MessageAdded', json_build_object(
                        'message_id', gen_random_uuid(),
                        'sender', CASE WHEN s.j % 2 = 0 THEN json_build_object('kind', 'customer', 'id', NULL)
                                       ELSE json_build_object('kind', 'user', 'id', 'agent-' || s.k % 50) END,
                        'visibility', 'public',
                        'content', json_build_object('message_type', 'text',
                                   'text', 'Message ' || s.j || ' about order ' || s.k,
                                   'attachments', '[]'::json, 'reply_to', NULL, 'forwarded', false, 'mentions', '[]'::json,
                                   'email', NULL, 'location', NULL, 'template', NULL, 'interactive', NULL, 'contacts', NULL,
                                   'metadata', '{}'::json),
                        'response_time_ms', CASE WHEN s.j % 2 = 1 THEN 60000 END,
                        'created_at', s.at))
                    END,
                    jsonb_build_object('event_id', gen_random_uuid(), 'tenant_id', 'default', 'actor_kind', 'system',
                        'actor_id', 'bench-seed', 'correlation_id', gen_random_uuid(), 'recorded_at', s.at)
               FROM seed s CROSS JOIN template t
              ORDER BY s.slot, s.k",
        )
        .bind(&template)
        .bind(first)
        .bind((first + 999).min(last_slot))
        .bind(SEED_EVENTS_PER_CONVERSATION as i32)
        .bind(conversations)
        .execute(&mut connection)
        .await?;
    }
    eprintln!("  seeded {count} events with SQL in {:.1} s", started.elapsed().as_secs_f64());
    // Settled, as events that have been in a store for a while are: without this the rebuild
    // is the first to read a million fresh rows (setting their hint bits, so writing every page
    // it reads) while autovacuum works through the same tables.
    let started = Instant::now();
    connection.execute("VACUUM (ANALYZE) events, event_log").await?;
    eprintln!("  vacuumed and analyzed in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Waits until `colloquy projections status` shows every projection at lag 0.
async fn wait_for_projections(server: &Server, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let output = Command::new(&server.binary)
            .args(["projections", "status"])
            .envs(server.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stderr(Stdio::null())
            .output();
        if let Ok(output) = output {
            let text = String::from_utf8_lossy(&output.stdout);
            let lags: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with("projection:"))
                .filter_map(|l| l.split_whitespace().last())
                .collect();
            if !lags.is_empty() && lags.iter().all(|lag| *lag == "0") {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    false
}

/// The log's head, as `GET /v1/events` pages reach it.
async fn log_head(server: &Server) -> i64 {
    let mut after = 0;
    loop {
        let response = server
            .client
            .get(format!("{}/v1/events?after={after}&limit=1000", server.base))
            .bearer_auth(&server.token)
            .send()
            .await;
        let Ok(response) = response else { return after };
        let page: Value = response.json().await.unwrap_or(Value::Null);
        let count = page["data"].as_array().map_or(0, Vec::len);
        after = page["last_position"].as_i64().unwrap_or(after);
        if count < 1000 {
            return after;
        }
    }
}

fn replay(binary: &PathBuf, env: &[(String, String)], projection: &str) -> anyhow::Result<String> {
    let output = Command::new(binary)
        .args(["projections", "rebuild", projection])
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stderr(Stdio::null())
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    Ok(stdout.lines().last().unwrap_or_default().to_owned())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let seconds = args.seconds.unwrap_or(if args.quick { 3 } else { 15 });
    let clients = if args.quick { vec![1, 8] } else { args.clients.clone() };
    let replay_events = args.replay_events.unwrap_or(if args.quick { 2_000 } else { 1_000_000 });
    let history = if args.quick { 1_000 } else { 10_000 };

    let data_dir = tempfile::tempdir()?;
    let mut env = vec![("COLLOQUY_DATA_DIR".to_owned(), data_dir.path().display().to_string())];
    let database = format!("colloquy_bench_{}", uuid::Uuid::new_v4().simple());
    let base_url = args.admin_url.rsplit_once('/').map_or(args.admin_url.clone(), |(b, _)| b.to_owned());
    let database_url = format!("{base_url}/{database}");
    let nats = if args.nats { Some(start_nats().await?) } else { None };
    let postgres = args.store == StoreKind::Postgres || args.inbox;
    if (args.peer || args.python_peer) && args.store != StoreKind::Postgres {
        bail!("--peer and --python-peer run on PostgreSQL: add --store postgres");
    }
    if postgres {
        PgConnection::connect(&args.admin_url)
            .await?
            .execute(format!("CREATE DATABASE {database}").as_str())
            .await?;
        env.push(("COLLOQUY_DATABASE_URL".into(), database_url.clone()));
        env.push(("COLLOQUY_DB_MAX_CONNECTIONS".into(), "32".into()));
    }
    if let Some(nats) = &nats {
        env.push(("COLLOQUY_NATS_URL".into(), nats.url.clone()));
    }
    let outcome = if args.inbox {
        let rows = args.rows.unwrap_or(if args.quick { 20_000 } else { 1_000_000 });
        // No events exist, so the server's projector never touches the rows filled directly.
        match Server::start(&args.binary, env.clone()).await {
            Ok(server) => inbox::run(&server, &database_url, rows, args.quick).await,
            Err(error) => Err(error),
        }
    } else if args.reports {
        let clients = if args.quick { vec![8] } else { vec![8, 32] };
        let rows = args.rows.unwrap_or(if args.quick { 20_000 } else { 1_000_000 });
        let mut extra = Vec::new();
        let mut store = |name: &str| -> Vec<(String, String)> {
            let mut settings: Vec<(String, String)> = env
                .iter()
                .filter(|(k, _)| k != "COLLOQUY_DATA_DIR" && k != "COLLOQUY_DATABASE_URL")
                .cloned()
                .collect();
            let dir = data_dir.path().join(name);
            settings.push(("COLLOQUY_DATA_DIR".into(), dir.display().to_string()));
            if postgres {
                let kept = args.filled_database.clone().filter(|_| name == "filled");
                let database = kept.clone().unwrap_or_else(|| format!("{database}_{name}"));
                settings.push(("COLLOQUY_DATABASE_URL".into(), format!("{base_url}/{database}")));
                extra.push((database, kept.is_some()));
            }
            settings
        };
        let (without, with, filled) = (store("without"), store("with"), store("filled"));
        let filled_url = filled.iter().find(|(k, _)| k == "COLLOQUY_DATABASE_URL").map(|(_, v)| v.clone());
        let mut outcome = Ok(());
        if let Ok(mut admin) = PgConnection::connect(&args.admin_url).await {
            for (name, kept) in extra.iter().filter(|_| postgres) {
                let exists: bool =
                    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                        .bind(name)
                        .fetch_one(&mut admin)
                        .await?;
                if *kept && exists {
                    continue;
                }
                if let Err(error) = admin.execute(format!("CREATE DATABASE {name}").as_str()).await {
                    outcome = Err(error.into());
                }
            }
        }
        let stores = reports::Stores { without, with, filled: filled_url.map(|url| (filled, url)) };
        let outcome = match outcome {
            Ok(()) => {
                reports::run(&args.binary, stores, args.quick, &clients, seconds, rows, args.skip_pair).await
            }
            Err(error) => Err(error),
        };
        if let Ok(mut admin) = PgConnection::connect(&args.admin_url).await {
            for (name, _) in extra.iter().filter(|(_, kept)| !kept) {
                let _ = admin.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str()).await;
            }
        }
        outcome
    } else if args.webhooks {
        env.push(("COLLOQUY_WEBHOOK_ALLOW_PRIVATE".into(), "true".into()));
        match Server::start(&args.binary, env.clone()).await {
            Ok(server) => webhooks::run(server, args.quick, seconds).await,
            Err(error) => Err(error),
        }
    } else if args.sla {
        let clients = if args.quick { vec![8] } else { vec![8, 32] };
        match Server::start(&args.binary, env.clone()).await {
            Ok(server) => {
                let metrics =
                    args.sla_metrics.clone().unwrap_or_else(|| sla::METRICS.map(str::to_owned).to_vec());
                sla::run(
                    &Arc::new(server),
                    args.quick,
                    &clients,
                    seconds,
                    args.timers,
                    args.threshold,
                    &metrics,
                )
                .await
            }
            Err(error) => Err(error),
        }
    } else {
        run(&args, &env, seconds, &clients, replay_events, history, &database_url, nats.as_ref()).await
    };
    if postgres {
        if let Ok(mut admin) = PgConnection::connect(&args.admin_url).await {
            let _ = admin.execute(format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)").as_str()).await;
        }
    }
    outcome
}

#[allow(clippy::too_many_arguments)]
async fn run(
    args: &Args,
    env: &[(String, String)],
    seconds: u64,
    clients: &[usize],
    replay_events: u64,
    history: usize,
    database_url: &str,
    nats: Option<&Nats>,
) -> anyhow::Result<()> {
    let server = Arc::new(Server::start(&args.binary, env.to_vec()).await?);
    let store_name = match (args.store, args.nats) {
        (StoreKind::Sqlite, _) => "embedded SQLite (synchronous=FULL)",
        (StoreKind::Postgres, true) => "PostgreSQL + NATS JetStream",
        (StoreKind::Postgres, false) => "PostgreSQL, in-process bus",
    };
    println!("# Colloquy load benchmark: {store_name}{}\n", if args.quick { " (quick mode)" } else { "" });
    let conversations = Arc::new(open_conversations(&server, if args.quick { 50 } else { 500 }).await);

    println!("## Commands over HTTP ({seconds} s per row; mix: 40% customer message, 30% agent message, 10% assign, 10% status, 10% label)\n");
    let mut ceilings = Vec::new();
    if args.store == StoreKind::Postgres {
        for &c in clients {
            ceilings.push((c, raw_insert_ceiling(database_url, c, seconds.min(5)).await?));
        }
    }
    let ours = command_table(&server, &conversations, clients, seconds, &ceilings).await;
    let peak = ours.iter().map(|r| r.per_second).fold(0.0, f64::max);

    let peers = [(args.peer, Peer::cqrs_es(args)), (args.python_peer, Peer::python(args))];
    for (_, peer) in peers.iter().filter(|(wanted, _)| *wanted) {
        let theirs = peer_table(args, peer, env, seconds, clients, &ceilings).await?;
        println!("\n## Colloquy against {}\n", peer.called);
        println!("| clients | Colloquy commands/s | peer commands/s | ratio | Colloquy p99 ms | peer p99 ms | peer 409s/errors |");
        println!("|---:|---:|---:|---:|---:|---:|---:|");
        for (ours, peer) in ours.iter().zip(&theirs) {
            println!(
                "| {} | {:.0} | {:.0} | {:.2}x | {} | {} | {} |",
                ours.clients,
                ours.per_second,
                peer.per_second,
                ours.per_second / peer.per_second.max(1e-9),
                ms(ours.p99),
                ms(peer.p99),
                peer.failed,
            );
        }
    }

    if args.store == StoreKind::Postgres {
        settle_statistics(database_url).await?;
    }
    let lag = projection_lag(&server, &conversations, peak / 2.0, seconds).await;
    println!("\n## Projection lag at half the peak rate ({:.0} commands/s)\n", peak / 2.0);
    println!(
        "| probes answered | p50 ms | p99 ms | probes not answered (503) | commands turned away (503) |\n|---:|---:|---:|---:|---:|\n| {} | {} | {} | {} | {} |",
        lag.probes,
        ms(lag.p50),
        ms(lag.p99),
        lag.probes_failed,
        lag.turned_away
    );
    if lag.p99 > Duration::from_secs(1) || lag.probes_failed > 0 {
        println!(
            "\nThe lag phase second by second (its p99 is over a second, or probes went unanswered):\n\n{}",
            lag_timeline(&lag.sent)
        );
    }

    let (fresh, long) = cost_against_history(&server, history, if args.quick { 50 } else { 200 }).await;
    println!("\n## Cost against history (p50 of sequential agent messages)\n");
    println!("| fresh conversation ms | {history}-message conversation ms | ratio |\n|---:|---:|---:|");
    println!("| {} | {} | {:.2} |", ms(fresh), ms(long), long.as_secs_f64() / fresh.as_secs_f64().max(1e-9));

    if let Some(nats) = nats {
        let one = jetstream_ceiling(&nats.url, seconds.min(5), 1).await?;
        let many = jetstream_ceiling(&nats.url, seconds.min(5), 1024).await?;
        println!("\n## JetStream publish-with-ack ceiling\n\n| one at a time msg/s | 1,024 in flight msg/s |\n|---:|---:|\n| {one:.0} | {many:.0} |");
    }

    eprintln!("seeding {replay_events} events for the replay measurement");
    if args.store == StoreKind::Postgres {
        seed_events_sql(&server, database_url, replay_events).await?;
    } else {
        seed_events(&server, replay_events).await?;
    }
    // The server's own projectors take in the seeded events first, so the memory figure covers
    // them and the rebuild below runs alone.
    let caught_up = wait_for_projections(&server, Duration::from_secs(600)).await;
    let rss_loaded = server.current_rss_mb();
    let peak_rss = server.peak_rss_mb();
    let (rss_anonymous, rss_file) = (server.status_mb("RssAnon"), server.status_mb("RssFile"));
    let cached = server.cached_aggregates().await;
    let allocator = server.allocator().await;
    let (binary, env) = (server.binary.clone(), server.env.clone());
    drop(server);
    let replayed = replay(&binary, &env, "conversation_list")?;
    println!("\n## Replay\n\n`colloquy projections rebuild conversation_list` (server stopped): {replayed}");
    let replayed = replay(&binary, &env, "reports_v2")?;
    println!(
        "\n`colloquy projections rebuild reports_v2` (the facts' definition 2; server stopped): {replayed}"
    );
    println!(
        "\n## Server memory\n\nRSS after the run{}: {} MB ({} MB anonymous, {} MB mapped from files); peak RSS: {} MB",
        if caught_up { ", projections caught up" } else { " (projections had NOT caught up)" },
        rss_loaded.map_or("?".into(), |v| format!("{v:.0}")),
        rss_anonymous.map_or("?".into(), |v| format!("{v:.0}")),
        rss_file.map_or("?".into(), |v| format!("{v:.0}")),
        peak_rss.map_or("?".into(), |v| format!("{v:.0}"))
    );
    println!("Aggregate caches (estimated): {}", cached.as_deref().unwrap_or("?"));
    println!("Allocator: {}", allocator.as_deref().unwrap_or("?"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(at_ms: u64, late_ms: u64, answer_ms: u64, status: u16, lag_ms: Option<u64>) -> Sent {
        Sent {
            at: Duration::from_millis(at_ms),
            late: Duration::from_millis(late_ms),
            answered: Duration::from_millis(at_ms + answer_ms),
            status,
            lag: lag_ms.map(Duration::from_millis),
            probe_failed: false,
        }
    }

    #[test]
    fn the_lag_timeline_gives_each_second_its_commands() {
        let table = lag_timeline(&[
            sent(100, 0, 2, 200, Some(12)),
            sent(900, 3, 5, 200, None),
            sent(2_100, 1_500, 4_000, 200, Some(4_800)),
            sent(2_200, 0, 1, 503, None),
            Sent { probe_failed: true, ..sent(2_300, 0, 2, 201, None) },
        ]);
        let rows: Vec<&str> = table.lines().skip(2).collect();
        assert_eq!(
            rows,
            [
                "| 0 | 2 | 3.00 | 2 | 0 | 5.00 | 1 | 12.00 | 0 |",
                "| 1 | 0 | - | 0 | 0 | - | 0 | - | 0 |",
                "| 2 | 3 | 1500.00 | 2 | 1 | 4000.00 | 1 | 4800.00 | 1 |",
            ]
        );
    }
}
