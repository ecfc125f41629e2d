//! What the server logs: a 503 that tells the client to retry (here a read model that has not
//! reached `min_position`) is a warning, ERROR being kept for what is ours to fix; and a stall
//! (an append held up for over a second) is a warning that says what stalled. A test binary of
//! its own, since it installs the process's one tracing subscriber, which its tests share.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use reqwest::StatusCode;
use sqlx::Connection;
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

/// The process's subscriber, installed by whichever test comes first; what it has written so far.
fn captured() -> &'static Captured {
    static CAPTURED: OnceLock<Captured> = OnceLock::new();
    CAPTURED.get_or_init(|| {
        let captured = Captured::default();
        tracing_subscriber::fmt()
            .with_writer(captured.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .init();
        captured
    })
}

fn logs() -> String {
    String::from_utf8(captured().0.lock().unwrap().clone()).unwrap()
}

#[tokio::test]
async fn a_read_model_behind_min_position_is_logged_as_a_warning_not_an_error() {
    captured();
    // No projector runs here, so the list never reaches the write's position.
    let roles = colloquy_api::Roles { http: true, relay: true, projectors: false };
    let server =
        TestServer::start_roles(Backend::Sqlite, roles, |config| config.min_position_timeout_ms = 100).await;
    let position = server.customer_message(&server.conversation().await, "hello").await;
    server
        .get(&format!("/v1/conversations?min_position={position}"))
        .await
        .assert_problem(StatusCode::SERVICE_UNAVAILABLE);
    server.stop().await;

    let logs = logs();
    let failure = logs
        .lines()
        .find(|line| line.contains("response failed") && line.contains("503"))
        .unwrap_or_else(|| panic!("no failure line for the 503 in\n{logs}"));
    assert!(failure.contains(" WARN "), "{failure}");
    assert!(!logs.lines().any(|line| line.contains(" ERROR ")), "an ERROR line in\n{logs}");
}

#[tokio::test]
async fn an_append_held_up_for_over_a_second_is_logged_as_a_warning() {
    captured();
    let server = TestServer::start(Backend::Postgres).await;
    let id = server.conversation().await;
    // Another session takes a lock that every insert into the events waits for, and holds it.
    let mut blocker = sqlx::PgConnection::connect(server.database_url().unwrap()).await.unwrap();
    sqlx::raw_sql("BEGIN; LOCK TABLE events IN SHARE MODE").execute(&mut blocker).await.unwrap();
    let posting = {
        let (client, url, token) = (
            server.client.clone(),
            server.url(&format!("/v1/conversations/{id}/messages")),
            server.token.clone(),
        );
        tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(token)
                .json(&serde_json::json!({"sender": {"kind": "customer"}, "text": "held up"}))
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    // Held well past the second, so that the append is over it however late the request reached it.
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    assert!(!posting.is_finished(), "the message was answered while its append could not commit");
    sqlx::raw_sql("ROLLBACK").execute(&mut blocker).await.unwrap();
    assert_eq!(posting.await.unwrap(), StatusCode::CREATED);
    server.stop().await;

    let logs = logs();
    let stalled = logs
        .lines()
        .find(|line| line.contains("an append took over a second"))
        .unwrap_or_else(|| panic!("no warning for the held-up append in\n{logs}"));
    assert!(stalled.contains(" WARN "), "{stalled}");
    assert!(stalled.contains("commands=1") && stalled.contains("events=1"), "{stalled}");
}
