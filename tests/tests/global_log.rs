//! The global log: positions strictly increase in the order a tailer sees commits, and a tailer
//! that reads "after P" while many writers commit concurrently never misses an event.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::{json, Value};

use common::{Backend, TestServer};

async fn a_tailer_misses_nothing_while_many_writers_commit(backend: Backend) {
    let server = Arc::new(TestServer::start(backend).await);
    let mut conversations = Vec::new();
    for _ in 0..8 {
        conversations.push(server.conversation().await);
    }
    let done = Arc::new(AtomicBool::new(false));
    let tailer = {
        let server = server.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut seen: Vec<Value> = Vec::new();
            let mut after = 0;
            loop {
                let finished = done.load(Ordering::SeqCst);
                let page = server.get(&format!("/v1/events?after={after}&limit=1000")).await;
                assert_eq!(page.status, StatusCode::OK, "{:?}", page.body);
                let data = page.body["data"].as_array().unwrap().clone();
                after = page.body["last_position"].as_i64().unwrap();
                let empty = data.is_empty();
                seen.extend(data);
                if finished && empty {
                    return seen;
                }
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
        })
    };
    let writers: Vec<_> = (0..16)
        .map(|writer| {
            let server = server.clone();
            let conversations = conversations.clone();
            tokio::spawn(async move {
                for n in 0..25 {
                    let id = &conversations[(writer + n) % conversations.len()];
                    let reply = server
                        .post(
                            &format!("/v1/conversations/{id}/messages"),
                            json!({"sender": {"kind": "customer"}, "text": format!("w{writer} n{n}")}),
                        )
                        .await;
                    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
                    assert!(
                        reply.headers.contains_key("colloquy-position"),
                        "every command answers its position"
                    );
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    // Every write was acknowledged with its position, so the log has all of them by now.
    done.store(true, Ordering::SeqCst);
    let seen = tailer.await.unwrap();

    let positions: Vec<i64> = seen.iter().map(|e| e["position"].as_i64().unwrap()).collect();
    assert!(positions.windows(2).all(|w| w[1] == w[0] + 1), "positions are gap-free and increasing");
    assert_eq!(positions.first(), Some(&1));
    let tailed: HashSet<(String, i64)> = seen
        .iter()
        .map(|e| (e["aggregate_id"].as_str().unwrap().to_owned(), e["sequence"].as_i64().unwrap()))
        .collect();
    assert_eq!(tailed.len(), seen.len(), "no event twice");
    let mut stored = HashSet::new();
    for id in &conversations {
        for event in server.all_events("conversations", id).await {
            stored.insert((id.clone(), event["sequence"].as_i64().unwrap()));
        }
    }
    assert_eq!(stored.len(), 8 + 16 * 25);
    assert!(stored.is_subset(&tailed), "the tailer saw every conversation event");
    // Per aggregate, log order is stream order.
    for id in &conversations {
        let sequences: Vec<i64> = seen
            .iter()
            .filter(|e| e["aggregate_id"] == id.as_str())
            .map(|e| e["sequence"].as_i64().unwrap())
            .collect();
        assert!(sequences.windows(2).all(|w| w[1] == w[0] + 1), "{id}: {sequences:?}");
    }
    Arc::try_unwrap(server).ok().unwrap().stop().await;
}

async fn a_commands_position_names_its_event(backend: Backend) {
    let server = TestServer::start(backend).await;
    let id = server.conversation().await;
    let reply = server
        .post(
            &format!("/v1/conversations/{id}/messages"),
            json!({"sender": {"kind": "customer"}, "text": "where am I"}),
        )
        .await;
    let position: i64 = reply.headers["colloquy-position"].to_str().unwrap().parse().unwrap();
    let page = server.get(&format!("/v1/events?after={}&limit=1", position - 1)).await;
    let event = &page.body["data"][0];
    assert_eq!(event["position"], position);
    assert_eq!(event["event_type"], "MessageAdded");
    assert_eq!(event["data"]["content"]["text"], "where am I");
    server.stop().await;
}

on_both_stores!(a_tailer_misses_nothing_while_many_writers_commit, a_commands_position_names_its_event);
