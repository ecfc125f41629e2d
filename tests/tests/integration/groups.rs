//! Groups over HTTP, on the embedded store and on PostgreSQL: the life of a 200-member group,
//! promotions, refusals, leaving, and who was a member `as_of` a past moment.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::{Backend, TestServer};

/// Creates `count` contacts, a few requests at a time, and returns their ids.
async fn contacts(server: &TestServer, count: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(count);
    while ids.len() < count {
        let batch = (count - ids.len()).min(16);
        let created = futures::future::join_all((0..batch).map(|_| server.contact())).await;
        ids.extend(created);
    }
    ids
}

async fn create_group(server: &TestServer, body: Value) -> String {
    let reply = server.post("/v1/groups", body).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    reply.body["id"].as_str().unwrap().to_owned()
}

/// Every member of a group, walking all pages, with `query` (e.g. `as_of=...`) added.
async fn all_members(server: &TestServer, group: &str, query: &str) -> Vec<Value> {
    let mut members = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/groups/{group}/members?limit=50");
        if !query.is_empty() {
            path.push('&');
            path.push_str(query);
        }
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let reply = server.get(&path).await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        members.extend(reply.body["data"].as_array().unwrap().iter().cloned());
        match reply.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return members,
        }
    }
}

fn roles(members: &[Value]) -> Vec<(String, String)> {
    let mut roles: Vec<(String, String)> = members
        .iter()
        .map(|m| (m["contact_id"].as_str().unwrap().to_owned(), m["role"].as_str().unwrap().to_owned()))
        .collect();
    roles.sort();
    roles
}

fn as_of(at: DateTime<Utc>) -> String {
    format!("as_of={}", at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true).replace('+', "%2B"))
}

async fn the_life_of_a_group_with_200_members(backend: Backend) {
    let server = TestServer::start(backend).await;
    let people = contacts(&server, 202).await;
    let (inbox, participants, later) = (&people[0], &people[1..200], &people[200..]);
    let group = create_group(
        &server,
        json!({"inbox_id": "wa-main", "inbox_contact_id": inbox, "subject": "Customers", "participants": participants}),
    )
    .await;

    let shown = server.get(&format!("/v1/groups/{group}")).await;
    assert_eq!(shown.status, StatusCode::OK, "{:?}", shown.body);
    assert_eq!(shown.body["member_count"], 200);
    assert_eq!(shown.body["left"], false);
    assert_eq!(shown.body["owner_id"], inbox.as_str());
    assert_eq!(shown.body["inbox_role"], "superadmin");
    assert_eq!(shown.body["subject"], "Customers");
    assert_eq!(shown.body["settings"]["member_add_mode"], "admins_only");

    let members = all_members(&server, &group, "").await;
    assert_eq!(members.len(), 200);
    assert_eq!(members.iter().map(|m| m["contact_id"].as_str().unwrap()).collect::<HashSet<_>>().len(), 200);
    assert_eq!(members[0]["contact_id"], inbox.as_str());
    assert_eq!(members[0]["is_inbox"], true);

    for promoted in &participants[..3] {
        let reply =
            server.patch(&format!("/v1/groups/{group}/members/{promoted}"), json!({"role": "admin"})).await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        assert_eq!(reply.body["role"], "admin");
    }
    let demoted = server
        .patch(&format!("/v1/groups/{group}/members/{}", participants[2]), json!({"role": "member"}))
        .await;
    assert_eq!(demoted.body["role"], "member");
    let first_page = server.get(&format!("/v1/groups/{group}/members?limit=3")).await;
    let first: Vec<&str> =
        first_page.body["data"].as_array().unwrap().iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(first, ["superadmin", "admin", "admin"], "the inbox first, then admins");
    assert_eq!(first_page.body["member_count"], 200);

    let patched = server
        .patch(&format!("/v1/groups/{group}"), json!({"subject": "VIP customers", "description": "Only the best", "avatar_url": "https://cdn.example.com/g.png"}))
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{:?}", patched.body);
    assert_eq!(patched.body["subject"], "VIP customers");
    assert_eq!(patched.body["avatar_url"], "https://cdn.example.com/g.png");

    let revoked = server.post(&format!("/v1/groups/{group}/invite/revoke"), json!({})).await;
    assert_eq!(revoked.status, StatusCode::OK, "{:?}", revoked.body);
    let code = revoked.body["invite_code"].as_str().unwrap().to_owned();
    assert_eq!(code.len(), 22);
    assert_eq!(revoked.body["invite_url"], format!("https://chat.whatsapp.com/{code}"));
    let again = server.post(&format!("/v1/groups/{group}/invite/revoke"), json!({})).await;
    assert_ne!(again.body["invite_code"], code.as_str(), "revoking rotates the code");
    let invite = server.get(&format!("/v1/groups/{group}/invite")).await;
    assert_eq!(invite.body["invite_code"], again.body["invite_code"]);

    let added = server.post(&format!("/v1/groups/{group}/members"), json!({"contact_ids": later})).await;
    assert_eq!(added.status, StatusCode::OK, "{:?}", added.body);
    assert_eq!(added.body["member_count"], 202);
    let removed = server.delete(&format!("/v1/groups/{group}/members/{}", participants[10])).await;
    assert_eq!(removed.status, StatusCode::NO_CONTENT);
    assert_eq!(all_members(&server, &group, "").await.len(), 201);

    let settings = server
        .patch(&format!("/v1/groups/{group}/settings"), json!({"announce": true, "join_approval_mode": true}))
        .await;
    assert_eq!(settings.status, StatusCode::OK, "{:?}", settings.body);
    assert_eq!(settings.body["settings"]["announce"], true);
    assert_eq!(settings.body["settings"]["restrict"], false);
    server
        .patch(&format!("/v1/groups/{group}/settings"), json!({"anounce": false}))
        .await
        .assert_problem(StatusCode::BAD_REQUEST);
    let pending = server.get(&format!("/v1/groups/{group}/join-requests")).await;
    assert_eq!(pending.body["data"], json!([]));

    let queued = server.post(&format!("/v1/groups/{group}/sync"), json!({})).await;
    assert_eq!(queued.status, StatusCode::ACCEPTED, "{:?}", queued.body);
    assert_eq!(queued.body["status"], "queued");
    let skipped = server.post(&format!("/v1/groups/{group}/sync"), json!({"force": false})).await;
    assert_eq!(skipped.status, StatusCode::ACCEPTED);
    assert_eq!(skipped.body["status"], "skipped");
    assert!(skipped.body["reason"].as_str().unwrap().contains("cooldown"));
    let last: DateTime<Utc> = skipped.body["last_requested_at"].as_str().unwrap().parse().unwrap();
    let next: DateTime<Utc> = skipped.body["next_due_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(next - last, chrono::TimeDelta::minutes(15));
    let forced = server.post(&format!("/v1/groups/{group}/sync"), json!({"force": true})).await;
    assert_eq!(forced.body["status"], "queued");

    let events = server.all_events("groups", &group).await;
    let types: Vec<&str> = events.iter().map(|e| e["event_type"].as_str().unwrap()).collect();
    assert_eq!(types[0], "GroupCreated");
    assert_eq!(types.iter().filter(|t| **t == "MemberPromoted").count(), 3);
    assert_eq!(types.iter().filter(|t| **t == "MemberDemoted").count(), 1);
    assert_eq!(types.iter().filter(|t| **t == "MemberAdded").count(), 2);
    assert_eq!(types.iter().filter(|t| **t == "GroupSyncRequested").count(), 2);
    server.stop().await;
}

async fn refusals_answer_with_their_reason(backend: Backend) {
    let server = TestServer::start(backend).await;
    let people = contacts(&server, 4).await;
    let (inbox, owner, alice, bob) = (&people[0], &people[1], &people[2], &people[3]);

    // The inbox created it, so the inbox is the owner and cannot be removed or demoted.
    let group = create_group(
        &server,
        json!({"inbox_id": "wa-main", "inbox_contact_id": inbox, "subject": "Ours", "participants": [alice]}),
    )
    .await;
    let detail = server
        .delete(&format!("/v1/groups/{group}/members/{inbox}"))
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(detail.contains("owns the group"), "{detail}");
    let detail = server
        .patch(&format!("/v1/groups/{group}/members/{inbox}"), json!({"role": "member"}))
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(detail.contains("owns the group"), "{detail}");
    server.delete(&format!("/v1/groups/{group}/members/{bob}")).await.assert_problem(StatusCode::NOT_FOUND);
    server
        .patch(&format!("/v1/groups/{group}/members/{alice}"), json!({"role": "superadmin"}))
        .await
        .assert_problem(StatusCode::BAD_REQUEST);
    let detail = server
        .post(&format!("/v1/groups/{group}/join-requests"), json!({"approve": [bob]}))
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(detail.contains("no pending join request"), "{detail}");
    server
        .post(&format!("/v1/groups/{group}/join-requests"), json!({"approve": [bob], "reject": [bob]}))
        .await
        .assert_problem(StatusCode::BAD_REQUEST);
    let taken = server
        .post(
            "/v1/groups",
            json!({"id": group, "inbox_id": "wa-main", "inbox_contact_id": inbox, "subject": "Again"}),
        )
        .await;
    taken.assert_problem(StatusCode::CONFLICT);
    let stranger = uuid::Uuid::now_v7();
    let detail = server
        .post("/v1/groups", json!({"inbox_id": "wa-main", "inbox_contact_id": inbox, "subject": "X", "participants": [stranger]}))
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(detail.contains(&stranger.to_string()), "{detail}");
    server.get(&format!("/v1/groups/{stranger}")).await.assert_problem(StatusCode::NOT_FOUND);
    server
        .post(&format!("/v1/groups/{stranger}/leave"), json!({}))
        .await
        .assert_problem(StatusCode::NOT_FOUND);

    // A group someone else owns, with restrict on: the inbox is a plain member and may neither
    // edit its info nor manage members.
    let theirs = create_group(
        &server,
        json!({"inbox_id": "wa-main", "inbox_contact_id": inbox, "owner_id": owner, "subject": "Theirs", "participants": [alice], "settings": {"restrict": true}}),
    )
    .await;
    let detail = server
        .patch(&format!("/v1/groups/{theirs}"), json!({"subject": "Renamed"}))
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(detail.contains("restrict is on"), "{detail}");
    let detail = server
        .patch(&format!("/v1/groups/{theirs}/members/{alice}"), json!({"role": "admin"}))
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(detail.contains("only admins may promote or demote"), "{detail}");
    let detail = server
        .post(&format!("/v1/groups/{theirs}/members"), json!({"contact_ids": [bob]}))
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(detail.contains("member_add_mode"), "{detail}");
    let detail = server
        .post(&format!("/v1/groups/{theirs}/invite/revoke"), json!({}))
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(detail.contains("revoke the invite link"), "{detail}");
    let shown = server.get(&format!("/v1/groups/{theirs}")).await;
    assert_eq!(shown.body["subject"], "Theirs");
    assert_eq!(shown.body["inbox_role"], "member");
    server.stop().await;
}

async fn a_leave_marks_the_group_left_and_refuses_management(backend: Backend) {
    let server = TestServer::start(backend).await;
    let people = contacts(&server, 4).await;
    let (inbox, owner, alice, bob) = (&people[0], &people[1], &people[2], &people[3]);
    let group = create_group(
        &server,
        json!({"inbox_id": "wa-main", "inbox_contact_id": inbox, "owner_id": owner, "subject": "Theirs", "participants": [alice]}),
    )
    .await;
    let left = server.post(&format!("/v1/groups/{group}/leave"), json!({})).await;
    assert_eq!(left.status, StatusCode::OK, "{:?}", left.body);
    assert_eq!(left.body["left"], true);
    assert_eq!(left.body["member_count"], 2);
    assert_eq!(left.body["inbox_role"], Value::Null);

    for (reply, what) in [
        (server.patch(&format!("/v1/groups/{group}/settings"), json!({"announce": true})).await, "settings"),
        (server.post(&format!("/v1/groups/{group}/members"), json!({"contact_ids": [bob]})).await, "add"),
        (server.patch(&format!("/v1/groups/{group}"), json!({"subject": "New"})).await, "metadata"),
        (server.post(&format!("/v1/groups/{group}/leave"), json!({})).await, "leave"),
        (server.post(&format!("/v1/groups/{group}/sync"), json!({"force": true})).await, "sync"),
    ] {
        let detail = reply.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
        assert!(detail.contains("has left"), "{what}: {detail}");
    }
    let shown = server.get(&format!("/v1/groups/{group}")).await;
    assert_eq!(shown.body["left"], true);
    let members = all_members(&server, &group, "").await;
    assert!(members.iter().all(|m| m["contact_id"] != inbox.as_str()));
    let events = server.all_events("groups", &group).await;
    let types: Vec<&str> = events.iter().map(|e| e["event_type"].as_str().unwrap()).collect();
    assert_eq!(types, ["GroupCreated", "MemberLeft", "GroupLeft"]);
    server.stop().await;
}

async fn membership_as_of_three_moments(backend: Backend) {
    let server = TestServer::start(backend).await;
    let people = contacts(&server, 4).await;
    let (inbox, alice, bob, carol) = (&people[0], &people[1], &people[2], &people[3]);
    let before = Utc::now();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let group = create_group(
        &server,
        json!({"inbox_id": "wa-main", "inbox_contact_id": inbox, "subject": "Then", "participants": [alice, bob]}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let first = Utc::now();
    tokio::time::sleep(Duration::from_millis(5)).await;

    server.patch(&format!("/v1/groups/{group}/members/{alice}"), json!({"role": "admin"})).await;
    server.post(&format!("/v1/groups/{group}/members"), json!({"contact_ids": [carol]})).await;
    let removed = server.delete(&format!("/v1/groups/{group}/members/{bob}")).await;
    assert_eq!(removed.status, StatusCode::NO_CONTENT);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let second = Utc::now();
    tokio::time::sleep(Duration::from_millis(5)).await;

    server.patch(&format!("/v1/groups/{group}/members/{alice}"), json!({"role": "member"})).await;
    server.delete(&format!("/v1/groups/{group}/members/{carol}")).await;
    server.post(&format!("/v1/groups/{group}/members"), json!({"contact_ids": [bob]})).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let third = Utc::now();
    tokio::time::sleep(Duration::from_millis(5)).await;
    // A change after the third moment, which no `as_of` of these moments may show.
    server.patch(&format!("/v1/groups/{group}/members/{bob}"), json!({"role": "admin"})).await;

    let expect = |pairs: &[(&String, &str)]| -> Vec<(String, String)> {
        let mut pairs: Vec<(String, String)> =
            pairs.iter().map(|(c, r)| ((*c).clone(), (*r).to_owned())).collect();
        pairs.sort();
        pairs
    };
    assert_eq!(
        roles(&all_members(&server, &group, &as_of(first)).await),
        expect(&[(inbox, "superadmin"), (alice, "member"), (bob, "member")])
    );
    assert_eq!(
        roles(&all_members(&server, &group, &as_of(second)).await),
        expect(&[(inbox, "superadmin"), (alice, "admin"), (carol, "member")])
    );
    assert_eq!(
        roles(&all_members(&server, &group, &as_of(third)).await),
        expect(&[(inbox, "superadmin"), (alice, "member"), (bob, "member")])
    );
    assert_eq!(
        roles(&all_members(&server, &group, "").await),
        expect(&[(inbox, "superadmin"), (alice, "member"), (bob, "admin")])
    );
    let page = server.get(&format!("/v1/groups/{group}/members?{}", as_of(second))).await;
    assert_eq!(page.body["member_count"], 3);
    assert_eq!(page.body["data"][0]["contact_id"], inbox.as_str());
    assert_eq!(page.body["data"][1]["role"], "admin");
    let detail = server
        .get(&format!("/v1/groups/{group}/members?{}", as_of(before)))
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(detail.contains("did not exist"), "{detail}");
    server.stop().await;
}

/// Sends `request` with `secret` as its token; answers status and JSON body.
async fn as_reader(secret: &str, request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let response = request.bearer_auth(secret).send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn scopes_guard_reads_and_writes(backend: Backend) {
    let server = TestServer::start(backend).await;
    let inbox = server.contact().await;
    let group =
        create_group(&server, json!({"inbox_id": "wa-main", "inbox_contact_id": inbox, "subject": "Scoped"}))
            .await;
    // A second handle on the server's store issues a token that may only read groups.
    let store = server.config().open_store(&[]).await.unwrap();
    let admin =
        colloquy_infra::tokens::authenticate(&store, &server.token, Utc::now()).await.unwrap().unwrap();
    let secret = colloquy_infra::tokens::generate_secret();
    let scopes = ["groups:read".to_owned()];
    colloquy_infra::tokens::insert_token(&store, &admin.tenant, "reader", &secret, &scopes, None)
        .await
        .unwrap();
    store.close().await;

    let (status, body) =
        as_reader(&secret, server.client.get(server.url(&format!("/v1/groups/{group}")))).await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    let (status, _) =
        as_reader(&secret, server.client.get(server.url(&format!("/v1/groups/{group}/members")))).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = as_reader(
        &secret,
        server.client.patch(server.url(&format!("/v1/groups/{group}"))).json(&json!({"subject": "Mine"})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body:?}");
    assert!(body["detail"].as_str().unwrap().contains("groups:write"));
    let (status, _) = as_reader(
        &secret,
        server
            .client
            .post(server.url("/v1/groups"))
            .json(&json!({"inbox_id": "wa", "inbox_contact_id": inbox, "subject": "S"})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(server.get(&format!("/v1/groups/{group}")).await.body["subject"], "Scoped");
    server.stop().await;
}

/// Opens a conversation in `group` with the given status (opened open, then moved).
async fn group_conversation(server: &TestServer, group: &str, contact: &str, status: &str) -> String {
    let opened = server
        .post("/v1/conversations", json!({"contact_id": contact, "channel": "whatsapp", "group_id": group}))
        .await;
    assert_eq!(opened.status, StatusCode::CREATED, "{:?}", opened.body);
    assert_eq!(opened.body["group_type"], "group");
    assert_eq!(opened.body["group_id"], group);
    let id = opened.body["id"].as_str().unwrap().to_owned();
    if status != "open" {
        let moved = server.post(&format!("/v1/conversations/{id}/status"), json!({"status": status})).await;
        assert_eq!(moved.status, StatusCode::OK, "{:?}", moved.body);
    }
    id
}

async fn added_messages(server: &TestServer, conversation: &str) -> usize {
    let events = server.all_events("conversations", conversation).await;
    events.iter().filter(|e| e["event_type"] == "MessageAdded").count()
}

/// The one conversation of `group` in the list, once the list has caught up with `after`.
async fn listed_after(server: &TestServer, after: &common::Reply, group: &str) -> Value {
    let position = after.headers["colloquy-position"].to_str().unwrap().to_owned();
    let listed = server.get(&format!("/v1/conversations?group_id={group}&min_position={position}")).await;
    assert_eq!(listed.status, StatusCode::OK, "{:?}", listed.body);
    assert_eq!(listed.body["data"].as_array().unwrap().len(), 1, "{:?}", listed.body);
    listed.body["data"][0].clone()
}

async fn status_of(server: &TestServer, conversation: &str) -> String {
    let shown = server.get(&format!("/v1/conversations/{conversation}")).await;
    assert_eq!(shown.status, StatusCode::OK, "{:?}", shown.body);
    shown.body["status"].as_str().unwrap().to_owned()
}

async fn messages_in_a_group_follow_its_members_and_settings(backend: Backend) {
    let server = TestServer::start(backend).await;
    let people = contacts(&server, 6).await;
    let (inbox, owner, alice, bob, stranger, chat) =
        (&people[0], &people[1], &people[2], &people[3], &people[4], &people[5]);
    // The inbox is a plain member here; Dora-like `owner` owns the group.
    let group = create_group(
        &server,
        json!({"inbox_id": "wa-main", "inbox_contact_id": inbox, "owner_id": owner, "subject": "Club", "participants": [alice, bob]}),
    )
    .await;
    let conversation = group_conversation(&server, &group, chat, "open").await;
    let messages = format!("/v1/conversations/{conversation}/messages");

    let from_alice =
        server.post(&messages, json!({"sender": {"kind": "customer", "id": alice}, "text": "hi all"})).await;
    assert_eq!(from_alice.status, StatusCode::CREATED, "{:?}", from_alice.body);
    let from_stranger = server
        .post(&messages, json!({"sender": {"kind": "customer", "id": stranger}, "text": "me too"}))
        .await;
    assert!(from_stranger.assert_problem(StatusCode::UNPROCESSABLE_ENTITY).contains("not a member"));
    let unnamed = server.post(&messages, json!({"sender": {"kind": "customer"}, "text": "who?"})).await;
    unnamed.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);

    let everyone = server
        .post(
            &messages,
            json!({"sender": {"kind": "user", "id": "agent-1"}, "text": "@everyone meeting at 5", "mentions": ["@everyone"]}),
        )
        .await;
    assert_eq!(everyone.status, StatusCode::CREATED, "{:?}", everyone.body);
    assert_eq!(everyone.body["mentions_everyone"], true, "{:?}", everyone.body);
    let mut named: Vec<String> = everyone.body["mentions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_owned())
        .collect();
    named.sort();
    let mut expected: Vec<String> =
        [owner, alice, bob].iter().map(|id| format!("mention://contact/{id}")).collect();
    expected.sort();
    assert_eq!(named, expected, "every member but the inbox, at that moment");
    let outsider = server
        .post(
            &messages,
            json!({"sender": {"kind": "user", "id": "agent-1"}, "text": "hey", "mentions": [format!("mention://contact/{stranger}")]}),
        )
        .await;
    assert!(outsider.assert_problem(StatusCode::UNPROCESSABLE_ENTITY).contains("no member"));

    assert_eq!(added_messages(&server, &conversation).await, 2, "refused messages appended nothing");

    // Announce on: the inbox, a plain member, may not send; members and notes still may. (The
    // inbox cannot turn announce on itself, not being an admin: the group is registered so.)
    let announced = create_group(
        &server,
        json!({"inbox_id": "wa-main", "inbox_contact_id": inbox, "owner_id": owner, "subject": "News",
               "participants": [alice, bob], "settings": {"announce": true}}),
    )
    .await;
    let conversation = group_conversation(&server, &announced, chat, "open").await;
    let messages = format!("/v1/conversations/{conversation}/messages");
    let refused =
        server.post(&messages, json!({"sender": {"kind": "user", "id": "agent-1"}, "text": "x"})).await;
    assert!(refused.assert_problem(StatusCode::UNPROCESSABLE_ENTITY).contains("announce"));
    let note = server
        .post(
            &messages,
            json!({"sender": {"kind": "user", "id": "agent-1"}, "visibility": "internal", "text": "n"}),
        )
        .await;
    assert_eq!(note.status, StatusCode::CREATED, "{:?}", note.body);
    let member =
        server.post(&messages, json!({"sender": {"kind": "customer", "id": bob}, "text": "ok"})).await;
    assert_eq!(member.status, StatusCode::CREATED, "{:?}", member.body);

    assert_eq!(added_messages(&server, &conversation).await, 2, "the refused message appended nothing");
    server.stop().await;
}

async fn leaving_a_group_closes_its_open_and_pending_conversations(backend: Backend) {
    let server = TestServer::start(backend).await;
    let people = contacts(&server, 4).await;
    let (inbox, alice, chat, other) = (&people[0], &people[1], &people[2], &people[3]);
    let group = create_group(
        &server,
        json!({"inbox_id": "wa-main", "inbox_contact_id": inbox, "subject": "Ours", "participants": [alice]}),
    )
    .await;
    let open = group_conversation(&server, &group, chat, "open").await;
    let pending = group_conversation(&server, &group, chat, "pending").await;
    let snoozed = group_conversation(&server, &group, chat, "snoozed").await;
    let closed = group_conversation(&server, &group, chat, "closed").await;
    let individual =
        server.post("/v1/conversations", json!({"contact_id": other, "channel": "whatsapp"})).await.body
            ["id"]
            .as_str()
            .unwrap()
            .to_owned();
    // The list filters by group (the read model catches up in the background).
    let mut wanted = vec![open.clone(), pending.clone(), snoozed.clone(), closed.clone()];
    wanted.sort();
    let filter = format!("/v1/conversations?group_id={group}&status=open,pending,snoozed,closed");
    crate::common::eventually(Duration::from_secs(20), "the group filter listing its four", || async {
        let listed = server.get(&filter).await;
        assert_eq!(listed.status, StatusCode::OK, "{:?}", listed.body);
        let mut ids: Vec<String> = listed.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        (ids == wanted).then_some(())
    })
    .await;

    let left = server.post(&format!("/v1/groups/{group}/leave"), json!({})).await;
    assert_eq!(left.status, StatusCode::OK, "{:?}", left.body);
    let group_events = server.all_events("groups", &group).await;
    let leave = group_events.iter().find(|e| e["event_type"] == "GroupLeft").unwrap();
    let leave_id = leave["metadata"]["event_id"].as_str().unwrap().to_owned();

    // The process manager runs in the background; wait for its effect.
    crate::common::eventually(Duration::from_secs(20), "the left group's conversations closed", || async {
        let closed =
            status_of(&server, &open).await == "closed" && status_of(&server, &pending).await == "closed";
        closed.then_some(())
    })
    .await;
    for conversation in [&open, &pending] {
        let events = server.all_events("conversations", conversation).await;
        let closing = events.last().unwrap();
        assert_eq!(closing["event_type"], "StatusChanged");
        assert_eq!(closing["data"]["to"], "closed");
        assert_eq!(closing["data"]["reason"], "group_left");
        assert_eq!(closing["metadata"]["causation_id"], leave_id.as_str(), "caused by the leave");
        assert_eq!(closing["metadata"]["correlation_id"], leave["metadata"]["correlation_id"]);
        assert_eq!(closing["metadata"]["actor_kind"], "system");
    }
    assert_eq!(status_of(&server, &snoozed).await, "snoozed");
    assert_eq!(status_of(&server, &individual).await, "open");
    let closed_events = server.all_events("conversations", &closed).await;
    assert_eq!(closed_events.len(), 2, "an already closed conversation gets no second close");

    let refused = server
        .post(
            &format!("/v1/conversations/{open}/messages"),
            json!({"sender": {"kind": "user", "id": "agent-1"}, "text": "still there?"}),
        )
        .await;
    assert!(refused.assert_problem(StatusCode::UNPROCESSABLE_ENTITY).contains("left"));
    let new_one = server
        .post("/v1/conversations", json!({"contact_id": chat, "channel": "whatsapp", "group_id": group}))
        .await;
    assert!(new_one.assert_problem(StatusCode::UNPROCESSABLE_ENTITY).contains("left"));
    server.stop().await;
}

async fn participants_given_by_number_are_matched_or_created(backend: Backend) {
    let server = TestServer::start(backend).await;
    let inbox = server.contact().await;
    let known = server.post("/v1/contacts", json!({"first_name": "Ana", "phone": "+55 11 99999-0001"})).await;
    assert_eq!(known.status, StatusCode::CREATED, "{:?}", known.body);
    let known_id = known.body["id"].as_str().unwrap().to_owned();
    // Numbers are matched through the contact summaries; wait until they know Ana's.
    let position = known.headers["colloquy-position"].to_str().unwrap().to_owned();
    let caught_up = server.get(&format!("/v1/conversations?min_position={position}")).await;
    assert_eq!(caught_up.status, StatusCode::OK, "{:?}", caught_up.body);

    let group = create_group(
        &server,
        json!({"inbox_id": "wa", "inbox_contact_id": inbox, "subject": "Numbers",
               "participants": ["+5511999990001", "+55 11 99999-0002"]}),
    )
    .await;
    let members: Vec<String> = all_members(&server, &group, "")
        .await
        .iter()
        .map(|m| m["contact_id"].as_str().unwrap().to_owned())
        .filter(|id| *id != inbox)
        .collect();
    assert_eq!(members.len(), 2, "{members:?}");
    assert!(members.contains(&known_id), "the number of a known contact names that contact");
    let created = members.iter().find(|id| **id != known_id).unwrap().clone();
    let contact = server.get(&format!("/v1/contacts/{created}")).await;
    assert_eq!(contact.status, StatusCode::OK, "{:?}", contact.body);
    assert_eq!(contact.body["phone"], "+5511999990002");

    // The same new number elsewhere names the same contact, even before the summaries know it.
    let other = create_group(
        &server,
        json!({"inbox_id": "wa", "inbox_contact_id": inbox, "subject": "Again", "participants": ["+5511999990002"]}),
    )
    .await;
    let again: Vec<String> = all_members(&server, &other, "")
        .await
        .iter()
        .map(|m| m["contact_id"].as_str().unwrap().to_owned())
        .collect();
    assert!(again.contains(&created), "{again:?}");

    let added =
        server.post(&format!("/v1/groups/{group}/members"), json!({"contact_ids": ["+5511999990003"]})).await;
    assert_eq!(added.status, StatusCode::OK, "{:?}", added.body);
    assert_eq!(added.body["member_count"], 4);

    let bad = server
        .post(
            "/v1/groups",
            json!({"inbox_id": "wa", "inbox_contact_id": inbox, "subject": "Bad", "participants": ["12345"]}),
        )
        .await;
    let detail = bad.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(detail.contains("participants"), "{detail}");
    server.stop().await;
}

async fn provider_reports_joins_activity_and_its_full_view(backend: Backend) {
    let server = TestServer::start(backend).await;
    let people = contacts(&server, 5).await;
    let (inbox, alice, bob, cai, dora) = (&people[0], &people[1], &people[2], &people[3], &people[4]);
    let group = create_group(
        &server,
        json!({"inbox_id": "wa", "inbox_contact_id": inbox, "subject": "Provider", "participants": [alice], "invite_code": "CODE1"}),
    )
    .await;
    let joined = server
        .post(
            &format!("/v1/groups/{group}/provider/join"),
            json!({"participant": bob, "invite_code": "CODE1"}),
        )
        .await;
    assert_eq!(joined.status, StatusCode::OK, "{:?}", joined.body);
    assert_eq!(joined.body["member_count"], 3);
    let wrong = server
        .post(&format!("/v1/groups/{group}/provider/join"), json!({"participant": cai, "invite_code": "OLD"}))
        .await;
    wrong.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
    let asked = server.post(&format!("/v1/groups/{group}/provider/join"), json!({"participant": cai})).await;
    assert_eq!(asked.status, StatusCode::OK, "{:?}", asked.body);
    assert_eq!(asked.body["pending_join_requests"], 1);
    assert_eq!(asked.body["member_count"], 3);

    let conversation = group_conversation(&server, &group, alice, "open").await;
    let at = "2026-01-02T03:04:05Z";
    let activity = server.post(&format!("/v1/groups/{group}/provider/activity"), json!({"at": at})).await;
    assert_eq!(activity.status, StatusCode::OK, "{:?}", activity.body);
    assert_eq!(
        activity.body["last_activity_at"].as_str().unwrap().parse::<DateTime<Utc>>().unwrap(),
        at.parse::<DateTime<Utc>>().unwrap()
    );

    // The conversation shows the activity as unseen until someone reads it, and again after a
    // newer ping (a time ahead of the server's counts as now).
    let listed = listed_after(&server, &activity, &group).await;
    assert_eq!(listed["id"], conversation.as_str());
    assert_eq!(listed["unseen_activity"], true, "{listed:?}");
    assert_eq!(
        listed["group_activity_at"].as_str().unwrap().parse::<DateTime<Utc>>().unwrap(),
        at.parse::<DateTime<Utc>>().unwrap()
    );
    let read =
        server.post(&format!("/v1/conversations/{conversation}/read"), json!({"user_id": "agent-1"})).await;
    assert_eq!(read.status, StatusCode::OK, "{:?}", read.body);
    assert_eq!(listed_after(&server, &read, &group).await["unseen_activity"], false);
    let newer = server
        .post(&format!("/v1/groups/{group}/provider/activity"), json!({"at": "2999-01-01T00:00:00Z"}))
        .await;
    assert_eq!(newer.status, StatusCode::OK, "{:?}", newer.body);
    let listed = listed_after(&server, &newer, &group).await;
    assert_eq!(listed["unseen_activity"], true, "{listed:?}");
    assert_eq!(listed["readers"][0]["unseen_activity"], true, "{listed:?}");

    // The provider's full view: Alice left, Dora joined as admin, announce on, a new subject.
    let view = json!({"subject": "Provider (renamed)", "settings": {"announce": true},
        "participants": [{"id": inbox, "role": "superadmin"}, {"id": bob}, {"id": dora, "role": "admin"}]});
    let synced = server.post(&format!("/v1/groups/{group}/provider/view"), view.clone()).await;
    assert_eq!(synced.status, StatusCode::OK, "{:?}", synced.body);
    assert_eq!(synced.body["subject"], "Provider (renamed)");
    assert_eq!(synced.body["settings"]["announce"], true);
    let members = roles(&all_members(&server, &group, "").await);
    let mut expected = vec![
        (inbox.clone(), "superadmin".to_owned()),
        (bob.clone(), "member".to_owned()),
        (dora.clone(), "admin".to_owned()),
    ];
    expected.sort();
    assert_eq!(members, expected);
    let before = server.all_events("groups", &group).await.len();
    let again = server.post(&format!("/v1/groups/{group}/provider/view"), view).await;
    assert_eq!(again.status, StatusCode::OK, "{:?}", again.body);
    assert_eq!(
        server.all_events("groups", &group).await.len(),
        before,
        "the same view twice records nothing"
    );
    server.stop().await;
}

async fn a_contacts_groups_follow_its_memberships(backend: Backend) {
    let server = TestServer::start(backend).await;
    let people = contacts(&server, 3).await;
    let (inbox, alice, bob) = (&people[0], &people[1], &people[2]);
    let mut groups = Vec::new();
    for subject in ["One", "Two", "Three"] {
        groups.push(
            create_group(
                &server,
                json!({"inbox_id": "wa", "inbox_contact_id": inbox, "subject": subject, "participants": [alice, bob]}),
            )
            .await,
        );
    }
    let removed = server.delete(&format!("/v1/groups/{}/members/{alice}", groups[0])).await;
    assert_eq!(removed.status, StatusCode::NO_CONTENT, "{:?}", removed.body);
    let promoted =
        server.patch(&format!("/v1/groups/{}/members/{alice}", groups[1]), json!({"role": "admin"})).await;
    assert_eq!(promoted.status, StatusCode::OK, "{:?}", promoted.body);
    let position = promoted.headers["colloquy-position"].to_str().unwrap().to_owned();

    let mut seen = Vec::new();
    let mut path = format!("/v1/contacts/{alice}/groups?limit=1&min_position={position}");
    loop {
        let page = server.get(&path).await;
        assert_eq!(page.status, StatusCode::OK, "{:?}", page.body);
        for membership in page.body["data"].as_array().unwrap() {
            seen.push((
                membership["group_id"].as_str().unwrap().to_owned(),
                membership["role"].as_str().unwrap().to_owned(),
            ));
        }
        match page.body["next_cursor"].as_str() {
            Some(next) => path = format!("/v1/contacts/{alice}/groups?limit=1&cursor={next}"),
            None => break,
        }
    }
    let mut expected =
        vec![(groups[1].clone(), "admin".to_owned()), (groups[2].clone(), "member".to_owned())];
    expected.sort();
    assert_eq!(seen, expected, "by group id, without the group Alice was removed from");
    let bobs = server.get(&format!("/v1/contacts/{bob}/groups")).await;
    assert_eq!(bobs.body["data"].as_array().unwrap().len(), 3);
    let unknown = server.get(&format!("/v1/contacts/{}/groups", uuid::Uuid::new_v4())).await;
    unknown.assert_problem(StatusCode::NOT_FOUND);
    server.stop().await;
}

/// A provider's activity time outside 1970 to 9999 is refused at the API; one stored before that
/// rule (appended here as an old server would have) does not stop the list: the next activity
/// still reaches it, and every projection stays ready.
async fn an_activity_time_out_of_range_is_refused_and_an_old_one_does_not_stop_the_list(backend: Backend) {
    let server = TestServer::start(backend).await;
    let people = contacts(&server, 2).await;
    let (inbox, alice) = (&people[0], &people[1]);
    let group = create_group(
        &server,
        json!({"inbox_id": "wa", "inbox_contact_id": inbox, "subject": "Times", "participants": [alice]}),
    )
    .await;
    group_conversation(&server, &group, alice, "open").await;
    for at in ["-100000-01-01T00:00:00Z", "1969-12-31T23:59:59Z", "+10000-01-01T00:00:00Z"] {
        let refused = server.post(&format!("/v1/groups/{group}/provider/activity"), json!({"at": at})).await;
        let detail = refused.assert_problem(StatusCode::BAD_REQUEST);
        assert!(detail.contains("at") && detail.contains("between 1970"), "{at}: {detail}");
    }
    assert_eq!(server.all_events("groups", &group).await.len(), 1, "a refused ping appends nothing");

    let store = server.config().open_store(&[]).await.unwrap();
    let old = cqrs_es::persist::SerializedEvent::new(
        group.clone(),
        2,
        "group".into(),
        "GroupActivityRecorded".into(),
        "1.0".into(),
        json!({"GroupActivityRecorded": {"last_activity_at": "-100000-01-01T00:00:00Z", "recorded_at": "2026-12-01T00:00:00Z"}}),
        json!({"event_id": uuid::Uuid::now_v7(), "tenant_id": "default", "actor_kind": "system",
               "actor_id": "old-server", "correlation_id": uuid::Uuid::now_v7(), "recorded_at": "2026-12-01T00:00:00Z"}),
    );
    store.append(vec![old]).await.unwrap();
    let at = "2026-03-04T05:06:07Z";
    let activity = server.post(&format!("/v1/groups/{group}/provider/activity"), json!({"at": at})).await;
    assert_eq!(activity.status, StatusCode::OK, "{:?}", activity.body);
    let listed = listed_after(&server, &activity, &group).await;
    assert_eq!(
        listed["group_activity_at"].as_str().unwrap().parse::<DateTime<Utc>>().unwrap(),
        at.parse::<DateTime<Utc>>().unwrap()
    );
    let ready = server.get("/readyz").await;
    assert_eq!(ready.status, StatusCode::OK, "{:?}", ready.body);
}

on_both_stores!(
    the_life_of_a_group_with_200_members,
    refusals_answer_with_their_reason,
    a_leave_marks_the_group_left_and_refuses_management,
    membership_as_of_three_moments,
    scopes_guard_reads_and_writes,
    messages_in_a_group_follow_its_members_and_settings,
    leaving_a_group_closes_its_open_and_pending_conversations,
    participants_given_by_number_are_matched_or_created,
    provider_reports_joins_activity_and_its_full_view,
    a_contacts_groups_follow_its_memberships,
    an_activity_time_out_of_range_is_refused_and_an_old_one_does_not_stop_the_list,
);
