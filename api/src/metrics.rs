//! `GET /metrics` in the Prometheus text format: HTTP answers by method, route and status;
//! commands (POST, PATCH and DELETE under `/v1`) by route and outcome with a latency histogram;
//! and, read at scrape time, the aggregate caches' sizes, the log's head (events appended), the
//! relay's lag and each projection's lag; webhook requests by outcome and the subscriptions by
//! state; the process's resident memory and, where the binary
//! installs a reader (`colloquy` does, for jemalloc), its allocator's. Kept by hand: a few
//! counters need no metrics framework.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::state::AppState;

/// Upper bounds of the command latency buckets, in seconds.
const BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

#[derive(Debug, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

/// The counters.
#[derive(Debug, Default)]
pub struct Metrics {
    http: Mutex<BTreeMap<(String, String, u16), u64>>,
    commands: Mutex<BTreeMap<(String, &'static str), u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
    overloaded: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl Metrics {
    /// Counts a request answered 503 because the server had as many in flight as it takes, or as
    /// many waiting for a read model as it lets wait.
    pub fn count_overloaded(&self) {
        self.overloaded.fetch_add(1, Ordering::Relaxed);
    }

    fn record(&self, method: &Method, route: &str, status: u16, seconds: f64) {
        *lock(&self.http).entry((method.to_string(), route.to_owned(), status)).or_default() += 1;
        let is_command =
            matches!(*method, Method::POST | Method::PATCH | Method::DELETE) && route.starts_with("/v1/");
        if !is_command {
            return;
        }
        let command = format!("{method} {route}");
        let outcome = match status {
            200..=299 => "ok",
            400..=499 => "refused",
            _ => "failed",
        };
        *lock(&self.commands).entry((command.clone(), outcome)).or_default() += 1;
        let mut latency = lock(&self.latency);
        let histogram = latency.entry(command).or_default();
        for (bound, count) in BUCKETS.iter().zip(histogram.counts.iter_mut()) {
            if seconds <= *bound {
                *count += 1;
            }
        }
        histogram.sum += seconds;
        histogram.count += 1;
    }

    fn render(&self, out: &mut String) {
        out.push_str("# HELP colloquy_http_responses_total HTTP responses by method, route and status.\n");
        out.push_str("# TYPE colloquy_http_responses_total counter\n");
        for ((method, route, status), n) in lock(&self.http).iter() {
            let _ = writeln!(
                out,
                "colloquy_http_responses_total{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {n}",
                escape(route)
            );
        }
        out.push_str("# HELP colloquy_requests_overloaded_total API requests answered 503 at the cap on requests in flight, or on requests waiting for a read model.\n");
        out.push_str("# TYPE colloquy_requests_overloaded_total counter\n");
        let _ =
            writeln!(out, "colloquy_requests_overloaded_total {}", self.overloaded.load(Ordering::Relaxed));
        out.push_str("# HELP colloquy_commands_total Commands by route and outcome (ok, refused, failed).\n");
        out.push_str("# TYPE colloquy_commands_total counter\n");
        for ((command, outcome), n) in lock(&self.commands).iter() {
            let _ = writeln!(
                out,
                "colloquy_commands_total{{command=\"{}\",outcome=\"{outcome}\"}} {n}",
                escape(command)
            );
        }
        out.push_str("# HELP colloquy_command_duration_seconds Command latency, from request to response.\n");
        out.push_str("# TYPE colloquy_command_duration_seconds histogram\n");
        for (command, histogram) in lock(&self.latency).iter() {
            let command = escape(command);
            for (bound, count) in BUCKETS.iter().zip(histogram.counts.iter()) {
                let _ = writeln!(out, "colloquy_command_duration_seconds_bucket{{command=\"{command}\",le=\"{bound}\"}} {count}");
            }
            let _ = writeln!(
                out,
                "colloquy_command_duration_seconds_bucket{{command=\"{command}\",le=\"+Inf\"}} {}",
                histogram.count
            );
            let _ = writeln!(
                out,
                "colloquy_command_duration_seconds_sum{{command=\"{command}\"}} {}",
                histogram.sum
            );
            let _ = writeln!(
                out,
                "colloquy_command_duration_seconds_count{{command=\"{command}\"}} {}",
                histogram.count
            );
        }
    }
}

/// What the process's allocator holds, in bytes (jemalloc's `stats.*`; another allocator maps
/// its own figures onto these or installs no reader).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocatorStats {
    /// Bytes in live allocations.
    pub allocated: u64,
    /// Bytes in the pages those allocations sit in.
    pub active: u64,
    /// Bytes the allocator spends on its own bookkeeping.
    pub metadata: u64,
    /// Bytes of the allocator's pages in physical memory: allocations, pages freed but not yet
    /// handed back, and metadata.
    pub resident: u64,
    /// Bytes of address space kept for reuse, not in physical memory.
    pub retained: u64,
}

static ALLOCATOR_STATS: OnceLock<fn() -> Option<AllocatorStats>> = OnceLock::new();

/// Installs the reader of the allocator's figures that `/metrics` calls at every scrape; the
/// first one installed stays. The library crates choose no allocator, so only a binary that
/// sets one knows how to read it.
pub fn set_allocator_stats(reader: fn() -> Option<AllocatorStats>) {
    let _ = ALLOCATOR_STATS.set(reader);
}

/// The process's resident set from `/proc/self/status`, in bytes (None off Linux).
fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|line| line.strip_prefix("VmRSS:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib * 1024)
}

fn render_memory(out: &mut String, resident: Option<u64>, allocator: Option<AllocatorStats>) {
    if let Some(bytes) = resident {
        out.push_str("# HELP process_resident_memory_bytes Resident memory size in bytes.\n");
        out.push_str("# TYPE process_resident_memory_bytes gauge\n");
        let _ = writeln!(out, "process_resident_memory_bytes {bytes}");
    }
    if let Some(stats) = allocator {
        out.push_str("# HELP colloquy_allocator_bytes The memory allocator's figures: allocated (live allocations), active (their pages), metadata, resident (its pages in physical memory), retained (address space kept, not resident).\n");
        out.push_str("# TYPE colloquy_allocator_bytes gauge\n");
        for (kind, bytes) in [
            ("allocated", stats.allocated),
            ("active", stats.active),
            ("metadata", stats.metadata),
            ("resident", stats.resident),
            ("retained", stats.retained),
        ] {
            let _ = writeln!(out, "colloquy_allocator_bytes{{kind=\"{kind}\"}} {bytes}");
        }
    }
}

/// The subscriptions by how their deliveries stand, and the age of the oldest failure.
fn render_webhooks(out: &mut String, health: &colloquy_projections::webhooks::state::Health, now_ms: i64) {
    out.push_str("# HELP colloquy_webhook_subscriptions Webhook subscriptions (every process's) by state: ok, failing (retrying), paused (failed too long; resume them).\n");
    out.push_str("# TYPE colloquy_webhook_subscriptions gauge\n");
    for (state, count) in [("ok", health.ok), ("failing", health.failing), ("paused", health.paused)] {
        let _ = writeln!(out, "colloquy_webhook_subscriptions{{state=\"{state}\"}} {count}");
    }
    out.push_str("# HELP colloquy_webhook_oldest_failure_seconds How long the oldest failing subscription has failed (0 when none is).\n");
    out.push_str("# TYPE colloquy_webhook_oldest_failure_seconds gauge\n");
    #[allow(clippy::cast_precision_loss)]
    let seconds = health.failing_since.map_or(0.0, |since| (now_ms - since).max(0) as f64 / 1000.0);
    let _ = writeln!(out, "colloquy_webhook_oldest_failure_seconds {seconds}");
}

/// The middleware that counts every answer.
pub async fn layer(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let response = next.run(request).await;
    state.metrics().record(&method, &route, response.status().as_u16(), started.elapsed().as_secs_f64());
    response
}

/// `GET /metrics` (no token: scrape it from inside your network).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text format: HTTP answers by method, route and status; \
        commands by route and outcome with a latency histogram; the aggregate caches' sizes, and their loads and events read from the store; the log's head; \
        every consumer's lag; webhook requests by outcome with their latency, events delivered, and the subscriptions by state; \
        the process's resident memory and its allocator's figures.",
        content_type = "text/plain; version=0.0.4", body = String,
        example = "# TYPE colloquy_log_head gauge\ncolloquy_log_head 1042\n"))
)]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let mut out = String::new();
    state.metrics().render(&mut out);
    let caches = [
        ("contact", state.contacts().cached()),
        ("conversation", state.conversations().cached()),
        ("group", state.groups().cached()),
    ];
    let reads = [
        ("contact", state.contacts().reads()),
        ("conversation", state.conversations().reads()),
        ("group", state.groups().reads()),
    ];
    let families = [
        (
            "aggregates",
            "gauge",
            "Loaded aggregates kept in memory.",
            caches.map(|(a, size)| (a, size.aggregates as u64)),
        ),
        (
            "events",
            "gauge",
            "Events the cached aggregates were built from.",
            caches.map(|(a, size)| (a, size.events as u64)),
        ),
        (
            "bytes",
            "gauge",
            "The cached aggregates' memory, as their states estimate it.",
            caches.map(|(a, size)| (a, size.bytes as u64)),
        ),
        (
            "loads_total",
            "counter",
            "Aggregates read from the store (from their snapshot or first event): not cached, or evicted.",
            reads.map(|(a, r)| (a, r.loads)),
        ),
        (
            "snapshot_loads_total",
            "counter",
            "Of those loads, the ones that started from a snapshot.",
            reads.map(|(a, r)| (a, r.snapshots)),
        ),
        (
            "events_read_total",
            "counter",
            "Events read from the store to load aggregates or bring cached ones up to date.",
            reads.map(|(a, r)| (a, r.events)),
        ),
    ];
    for (name, kind, help, values) in families {
        let _ = writeln!(out, "# HELP colloquy_aggregate_cache_{name} {help}");
        let _ = writeln!(out, "# TYPE colloquy_aggregate_cache_{name} {kind}");
        for (aggregate, value) in values {
            let _ = writeln!(out, "colloquy_aggregate_cache_{name}{{aggregate=\"{aggregate}\"}} {value}");
        }
    }
    out.push_str("# HELP colloquy_projection_failures_total Times a projector of this process failed to apply the log.\n");
    out.push_str("# TYPE colloquy_projection_failures_total counter\n");
    for projector in state.projectors().iter() {
        let _ = writeln!(
            out,
            "colloquy_projection_failures_total{{projection=\"{}\"}} {}",
            projector.name(),
            projector.failures()
        );
    }
    out.push_str("# HELP colloquy_projection_stalled 1 while an error keeps a projector of this process from applying the log.\n");
    out.push_str("# TYPE colloquy_projection_stalled gauge\n");
    for projector in state.projectors().iter() {
        let stalled = u8::from(projector.stall().is_some());
        let _ = writeln!(out, "colloquy_projection_stalled{{projection=\"{}\"}} {stalled}", projector.name());
    }
    out.push_str("# HELP colloquy_event_stream_log_reads_total Reads of the log for event streams: by their shared reader, and by streams catching up.\n");
    out.push_str("# TYPE colloquy_event_stream_log_reads_total counter\n");
    let _ = writeln!(out, "colloquy_event_stream_log_reads_total {}", state.log_feed().reads());
    render_memory(&mut out, resident_memory_bytes(), ALLOCATOR_STATS.get().and_then(|read| read()));
    crate::webhook_delivery::stats::render(&mut out);
    let store = state.store();
    if let Ok(health) = colloquy_projections::webhooks::state::health(store).await {
        render_webhooks(&mut out, &health, chrono::Utc::now().timestamp_millis());
    }
    if let Ok(head) = colloquy_infra::log::read_head(store).await {
        out.push_str("# HELP colloquy_log_head Events appended to the global log (its head position).\n");
        out.push_str("# TYPE colloquy_log_head gauge\n");
        let _ = writeln!(out, "colloquy_log_head {head}");
        let projections: Vec<String> = state.projectors().iter().map(|p| p.checkpoint_name()).collect();
        if let Ok(lags) = colloquy_infra::checkpoints::consumer_lags(store, head, &projections).await {
            out.push_str("# HELP colloquy_consumer_lag_events Events a consumer trails the log by.\n");
            out.push_str("# TYPE colloquy_consumer_lag_events gauge\n");
            for consumer in lags {
                let _ = writeln!(
                    out,
                    "colloquy_consumer_lag_events{{consumer=\"{}\"}} {}",
                    escape(&consumer.name),
                    consumer.lag
                );
            }
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], out).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_rendered_as_gauges_and_left_out_where_unknown() {
        let stats = AllocatorStats { allocated: 10, active: 20, metadata: 3, resident: 40, retained: 50 };
        let mut out = String::new();
        render_memory(&mut out, Some(4096), Some(stats));
        for line in [
            "# TYPE process_resident_memory_bytes gauge",
            "process_resident_memory_bytes 4096",
            "# TYPE colloquy_allocator_bytes gauge",
            "colloquy_allocator_bytes{kind=\"allocated\"} 10",
            "colloquy_allocator_bytes{kind=\"active\"} 20",
            "colloquy_allocator_bytes{kind=\"metadata\"} 3",
            "colloquy_allocator_bytes{kind=\"resident\"} 40",
            "colloquy_allocator_bytes{kind=\"retained\"} 50",
        ] {
            assert!(out.lines().any(|l| l == line), "missing {line:?} in\n{out}");
        }
        let mut none = String::new();
        render_memory(&mut none, None, None);
        assert_eq!(none, "");
    }

    #[test]
    fn webhook_subscriptions_are_rendered_by_state_with_the_oldest_failure() {
        use colloquy_projections::webhooks::state::Health;
        let health = Health { ok: 3, failing: 2, paused: 1, failing_since: Some(10_000) };
        let mut out = String::new();
        render_webhooks(&mut out, &health, 75_500);
        for line in [
            "colloquy_webhook_subscriptions{state=\"ok\"} 3",
            "colloquy_webhook_subscriptions{state=\"failing\"} 2",
            "colloquy_webhook_subscriptions{state=\"paused\"} 1",
            "colloquy_webhook_oldest_failure_seconds 65.5",
        ] {
            assert!(out.lines().any(|l| l == line), "missing {line:?} in\n{out}");
        }
        let mut none = String::new();
        render_webhooks(&mut none, &Health::default(), 75_500);
        assert!(none.lines().any(|l| l == "colloquy_webhook_oldest_failure_seconds 0"), "{none}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_resident_set_is_read_on_linux() {
        let bytes = resident_memory_bytes().expect("VmRSS in /proc/self/status");
        // A test process holds at least a megabyte and far less than its machine.
        assert!((1 << 20..1 << 40).contains(&bytes), "{bytes}");
    }
}
