//! Graceful shutdown of the real binary: `colloquy serve` gets SIGTERM while clients post
//! commands, exits successfully, and a new process on the same store has every acknowledged
//! command and nothing else. (tests/tests/shutdown.rs checks more, in-process; this one covers
//! the signal handling in main.rs.) It lives in api/ because only this package's tests can run
//! the `colloquy` binary.

#![allow(clippy::unwrap_used)]

#[path = "../../tests/tests/common/mod.rs"]
mod common;

use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use colloquy_infra::{Store, StoreLocation};
use common::{free_port, Backend, TestDatabase};

const CLIENTS: usize = 8;
const ACKNOWLEDGED_BEFORE_SIGTERM: usize = 60;

struct Serve {
    child: Child,
    base: String,
}

impl Serve {
    async fn start(env: &[(&str, String)]) -> Self {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_colloquy"))
            .arg("serve")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("COLLOQUY_LISTEN", format!("127.0.0.1:{port}"))
            .env("COLLOQUY_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        while reqwest::get(format!("{base}/healthz")).await.is_err() {
            assert!(started.elapsed() < Duration::from_secs(30), "colloquy serve did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self { child, base }
    }

    /// Sends SIGTERM and waits for the process to exit.
    async fn terminate(mut self) -> ExitStatus {
        let signalled = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(signalled.success());
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "colloquy serve did not exit after SIGTERM");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Opens conversations and adds messages until the server goes away; returns the paths of what
/// it was told was created.
async fn client(
    base: String,
    token: String,
    acknowledged: Arc<AtomicUsize>,
    created: Arc<Mutex<Vec<String>>>,
) {
    let http = reqwest::Client::new();
    loop {
        let contact = uuid::Uuid::new_v4();
        let conversation = uuid::Uuid::new_v4();
        let mut commands = vec![
            (
                "/v1/contacts".to_owned(),
                json!({"id": contact, "first_name": "Term"}),
                format!("/v1/contacts/{contact}"),
            ),
            (
                "/v1/conversations".to_owned(),
                json!({"id": conversation, "contact_id": contact, "channel": "sms"}),
                format!("/v1/conversations/{conversation}"),
            ),
        ];
        for n in 0..3 {
            let message = uuid::Uuid::new_v4();
            commands.push((
                format!("/v1/conversations/{conversation}/messages"),
                json!({"id": message, "sender": {"kind": "customer"}, "text": format!("t{n}")}),
                format!("/v1/conversations/{conversation}/messages/{message}"),
            ));
        }
        for (path, body, resource) in commands {
            let answer = http.post(format!("{base}{path}")).bearer_auth(&token).json(&body).send().await;
            match answer {
                Ok(response) if response.status().is_success() => {
                    created.lock().unwrap().push(resource);
                    acknowledged.fetch_add(1, Ordering::SeqCst);
                }
                Ok(response) => panic!("{path} refused: {}", response.status()),
                Err(_) => return,
            }
        }
    }
}

async fn sigterm_finishes_in_flight_commands_and_loses_none(backend: Backend) {
    let data_dir = tempfile::tempdir().unwrap();
    let database = match backend {
        Backend::Postgres => Some(TestDatabase::create().await),
        Backend::Sqlite => None,
    };
    let token = format!("cq_test_{}", uuid::Uuid::new_v4().simple());
    let mut env = vec![
        ("COLLOQUY_DATA_DIR", data_dir.path().display().to_string()),
        ("COLLOQUY_BOOTSTRAP_TOKEN", token.clone()),
        ("COLLOQUY_DB_MAX_CONNECTIONS", "4".to_owned()),
    ];
    if let Some(database) = &database {
        env.push(("COLLOQUY_DATABASE_URL", database.url.clone()));
    }
    let serve = Serve::start(&env).await;
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let created = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            tokio::spawn(client(serve.base.clone(), token.clone(), acknowledged.clone(), created.clone()))
        })
        .collect();
    let started = Instant::now();
    while acknowledged.load(Ordering::SeqCst) < ACKNOWLEDGED_BEFORE_SIGTERM {
        assert!(started.elapsed() < Duration::from_secs(60), "the load did not get going");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let exit = serve.terminate().await;
    assert!(exit.success(), "colloquy serve exits cleanly on SIGTERM: {exit}");
    for client in clients {
        tokio::time::timeout(Duration::from_secs(30), client).await.unwrap().unwrap();
    }
    let created = created.lock().unwrap().clone();

    // One event per command: the store holds exactly the acknowledged ones.
    let location = match &database {
        Some(database) => StoreLocation::Postgres { url: database.url.clone(), max_connections: 2 },
        None => StoreLocation::Sqlite { path: data_dir.path().join("colloquy.db") },
    };
    let store = Store::open(&location).await.unwrap();
    let head = colloquy_infra::log::read_head(&store).await.unwrap();
    store.close().await;
    assert_eq!(head, created.len() as i64, "every command the server ran was answered");

    let serve = Serve::start(&env).await;
    let http = reqwest::Client::new();
    for resource in &created {
        let response =
            http.get(format!("{}{resource}", serve.base)).bearer_auth(&token).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "acknowledged {resource} is gone");
    }
    assert!(serve.terminate().await.success());
}

on_both_stores!(sigterm_finishes_in_flight_commands_and_loses_none);
