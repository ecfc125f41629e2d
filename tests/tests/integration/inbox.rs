//! The inbox over HTTP, on both stores: every filter and sort of `GET /v1/conversations` checked
//! against a model of what the test did, cursor walks while conversations arrive, counts equal to
//! a count over the list after a random run of commands, and bulk resolve.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet, HashSet};

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::{Backend, TestServer};

/// What the test did to one conversation.
#[derive(Debug, Clone)]
struct Model {
    id: String,
    contact_id: String,
    status: &'static str,
    priority: &'static str,
    channel: &'static str,
    inbox: String,
    assignee: Option<String>,
    team: Option<String>,
    labels: BTreeSet<String>,
    starred: bool,
    customer_last: bool,
    participants: BTreeSet<String>,
    mentioned: BTreeSet<String>,
}

/// Issues commands and remembers the last global position, for read-your-writes.
struct Driver<'a> {
    server: &'a TestServer,
    position: String,
}

impl Driver<'_> {
    async fn send(&mut self, path: &str, body: Value) -> Value {
        let reply = self.server.post(path, body).await;
        assert!(reply.status.is_success(), "{path}: {:?}", reply.body);
        if let Some(position) = reply.headers.get("colloquy-position") {
            self.position = position.to_str().unwrap().to_owned();
        }
        reply.body
    }

    async fn contact(&mut self, first_name: &str, email: &str) -> String {
        let body = self.send("/v1/contacts", json!({"first_name": first_name, "email": email})).await;
        body["id"].as_str().unwrap().to_owned()
    }

    /// Every row of a list, walking pages of `limit`, with the read model caught up.
    async fn walk(&self, query: &str, limit: usize) -> Vec<Value> {
        let mut rows = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/v1/conversations?limit={limit}&min_position={}", self.position);
            if !query.is_empty() {
                path.push('&');
                path.push_str(query);
            }
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let page = self.server.get(&path).await;
            assert_eq!(page.status, StatusCode::OK, "{path}: {:?}", page.body);
            let data = page.body["data"].as_array().unwrap();
            assert!(data.len() <= limit);
            rows.extend(data.iter().cloned());
            match page.body["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return rows,
            }
        }
    }
}

fn ids(rows: &[Value]) -> Vec<String> {
    rows.iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect()
}

/// Opens 24 conversations whose attributes vary with their index, so every filter splits them.
async fn seed(driver: &mut Driver<'_>) -> Vec<Model> {
    let shared = driver.contact("Zelda", "zelda@example.com").await;
    let mut models = Vec::new();
    for i in 0..24usize {
        let contact_id = if i % 5 == 0 {
            shared.clone()
        } else {
            driver.contact(&format!("Person{i}"), &format!("p{i}@example.com")).await
        };
        let channel = ["whatsapp", "email", "sms"][i % 3];
        let priority = ["low", "medium", "high", "urgent"][(i / 2) % 4];
        let inbox = format!("inbox-{}", i % 4);
        let mut labels = BTreeSet::new();
        if i % 2 == 0 {
            labels.insert("vip".to_owned());
        }
        if i % 3 == 0 {
            labels.insert("billing".to_owned());
        }
        let body = driver
            .send(
                "/v1/conversations",
                json!({
                    "contact_id": contact_id, "channel": channel, "inbox_id": inbox, "priority": priority,
                    "subject": format!("Order {i}"), "labels": labels.iter().collect::<Vec<_>>(),
                }),
            )
            .await;
        let id = body["id"].as_str().unwrap().to_owned();
        let mut model = Model {
            id: id.clone(),
            contact_id,
            status: "open",
            priority,
            channel,
            inbox,
            assignee: None,
            team: None,
            labels,
            starred: false,
            customer_last: false,
            participants: BTreeSet::new(),
            mentioned: BTreeSet::new(),
        };
        let messages = format!("/v1/conversations/{id}/messages");
        if i % 2 == 1 {
            driver
                .send(&messages, json!({"sender": {"kind": "customer"}, "text": format!("hello {i}")}))
                .await;
            model.customer_last = true;
        }
        if i % 4 == 3 {
            let agent = format!("agent-{}", i % 3);
            driver.send(&messages, json!({"sender": {"kind": "user", "id": agent}, "text": "on it"})).await;
            model.customer_last = false;
            model.participants.insert(agent);
        }
        if i % 5 == 2 {
            driver
                .send(
                    &messages,
                    json!({"sender": {"kind": "user", "id": "agent-1"}, "visibility": "internal",
                           "text": "have a look", "mentions": ["agent-2"]}),
                )
                .await;
            model.participants.insert("agent-1".into());
            model.mentioned.insert("agent-2".into());
        }
        if i % 3 != 0 {
            let assignee = format!("agent-{}", i % 4);
            let team = format!("team-{}", i % 2);
            driver
                .send(
                    &format!("/v1/conversations/{id}/assignment"),
                    json!({"assignee_id": assignee, "team_id": team}),
                )
                .await;
            model.assignee = Some(assignee);
            model.team = Some(team);
        }
        if i % 4 == 1 {
            let reply =
                driver.server.patch(&format!("/v1/conversations/{id}"), json!({"starred": true})).await;
            assert_eq!(reply.status, StatusCode::OK);
            driver.position = reply.headers["colloquy-position"].to_str().unwrap().to_owned();
            model.starred = true;
        }
        let status = if i % 5 == 0 {
            "pending"
        } else if i % 7 == 0 {
            "snoozed"
        } else if i % 6 == 1 {
            "closed"
        } else {
            "open"
        };
        if status != "open" {
            driver.send(&format!("/v1/conversations/{id}/status"), json!({"status": status})).await;
            model.status = status;
        }
        models.push(model);
    }
    models
}

fn by_index(models: &[Model], indexes: &[usize]) -> BTreeSet<String> {
    indexes.iter().map(|&i| models[i].id.clone()).collect()
}

fn expect(models: &[Model], keep: impl Fn(&Model) -> bool) -> BTreeSet<String> {
    models.iter().filter(|m| keep(m)).map(|m| m.id.clone()).collect()
}

async fn every_filter_answers_what_the_model_expects(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut driver = Driver { server: &server, position: "0".into() };
    let models = seed(&mut driver).await;
    let shared = models[0].contact_id.clone();
    let cases: Vec<(String, BTreeSet<String>)> = vec![
        (String::new(), expect(&models, |_| true)),
        ("status=open".into(), expect(&models, |m| m.status == "open")),
        ("status=pending,snoozed".into(), expect(&models, |m| matches!(m.status, "pending" | "snoozed"))),
        ("priority=urgent".into(), expect(&models, |m| m.priority == "urgent")),
        ("assignee_id=agent-1".into(), expect(&models, |m| m.assignee.as_deref() == Some("agent-1"))),
        ("unassigned=true".into(), expect(&models, |m| m.assignee.is_none())),
        ("team_id=team-0".into(), expect(&models, |m| m.team.as_deref() == Some("team-0"))),
        ("inbox_id=inbox-2".into(), expect(&models, |m| m.inbox == "inbox-2")),
        (format!("contact_id={shared}"), expect(&models, |m| m.contact_id == shared)),
        ("channel=email".into(), expect(&models, |m| m.channel == "email")),
        ("channel=sms,whatsapp".into(), expect(&models, |m| m.channel != "email")),
        ("group_type=individual".into(), expect(&models, |_| true)),
        ("group_type=group".into(), BTreeSet::new()),
        ("label=vip".into(), expect(&models, |m| m.labels.contains("vip"))),
        ("label=vip,billing".into(), expect(&models, |m| m.labels.len() == 2)),
        ("label=vip,billing&label_match=any".into(), expect(&models, |m| !m.labels.is_empty())),
        ("starred=true".into(), expect(&models, |m| m.starred)),
        ("starred=false".into(), expect(&models, |m| !m.starred)),
        ("awaiting_response=true".into(), expect(&models, |m| m.customer_last)),
        ("awaiting_response=false".into(), expect(&models, |m| !m.customer_last)),
        ("participating=agent-1".into(), expect(&models, |m| m.participants.contains("agent-1"))),
        ("mentioned=agent-2".into(), expect(&models, |m| m.mentioned.contains("agent-2"))),
        ("mentioned=agent-9".into(), BTreeSet::new()),
        ("q=zelda".into(), expect(&models, |m| m.contact_id == shared)),
        ("q=ZELDA@EXAMPLE".into(), expect(&models, |m| m.contact_id == shared)),
        ("q=hello%2013".into(), expect(&models, |m| m.id == models[13].id)),
        ("q=Order%202".into(), by_index(&models, &[2, 20, 21, 22, 23])),
        (
            "status=open&assignee_id=agent-2&label=vip".into(),
            expect(&models, |m| {
                m.status == "open" && m.assignee.as_deref() == Some("agent-2") && m.labels.contains("vip")
            }),
        ),
        (
            "status=open,pending&unassigned=true&channel=whatsapp&starred=false".into(),
            expect(&models, |m| {
                matches!(m.status, "open" | "pending")
                    && m.assignee.is_none()
                    && m.channel == "whatsapp"
                    && !m.starred
            }),
        ),
    ];
    for (query, expected) in &cases {
        for limit in [4, 100] {
            let rows = driver.walk(query, limit).await;
            let got = ids(&rows);
            let unique: BTreeSet<String> = got.iter().cloned().collect();
            assert_eq!(unique.len(), got.len(), "{query}: no row twice");
            assert_eq!(&unique, expected, "{query} (limit {limit})");
        }
    }
    // Ranges: split the conversations at the 12th's creation and latest activity.
    let all = driver.walk("sort=created_at&order=asc", 100).await;
    let pivot = all[12]["created_at"].as_str().unwrap().to_owned();
    let encoded = pivot.replace('+', "%2B");
    let before = ids(&driver.walk(&format!("created_before={encoded}&sort=created_at&order=asc"), 5).await);
    let after = ids(&driver.walk(&format!("created_after={encoded}&sort=created_at&order=asc"), 5).await);
    assert_eq!(before, ids(&all[..12]));
    assert_eq!(after, ids(&all[12..]));
    let recent = driver.walk("sort=last_activity_at", 100).await;
    let pivot = recent[5]["last_activity_at"].as_str().unwrap().replace('+', "%2B");
    let newer = ids(&driver.walk(&format!("last_activity_after={pivot}"), 3).await);
    let older = ids(&driver.walk(&format!("last_activity_before={pivot}"), 3).await);
    assert_eq!(newer, ids(&recent[..6]));
    assert_eq!(older, ids(&recent[6..]));

    // The row carries the contact's summary and the list's view matches GET by id.
    let row = &recent[0];
    assert!(row["contact"]["email"].as_str().unwrap().ends_with("@example.com"), "{row}");
    let single = server.get(&format!("/v1/conversations/{}", row["id"].as_str().unwrap())).await;
    assert_eq!(&single.body, row);
    server.stop().await;
}

fn time(row: &Value, field: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(row[field].as_str().unwrap()).unwrap().with_timezone(&Utc)
}

fn sort_value(row: &Value, key: &str) -> (i64, DateTime<Utc>, String) {
    let rank = |p: &str| ["low", "medium", "high", "urgent"].iter().position(|x| *x == p).unwrap() as i64;
    let id = row["id"].as_str().unwrap().to_owned();
    match key {
        "priority" => (rank(row["priority"].as_str().unwrap()), time(row, "last_activity_at"), id),
        "waiting_since" => (0, time(row, "customer_waiting_since"), id),
        other => (0, time(row, other), id),
    }
}

async fn every_sort_orders_rows_both_ways_across_pages(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut driver = Driver { server: &server, position: "0".into() };
    let models = seed(&mut driver).await;
    for key in ["last_activity_at", "created_at", "priority", "waiting_since"] {
        for order in ["asc", "desc"] {
            let rows = driver.walk(&format!("sort={key}&order={order}"), 5).await;
            let expected: BTreeSet<String> = if key == "waiting_since" {
                expect(&models, |m| m.customer_last)
            } else {
                expect(&models, |_| true)
            };
            assert_eq!(ids(&rows).into_iter().collect::<BTreeSet<_>>(), expected, "sort={key}");
            let values: Vec<_> = rows.iter().map(|r| sort_value(r, key)).collect();
            let mut sorted = values.clone();
            sorted.sort();
            if order == "desc" {
                sorted.reverse();
            }
            assert_eq!(values, sorted, "sort={key}&order={order}");
        }
    }
    // A cursor is bound to its sort; the defaults: newest activity first, longest wait first.
    let first = server.get("/v1/conversations?limit=2&sort=created_at").await;
    let cursor = first.body["next_cursor"].as_str().unwrap();
    server
        .get(&format!("/v1/conversations?limit=2&sort=priority&cursor={cursor}"))
        .await
        .assert_problem(StatusCode::BAD_REQUEST);
    let waiting = driver.walk("sort=waiting_since", 100).await;
    let times: Vec<_> = waiting.iter().map(|r| sort_value(r, "waiting_since")).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "longest-waiting first by default");
    server.stop().await;
}

async fn a_cursor_walk_sees_every_existing_row_once_while_new_ones_arrive(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut driver = Driver { server: &server, position: "0".into() };
    let contact = driver.contact("Walker", "walk@example.com").await;
    let mut existing = BTreeSet::new();
    for _ in 0..30 {
        let body = driver.send("/v1/conversations", json!({"contact_id": contact, "channel": "chat"})).await;
        existing.insert(body["id"].as_str().unwrap().to_owned());
    }
    for query in ["sort=last_activity_at", "sort=created_at&order=desc", "sort=created_at&order=asc"] {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        let mut inserted = 0;
        loop {
            let mut path = format!("/v1/conversations?limit=4&{query}&min_position={}", driver.position);
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let page = server.get(&path).await;
            assert_eq!(page.status, StatusCode::OK, "{:?}", page.body);
            seen.extend(ids(page.body["data"].as_array().unwrap()));
            // New conversations arrive between pages.
            for _ in 0..2 {
                driver.send("/v1/conversations", json!({"contact_id": contact, "channel": "chat"})).await;
                inserted += 1;
            }
            match page.body["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        let unique: HashSet<&String> = seen.iter().collect();
        assert_eq!(unique.len(), seen.len(), "{query}: no duplicates");
        for id in &existing {
            assert!(unique.contains(id), "{query}: {id}, present when the walk began, was skipped");
        }
        assert!(inserted > 0);
        existing.extend(seen);
    }
    server.stop().await;
}

/// A small deterministic generator, so a failure replays.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: usize) -> usize {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) % below as u64) as usize
    }
}

async fn counts_equal_a_count_over_the_list_after_random_commands(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut driver = Driver { server: &server, position: "0".into() };
    let contact = driver.contact("Counter", "count@example.com").await;
    let mut live: Vec<String> = Vec::new();
    let mut random = Lcg(0xC011_0C07);
    for step in 0..120 {
        let choice = if live.is_empty() { 0 } else { random.next(7) };
        match choice {
            0 => {
                let body =
                    driver.send("/v1/conversations", json!({"contact_id": contact, "channel": "sms"})).await;
                live.push(body["id"].as_str().unwrap().to_owned());
            }
            1 | 2 => {
                let id = &live[random.next(live.len())];
                let status = ["open", "pending", "snoozed", "closed", "bot"][random.next(5)];
                let reply =
                    server.post(&format!("/v1/conversations/{id}/status"), json!({"status": status})).await;
                if reply.status.is_success() {
                    driver.position = reply.headers["colloquy-position"].to_str().unwrap().to_owned();
                }
            }
            3 | 4 => {
                let id = &live[random.next(live.len())];
                let agent = format!("agent-{}", random.next(3));
                driver
                    .send(&format!("/v1/conversations/{id}/assignment"), json!({"assignee_id": agent}))
                    .await;
            }
            5 => {
                let id = &live[random.next(live.len())];
                let reply = server.delete(&format!("/v1/conversations/{id}/assignment")).await;
                assert!(reply.status.is_success());
                // Unassigning an unassigned conversation appends nothing and has no position.
                if let Some(position) = reply.headers.get("colloquy-position") {
                    driver.position = position.to_str().unwrap().to_owned();
                }
            }
            _ => {
                let id = live.swap_remove(random.next(live.len()));
                let reply = server.delete(&format!("/v1/conversations/{id}")).await;
                assert_eq!(reply.status, StatusCode::NO_CONTENT, "step {step}");
                driver.position = reply.headers["colloquy-position"].to_str().unwrap().to_owned();
            }
        }
        if step % 30 == 29 {
            let rows = driver.walk("", 100).await;
            let mut by_status: BTreeMap<String, i64> = BTreeMap::new();
            for row in &rows {
                *by_status.entry(row["status"].as_str().unwrap().to_owned()).or_default() += 1;
            }
            let counts = server
                .get(&format!(
                    "/v1/conversations/counts?status=open&user_id=agent-1&min_position={}",
                    driver.position
                ))
                .await;
            assert_eq!(counts.status, StatusCode::OK, "{:?}", counts.body);
            for status in ["open", "pending", "snoozed", "closed", "bot"] {
                assert_eq!(
                    counts.body["by_status"][status].as_i64().unwrap(),
                    by_status.get(status).copied().unwrap_or(0),
                    "step {step}: {status}"
                );
            }
            let open: Vec<&Value> = rows.iter().filter(|r| r["status"] == "open").collect();
            assert_eq!(counts.body["all"].as_i64().unwrap(), open.len() as i64);
            assert_eq!(
                counts.body["mine"].as_i64().unwrap(),
                open.iter().filter(|r| r["assignee_id"] == "agent-1").count() as i64
            );
            assert_eq!(
                counts.body["unassigned"].as_i64().unwrap(),
                open.iter().filter(|r| r["assignee_id"].is_null()).count() as i64
            );
            assert_eq!(rows.len(), live.len(), "deleted conversations leave the list");
        }
    }
    server.stop().await;
}

async fn bulk_resolve_closes_each_by_its_own_command_and_reports_the_rest(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut driver = Driver { server: &server, position: "0".into() };
    let contact = driver.contact("Bulk", "bulk@example.com").await;
    let mut ids = Vec::new();
    for i in 0..8 {
        let labels = if i < 4 { json!(["spam"]) } else { json!([]) };
        let body = driver
            .send("/v1/conversations", json!({"contact_id": contact, "channel": "email", "labels": labels}))
            .await;
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    driver.send(&format!("/v1/conversations/{}/status", ids[4]), json!({"status": "closed"})).await;
    let deleted = server.delete(&format!("/v1/conversations/{}", ids[5])).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let unknown = uuid::Uuid::now_v7().to_string();
    let events_before = server.all_events("conversations", &ids[4]).await.len();

    let reply = server
        .post("/v1/conversations/resolve", json!({"ids": [ids[4], ids[5], ids[6], unknown, ids[6]]}))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.body["resolved"], 1);
    let failed: BTreeMap<String, String> = reply.body["failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["id"].as_str().unwrap().to_owned(), f["reason"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(failed.len(), 3, "{failed:?}");
    assert!(failed[&ids[4]].contains("already closed"), "{failed:?}");
    assert!(failed[&ids[5]].contains("deleted"), "{failed:?}");
    assert!(
        failed[&unknown].contains("not found") || failed[&unknown].contains("no conversation"),
        "{failed:?}"
    );
    assert_eq!(server.all_events("conversations", &ids[4]).await.len(), events_before, "nothing appended");
    let resolved = server.all_events("conversations", &ids[6]).await;
    let last = resolved.last().unwrap();
    assert_eq!(last["event_type"], "StatusChanged", "{last}");

    // By filter: every open conversation labelled spam, each with its own StatusChanged.
    let reply = server.post("/v1/conversations/resolve", json!({"label": "spam"})).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.body["resolved"], 4);
    assert_eq!(reply.body["failed"], json!([]));
    assert_eq!(reply.body["truncated"], false);
    for id in &ids[..4] {
        let conversation = server.get(&format!("/v1/conversations/{id}")).await;
        assert_eq!(conversation.body["status"], "closed");
    }
    // Nothing matches now: open spam is gone.
    let again = server.post("/v1/conversations/resolve", json!({"label": ["spam"], "status": "open"})).await;
    assert_eq!(again.body["resolved"], 0);

    // Well formed, but nothing to resolve, or two ways to say what: refused as they stand.
    for unacceptable in [json!({}), json!({"ids": [ids[0]], "label": "spam"})] {
        let reply = server.post("/v1/conversations/resolve", unacceptable).await;
        assert!(reply.assert_problem(StatusCode::UNPROCESSABLE_ENTITY).contains("ids"), "{:?}", reply.body);
    }
    for bad in [
        json!({"label": "spam", "sort": "priority"}),
        json!({"status": "archived"}),
        json!({"ids": ["not-a-uuid"]}),
    ] {
        server.post("/v1/conversations/resolve", bad).await.assert_problem(StatusCode::BAD_REQUEST);
    }
    server.stop().await;
}

async fn bad_list_parameters_are_refused_with_the_reason(backend: Backend) {
    let server = TestServer::start(backend).await;
    for (query, needle) in [
        ("limit=101", "100"),
        ("limit=0", "1 to 100"),
        ("sort=name", "sort"),
        ("order=up", "order"),
        ("status=archived", "archived"),
        ("priority=meh", "priority"),
        ("channel=fax", "channel"),
        ("q=ab", "at least 3"),
        ("label_match=some", "label_match"),
        ("contact_id=nope", "contact_id"),
        ("created_after=yesterday", "created_after"),
        ("cursor=garbage", "cursor"),
        ("bogus=1", "bogus"),
        ("ids=1", "ids"),
    ] {
        let reply = server.get(&format!("/v1/conversations?{query}")).await;
        let detail = reply.assert_problem(StatusCode::BAD_REQUEST);
        let text = format!("{detail} {}", reply.body);
        assert!(text.contains(needle), "{query}: {text}");
    }
    server.get("/v1/conversations/counts?status=nope").await.assert_problem(StatusCode::BAD_REQUEST);
    // Filters are combined: unassigned and assigned to `a` is nothing, not an error.
    let server_conversation = server.conversation().await;
    let assigned = server
        .post(&format!("/v1/conversations/{server_conversation}/assignment"), json!({"assignee_id": "a"}))
        .await;
    let position = assigned.headers["colloquy-position"].to_str().unwrap().to_owned();
    for (query, count) in [("assignee_id=a", 1), ("unassigned=true&assignee_id=a", 0)] {
        let reply = server.get(&format!("/v1/conversations?{query}&min_position={position}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{query}: {:?}", reply.body);
        assert_eq!(reply.body["data"].as_array().unwrap().len(), count, "{query}");
    }
    server.stop().await;
}

async fn contact_changes_reach_the_rows_of_their_conversations(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut driver = Driver { server: &server, position: "0".into() };
    let contact = driver.contact("Old", "old@example.com").await;
    let body = driver.send("/v1/conversations", json!({"contact_id": contact, "channel": "email"})).await;
    let id = body["id"].as_str().unwrap().to_owned();
    let reply = server
        .patch(
            &format!("/v1/contacts/{contact}"),
            json!({"first_name": "Renamed", "email": "new@example.com"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    driver.position = reply.headers["colloquy-position"].to_str().unwrap().to_owned();
    let rows = driver.walk("q=renamed", 25).await;
    assert_eq!(ids(&rows), vec![id.clone()]);
    assert_eq!(rows[0]["contact"]["email"], "new@example.com");
    assert!(driver.walk("q=old@example", 25).await.is_empty());
    server.stop().await;
}

on_both_stores!(
    every_filter_answers_what_the_model_expects,
    every_sort_orders_rows_both_ways_across_pages,
    a_cursor_walk_sees_every_existing_row_once_while_new_ones_arrive,
    counts_equal_a_count_over_the_list_after_random_commands,
    bulk_resolve_closes_each_by_its_own_command_and_reports_the_rest,
    bad_list_parameters_are_refused_with_the_reason,
    contact_changes_reach_the_rows_of_their_conversations,
);
