//! Fuzz-style bad input: every route of the router, driven by a seeded generator with malformed
//! JSON, wrong types, unknown fields, bodies over the limit, ids that are not UUIDs, control
//! characters and very long strings in bodies, query strings and headers, and wrong methods,
//! after a sweep that puts a NUL into every string and object of every body and every edge value
//! into every query parameter. Every answer must be below 500, every error problem+json with its
//! status and a title, and no refused request may append an event. `COLLOQUY_FUZZ_SEED` replays
//! a run, `COLLOQUY_FUZZ_CASES` sets its length; a failure names the seed and the case.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use reqwest::header::{HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::Connection;

use crate::common::{Backend, TestServer};

/// Random requests per store, after the sweep: enough to touch every route with every kind of
/// mutation a few times while the test stays within a few seconds.
const DEFAULT_CASES: usize = 300;

/// One part of a route's path: fixed text, or an id a mutation may replace.
#[derive(Debug, Clone)]
enum Segment {
    Fixed(String),
    Id(String),
    /// A path parameter that names one of a few words (a report's dimension), not an id.
    Word(String),
}

/// A route with a request that fits it; mutations start from here.
#[derive(Debug, Clone)]
struct Route {
    method: Method,
    segments: Vec<Segment>,
    body: Option<Value>,
    query: Vec<(&'static str, String)>,
}

fn route(method: Method, template: &str, ids: &[&str], body: Option<Value>) -> Route {
    let mut segments = Vec::new();
    let mut ids = ids.iter();
    let mut parts = template.split("{}").peekable();
    while let Some(part) = parts.next() {
        if !part.is_empty() {
            segments.push(Segment::Fixed(part.to_owned()));
        }
        if parts.peek().is_some() {
            segments.push(Segment::Id((*ids.next().unwrap()).to_owned()));
        }
    }
    Route { method, segments, body, query: Vec::new() }
}

impl Route {
    fn with_query(mut self, query: &[(&'static str, &str)]) -> Self {
        self.query = query.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        self
    }

    fn template(&self) -> String {
        self.segments
            .iter()
            .map(|s| match s {
                Segment::Fixed(text) => text.as_str(),
                Segment::Id(_) | Segment::Word(_) => "{id}",
            })
            .collect()
    }

    fn path(&self) -> String {
        self.segments
            .iter()
            .map(|s| match s {
                Segment::Fixed(text) | Segment::Id(text) | Segment::Word(text) => text.as_str(),
            })
            .collect()
    }
}

/// The resources the routes act on, made before fuzzing so that mutated requests reach the
/// handlers' deeper checks instead of stopping at "not found".
struct Fixtures {
    contact: String,
    member: String,
    removable_member: String,
    /// The groups' own number, their superadmin.
    inbox: String,
    conversation: String,
    doomed_conversation: String,
    message: String,
    group: String,
    doomed_group: String,
    token: String,
    calendar: String,
    doomed_calendar: String,
    policy: String,
    doomed_policy: String,
    /// A contact to erase.
    doomed_contact: String,
    /// A request's correlation id, to revert.
    request: String,
    /// A webhook subscription (to a closed loopback port: a ping fails at once).
    webhook: String,
    doomed_webhook: String,
}

fn calendar_body() -> Value {
    json!({"name": "Fuzz", "time_zone": "Europe/Berlin", "inbox_ids": ["main"],
           "weekly": [{"weekday": "Mon", "start": "09:00", "end": "17:00"}, {"weekday": "Fri", "start": "22:00", "end": "02:00"}],
           "exceptions": [{"date": "2026-12-24", "intervals": [{"start": "09:00", "end": "12:00"}], "name": "Eve"}]})
}

fn policy_body() -> Value {
    json!({"name": "Fuzz", "rank": 1, "conditions": {"priorities": ["medium"], "labels": ["vip"]},
           "targets": [{"metric": "first_response", "threshold_seconds": 3600, "business_hours": true,
                        "warnings": [{"percent": 50}, {"before_seconds": 60}]},
                       {"metric": "next_response", "priority": "urgent", "threshold_seconds": 600}]})
}

async fn created(server: &TestServer, path: &str, body: Value) -> String {
    let reply = server.post(path, body).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    reply.body["id"].as_str().unwrap().to_owned()
}

async fn fixtures(server: &TestServer) -> Fixtures {
    let calendar = created(server, "/v1/calendars", calendar_body()).await;
    let doomed_calendar = created(server, "/v1/calendars", calendar_body()).await;
    let policy = created(server, "/v1/sla-policies", policy_body()).await;
    let doomed_policy = created(server, "/v1/sla-policies", policy_body()).await;
    let contact = server.contact().await;
    let member = server.contact().await;
    let removable_member = server.contact().await;
    let inbox_contact = server.contact().await;
    let conversation = open(server, &contact).await;
    let doomed_conversation = open(server, &contact).await;
    let message = server
        .post(
            &format!("/v1/conversations/{conversation}/messages"),
            json!({"sender": {"kind": "user", "id": "agent-1"}, "text": "hello"}),
        )
        .await;
    assert_eq!(message.status, StatusCode::CREATED, "{:?}", message.body);
    let mut groups = Vec::new();
    for _ in 0..2 {
        let group = server
            .post(
                "/v1/groups",
                json!({
                    "inbox_id": "main", "inbox_contact_id": inbox_contact, "subject": "Fuzz",
                    "participants": [member, removable_member],
                }),
            )
            .await;
        assert_eq!(group.status, StatusCode::CREATED, "{:?}", group.body);
        groups.push(group.body["id"].as_str().unwrap().to_owned());
    }
    let token = server.post("/v1/tokens", json!({"name": "fuzz", "scopes": ["conversations:read"]})).await;
    assert_eq!(token.status, StatusCode::CREATED, "{:?}", token.body);
    let request = uuid::Uuid::now_v7().to_string();
    let labelled = server
        .call_with(
            Method::POST,
            &format!("/v1/conversations/{doomed_conversation}/labels"),
            Some(json!({"add": ["fuzz"]})),
            &[("x-correlation-id", &request)],
        )
        .await;
    assert!(labelled.status.is_success(), "{:?}", labelled.body);
    let webhook_body =
        json!({"name": "Fuzz", "url": format!("http://127.0.0.1:{}/hook", crate::common::free_port())});
    Fixtures {
        webhook: created(server, "/v1/webhooks", webhook_body.clone()).await,
        doomed_webhook: created(server, "/v1/webhooks", webhook_body).await,
        doomed_contact: server.contact().await,
        request,
        contact,
        member,
        removable_member,
        inbox: inbox_contact,
        conversation,
        doomed_conversation,
        message: message.body["id"].as_str().unwrap().to_owned(),
        doomed_group: groups.pop().unwrap(),
        group: groups.pop().unwrap(),
        token: token.body["id"].as_str().unwrap().to_owned(),
        calendar,
        doomed_calendar,
        policy,
        doomed_policy,
    }
}

async fn open(server: &TestServer, contact: &str) -> String {
    let reply = server.post("/v1/conversations", json!({"contact_id": contact, "channel": "whatsapp"})).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    reply.body["id"].as_str().unwrap().to_owned()
}

/// Every route `colloquy_api::app` serves, each with a request that fits it.
/// The fuzz test reaches every route the server has: its list is checked against the documented
/// table that `colloquy_api::routes()` builds the router from, so a new route that is not added
/// to `routes` fails here. (The documentation's own pages, static text with no input, are left
/// out.)
#[test]
fn the_fuzzed_routes_are_every_route_the_server_has() {
    let placeholder = || "00000000-0000-7000-8000-000000000000".to_owned();
    let fixtures = Fixtures {
        contact: placeholder(),
        member: placeholder(),
        removable_member: placeholder(),
        inbox: placeholder(),
        conversation: placeholder(),
        doomed_conversation: placeholder(),
        message: placeholder(),
        group: placeholder(),
        doomed_group: placeholder(),
        token: placeholder(),
        calendar: placeholder(),
        doomed_calendar: placeholder(),
        policy: placeholder(),
        doomed_policy: placeholder(),
        doomed_contact: placeholder(),
        request: placeholder(),
        webhook: placeholder(),
        doomed_webhook: placeholder(),
    };
    let fuzzed: std::collections::BTreeSet<String> = routes(&fixtures)
        .iter()
        .map(|route| {
            let path: String = route
                .segments
                .iter()
                .map(|segment| match segment {
                    Segment::Fixed(text) => text.as_str(),
                    Segment::Id(_) | Segment::Word(_) => "{}",
                })
                .collect();
            format!("{} {path}", route.method)
        })
        .collect();
    let (_router, document) = colloquy_api::routes().split_for_parts();
    let document = serde_json::to_value(&document).unwrap();
    let documentation = ["/openapi.json", "/docs", "/docs/{}"];
    let mut served = std::collections::BTreeSet::new();
    let parameter = regex::Regex::new(r"\{[^}]+\}").unwrap();
    for (path, item) in document["paths"].as_object().unwrap() {
        let template = parameter.replace_all(path, "{}").into_owned();
        if documentation.contains(&template.as_str()) {
            continue;
        }
        for method in ["get", "put", "post", "delete", "patch"] {
            if item.get(method).is_some() {
                served.insert(format!("{} {template}", method.to_uppercase()));
            }
        }
    }
    let missing: Vec<&String> = served.difference(&fuzzed).collect();
    assert!(missing.is_empty(), "routes the fuzz test does not reach: {missing:?}");
}

fn routes(f: &Fixtures) -> Vec<Route> {
    let (conversation, message, group) = (f.conversation.as_str(), f.message.as_str(), f.group.as_str());
    let page: &[(&str, &str)] = &[("limit", "5"), ("min_position", "1")];
    vec![
        route(Method::GET, "/healthz", &[], None),
        route(Method::GET, "/readyz", &[], None),
        route(Method::GET, "/metrics", &[], None),
        route(Method::GET, "/v1/events", &[], None).with_query(&[("after", "0"), ("limit", "10")]),
        route(Method::GET, "/v1/timers", &[], None).with_query(&[("conversation_id", conversation)]),
        route(Method::GET, "/v1/reports/events", &[], None).with_query(&[
            ("metric", "first_response,reply_time"),
            ("since", "2020-01-01T00:00:00Z"),
            ("label", "vip"),
            ("limit", "5"),
        ]),
        route(Method::GET, "/v1/conversations/{}/reports/events", &[conversation], None),
        route(Method::GET, "/v1/conversations/{}/inbox-row", &[conversation], None)
            .with_query(&[("at_position", "3")]),
        route(Method::GET, "/v1/reports/summary", &[], None)
            .with_query(&[("tz", "Europe/Berlin"), ("channel", "email")]),
        route(Method::GET, "/v1/reports/timeseries", &[], None).with_query(&[
            ("metric", "first_response"),
            ("group_by", "day"),
            ("tz", "America/New_York"),
        ]),
        Route {
            method: Method::GET,
            segments: vec![Segment::Fixed("/v1/reports/by/".into()), Segment::Word("agent".into())],
            body: None,
            query: vec![("metric", "reply_time".into())],
        },
        route(Method::GET, "/v1/reports/first-response-distribution", &[], None),
        route(Method::GET, "/v1/reports/inbox-labels", &[], None).with_query(&[("inbox_id", "support")]),
        route(Method::GET, "/v1/reports/conversations", &[], None)
            .with_query(&[("limit", "5"), ("team_id", "tier-1")]),
        route(Method::GET, "/v1/reports/live", &[], None).with_query(&[("min_position", "1")]),
        route(Method::GET, "/v1/reports/definitions", &[], None),
        route(Method::GET, "/v1/audit", &[], None)
            .with_query(&[("aggregate_type", "conversation"), ("limit", "5")]),
        route(Method::GET, "/v1/reports/compare", &[], None)
            .with_query(&[("against", "1"), ("version", "2")]),
        route(Method::PUT, "/v1/reports/definitions/current", &[], Some(json!({"current_version": 1}))),
        route(Method::GET, "/v1/events/stream", &[], None).with_query(&[
            ("after", "0"),
            ("aggregate_type", "conversation"),
            ("aggregate_id", conversation),
            ("event_type", "MessageAdded"),
        ]),
        route(
            Method::POST,
            "/v1/tokens",
            &[],
            Some(
                json!({"name": "fuzzed", "scopes": ["conversations:read"], "expires_at": "2999-01-01T00:00:00Z"}),
            ),
        ),
        route(Method::GET, "/v1/tokens", &[], None),
        route(Method::DELETE, "/v1/tokens/{}", &[&f.token], None),
        route(
            Method::POST,
            "/v1/contacts",
            &[],
            Some(json!({
                "first_name": "Ann", "last_name": "Lee", "full_name": "Ann Lee", "phone": "+14155550123",
                "email": "ann@example.com", "preferred_channel": "whatsapp", "metadata": {"plan": "gold"},
                "labels": ["vip"],
            })),
        ),
        route(Method::GET, "/v1/contacts/{}", &[&f.contact], None),
        route(
            Method::PATCH,
            "/v1/contacts/{}",
            &[&f.contact],
            Some(json!({
                "first_name": "Anne", "last_name": null, "email": "anne@example.com",
                "metadata": {"plan": "silver"}, "labels": ["vip", "new"], "status": "active",
            })),
        ),
        route(Method::GET, "/v1/contacts/{}/events", &[&f.contact], None).with_query(page),
        route(Method::POST, "/v1/contacts/{}/erase", &[&f.doomed_contact], None),
        route(Method::POST, "/v1/commands/{}/revert", &[&f.request], None),
        route(
            Method::POST,
            "/v1/webhooks",
            &[],
            Some(json!({"name": "Fuzzed", "url": "http://127.0.0.1:9/hook", "event_types": ["MessageAdded"],
                        "aggregate_types": ["conversation"], "active": false, "content_mode": "batched"})),
        ),
        route(Method::GET, "/v1/webhooks", &[], None),
        route(Method::GET, "/v1/webhooks/{}", &[&f.webhook], None),
        route(
            Method::PATCH,
            "/v1/webhooks/{}",
            &[&f.webhook],
            Some(json!({"name": "Renamed", "event_types": [], "active": true, "content_mode": "structured"})),
        ),
        route(Method::DELETE, "/v1/webhooks/{}", &[&f.doomed_webhook], None),
        route(Method::GET, "/v1/webhooks/{}/versions", &[&f.webhook], None),
        route(Method::POST, "/v1/webhooks/{}/rotate-secret", &[&f.webhook], None)
            .with_query(&[("grace_seconds", "60")]),
        route(Method::POST, "/v1/webhooks/{}/replay", &[&f.webhook], None)
            .with_query(&[("from_position", "1")]),
        route(Method::POST, "/v1/webhooks/{}/resume", &[&f.webhook], None),
        route(Method::GET, "/v1/webhooks/{}/deliveries", &[&f.webhook], None).with_query(&[("limit", "5")]),
        route(Method::POST, "/v1/webhooks/{}/ping", &[&f.webhook], None),
        route(
            Method::POST,
            "/v1/conversations",
            &[],
            Some(json!({
                "contact_id": f.contact, "channel": "email", "inbox_id": "main", "subject": "Order",
                "priority": "high", "status": "open", "custom_fields": {"order": 42}, "labels": ["billing"],
            })),
        ),
        route(Method::GET, "/v1/conversations", &[], None).with_query(&[
            ("status", "open"),
            ("priority", "high"),
            ("assignee_id", "agent-1"),
            ("team_id", "team-1"),
            ("channel", "whatsapp"),
            ("label", "billing"),
            ("starred", "false"),
            ("created_after", "2020-01-01T00:00:00Z"),
            ("q", "order"),
            ("sort", "last_activity_at"),
            ("order", "desc"),
            ("limit", "10"),
        ]),
        route(Method::GET, "/v1/conversations/counts", &[], None)
            .with_query(&[("status", "open"), ("user_id", "agent-1")]),
        route(Method::POST, "/v1/conversations/resolve", &[], Some(json!({"ids": [f.doomed_conversation]}))),
        route(Method::GET, "/v1/conversations/{}", &[conversation], None),
        route(
            Method::PATCH,
            "/v1/conversations/{}",
            &[conversation],
            Some(json!({"subject": "Refund", "priority": "low", "custom_fields": {"a": 1}, "starred": true})),
        ),
        route(Method::DELETE, "/v1/conversations/{}", &[&f.doomed_conversation], None),
        route(
            Method::POST,
            "/v1/conversations/{}/status",
            &[conversation],
            Some(json!({"status": "pending"})),
        ),
        route(
            Method::POST,
            "/v1/conversations/{}/assignment",
            &[conversation],
            Some(json!({"assignee_id": "agent-2", "team_id": "team-1"})),
        ),
        route(Method::DELETE, "/v1/conversations/{}/assignment", &[conversation], None),
        route(
            Method::POST,
            "/v1/conversations/{}/labels",
            &[conversation],
            Some(json!({"add": ["x"], "remove": ["y"]})),
        ),
        route(
            Method::POST,
            "/v1/conversations/{}/read",
            &[conversation],
            Some(json!({"user_id": "agent-1"})),
        ),
        route(Method::GET, "/v1/conversations/{}/events", &[conversation], None).with_query(page),
        route(
            Method::POST,
            "/v1/conversations/{}/messages",
            &[conversation],
            Some(json!({
                "sender": {"kind": "user", "id": "agent-1"}, "text": "hi there", "visibility": "public",
                "mentions": [], "metadata": {"source": "fuzz"},
            })),
        ),
        route(Method::GET, "/v1/conversations/{}/messages", &[conversation], None).with_query(page),
        route(Method::GET, "/v1/conversations/{}/messages/{}", &[conversation, message], None),
        route(
            Method::PATCH,
            "/v1/conversations/{}/messages/{}",
            &[conversation, message],
            Some(json!({
                "text": "edited",
                "reactions": {"add": [{"emoji": "👍", "sender": {"kind": "customer"}}]},
            })),
        ),
        route(
            Method::POST,
            "/v1/conversations/{}/messages/{}/delivery",
            &[conversation, message],
            Some(json!({"status": "failed", "error": {"code": "470", "reason": "window closed"}})),
        ),
        route(
            Method::POST,
            "/v1/groups",
            &[],
            Some(json!({
                "inbox_id": "main", "inbox_contact_id": f.contact, "subject": "Team",
                "description": "the team", "participants": [f.member],
                "settings": {"announce": false, "restrict": true, "join_approval_mode": false,
                             "member_add_mode": "all_members"},
            })),
        ),
        route(Method::GET, "/v1/groups/{}", &[group], None),
        route(
            Method::PATCH,
            "/v1/groups/{}",
            &[group],
            Some(
                json!({"subject": "Renamed", "description": null, "avatar_url": "https://example.com/a.png"}),
            ),
        ),
        route(Method::GET, "/v1/groups/{}/members", &[group], None)
            .with_query(&[("limit", "10"), ("as_of", "2030-01-01T00:00:00Z")]),
        route(Method::POST, "/v1/groups/{}/members", &[group], Some(json!({"contact_ids": [f.contact]}))),
        route(Method::PATCH, "/v1/groups/{}/members/{}", &[group, &f.member], Some(json!({"role": "admin"}))),
        route(Method::DELETE, "/v1/groups/{}/members/{}", &[group, &f.removable_member], None),
        route(Method::GET, "/v1/groups/{}/invite", &[group], None),
        route(Method::POST, "/v1/groups/{}/invite/revoke", &[group], None),
        route(Method::GET, "/v1/groups/{}/join-requests", &[group], None),
        route(Method::POST, "/v1/groups/{}/join-requests", &[group], Some(json!({"approve": [f.member]}))),
        route(
            Method::PATCH,
            "/v1/groups/{}/settings",
            &[group],
            Some(json!({"announce": true, "member_add_mode": "admins_only"})),
        ),
        route(Method::POST, "/v1/groups/{}/leave", &[&f.doomed_group], None),
        route(Method::POST, "/v1/groups/{}/sync", &[group], Some(json!({"force": true}))),
        route(Method::GET, "/v1/groups/{}/events", &[group], None).with_query(page),
        route(Method::POST, "/v1/groups/{}/provider/join", &[group], Some(json!({"participant": f.member}))),
        route(
            Method::POST,
            "/v1/groups/{}/provider/activity",
            &[group],
            Some(json!({"at": "2026-11-23T14:05:00Z"})),
        ),
        route(
            Method::POST,
            "/v1/groups/{}/provider/view",
            &[group],
            // The group as it is (the inbox left in, or the group would be left for every later case).
            Some(json!({"subject": "Fuzz", "participants": [
                {"id": f.inbox, "role": "superadmin"}, {"id": f.member}, {"id": f.removable_member}
            ]})),
        ),
        route(Method::GET, "/v1/contacts/{}/groups", &[&f.member], None).with_query(page),
        route(Method::POST, "/v1/calendars", &[], Some(calendar_body())),
        route(Method::GET, "/v1/calendars", &[], None),
        route(Method::GET, "/v1/calendars/{}", &[&f.calendar], None),
        route(Method::PUT, "/v1/calendars/{}", &[&f.calendar], Some(calendar_body())),
        route(Method::DELETE, "/v1/calendars/{}", &[&f.doomed_calendar], None),
        route(Method::GET, "/v1/calendars/{}/versions", &[&f.calendar], None),
        route(
            Method::POST,
            "/v1/calendars/{}/holidays",
            &[&f.calendar],
            Some(
                json!({"ics": "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:a\r\nDTSTART;VALUE=DATE:20261225\r\nSUMMARY:Xmas\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"}),
            ),
        ),
        route(Method::POST, "/v1/sla-policies", &[], Some(policy_body())),
        route(Method::GET, "/v1/sla-policies", &[], None),
        route(Method::GET, "/v1/sla-policies/{}", &[&f.policy], None),
        route(Method::PUT, "/v1/sla-policies/{}", &[&f.policy], Some(policy_body())),
        route(Method::DELETE, "/v1/sla-policies/{}", &[&f.doomed_policy], None),
        route(Method::GET, "/v1/sla-policies/{}/versions", &[&f.policy], None),
        route(
            Method::POST,
            "/v1/sla-policies/what-if",
            &[],
            Some(
                json!({"policy_id": f.policy, "version": 1, "from": "2020-01-01T00:00:00Z", "to": "2030-01-01T00:00:00Z", "limit": 50}),
            ),
        ),
        route(
            Method::POST,
            "/v1/sla-policies/{}/recompute",
            &[&f.policy],
            Some(
                json!({"version": 1, "from": "2020-01-01T00:00:00Z", "to": "2030-01-01T00:00:00Z", "limit": 50}),
            ),
        ),
        route(Method::GET, "/v1/conversations/{}/sla", &[conversation], None),
        route(
            Method::POST,
            "/v1/conversations/{}/sla",
            &[conversation],
            Some(json!({"policy_id": f.policy})),
        ),
        route(Method::GET, "/v1/conversations/{}/sla/events", &[conversation], None).with_query(page),
    ]
}

/// A generated request and what the generator knows about its answer.
#[derive(Debug)]
struct Attempt {
    kind: &'static str,
    route: String,
    method: Method,
    path: String,
    query: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Option<Vec<u8>>,
    /// The status the mutation must get, when it decides it alone.
    expect: Option<StatusCode>,
}

impl Attempt {
    fn from(route: &Route, kind: &'static str, token: &str) -> Self {
        let mut headers = vec![(
            reqwest::header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        )];
        if route.body.is_some() {
            headers.push((reqwest::header::CONTENT_TYPE, HeaderValue::from_static("application/json")));
        }
        Self {
            kind,
            route: format!("{} {}", route.method, route.template()),
            method: route.method.clone(),
            path: route.path(),
            query: encode_query(&route.query),
            headers,
            body: route.body.as_ref().map(|b| serde_json::to_vec(b).unwrap()),
            expect: None,
        }
    }

    fn set_header(&mut self, name: HeaderName, value: HeaderValue) {
        self.headers.retain(|(n, _)| *n != name);
        self.headers.push((name, value));
    }

    /// The attempt in a line short enough to read in a failure message.
    fn describe(&self) -> String {
        let headers: Vec<String> = self
            .headers
            .iter()
            .map(|(n, v)| format!("{n}: {}", clip(&String::from_utf8_lossy(v.as_bytes()))))
            .collect();
        let body = self.body.as_ref().map(|b| clip(&String::from_utf8_lossy(b))).unwrap_or_default();
        format!(
            "[{}] on {}: {} {}{} headers {headers:?} body ({} bytes) {body}",
            self.kind,
            self.route,
            self.method,
            clip(&self.path),
            clip(&self.query),
            self.body.as_ref().map_or(0, Vec::len)
        )
    }
}

fn clip(text: &str) -> String {
    if text.chars().count() <= 200 {
        return format!("{text:?}");
    }
    let head: String = text.chars().take(200).collect();
    format!("{head:?}... ({} chars)", text.chars().count())
}

/// Percent-encodes everything but unreserved characters, as a browser's form would.
fn encode(text: &str) -> String {
    let mut encoded = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

fn encode_query(pairs: &[(&str, String)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let joined: Vec<String> = pairs.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect();
    format!("?{}", joined.join("&"))
}

/// Strings that break naive code: control characters, bidi and zero-width marks, lone
/// combining marks, SQL and LIKE metacharacters, and very long ones (still under the limit).
fn weird_string(rng: &mut StdRng) -> String {
    match rng.gen_range(0..13) {
        0 => char::from(rng.gen_range(0u8..0x20)).to_string(),
        12 => "left\u{0}right".into(),
        1 => format!("a{}b", char::from(rng.gen_range(0u8..0x20))),
        2 => "\u{0}".repeat(rng.gen_range(1..4)),
        3 => "\u{7f}\u{80}\u{9f}".into(),
        4 => "\u{202e}evil\u{200b}\u{feff}\u{2028}\u{2029}".into(),
        5 => "e\u{301}".repeat(rng.gen_range(1..2_000)),
        6 => ["'; DROP TABLE events; --", "%", "_", "\\", "%_\\%", "\"", "' OR '1'='1"]
            .choose(rng)
            .unwrap()
            .to_string(),
        7 => "x".repeat(rng.gen_range(256..4_096)),
        8 => "y".repeat(rng.gen_range(60_000..300_000)),
        9 => "😀".repeat(rng.gen_range(1..20_000)),
        10 => String::new(),
        _ => (0..rng.gen_range(1..64)).map(|_| char::from_u32(rng.gen_range(1..0xD7FF)).unwrap()).collect(),
    }
}

/// A weird string short enough for a URL (which HTTP libraries cap at 64 KiB).
fn short_weird_string(rng: &mut StdRng) -> String {
    weird_string(rng).chars().take(2_000).collect()
}

/// A value of some JSON type, often the wrong one for where it goes.
fn odd_value(rng: &mut StdRng) -> Value {
    match rng.gen_range(0..17) {
        0 => Value::Null,
        1 => json!(true),
        2 => json!(0),
        3 => json!(-1),
        4 => json!(1.5),
        5 => json!(1e308),
        6 => json!(u64::MAX),
        7 => json!(i64::MIN),
        8 => json!([]),
        9 => json!([1, "a", null]),
        10 => json!({}),
        11 => json!({"a": {"b": [1]}}),
        12 => json!("00000000-0000-0000-0000-000000000000"),
        13 => json!("not-a-uuid"),
        14 => json!([
            "2020-13-45T99:99:99Z",
            "-9999-01-01T00:00:00Z",
            "+262143-12-31T23:59:59Z",
            "0000-01-01T00:00:00Z"
        ]
        .choose(rng)
        .unwrap()),
        15 => json!({"\u{0}": "\u{0}"}),
        _ => Value::String(weird_string(rng)),
    }
}

/// Times at and past the edges of what RFC 3339, chrono and PostgreSQL can hold.
const EDGE_TIMES: &[&str] =
    &["-9999-01-01T00:00:00Z", "+262143-12-31T23:59:59Z", "0000-01-01T00:00:00Z", "2020-02-30T00:00:00Z"];
/// Numbers at and past the edges of the integers a query takes.
const EDGE_NUMBERS: &[&str] = &["-1", "0", "9223372036854775807", "-9223372036854775808", "1e3", "0x10"];

fn looks_like_time(valid: &str) -> bool {
    valid.contains('T') && valid.ends_with('Z')
}

/// A query value of the same kind as `valid` but at or past the edge of its range (a time, a
/// number), or of another kind altogether.
fn odd_like(rng: &mut StdRng, valid: &str) -> String {
    match rng.gen_range(0..3) {
        0 if looks_like_time(valid) => EDGE_TIMES.choose(rng).unwrap().to_string(),
        0 if valid.parse::<i64>().is_ok() => EDGE_NUMBERS.choose(rng).unwrap().to_string(),
        _ => match odd_value(rng) {
            Value::String(text) => text.chars().take(2_000).collect(),
            other => other.to_string(),
        },
    }
}

/// The cases a random walk reaches only now and then, each once: a NUL in every string of every
/// body and in a key of every object, and every edge value and a NUL in every query parameter.
fn sweep(routes: &[Route], token: &str) -> Vec<Attempt> {
    let mut attempts = Vec::new();
    for route in routes {
        if let Some(template) = &route.body {
            let mut all = vec![String::new()];
            pointers(template, String::new(), &mut all);
            for pointer in all {
                let mut body = template.clone();
                match body.pointer_mut(&pointer) {
                    Some(Value::String(text)) => text.push('\u{0}'),
                    Some(Value::Object(map)) => {
                        map.insert("key\u{0}".into(), json!("value"));
                    }
                    _ => continue,
                }
                let mut attempt = Attempt::from(route, "NUL in the body", token);
                attempt.body = Some(serde_json::to_vec(&body).unwrap());
                attempts.push(attempt);
            }
        }
        for index in 0..route.query.len() {
            let valid = &route.query[index].1;
            let edges: &[&str] = if looks_like_time(valid) {
                EDGE_TIMES
            } else if valid.parse::<i64>().is_ok() {
                EDGE_NUMBERS
            } else {
                &[]
            };
            for value in edges.iter().map(|e| (*e).to_owned()).chain([format!("{valid}\u{0}")]) {
                let mut pairs = route.query.clone();
                pairs[index].1 = value;
                let mut attempt = Attempt::from(route, "edge in the query", token);
                attempt.query = encode_query(&pairs);
                attempts.push(attempt);
            }
        }
    }
    attempts
}

/// JSON pointers of every node below the root.
fn pointers(value: &Value, at: String, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let pointer = format!("{at}/{}", key.replace('~', "~0").replace('/', "~1"));
                out.push(pointer.clone());
                pointers(child, pointer, out);
            }
        }
        Value::Array(items) => {
            for (index, child) in items.iter().enumerate() {
                let pointer = format!("{at}/{index}");
                out.push(pointer.clone());
                pointers(child, pointer, out);
            }
        }
        _ => {}
    }
}

fn string_pointers(value: &Value) -> Vec<String> {
    let mut all = Vec::new();
    pointers(value, String::new(), &mut all);
    all.into_iter().filter(|p| value.pointer(p).is_some_and(Value::is_string)).collect()
}

fn object_pointers(value: &Value) -> Vec<String> {
    let mut all = vec![String::new()];
    pointers(value, String::new(), &mut all);
    all.into_iter().filter(|p| value.pointer(p).is_some_and(Value::is_object)).collect()
}

const MALFORMED: &[&str] = &[
    "",
    "{",
    "}",
    "[",
    "nul",
    "{\"a\":}",
    "{,}",
    "{\"a\":1,}",
    "{} trailing",
    "\u{feff}{}",
    "{'single': 'quotes'}",
    "{\"a\": NaN}",
    "{\"a\": 1e999999}",
    "{\"a\": \"\\ud800\"}",
    "{\"a\": \"\\x41\"}",
    "{\"a\": \"unterminated}",
    "{\"first_name\": \"a\", \"first_name\": \"b\"}",
    "\"a string\"",
    "42",
    "true",
    "[]",
];

const HEADERS: &[&str] = &[
    "if-match",
    "idempotency-key",
    "x-correlation-id",
    "authorization",
    "last-event-id",
    "content-type",
    "x-request-id",
    "accept",
];

fn header_value(rng: &mut StdRng) -> HeaderValue {
    let text = match rng.gen_range(0..10) {
        0 => "x".repeat(rng.gen_range(256..32_768)),
        1 => "\"99999999999999999999999999\"".into(),
        2 => ["\"-1\"", "W/\"1\"", "*", "\"\"", "\"1\", \"2\"", "1", "W/", "\""]
            .choose(rng)
            .unwrap()
            .to_string(),
        3 => "\t spaced \t".into(),
        4 => "not-a-uuid".into(),
        5 => "Bearer ".into(),
        6 => "application/json; charset=latin1".into(),
        7 => "-5".into(),
        8 => uuid::Uuid::new_v4().to_string(),
        _ => {
            // obs-text: bytes over 0x7f, which HTTP allows in a header but `to_str` refuses.
            let bytes: Vec<u8> = (0..rng.gen_range(1..40)).map(|_| rng.gen_range(0x80u8..=0xff)).collect();
            return HeaderValue::from_bytes(&bytes).unwrap();
        }
    };
    HeaderValue::from_str(&text).unwrap()
}

fn mutate(rng: &mut StdRng, route: &Route, fixtures_token: &str) -> Attempt {
    let kinds: &[&'static str] = &[
        "malformed json",
        "wrong type",
        "unknown field",
        "body over the limit",
        "bad path id",
        "weird string in body",
        "bad query",
        "bad header",
        "wrong method",
    ];
    let kind = *kinds.choose(rng).unwrap();
    let mut attempt = Attempt::from(route, kind, fixtures_token);
    match kind {
        "malformed json" => {
            let body = match (rng.gen_bool(0.5), &route.body) {
                (true, Some(template)) => {
                    let text = serde_json::to_vec(template).unwrap();
                    let cut = rng.gen_range(0..text.len());
                    let mut broken = text[..cut].to_vec();
                    if rng.gen_bool(0.5) {
                        broken.push(*b"{}[]\",:\\\x00\xff".choose(rng).unwrap());
                        broken.extend_from_slice(&text[cut..]);
                    }
                    broken
                }
                _ => MALFORMED.choose(rng).unwrap().as_bytes().to_vec(),
            };
            attempt.body = Some(body);
            attempt.set_header(reqwest::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        "wrong type" => {
            let mut body = route.body.clone().unwrap_or_else(|| json!({}));
            let mut all = Vec::new();
            pointers(&body, String::new(), &mut all);
            match all.choose(rng) {
                Some(pointer) if rng.gen_bool(0.85) => *body.pointer_mut(pointer).unwrap() = odd_value(rng),
                _ => body = odd_value(rng),
            }
            attempt.body = Some(serde_json::to_vec(&body).unwrap());
            attempt.set_header(reqwest::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        "unknown field" => {
            let mut body = route.body.clone().unwrap_or_else(|| json!({}));
            let objects = object_pointers(&body);
            let pointer = objects.choose(rng).unwrap().clone();
            let name = if rng.gen_bool(0.5) { "nickname".to_owned() } else { weird_string(rng) };
            if let Some(Value::Object(map)) = body.pointer_mut(&pointer) {
                map.insert(name, odd_value(rng));
            }
            attempt.body = Some(serde_json::to_vec(&body).unwrap());
            attempt.set_header(reqwest::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        "body over the limit" => {
            let size = colloquy_api::BODY_LIMIT + rng.gen_range(1..200_000);
            let body = match &route.body {
                Some(template) if rng.gen_bool(0.6) => {
                    let mut body = template.clone();
                    let strings = string_pointers(&body);
                    let padding = "z".repeat(size);
                    match strings.choose(rng) {
                        Some(pointer) => *body.pointer_mut(pointer).unwrap() = Value::String(padding),
                        None => {
                            if let Value::Object(map) = &mut body {
                                map.insert("padding".into(), Value::String(padding));
                            }
                        }
                    }
                    serde_json::to_vec(&body).unwrap()
                }
                _ => vec![b' '; size],
            };
            attempt.body = Some(body);
            attempt.set_header(reqwest::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            attempt.expect = Some(StatusCode::PAYLOAD_TOO_LARGE);
        }
        "bad path id" => {
            let ids: Vec<usize> = route
                .segments
                .iter()
                .enumerate()
                .filter(|(_, s)| matches!(s, Segment::Id(_)))
                .map(|(i, _)| i)
                .collect();
            let mut mutated = route.clone();
            match ids.choose(rng) {
                Some(&index) => {
                    let (replacement, expect) = match rng.gen_range(0..9) {
                        0 => ("not-a-uuid".to_owned(), Some(StatusCode::BAD_REQUEST)),
                        1 => ("%00".to_owned(), Some(StatusCode::BAD_REQUEST)),
                        2 => ("%FF%FE".to_owned(), Some(StatusCode::BAD_REQUEST)),
                        3 => (encode(&short_weird_string(rng)), None),
                        4 => ("1".repeat(rng.gen_range(37..5_000)), Some(StatusCode::BAD_REQUEST)),
                        5 => (uuid::Uuid::new_v4().to_string(), Some(StatusCode::NOT_FOUND)),
                        6 => (uuid::Uuid::nil().to_string(), Some(StatusCode::NOT_FOUND)),
                        7 => {
                            ("123e4567-e89b-12d3-a456-42661417400g".to_owned(), Some(StatusCode::BAD_REQUEST))
                        }
                        _ => ("-1".to_owned(), Some(StatusCode::BAD_REQUEST)),
                    };
                    mutated.segments[index] = Segment::Id(replacement);
                    attempt.expect = expect;
                }
                // A route without ids gets one appended: an unknown route, or an id that is not one.
                None => {
                    mutated.segments.push(Segment::Fixed(format!("/{}", encode(&short_weird_string(rng)))))
                }
            }
            attempt.path = mutated.path();
        }
        "weird string in body" => {
            let mut body = route.body.clone().unwrap_or_else(|| json!({}));
            let strings = string_pointers(&body);
            match strings.choose(rng) {
                Some(pointer) => *body.pointer_mut(pointer).unwrap() = Value::String(weird_string(rng)),
                None => {
                    if let Value::Object(map) = &mut body {
                        map.insert(weird_string(rng), Value::String(weird_string(rng)));
                    }
                }
            }
            attempt.body = Some(serde_json::to_vec(&body).unwrap());
            attempt.set_header(reqwest::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        "bad query" => {
            let mut pairs = route.query.clone();
            match rng.gen_range(0..6) {
                0 if !pairs.is_empty() => {
                    let index = rng.gen_range(0..pairs.len());
                    pairs[index].1 = short_weird_string(rng);
                }
                1 if !pairs.is_empty() => {
                    let index = rng.gen_range(0..pairs.len());
                    pairs[index].1 = odd_like(rng, &pairs[index].1);
                }
                2 if !pairs.is_empty() => {
                    let index = rng.gen_range(0..pairs.len());
                    let duplicate = pairs[index].clone();
                    pairs.push(duplicate);
                }
                3 => pairs.push(("unknown_parameter", short_weird_string(rng))),
                _ => {
                    let raw =
                        ["%", "%G1", "a=b=c", "&&&", "=", "%FF%FE=%FF", "limit=%00", "after=%2B1", "+=+"]
                            .choose(rng)
                            .unwrap();
                    let base = encode_query(&pairs);
                    attempt.query = if base.is_empty() { format!("?{raw}") } else { format!("{base}&{raw}") };
                    return attempt;
                }
            }
            attempt.query = encode_query(&pairs);
        }
        "bad header" => {
            let name = *HEADERS.choose(rng).unwrap();
            let value = header_value(rng);
            attempt.set_header(HeaderName::from_static(name), value);
        }
        _ => {
            // No DELETE: on a path that serves it, it would delete the fixtures the other cases use.
            let others: Vec<Method> = [Method::GET, Method::POST, Method::PUT, Method::PATCH]
                .into_iter()
                .filter(|m| *m != route.method)
                .collect();
            attempt.method = others.choose(rng).unwrap().clone();
            // Some paths serve several methods; only a method the path never serves is a sure 405
            // (PUT replaces the versioned definitions, and nothing else).
            let serves_put =
                ["/v1/calendars/{id}", "/v1/sla-policies/{id}"].contains(&route.template().as_str());
            attempt.expect =
                (attempt.method == Method::PUT && !serves_put).then_some(StatusCode::METHOD_NOT_ALLOWED);
        }
    }
    // A route that reads no body answers before its body has arrived and then closes the
    // connection, and a body longer than the server's first read meets a reset that loses the
    // answer (so with any HTTP/1.1 server, as clients do not wait for 100-continue). Such
    // routes get small bodies, except the oversized ones, whose 413 is retried on a reset.
    if route.body.is_none() && attempt.expect != Some(StatusCode::PAYLOAD_TOO_LARGE) {
        if let Some(body) = &mut attempt.body {
            body.truncate(4_096);
        }
    }
    attempt
}

/// Counts the stored events directly, so a refused request that appended anything is caught
/// even before the global log would show it. (The SLA clocks' events are not counted: the SLA
/// process appends them in the background.)
struct EventCounter {
    connection: Counter,
}

enum Counter {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl EventCounter {
    async fn connect(server: &TestServer) -> Self {
        let connection = match server.database_url() {
            Some(url) => Counter::Postgres(sqlx::PgConnection::connect(url).await.unwrap()),
            None => {
                let path = server.config().data_dir.join("colloquy.db");
                let options = sqlx::sqlite::SqliteConnectOptions::new().filename(path).read_only(true);
                Counter::Sqlite(sqlx::SqliteConnection::connect_with(&options).await.unwrap())
            }
        };
        Self { connection }
    }

    /// The events requests append: the SLA clocks' (aggregate type `sla`) are appended by the
    /// SLA process in the background, whenever an earlier request's events reach it.
    async fn count(&mut self) -> i64 {
        let query = "SELECT count(*) FROM events WHERE aggregate_type <> 'sla'";
        match &mut self.connection {
            Counter::Sqlite(connection) => sqlx::query_scalar(query).fetch_one(connection).await.unwrap(),
            Counter::Postgres(connection) => sqlx::query_scalar(query).fetch_one(connection).await.unwrap(),
        }
    }
}

async fn send(server: &TestServer, attempt: &Attempt) -> Result<(StatusCode, String, Vec<u8>), String> {
    // A client per request: the server may answer an oversized body before reading it and then
    // close the connection, which a pooled client could pick for the next request.
    let client = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
    let url = format!("{}{}{}", server.base, attempt.path, attempt.query);
    let mut request = client.request(attempt.method.clone(), url);
    for (name, value) in &attempt.headers {
        request = request.header(name.clone(), value.clone());
    }
    if let Some(body) = &attempt.body {
        request = request.body(body.clone());
    }
    let response = request.send().await.map_err(|e| format!("no answer: {e:?}"))?;
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    // A live event stream never ends; its headers are the answer.
    if content_type.starts_with("text/event-stream") {
        return Ok((status, content_type, Vec::new()));
    }
    let body = response.bytes().await.map_err(|e| format!("body cut off: {e:?}"))?.to_vec();
    Ok((status, content_type, body))
}

/// What is wrong with an answer, if anything.
fn judge(attempt: &Attempt, status: StatusCode, content_type: &str, body: &[u8]) -> Option<String> {
    let problem: Option<Value> = serde_json::from_slice(body).ok();
    // Read-your-writes that cannot be met in time is a documented 503 with Retry-After.
    let waited_for_position =
        status == StatusCode::SERVICE_UNAVAILABLE && attempt.query.contains("min_position");
    if status.is_server_error() && !waited_for_position {
        return Some(format!("a server error: {status} {}", String::from_utf8_lossy(body)));
    }
    if let Some(expect) = attempt.expect {
        if status != expect {
            return Some(format!("expected {expect}, got {status}: {}", String::from_utf8_lossy(body)));
        }
    }
    if status.is_client_error() || status.is_server_error() {
        if content_type != "application/problem+json" {
            return Some(format!(
                "{status} with content-type {content_type:?}: {}",
                String::from_utf8_lossy(body)
            ));
        }
        let Some(problem) = problem else {
            return Some(format!("{status} with a body that is not JSON: {}", String::from_utf8_lossy(body)));
        };
        if problem["status"].as_u64() != Some(u64::from(status.as_u16())) {
            return Some(format!("{status} whose problem says status {}", problem["status"]));
        }
        if problem["title"].as_str().is_none_or(str::is_empty) {
            return Some(format!("{status} whose problem has no title: {problem}"));
        }
    }
    None
}

async fn every_route_survives_generated_bad_input(backend: Backend) {
    let seed: u64 = std::env::var("COLLOQUY_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen());
    let cases: usize =
        std::env::var("COLLOQUY_FUZZ_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(DEFAULT_CASES);
    let started = std::time::Instant::now();
    let server = TestServer::start_with(backend, |config| config.min_position_timeout_ms = 100).await;
    let fixtures = fixtures(&server).await;
    let routes = routes(&fixtures);
    let mut counter = EventCounter::connect(&server).await;

    // The unmutated requests fit their routes: the generator starts from requests the server
    // accepts as well-formed, so mutations are what it refuses.
    let mut misfits = Vec::new();
    for route in &routes {
        let attempt = Attempt::from(route, "as generated", &server.token);
        let (status, _, body) = send(&server, &attempt).await.unwrap();
        if matches!(status.as_u16(), 400 | 405 | 413 | 415) || status.is_server_error() {
            misfits.push(format!("{}: {status} {}", attempt.describe(), String::from_utf8_lossy(&body)));
        }
    }
    assert!(misfits.is_empty(), "requests the generator starts from must fit:\n{}", misfits.join("\n"));

    let mut rng = StdRng::seed_from_u64(seed);
    let mut failures = Vec::new();
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    let swept = sweep(&routes, &server.token);
    let total = swept.len() + cases;
    let random = std::iter::from_fn(|| {
        let route = routes.choose(&mut rng).unwrap();
        Some(mutate(&mut rng, route, &server.token))
    });
    for (case, attempt) in swept.into_iter().chain(random.take(cases)).enumerate() {
        let before = counter.count().await;
        let mut sent = send(&server, &attempt).await;
        // A 413 comes before the body is read, so the client may still be writing it when the
        // server closes the connection; it refuses without side effects, so asking again is safe.
        for _ in 0..5 {
            if sent.is_ok() || attempt.expect != Some(StatusCode::PAYLOAD_TOO_LARGE) {
                break;
            }
            sent = send(&server, &attempt).await;
        }
        let verdict = match sent {
            Err(error) => Some(error),
            Ok((status, content_type, body)) => {
                *statuses.entry(status.as_u16()).or_default() += 1;
                let mut verdict = judge(&attempt, status, &content_type, &body);
                let after = counter.count().await;
                if verdict.is_none() && !status.is_success() && after != before {
                    verdict = Some(format!("{status}, yet {} events were appended", after - before));
                }
                verdict
            }
        };
        if let Some(verdict) = verdict {
            failures.push(format!("case {case}: {} -> {verdict}", attempt.describe()));
        }
    }
    eprintln!(
        "fuzz on {backend:?}: seed {seed}, {total} cases in {:.1} s, statuses {statuses:?}",
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "seed {seed} (replay with COLLOQUY_FUZZ_SEED={seed}): {} of {total} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    server.stop().await;
}

on_both_stores!(every_route_survives_generated_bad_input);
