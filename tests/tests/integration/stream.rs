//! The live event stream (`GET /v1/events/stream`, Server-Sent Events), on both stores: events
//! arrive live as CloudEvents, filters apply, and a reconnect with `Last-Event-ID` resumes
//! without loss or repeats.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::{Backend, TestServer};

/// An open SSE response and what has been read of it.
pub(crate) struct Subscription {
    response: reqwest::Response,
    buffer: String,
}

impl Subscription {
    pub(crate) async fn open(server: &TestServer, query: &str, last_event_id: Option<&str>) -> Self {
        Self::open_as(server, &server.config().bootstrap_token.clone().unwrap(), query, last_event_id).await
    }

    async fn open_as(server: &TestServer, secret: &str, query: &str, last_event_id: Option<&str>) -> Self {
        let mut request =
            reqwest::Client::new().get(server.url(&format!("/v1/events/stream{query}"))).bearer_auth(secret);
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
        Self { response, buffer: String::new() }
    }

    /// The next `count` events as (id, CloudEvent), waiting up to 10 s.
    pub(crate) async fn take(&mut self, count: usize) -> Vec<(i64, Value)> {
        let mut events = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while events.len() < count {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut id = None;
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().parse::<i64>().unwrap());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if let Some(id) = id {
                    events.push((id, serde_json::from_str(&data).unwrap()));
                }
            }
            if events.len() >= count {
                break;
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .expect("events arrive within 10 s")
                .unwrap()
                .expect("the stream stays open");
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
        events
    }
}

async fn message(server: &TestServer, id: &str, text: &str) {
    let reply = server
        .post(
            &format!("/v1/conversations/{id}/messages"),
            json!({"sender": {"kind": "customer"}, "text": text}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED);
}

async fn events_stream_live_and_resume_after_a_disconnect(backend: Backend) {
    let server = TestServer::start(backend).await;
    let id = server.conversation().await;
    // From the head: only what happens after subscribing.
    let mut live = Subscription::open(&server, "", None).await;
    message(&server, &id, "one").await;
    message(&server, &id, "two").await;
    let first = live.take(2).await;
    assert_eq!(first[0].1["type"], "colloquy.conversation.MessageAdded.v1.0");
    assert_eq!(first[0].1["data"]["content"]["text"], "one", "{}", first[0].1);
    assert!(first[1].0 > first[0].0);
    drop(live);

    // Disconnected while three more happen; the reconnect gets exactly those.
    for text in ["three", "four", "five"] {
        message(&server, &id, text).await;
    }
    let last_seen = first[1].0.to_string();
    let mut resumed = Subscription::open(&server, "", Some(&last_seen)).await;
    let rest = resumed.take(3).await;
    let texts: Vec<&str> = rest.iter().map(|(_, e)| e["data"]["content"]["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["three", "four", "five"]);
    let positions: Vec<i64> = rest.iter().map(|(p, _)| *p).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]) && positions[0] > first[1].0);

    // Filters: one aggregate's events only, by type, from the start.
    let other = server.conversation().await;
    message(&server, &other, "elsewhere").await;
    let mut filtered =
        Subscription::open(&server, &format!("?after=0&aggregate_id={other}&event_type=MessageAdded"), None)
            .await;
    let only = filtered.take(1).await;
    assert_eq!(only[0].1["data"]["content"]["text"], "elsewhere");
    assert_eq!(only[0].1["subject"], format!("conversation/{other}"));

    // A bad resume point is a 400.
    let reply = reqwest::Client::new()
        .get(server.url("/v1/events/stream"))
        .bearer_auth(server.config().bootstrap_token.clone().unwrap())
        .header("last-event-id", "yesterday")
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::BAD_REQUEST);
    server.stop().await;
}

/// A token's streams are capped (the one past the cap is a 429, and a place comes back when a
/// stream closes), and a revoked token's open stream ends within seconds.
async fn streams_are_capped_per_token_and_end_when_it_is_revoked(backend: Backend) {
    let server = TestServer::start(backend).await;
    let created = server.post("/v1/tokens", json!({"name": "listener", "scopes": ["events:read"]})).await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let (token_id, secret) = (
        created.body["id"].as_str().unwrap().to_owned(),
        created.body["secret"].as_str().unwrap().to_owned(),
    );
    let open = || {
        let request = server.client.get(server.url("/v1/events/stream")).bearer_auth(&secret);
        async move { request.send().await.unwrap() }
    };
    let mut streams = Vec::new();
    for _ in 0..8 {
        let response = open().await;
        assert_eq!(response.status(), StatusCode::OK);
        streams.push(response);
    }
    let refused = open().await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.headers()["content-type"], "application/problem+json");
    // The cap is the token's: the bootstrap token still opens one.
    let mut others = Subscription::open(&server, "", None).await;
    drop(streams.pop());
    let again =
        common::eventually(Duration::from_secs(10), "a closed stream gives its place back", || async {
            let response = open().await;
            (response.status() == StatusCode::OK).then_some(response)
        })
        .await;
    streams.push(again);

    let revoked = server.delete(&format!("/v1/tokens/{token_id}")).await;
    assert!(revoked.status.is_success(), "{:?}", revoked.body);
    let mut stream = streams.pop().unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.chunk().await {
                Ok(Some(_)) => continue,
                _ => return,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the revoked token's stream went on");
    // The other token's stream goes on.
    server.conversation().await;
    assert_eq!(others.take(1).await.len(), 1, "the other token's stream still delivers");
    server.stop().await;
}

/// A process's streams follow one reader of the log: the reads grow with the commits, not with
/// commits times streams, and each stream still gets its own tenant's events only, in order.
async fn streams_share_one_reader_of_the_log(backend: Backend) {
    let server = TestServer::start(backend).await;
    let id = server.conversation().await;
    let store = server.config().open_store(&[]).await.unwrap();
    let other = colloquy_domain::TenantId::parse("other").unwrap();
    let issued = colloquy_infra::tokens::create_token(
        &store,
        &other,
        "other-listener",
        &["admin".to_owned()],
        None,
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    store.close().await;
    let mut theirs = Subscription::open_as(&server, &issued.secret, "", None).await;
    let mut ours = Vec::new();
    for _ in 0..6 {
        ours.push(Subscription::open(&server, "", None).await);
    }
    // Every stream is open and following before the count starts.
    message(&server, &id, "warm-up").await;
    for stream in &mut ours {
        stream.take(1).await;
    }
    let reads = server.metric("colloquy_event_stream_log_reads_total").await;
    let mut positions = Vec::new();
    for n in 0..10 {
        message(&server, &id, &format!("m{n}")).await;
        for (k, stream) in ours.iter_mut().enumerate() {
            let (position, event) = stream.take(1).await.pop().unwrap();
            assert_eq!(event["data"]["content"]["text"], format!("m{n}"), "stream {k}");
            if k == 0 {
                positions.push(position);
            }
        }
    }
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    let made = server.metric("colloquy_event_stream_log_reads_total").await - reads;
    // One reader: about a read per commit (a few more where a stream catches up); one per
    // stream per commit would be 60.
    assert!(made <= 25.0, "{made} reads of the log for 10 commits and 6 streams");

    // The other tenant's stream saw none of that, and sees its own.
    let created = server
        .client
        .post(server.url("/v1/contacts"))
        .bearer_auth(&issued.secret)
        .json(&json!({"first_name": "Theirs"}))
        .send()
        .await
        .unwrap();
    let status = created.status();
    assert_eq!(status, StatusCode::CREATED);
    let (_, event) = theirs.take(1).await.pop().unwrap();
    assert_eq!(
        (&event["eventtype"], &event["tenant"]),
        (&json!("ContactCreated"), &json!("other")),
        "{event}"
    );
    server.stop().await;
}

on_both_stores!(
    streams_share_one_reader_of_the_log,
    events_stream_live_and_resume_after_a_disconnect,
    streams_are_capped_per_token_and_end_when_it_is_revoked,
);
