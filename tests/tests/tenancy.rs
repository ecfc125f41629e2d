//! Tokens and tenants over HTTP, on both stores: scopes answer 403 naming the scope, missing,
//! unknown, expired and revoked tokens 401, and a token of another tenant gets 404 for anything
//! of this one, on every route class.

#![allow(clippy::unwrap_used)]

mod common;

use chrono::Utc;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use colloquy_domain::TenantId;
use colloquy_infra::{tokens, Store};
use common::{Backend, TestServer};

struct Caller {
    client: reqwest::Client,
    secret: Option<String>,
}

impl Caller {
    fn new(secret: Option<&str>) -> Self {
        Self { client: reqwest::Client::new(), secret: secret.map(str::to_owned) }
    }

    async fn call(
        &self,
        server: &TestServer,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.client.request(method, server.url(path));
        if let Some(secret) = &self.secret {
            request = request.bearer_auth(secret);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_client_error() {
            assert_eq!(content_type, "application/problem+json", "{body}");
        }
        (status, body)
    }
}

async fn scopes_and_token_states_decide_access(backend: Backend) {
    let server = TestServer::start(backend).await;
    let conversation = server.conversation().await;
    let created =
        server.post("/v1/tokens", json!({"name": "dashboard", "scopes": ["conversations:read"]})).await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let reader = Caller::new(Some(created.body["secret"].as_str().unwrap()));
    let (status, _) =
        reader.call(&server, Method::GET, &format!("/v1/conversations/{conversation}"), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = reader
        .call(
            &server,
            Method::POST,
            &format!("/v1/conversations/{conversation}/status"),
            Some(json!({"status": "closed"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body["detail"].as_str().unwrap().contains("conversations:write"), "{body}");
    let (status, body) =
        reader.call(&server, Method::GET, "/v1/contacts/00000000-0000-7000-8000-000000000000", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body["detail"].as_str().unwrap().contains("contacts:read"), "{body}");
    let (status, body) = reader.call(&server, Method::GET, "/v1/tokens", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body["detail"].as_str().unwrap().contains("admin"), "{body}");

    // The list shows the token without its secret.
    let listed = server.get("/v1/tokens").await;
    let entry =
        listed.body["data"].as_array().unwrap().iter().find(|t| t["name"] == "dashboard").unwrap().clone();
    assert!(entry.get("secret").is_none() && entry.get("token_hash").is_none(), "{entry}");
    assert_eq!(entry["scopes"], json!(["conversations:read"]));

    // Revoked: 401 at once.
    let id = created.body["id"].as_str().unwrap();
    assert_eq!(server.delete(&format!("/v1/tokens/{id}")).await.status, StatusCode::NO_CONTENT);
    let (status, _) = reader.call(&server, Method::GET, "/v1/conversations", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        server.delete("/v1/tokens/00000000-0000-7000-8000-000000000000").await.status,
        StatusCode::NOT_FOUND
    );

    // Expired: 401 once its time has passed.
    let expiring = server
        .post(
            "/v1/tokens",
            json!({"name": "brief", "scopes": ["conversations:read"],
                   "expires_at": (Utc::now() + chrono::Duration::milliseconds(1500)).to_rfc3339()}),
        )
        .await;
    assert_eq!(expiring.status, StatusCode::CREATED, "{:?}", expiring.body);
    tokio::time::sleep(std::time::Duration::from_millis(1600)).await;
    let brief = Caller::new(Some(expiring.body["secret"].as_str().unwrap()));
    assert_eq!(brief.call(&server, Method::GET, "/v1/conversations", None).await.0, StatusCode::UNAUTHORIZED);

    // Missing and unknown tokens.
    assert_eq!(
        Caller::new(None).call(&server, Method::GET, "/v1/conversations", None).await.0,
        StatusCode::UNAUTHORIZED
    );
    let unknown = Caller::new(Some("cq_not-a-token"));
    assert_eq!(
        unknown.call(&server, Method::GET, "/v1/conversations", None).await.0,
        StatusCode::UNAUTHORIZED
    );

    // Bad token requests.
    for bad in [
        json!({"name": "x", "scopes": ["root"]}),
        json!({"name": "x", "scopes": []}),
        json!({"name": "", "scopes": ["admin"]}),
    ] {
        server.post("/v1/tokens", bad).await.assert_problem(StatusCode::BAD_REQUEST);
    }
    // An expiry in the past is well formed, and refused as it stands.
    let past = json!({"name": "x", "scopes": ["admin"], "expires_at": "2000-01-01T00:00:00Z"});
    server.post("/v1/tokens", past).await.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
    server.stop().await;
}

async fn another_tenant_sees_nothing_of_this_one(backend: Backend) {
    let server = TestServer::start(backend).await;
    let contact = server.contact().await;
    let conversation = server.conversation().await;
    let message = server
        .post(
            &format!("/v1/conversations/{conversation}/messages"),
            json!({"sender": {"kind": "customer"}, "text": "secret"}),
        )
        .await;
    let message_id = message.body["id"].as_str().unwrap().to_owned();
    let own_tokens = server.get("/v1/tokens").await;
    let own_token = own_tokens.body["data"][0]["id"].as_str().unwrap().to_owned();

    let store = Store::open(&server.config().store_location()).await.unwrap();
    let other = TenantId::parse("other").unwrap();
    let issued = tokens::create_token(&store, &other, "other-admin", &["admin".to_owned()], None, Utc::now())
        .await
        .unwrap();
    store.close().await;
    let intruder = Caller::new(Some(&issued.secret));

    let not_found = [
        (Method::GET, format!("/v1/conversations/{conversation}"), None),
        (Method::PATCH, format!("/v1/conversations/{conversation}"), Some(json!({"subject": "mine now"}))),
        (Method::DELETE, format!("/v1/conversations/{conversation}"), None),
        (Method::POST, format!("/v1/conversations/{conversation}/status"), Some(json!({"status": "closed"}))),
        (Method::GET, format!("/v1/conversations/{conversation}/events"), None),
        (Method::GET, format!("/v1/conversations/{conversation}/messages"), None),
        (Method::GET, format!("/v1/conversations/{conversation}/messages/{message_id}"), None),
        (
            Method::POST,
            format!("/v1/conversations/{conversation}/messages"),
            Some(json!({"sender": {"kind": "customer"}, "text": "hi"})),
        ),
        (Method::GET, format!("/v1/contacts/{contact}"), None),
        (Method::PATCH, format!("/v1/contacts/{contact}"), Some(json!({"first_name": "X"}))),
        (Method::GET, format!("/v1/contacts/{contact}/events"), None),
        (Method::DELETE, format!("/v1/tokens/{own_token}"), None),
    ];
    for (method, path, body) in not_found {
        let (status, answer) = intruder.call(&server, method.clone(), &path, body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {answer}");
        assert!(!answer.to_string().contains("secret"), "{answer}");
    }
    // Opening a conversation with this tenant's contact: the contact is unknown there.
    let (status, _) = intruder
        .call(
            &server,
            Method::POST,
            "/v1/conversations",
            Some(json!({"contact_id": contact, "channel": "sms"})),
        )
        .await;
    assert!(status == StatusCode::UNPROCESSABLE_ENTITY || status == StatusCode::NOT_FOUND, "{status}");
    // Lists, counts, the log and the token list show only the other tenant's own things.
    let (_, list) = intruder.call(&server, Method::GET, "/v1/conversations", None).await;
    assert_eq!(list["data"], json!([]));
    let (_, counts) = intruder.call(&server, Method::GET, "/v1/conversations/counts", None).await;
    assert_eq!(counts["all"], 0);
    let (_, log) = intruder.call(&server, Method::GET, "/v1/events", None).await;
    assert!(
        log["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["tenant"] == "other" || e["metadata"]["tenant_id"] == "other"),
        "{log}"
    );
    assert!(!log.to_string().contains(&conversation));
    let (_, listed) = intruder.call(&server, Method::GET, "/v1/tokens", None).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    // The owner still sees everything.
    assert_eq!(server.get(&format!("/v1/conversations/{conversation}")).await.body["subject"], "Order");
    server.stop().await;
}

async fn a_token_acting_for_an_agent_records_both(backend: Backend) {
    let server = TestServer::start(backend).await;
    let conversation = server.conversation().await;
    let path = format!("/v1/conversations/{conversation}/assignment");
    let assigned = server
        .call_with(
            Method::POST,
            &path,
            Some(json!({"assignee_id": "agent-42"})),
            &[("Colloquy-On-Behalf-Of", "agent-42")],
        )
        .await;
    assert_eq!(assigned.status, StatusCode::OK, "{:?}", assigned.body);
    let refused = server
        .call_with(
            Method::POST,
            &path,
            Some(json!({"assignee_id": "agent-7"})),
            &[("Colloquy-On-Behalf-Of", "agent 42")],
        )
        .await;
    assert!(refused.assert_problem(StatusCode::BAD_REQUEST).contains("Colloquy-On-Behalf-Of"));

    let events = server.all_events("conversations", &conversation).await;
    assert_eq!(events.len(), 2, "the refused request appended nothing");
    let (opened, by_agent) = (&events[0]["metadata"], &events[1]["metadata"]);
    assert_eq!(opened["actor_kind"], "token");
    assert!(opened.get("via_token").is_none(), "{opened:?}");
    assert_eq!(by_agent["actor_kind"], "user");
    assert_eq!(by_agent["actor_id"], "agent-42");
    assert_eq!(
        by_agent["via_token"], opened["actor_id"],
        "the token that acted is recorded beside the agent"
    );
    server.stop().await;
}

/// A participant given by number becomes a contact whose id is derived from the number with the
/// store's secret: another tenant that computes the id without it (from tenant and number alone,
/// as before) and takes it first blocks nothing.
async fn a_number_cannot_be_taken_by_another_tenant_first(backend: Backend) {
    use sha2::{Digest, Sha256};
    let server = TestServer::start(backend).await;
    let number = "+5511999990077";
    let digest = Sha256::digest(format!("colloquy/phone-contact/default/{number}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    let guessed = uuid::Builder::from_custom_bytes(bytes).into_uuid();

    let store = Store::open(&server.config().store_location()).await.unwrap();
    let other = TenantId::parse("other").unwrap();
    let issued = tokens::create_token(&store, &other, "squatter", &["admin".to_owned()], None, Utc::now())
        .await
        .unwrap();
    store.close().await;
    let squatter = Caller::new(Some(&issued.secret));
    let (status, body) = squatter
        .call(&server, Method::POST, "/v1/contacts", Some(json!({"id": guessed, "first_name": "Squatter"})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let inbox = server.contact().await;
    let group = server
        .post(
            "/v1/groups",
            json!({"inbox_id": "wa", "inbox_contact_id": inbox, "subject": "Mine", "participants": [number]}),
        )
        .await;
    assert_eq!(group.status, StatusCode::CREATED, "{:?}", group.body);
    let members = server.get(&format!("/v1/groups/{}/members", group.body["id"].as_str().unwrap())).await;
    let ids: Vec<&str> =
        members.body["data"].as_array().unwrap().iter().map(|m| m["contact_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 2, "{:?}", members.body);
    assert!(!ids.contains(&guessed.to_string().as_str()), "the number's contact is not the guessable id");
    server.stop().await;
}

on_both_stores!(
    scopes_and_token_states_decide_access,
    another_tenant_sees_nothing_of_this_one,
    a_number_cannot_be_taken_by_another_tenant_first,
    a_token_acting_for_an_agent_records_both
);
