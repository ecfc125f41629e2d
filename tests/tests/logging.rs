//! What the server logs about failed requests: a 503 that tells the client to retry (here a read
//! model that has not reached `min_position`) is a warning; ERROR is kept for what is ours to fix.
//! A test binary of its own, since it installs the process's one tracing subscriber.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use reqwest::StatusCode;
use tracing_subscriber::fmt::MakeWriter;

use common::{Backend, TestServer};

/// Everything the subscriber writes, kept for the test to read.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn a_read_model_behind_min_position_is_logged_as_a_warning_not_an_error() {
    let captured = Captured::default();
    tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .init();
    let server = TestServer::start_with(Backend::Sqlite, |config| config.min_position_timeout_ms = 100).await;
    server.conversation().await;
    server
        .get("/v1/conversations?min_position=1000000")
        .await
        .assert_problem(StatusCode::SERVICE_UNAVAILABLE);
    server.stop().await;

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let failure = logs
        .lines()
        .find(|line| line.contains("response failed") && line.contains("503"))
        .unwrap_or_else(|| panic!("no failure line for the 503 in\n{logs}"));
    assert!(failure.contains(" WARN "), "{failure}");
    assert!(!logs.lines().any(|line| line.contains(" ERROR ")), "an ERROR line in\n{logs}");
}
