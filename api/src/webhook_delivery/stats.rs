//! What this process's webhook requests came to, for `/metrics`: requests by outcome, their
//! latency, and the events subscribers took. Process-wide counters, like the process's own
//! (each process delivers the subscriptions it holds; a scrape sums the processes).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use super::send::Attempt;

/// Upper bounds of the request latency buckets, in seconds (the default timeout is 10 s).
const BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// The outcomes counted, as `/metrics` labels them.
const OUTCOMES: [&str; 4] = ["2xx", "4xx", "5xx", "no_answer"];

/// One process's counts.
#[derive(Debug, Default)]
pub struct Stats {
    requests: [AtomicU64; OUTCOMES.len()],
    buckets: [AtomicU64; BUCKETS.len()],
    latency_ms: AtomicU64,
    events: AtomicU64,
}

static STATS: Stats = Stats::new();

impl Stats {
    const fn new() -> Self {
        Self {
            requests: [const { AtomicU64::new(0) }; OUTCOMES.len()],
            buckets: [const { AtomicU64::new(0) }; BUCKETS.len()],
            latency_ms: AtomicU64::new(0),
            events: AtomicU64::new(0),
        }
    }

    /// Counts `attempt`: a status outside 2xx and 5xx counts with 4xx (a 1xx or a redirect that
    /// was not followed is the subscriber's to fix too).
    fn request(&self, attempt: &Attempt) {
        let outcome = match attempt.status {
            None => 3,
            Some(status) if (200..300).contains(&status) => 0,
            Some(status) if status >= 500 => 2,
            Some(_) => 1,
        };
        self.requests[outcome].fetch_add(1, Ordering::Relaxed);
        let millis = u64::try_from(attempt.latency_ms).unwrap_or_default();
        self.latency_ms.fetch_add(millis, Ordering::Relaxed);
        #[allow(clippy::cast_precision_loss)]
        let seconds = millis as f64 / 1000.0;
        for (bound, count) in BUCKETS.iter().zip(&self.buckets) {
            if seconds <= *bound {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn render(&self, out: &mut String) {
        out.push_str("# HELP colloquy_webhook_requests_total Webhook requests this process made (deliveries and pings), by outcome: the answer's status class, or no_answer (refused, timed out, unreachable).\n");
        out.push_str("# TYPE colloquy_webhook_requests_total counter\n");
        let mut total = 0;
        for (outcome, count) in OUTCOMES.iter().zip(&self.requests) {
            let count = count.load(Ordering::Relaxed);
            total += count;
            let _ = writeln!(out, "colloquy_webhook_requests_total{{outcome=\"{outcome}\"}} {count}");
        }
        out.push_str("# HELP colloquy_webhook_request_duration_seconds Webhook requests' time, from sending to the end of the answer read.\n");
        out.push_str("# TYPE colloquy_webhook_request_duration_seconds histogram\n");
        for (bound, count) in BUCKETS.iter().zip(&self.buckets) {
            let count = count.load(Ordering::Relaxed);
            let _ =
                writeln!(out, "colloquy_webhook_request_duration_seconds_bucket{{le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(out, "colloquy_webhook_request_duration_seconds_bucket{{le=\"+Inf\"}} {total}");
        #[allow(clippy::cast_precision_loss)]
        let sum = self.latency_ms.load(Ordering::Relaxed) as f64 / 1000.0;
        let _ = writeln!(out, "colloquy_webhook_request_duration_seconds_sum {sum}");
        let _ = writeln!(out, "colloquy_webhook_request_duration_seconds_count {total}");
        out.push_str("# HELP colloquy_webhook_events_delivered_total Events subscribers took (answered 2xx) from this process.\n");
        out.push_str("# TYPE colloquy_webhook_events_delivered_total counter\n");
        let _ =
            writeln!(out, "colloquy_webhook_events_delivered_total {}", self.events.load(Ordering::Relaxed));
    }
}

/// Counts a request this process made.
pub fn request(attempt: &Attempt) {
    STATS.request(attempt);
}

/// Counts `count` events a subscriber took.
pub fn delivered(count: i64) {
    STATS.events.fetch_add(u64::try_from(count).unwrap_or_default(), Ordering::Relaxed);
}

/// Appends this process's counts to `out`, in the Prometheus text format.
pub fn render(out: &mut String) {
    STATS.render(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(status: Option<u16>, latency_ms: i64) -> Attempt {
        Attempt { status, error: None, latency_ms, excerpt: None }
    }

    #[test]
    fn requests_are_counted_by_status_class_with_their_latency() {
        let stats = Stats::new();
        for (status, ms) in [
            (Some(200), 3),
            (Some(204), 40),
            (Some(410), 7),
            (Some(503), 900),
            (None, 10_000),
            (Some(302), 1),
        ] {
            stats.request(&attempt(status, ms));
        }
        stats.events.fetch_add(12, Ordering::Relaxed);
        let mut out = String::new();
        stats.render(&mut out);
        for line in [
            "colloquy_webhook_requests_total{outcome=\"2xx\"} 2",
            "colloquy_webhook_requests_total{outcome=\"4xx\"} 2",
            "colloquy_webhook_requests_total{outcome=\"5xx\"} 1",
            "colloquy_webhook_requests_total{outcome=\"no_answer\"} 1",
            "colloquy_webhook_request_duration_seconds_bucket{le=\"0.005\"} 2",
            "colloquy_webhook_request_duration_seconds_bucket{le=\"0.01\"} 3",
            "colloquy_webhook_request_duration_seconds_bucket{le=\"0.05\"} 4",
            "colloquy_webhook_request_duration_seconds_bucket{le=\"1\"} 5",
            "colloquy_webhook_request_duration_seconds_bucket{le=\"10\"} 6",
            "colloquy_webhook_request_duration_seconds_bucket{le=\"+Inf\"} 6",
            "colloquy_webhook_request_duration_seconds_sum 10.951",
            "colloquy_webhook_request_duration_seconds_count 6",
            "colloquy_webhook_events_delivered_total 12",
        ] {
            assert!(out.lines().any(|l| l == line), "missing {line:?} in\n{out}");
        }
    }
}
