//! A table of bad requests, each answered with its 4xx as problem+json, none appending an event.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{Backend, TestServer};

struct Case {
    name: &'static str,
    method: Method,
    path: String,
    body: Option<String>,
    headers: Vec<(&'static str, String)>,
    token: Option<String>,
    expect: StatusCode,
    field: Option<&'static str>,
}

fn case(name: &'static str, method: Method, path: String, body: Option<String>, expect: StatusCode) -> Case {
    Case {
        name,
        method,
        path,
        body,
        headers: vec![("content-type", "application/json".into())],
        token: None,
        expect,
        field: None,
    }
}

async fn bad_requests_get_clear_4xx_problems_and_append_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    let id = server.conversation().await;
    let message = server
        .post(
            &format!("/v1/conversations/{id}/messages"),
            json!({"sender": {"kind": "customer"}, "text": "hi"}),
        )
        .await;
    let message_id = message.body["id"].as_str().unwrap().to_owned();
    server.post(&format!("/v1/conversations/{id}/status"), json!({"status": "closed"})).await;
    let events_before = server.all_events("conversations", &id).await;
    let contact_id =
        server.get(&format!("/v1/conversations/{id}")).await.body["contact_id"].as_str().unwrap().to_owned();
    let contact_events_before = server.all_events("contacts", &contact_id).await;

    let conversation = format!("/v1/conversations/{id}");
    let messages = format!("{conversation}/messages");
    let unknown = uuid::Uuid::now_v7();
    let cases = vec![
        Case {
            token: Some(String::new()),
            ..case("no token", Method::GET, conversation.clone(), None, StatusCode::UNAUTHORIZED)
        },
        Case {
            token: Some("cq_not_a_real_token".into()),
            ..case("unknown token", Method::GET, conversation.clone(), None, StatusCode::UNAUTHORIZED)
        },
        case(
            "malformed JSON",
            Method::POST,
            "/v1/contacts".into(),
            Some("{".into()),
            StatusCode::BAD_REQUEST,
        ),
        case(
            "JSON array for an object",
            Method::POST,
            "/v1/contacts".into(),
            Some("[]".into()),
            StatusCode::BAD_REQUEST,
        ),
        case(
            "wrong type",
            Method::POST,
            "/v1/contacts".into(),
            Some(r#"{"first_name": 5}"#.into()),
            StatusCode::BAD_REQUEST,
        ),
        case(
            "unknown field",
            Method::POST,
            "/v1/contacts".into(),
            Some(r#"{"first_name": "A", "nickname": "x"}"#.into()),
            StatusCode::BAD_REQUEST,
        ),
        Case {
            field: Some("phone"),
            ..case(
                "phone not E.164",
                Method::POST,
                "/v1/contacts".into(),
                Some(r#"{"first_name": "A", "phone": "555-0123"}"#.into()),
                StatusCode::UNPROCESSABLE_ENTITY,
            )
        },
        Case {
            field: Some("email"),
            ..case(
                "bad email",
                Method::POST,
                "/v1/contacts".into(),
                Some(r#"{"first_name": "A", "email": "a@b"}"#.into()),
                StatusCode::UNPROCESSABLE_ENTITY,
            )
        },
        Case {
            headers: vec![("content-type", "text/plain".into())],
            ..case(
                "not JSON content type",
                Method::POST,
                "/v1/contacts".into(),
                Some(r#"{"first_name": "A"}"#.into()),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
            )
        },
        case(
            "body over the limit",
            Method::POST,
            messages.clone(),
            Some(format!(
                r#"{{"sender": {{"kind": "customer"}}, "text": "{}"}}"#,
                "x".repeat(2 * 1024 * 1024)
            )),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        case(
            "id not a UUID",
            Method::GET,
            "/v1/conversations/not-a-uuid".into(),
            None,
            StatusCode::BAD_REQUEST,
        ),
        case(
            "unknown conversation",
            Method::GET,
            format!("/v1/conversations/{unknown}"),
            None,
            StatusCode::NOT_FOUND,
        ),
        case("unknown contact", Method::GET, format!("/v1/contacts/{unknown}"), None, StatusCode::NOT_FOUND),
        case(
            "conversation for an unknown contact",
            Method::POST,
            "/v1/conversations".into(),
            Some(json!({"contact_id": unknown, "channel": "whatsapp"}).to_string()),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        case(
            "unknown channel",
            Method::POST,
            "/v1/conversations".into(),
            Some(json!({"contact_id": contact_id, "channel": "fax"}).to_string()),
            StatusCode::BAD_REQUEST,
        ),
        case(
            "message to an unknown conversation",
            Method::POST,
            format!("/v1/conversations/{unknown}/messages"),
            Some(json!({"sender": {"kind": "customer"}, "text": "hi"}).to_string()),
            StatusCode::NOT_FOUND,
        ),
        Case {
            field: Some("text"),
            ..case(
                "empty text message",
                Method::POST,
                messages.clone(),
                Some(json!({"sender": {"kind": "customer"}, "text": "  "}).to_string()),
                StatusCode::UNPROCESSABLE_ENTITY,
            )
        },
        Case {
            field: Some("text"),
            ..case(
                "control characters",
                Method::POST,
                messages.clone(),
                Some(json!({"sender": {"kind": "customer"}, "text": "a\u{0}b"}).to_string()),
                StatusCode::UNPROCESSABLE_ENTITY,
            )
        },
        Case {
            field: Some("text"),
            ..case(
                "very long text",
                Method::POST,
                messages.clone(),
                Some(json!({"sender": {"kind": "customer"}, "text": "y".repeat(70_000)}).to_string()),
                StatusCode::UNPROCESSABLE_ENTITY,
            )
        },
        case(
            "unknown sender kind",
            Method::POST,
            messages.clone(),
            Some(json!({"sender": {"kind": "alien"}, "text": "hi"}).to_string()),
            StatusCode::BAD_REQUEST,
        ),
        case(
            "reply to an unknown message",
            Method::POST,
            messages.clone(),
            Some(
                json!({"sender": {"kind": "user", "id": "a"}, "text": "re", "reply_to": unknown}).to_string(),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        case(
            "duplicate message id",
            Method::POST,
            messages.clone(),
            Some(json!({"id": message_id, "sender": {"kind": "customer"}, "text": "again"}).to_string()),
            StatusCode::CONFLICT,
        ),
        case(
            "customer internal note",
            Method::POST,
            messages.clone(),
            Some(json!({"sender": {"kind": "customer"}, "text": "x", "visibility": "internal"}).to_string()),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        case(
            "snooze in the past",
            Method::POST,
            format!("{conversation}/status"),
            Some(json!({"status": "snoozed", "snoozed_until": "2001-01-01T00:00:00Z"}).to_string()),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        case(
            "close twice",
            Method::POST,
            format!("{conversation}/status"),
            Some(json!({"status": "closed"}).to_string()),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        case(
            "unknown status",
            Method::POST,
            format!("{conversation}/status"),
            Some(json!({"status": "archived"}).to_string()),
            StatusCode::BAD_REQUEST,
        ),
        case(
            "bad timestamp",
            Method::POST,
            format!("{conversation}/status"),
            Some(json!({"status": "snoozed", "snoozed_until": "tomorrow"}).to_string()),
            StatusCode::BAD_REQUEST,
        ),
        case(
            "delivery of an unknown message",
            Method::POST,
            format!("{messages}/{unknown}/delivery"),
            Some(json!({"status": "read"}).to_string()),
            StatusCode::NOT_FOUND,
        ),
        case(
            "delivery of a customer message",
            Method::POST,
            format!("{messages}/{message_id}/delivery"),
            Some(json!({"status": "read"}).to_string()),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        Case {
            field: Some("add"),
            ..case(
                "label too long",
                Method::POST,
                format!("{conversation}/labels"),
                Some(json!({"add": ["z".repeat(10_000)]}).to_string()),
                StatusCode::UNPROCESSABLE_ENTITY,
            )
        },
        case(
            "assignment naming nobody",
            Method::POST,
            format!("{conversation}/assignment"),
            Some("{}".into()),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        Case {
            field: Some("limit"),
            ..case(
                "limit over the max",
                Method::GET,
                format!("{messages}?limit=500"),
                None,
                StatusCode::BAD_REQUEST,
            )
        },
        Case {
            field: Some("cursor"),
            ..case(
                "forged cursor",
                Method::GET,
                format!("{messages}?cursor=bm9wZQ"),
                None,
                StatusCode::BAD_REQUEST,
            )
        },
        case(
            "unknown query parameter",
            Method::GET,
            format!("{messages}?page=2"),
            None,
            StatusCode::BAD_REQUEST,
        ),
        case(
            "method not allowed",
            Method::DELETE,
            format!("/v1/contacts/{contact_id}"),
            None,
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        case("unknown route", Method::GET, "/v1/nothing-here".into(), None, StatusCode::NOT_FOUND),
        Case {
            headers: vec![
                ("content-type", "application/json".into()),
                ("x-correlation-id", "not-a-uuid".into()),
            ],
            ..case(
                "bad correlation id",
                Method::POST,
                format!("{conversation}/labels"),
                Some(json!({"add": ["a"]}).to_string()),
                StatusCode::BAD_REQUEST,
            )
        },
        Case {
            headers: vec![("content-type", "application/json".into()), ("x-request-id", "r".repeat(129))],
            ..case(
                "request id too long to record",
                Method::POST,
                format!("{conversation}/labels"),
                Some(json!({"add": ["a"]}).to_string()),
                StatusCode::BAD_REQUEST,
            )
        },
    ];
    for case in cases {
        // A client per case: the server answers an oversized body with 413 before reading it and
        // closes that connection, which a pooled client could otherwise reuse for the next case.
        let client = reqwest::Client::new();
        let mut request = client.request(case.method.clone(), server.url(&case.path));
        match &case.token {
            None => request = request.bearer_auth(&server.token),
            Some(token) if token.is_empty() => {}
            Some(token) => request = request.bearer_auth(token),
        }
        for (name, value) in &case.headers {
            request = request.header(*name, value);
        }
        if let Some(body) = case.body {
            request = request.body(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let content_type = response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        assert_eq!(status, case.expect, "{}: {body}", case.name);
        assert_eq!(content_type.as_deref(), Some("application/problem+json"), "{}", case.name);
        assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()), "{}: {body}", case.name);
        assert!(
            body["type"].as_str().is_some_and(|t| t.starts_with("urn:colloquy:problem:")),
            "{}",
            case.name
        );
        if let Some(field) = case.field {
            assert_eq!(body["errors"][0]["field"], field, "{}: {body}", case.name);
        }
    }
    assert_eq!(
        server.all_events("conversations", &id).await,
        events_before,
        "refused requests appended nothing"
    );
    assert_eq!(server.all_events("contacts", &contact_id).await, contact_events_before);
    server.stop().await;
}

/// Lists are counted before any per-item work: one past its limit is a 400 naming the limit,
/// whatever its items (a 1 MiB body of distinct labels too), and the filters' lists likewise.
async fn lists_past_their_limits_are_refused_before_their_items_are_read(backend: Backend) {
    let server = TestServer::start(backend).await;
    let id = server.conversation().await;
    let before = server.all_events("conversations", &id).await;
    let labels = |count: usize| -> Vec<String> { (0..count).map(|n| format!("label-{n}")).collect() };
    let at_limit = server.post(&format!("/v1/conversations/{id}/labels"), json!({"add": labels(50)})).await;
    assert_eq!(at_limit.status, StatusCode::OK, "{:?}", at_limit.body);
    let labelled = server.all_events("conversations", &id).await;
    // About 1 MiB of distinct labels: refused at the 51st.
    for body in [json!({"add": labels(51)}), json!({"remove": labels(70_000)})] {
        let refused = server.post(&format!("/v1/conversations/{id}/labels"), body).await;
        let detail = refused.assert_problem(StatusCode::BAD_REQUEST);
        assert!(detail.contains("at most 50 items"), "{detail}");
    }
    assert_eq!(server.all_events("conversations", &id).await, labelled, "refused lists appended nothing");
    assert!(labelled.len() > before.len());
    let reactions: Vec<Value> =
        (0..21).map(|_| json!({"emoji": "👍", "sender": {"kind": "user", "id": "agent-1"}})).collect();
    let message = server
        .post(
            &format!("/v1/conversations/{id}/messages"),
            json!({"sender": {"kind": "customer"}, "text": "hi"}),
        )
        .await;
    let message_id = message.body["id"].as_str().unwrap();
    let refused = server
        .patch(
            &format!("/v1/conversations/{id}/messages/{message_id}"),
            json!({"reactions": {"add": reactions}}),
        )
        .await;
    assert!(refused.assert_problem(StatusCode::BAD_REQUEST).contains("at most 20 items"));
    let members: Vec<String> = (0..1025).map(|n| format!("+55119{n:08}")).collect();
    let refused = server
        .post("/v1/groups", json!({"inbox_id": "wa", "inbox_contact_id": uuid::Uuid::now_v7(), "subject": "Big", "participants": members}))
        .await;
    assert!(refused.assert_problem(StatusCode::BAD_REQUEST).contains("at most 1024 items"));
    let statuses = vec!["open"; 51].join(",");
    for filter in ["status", "label", "channel", "priority"] {
        let refused = server.get(&format!("/v1/conversations?{filter}={statuses}")).await;
        let detail = refused.assert_problem(StatusCode::BAD_REQUEST);
        assert!(detail.contains("at most 50 values"), "{filter}: {detail}");
        assert_eq!(refused.body["errors"][0]["field"], filter);
    }
    server.stop().await;
}

/// A token's expiry is bounded like every client-given time (past year 9999 it would make the
/// listing unreadable), and a cached token stops working when it expires, not when the cache
/// forgets it.
async fn token_expiry_is_bounded_and_honoured_by_the_cache(backend: Backend) {
    let server = TestServer::start(backend).await;
    let far = server
        .post(
            "/v1/tokens",
            json!({"name": "far", "scopes": ["conversations:read"], "expires_at": "+10000-01-01T00:00:00Z"}),
        )
        .await;
    assert!(far.assert_problem(StatusCode::BAD_REQUEST).contains("between 1970"));
    let listed = server.get("/v1/tokens").await;
    assert_eq!(listed.status, StatusCode::OK, "{:?}", listed.body);

    let expires_at = chrono::Utc::now() + chrono::Duration::milliseconds(1_500);
    let created = server
        .post(
            "/v1/tokens",
            json!({"name": "brief", "scopes": ["conversations:read"], "expires_at": expires_at}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let secret = created.body["secret"].as_str().unwrap().to_owned();
    let read = |secret: String| {
        let (client, url) = (server.client.clone(), server.url("/v1/conversations"));
        async move { client.get(url).bearer_auth(secret).send().await.unwrap().status() }
    };
    assert_eq!(read(secret.clone()).await, StatusCode::OK, "verified, and now cached");
    let wait = (expires_at - chrono::Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(100)).await;
    assert_eq!(read(secret).await, StatusCode::UNAUTHORIZED, "expired within the cache's life");
    server.stop().await;
}

on_both_stores!(
    bad_requests_get_clear_4xx_problems_and_append_nothing,
    lists_past_their_limits_are_refused_before_their_items_are_read,
    token_expiry_is_bounded_and_honoured_by_the_cache,
);

#[tokio::test]
async fn healthz_answers_without_a_token() {
    let server = TestServer::start(Backend::Sqlite).await;
    let response = server.client.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().contains_key("x-request-id"));
    server.stop().await;
}

async fn readyz_reports_the_store_and_each_read_model(backend: Backend) {
    let server = TestServer::start(backend).await;
    let id = server.conversation().await;
    let reply =
        server.post(&format!("/v1/conversations/{id}/labels"), serde_json::json!({"add": ["ready"]})).await;
    let position: i64 = reply.headers["colloquy-position"].to_str().unwrap().parse().unwrap();
    server.get(&format!("/v1/conversations?min_position={position}")).await;
    let response = server.client.get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ready", "{body}");
    assert!(body["checks"]["store"]["log_head"].as_i64().unwrap() >= position, "{body}");
    assert_eq!(body["checks"]["projection:conversation_list"]["status"], "ok", "{body}");
    server.stop().await;
}

mod ready {
    use super::*;
    on_both_stores!(readyz_reports_the_store_and_each_read_model);
}

#[tokio::test]
async fn metrics_count_answers_commands_and_lag() {
    let server = TestServer::start(Backend::Sqlite).await;
    let id = server.conversation().await;
    server.post(&format!("/v1/conversations/{id}/status"), serde_json::json!({"status": "bogus"})).await;
    let response = server.client.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = response.text().await.unwrap();
    for needle in [
        "colloquy_commands_total{command=\"POST /v1/conversations\",outcome=\"ok\"} 1",
        "colloquy_commands_total{command=\"POST /v1/contacts\",outcome=\"ok\"} 1",
        "colloquy_commands_total{command=\"POST /v1/conversations/{id}/status\",outcome=\"refused\"} 1",
        "colloquy_http_responses_total{method=\"POST\",route=\"/v1/conversations/{id}/status\",status=\"400\"} 1",
        "colloquy_command_duration_seconds_count{command=\"POST /v1/conversations\"} 1",
        "colloquy_log_head 2",
        "colloquy_aggregate_cache_aggregates{aggregate=\"conversation\"} 1",
        "colloquy_aggregate_cache_events{aggregate=\"conversation\"} 1",
        "colloquy_aggregate_cache_events{aggregate=\"contact\"} 1",
        "colloquy_aggregate_cache_aggregates{aggregate=\"group\"} 0",
        "colloquy_aggregate_cache_bytes{aggregate=\"group\"} 0",
        // Opened, then refused from the cache: read from the store once, when there was nothing.
        "colloquy_aggregate_cache_loads_total{aggregate=\"conversation\"} 1",
        "colloquy_aggregate_cache_events_read_total{aggregate=\"conversation\"} 0",
        "colloquy_consumer_lag_events{consumer=\"projection:conversation_list\"}",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    let bytes = |aggregate: &str| -> u64 {
        let prefix = format!("colloquy_aggregate_cache_bytes{{aggregate=\"{aggregate}\"}} ");
        let line = text.lines().find(|line| line.starts_with(&prefix)).expect("a gauge per aggregate");
        line[prefix.len()..].parse().expect("a number")
    };
    // One opened conversation and one contact: more than an empty state, far less than a page.
    let empty = std::mem::size_of::<colloquy_domain::Conversation>() as u64;
    assert!((empty..4096).contains(&bytes("conversation")), "{}", bytes("conversation"));
    assert!(bytes("contact") > 0);
    server.stop().await;
}

/// Past the cap on requests in flight an API request is answered 503 at once, with
/// `Retry-After`, instead of waiting in memory; health and metrics still answer, and once a
/// request is done the next goes through.
#[tokio::test]
async fn requests_past_the_cap_in_flight_are_answered_503_at_once() {
    let server = TestServer::start_with(Backend::Sqlite, |config| {
        config.max_requests_in_flight = 1;
        config.min_position_timeout_ms = 1_500;
    })
    .await;
    // The one request allowed waits for a position the read model never reaches (sent again if
    // it met one of the probes below in the door and was turned away at once).
    let (_, unreachable) = server.append_unreadable().await;
    let waiting = {
        let (client, url, token) = (
            server.client.clone(),
            server.url(&format!("/v1/conversations?min_position={unreachable}")),
            server.token.clone(),
        );
        tokio::spawn(async move {
            loop {
                let started = std::time::Instant::now();
                let status = client.get(&url).bearer_auth(&token).send().await.unwrap().status();
                if status != StatusCode::SERVICE_UNAVAILABLE || started.elapsed().as_millis() > 1_000 {
                    return status;
                }
            }
        })
    };
    // Until the waiting request has taken the place, others go through.
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(1_000);
    let refused = loop {
        let started = std::time::Instant::now();
        let reply = server.get("/v1/conversations").await;
        if reply.status == StatusCode::SERVICE_UNAVAILABLE {
            assert!(started.elapsed() < std::time::Duration::from_millis(1_000), "answered without waiting");
            break reply;
        }
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        assert!(std::time::Instant::now() < deadline, "the waiting request never took the only place");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(refused.headers["content-type"], "application/problem+json");
    assert_eq!(refused.headers["retry-after"], "1");
    assert!(refused.body["type"].as_str().unwrap().ends_with("overloaded"), "{:?}", refused.body);
    assert!(refused.body["detail"].as_str().unwrap().contains("(1)"), "{:?}", refused.body);
    let health = server.client.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let metrics = server.client.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let overloaded: u64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("colloquy_requests_overloaded_total "))
        .and_then(|count| count.parse().ok())
        .expect("the counter");
    assert!(overloaded >= 1, "{metrics}");
    // The waiting request ends (503 at its own timeout) and frees its place.
    assert_eq!(waiting.await.unwrap(), StatusCode::SERVICE_UNAVAILABLE);
    let listed = server.get("/v1/conversations").await;
    assert_eq!(listed.status, StatusCode::OK, "{:?}", listed.body);
    server.stop().await;
}

/// Reads waiting for a read model to reach their `min_position` hold at most a quarter of the
/// places in flight: past that a read that would wait is answered 503 at once, while commands,
/// and reads whose position is already applied, still go through.
#[tokio::test]
async fn reads_waiting_for_a_read_model_hold_at_most_a_quarter_of_the_places() {
    let server = TestServer::start_with(Backend::Sqlite, |config| {
        config.max_requests_in_flight = 8;
        config.min_position_timeout_ms = 3_000;
    })
    .await;
    let id = server.conversation().await;
    let position = server.customer_message(&id, "before the reads").await;
    let (_, unreachable) = server.append_unreadable().await;
    // Four reads at once for a position the read model never reaches: two of them may wait.
    let reads: Vec<_> = (0..4)
        .map(|_| {
            let (client, url, token) = (
                server.client.clone(),
                server.url(&format!("/v1/conversations?min_position={unreachable}")),
                server.token.clone(),
            );
            tokio::spawn(async move {
                let started = std::time::Instant::now();
                let response = client.get(&url).bearer_auth(&token).send().await.unwrap();
                let status = response.status();
                let body: serde_json::Value = response.json().await.unwrap();
                (status, started.elapsed(), body["detail"].as_str().unwrap_or_default().to_owned())
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    // While two wait, a command and a read that need not wait are served.
    server.customer_message(&id, "while two reads wait").await;
    let listed = server.get(&format!("/v1/conversations?min_position={position}")).await;
    assert_eq!(listed.status, StatusCode::OK, "{:?}", listed.body);
    let mut refused = 0;
    let mut timed_out = 0;
    for read in reads {
        let (status, took, detail) = read.await.unwrap();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{detail}");
        if detail.contains("2 requests are already waiting") {
            assert!(took < std::time::Duration::from_millis(1_000), "refused after {took:?}");
            refused += 1;
        } else {
            assert!(detail.contains(&format!("has not reached position {unreachable}")), "{detail}");
            assert!(took >= std::time::Duration::from_millis(2_900), "gave up after {took:?}");
            timed_out += 1;
        }
    }
    assert_eq!((refused, timed_out), (2, 2));
    server.stop().await;
}

/// Past the cap on open connections the server accepts no more until one closes: a client past
/// it is not answered (it waits in the kernel's accept queue), and is served once a connection
/// closes.
#[tokio::test]
async fn connections_past_the_cap_wait_until_one_closes() {
    let server = TestServer::start_with(Backend::Sqlite, |config| config.max_connections = 2).await;
    let address = server.base.trim_start_matches("http://").to_owned();
    // Two idle connections take both places (a request on each shows it was accepted).
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
        stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: colloquy\r\n\r\n").await.unwrap();
        let mut answer = [0u8; 12];
        stream.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"HTTP/1.1 200", "{}", String::from_utf8_lossy(&answer));
        held.push(stream);
    }
    let waiting = {
        let url = server.url("/healthz");
        tokio::spawn(async move {
            let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
            client.get(&url).send().await.map(|response| response.status())
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "a third connection was served past the cap of 2");
    drop(held.pop());
    let status = waiting.await.unwrap().expect("served once a connection closed");
    assert_eq!(status, StatusCode::OK);
    drop(held);
    server.stop().await;
}
