//! `colloquy audit` as an auditor runs it, on both stores: `verify` walks the chain clean,
//! `export` writes a tenant's history that `verify --file` checks (and a changed line fails),
//! and `replay` of the export (JSON Lines or CloudEvents) into a new store rebuilds read models
//! whose figures are the source's.
//!
//! It lives in api/ because only this package's tests can run the `colloquy` binary.

#![allow(clippy::unwrap_used)]

#[macro_use]
#[path = "../../tests/tests/common/mod.rs"]
mod common;

use std::process::{Command, Output};

use reqwest::StatusCode;
use serde_json::{json, Value};

use common::{Backend, TestServer};

/// Runs `colloquy audit <args>` on the store of `env`.
fn audit(env: &[(&str, String)], args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_colloquy"))
        .arg("audit")
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("COLLOQUY_LOG", "warn")
        .output()
        .unwrap()
}

/// The store's place and its master key (`master_key`, base64), as the CLI takes them.
fn store_env(server: &TestServer, master_key: &str) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("COLLOQUY_DATA_DIR", server.config().data_dir.display().to_string()),
        ("COLLOQUY_MASTER_KEY", master_key.to_owned()),
    ];
    if let Some(url) = server.database_url() {
        env.push(("COLLOQUY_DATABASE_URL", url.to_owned()));
    }
    env
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// What the replica must agree on: the summary's figures and the conversations listed.
async fn figures(server: &TestServer, head: i64) -> (Value, Value) {
    let summary =
        server.get(&format!("/v1/reports/summary?min_position={head}&since=2000-01-01T00:00:00Z")).await;
    assert_eq!(summary.status, StatusCode::OK, "{:?}", summary.body);
    let mut lines = summary.body["metrics"].clone();
    for line in lines.as_array_mut().unwrap() {
        for period in ["current", "previous"] {
            line[period].as_object_mut().unwrap().remove("facts");
        }
    }
    let list = server.get(&format!("/v1/conversations?min_position={head}&limit=100")).await;
    assert_eq!(list.status, StatusCode::OK, "{:?}", list.body);
    let mut ids: Vec<String> = list.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| format!("{}:{}", c["id"], c["status"]))
        .collect();
    ids.sort();
    (lines, json!(ids))
}

async fn head_of(server: &TestServer) -> i64 {
    let page = server.get("/v1/events?limit=1000").await;
    page.body["last_position"].as_i64().unwrap()
}

async fn an_export_verifies_and_replays_into_the_same_figures(backend: Backend) {
    let server = TestServer::start(backend).await;
    let master_key = common::master_key_text();
    for n in 0..4 {
        let id = server.conversation().await;
        server.customer_message(&id, &format!("question {n}")).await;
        let reply = json!({"sender": {"kind": "user", "id": "ana"}, "text": "answer"});
        assert!(server.post(&format!("/v1/conversations/{id}/messages"), reply).await.status.is_success());
        if n % 2 == 0 {
            let closed =
                server.post(&format!("/v1/conversations/{id}/status"), json!({"status": "closed"})).await;
            assert!(closed.status.is_success());
        }
    }
    let head = head_of(&server).await;
    let source = figures(&server, head).await;
    let env = store_env(&server, master_key);

    let verified = audit(&env, &["verify"]);
    assert!(verified.status.success(), "{}", text(&verified));
    assert!(text(&verified).contains(&format!("verified {head} events")), "{}", text(&verified));

    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("history.jsonl");
    let cloud = dir.path().join("history.cloudevents");
    let exported = audit(&env, &["export", "--tenant", "default", "--out", jsonl.to_str().unwrap()]);
    assert!(exported.status.success(), "{}", text(&exported));
    let lines = std::fs::read_to_string(&jsonl).unwrap();
    assert_eq!(lines.lines().count(), usize::try_from(head).unwrap(), "every event of the tenant");
    let args = ["export", "--format", "cloudevents", "--out", cloud.to_str().unwrap()];
    assert!(audit(&env, &args).status.success());
    let first: Value =
        serde_json::from_str(std::fs::read_to_string(&cloud).unwrap().lines().next().unwrap()).unwrap();
    assert_eq!(first["specversion"], "1.0");

    let checked = audit(&[], &["verify", "--file", jsonl.to_str().unwrap()]);
    assert!(checked.status.success(), "{}", text(&checked));
    // A changed line no longer links (an agent's answer: a customer's text is sealed, below).
    assert!(!lines.contains("question 2"), "a customer's text is exported sealed");
    let changed = dir.path().join("changed.jsonl");
    assert!(lines.contains("\"answer\""));
    std::fs::write(&changed, lines.replacen("\"answer\"", "\"no answer\"", 1)).unwrap();
    let refused = audit(&[], &["verify", "--file", changed.to_str().unwrap()]);
    assert!(!refused.status.success());
    assert!(text(&refused).contains("breaks at position"), "{}", text(&refused));

    // Each export replays into a new store with the same figures.
    for file in [&jsonl, &cloud] {
        let replica_dir = tempfile::tempdir().unwrap();
        let replica_env = vec![("COLLOQUY_DATA_DIR", replica_dir.path().display().to_string())];
        let replayed = audit(&replica_env, &["replay", "--file", file.to_str().unwrap()]);
        assert!(replayed.status.success(), "{}", text(&replayed));
        let replica = TestServer::start_with(Backend::Sqlite, |config| {
            config.data_dir = replica_dir.path().to_path_buf()
        })
        .await;
        assert_eq!(head_of(&replica).await, head);
        assert_eq!(figures(&replica, head).await, source, "{}", file.display());
        replica.stop().await;
        assert!(audit(&replica_env, &["verify"]).status.success(), "the replica's own chain");
        // A store that holds events takes no replay.
        let again = audit(&replica_env, &["replay", "--file", file.to_str().unwrap()]);
        assert!(!again.status.success());
        assert!(text(&again).contains("new, empty store"), "{}", text(&again));
    }
    server.stop().await;
}

on_both_stores!(an_export_verifies_and_replays_into_the_same_figures);
