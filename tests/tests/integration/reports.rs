//! Reports on both stores over HTTP: a conversation's facts carry the dimensions as they were and
//! link to their events; on a generated history every report agrees with the others (the summary
//! with the time series' buckets and each breakdown's rows) and with a naive recount of the raw
//! events; CSV answers one row per fact; bad parameters are 400s.

use std::collections::{BTreeMap, HashMap};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{Backend, NatsServer, TestServer};

async fn ok(server: &TestServer, method: Method, path: &str, body: Option<Value>) -> Value {
    let reply = server.call(method, path, body).await;
    assert!(reply.status.is_success(), "{path}: {:?} {:?}", reply.status, reply.body);
    reply.body
}

/// The log's head: what every report is awaited to (`min_position`).
async fn head(server: &TestServer) -> i64 {
    let mut after = 0;
    loop {
        let page = server.get(&format!("/v1/events?after={after}&limit=1000")).await;
        assert_eq!(page.status, StatusCode::OK);
        let count = page.body["data"].as_array().unwrap().len();
        after = page.body["last_position"].as_i64().unwrap();
        if count < 1000 {
            return after;
        }
    }
}

async fn facts(server: &TestServer, query: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut cursor = String::new();
    loop {
        let reply = server.get(&format!("/v1/reports/events?limit=1000&cursor={cursor}&{query}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        all.extend(reply.body["data"].as_array().unwrap().iter().cloned());
        match reply.body["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => return all,
        }
    }
}

fn of<'a>(facts: &'a [Value], name: &str) -> Vec<&'a Value> {
    facts.iter().filter(|f| f["name"] == name).collect()
}

async fn a_conversations_facts_carry_the_dimensions_then_and_link_to_their_events(backend: Backend) {
    let server = TestServer::start(backend).await;
    conversation_facts(&server).await;
    server.stop().await;
}

/// The same, with the projector fed from JetStream.
async fn facts_fed_through_jetstream_are_the_same(backend: Backend) {
    let nats = NatsServer::start().await;
    let server = TestServer::start_with(backend, |config| config.nats_url = Some(nats.url.clone())).await;
    conversation_facts(&server).await;
    server.stop().await;
}

async fn conversation_facts(server: &TestServer) {
    let contact = server.contact().await;
    let opened = ok(
        server,
        Method::POST,
        "/v1/conversations",
        Some(json!({"contact_id": contact, "channel": "email", "inbox_id": "support", "labels": ["vip"], "priority": "high"})),
    )
    .await;
    let id = opened["id"].as_str().unwrap();
    let at = |path: &str| format!("/v1/conversations/{id}/{path}");
    ok(server, Method::POST, &at("assignment"), Some(json!({"assignee_id": "ana", "team_id": "tier-1"})))
        .await;
    server.customer_message(id, "Where is my order?").await;
    let note = json!({"sender": {"kind": "user", "id": "ana"}, "text": "checking", "visibility": "internal"});
    ok(server, Method::POST, &at("messages"), Some(note)).await;
    let bot = json!({"sender": {"kind": "bot", "id": "faq"}, "text": "Our FAQ may help"});
    ok(server, Method::POST, &at("messages"), Some(bot)).await;
    ok(server, Method::POST, &at("assignment"), Some(json!({"assignee_id": "ben", "team_id": "tier-2"})))
        .await;
    let reply = json!({"sender": {"kind": "user", "id": "ben"}, "text": "On its way"});
    ok(server, Method::POST, &at("messages"), Some(reply)).await;
    ok(server, Method::POST, &at("status"), Some(json!({"status": "closed"}))).await;
    ok(server, Method::POST, &at("status"), Some(json!({"status": "open"}))).await;
    ok(server, Method::POST, &at("status"), Some(json!({"status": "closed"}))).await;
    let head = head(server).await;

    let page = server.get(&format!("/v1/conversations/{id}/reports/events?min_position={head}")).await;
    assert_eq!(page.status, StatusCode::OK, "{:?}", page.body);
    assert_eq!(page.body["version"], 1);
    assert!(page.body["as_of_position"].as_i64().unwrap() >= head);
    let facts: Vec<Value> = page.body["data"].as_array().unwrap().clone();
    let names: Vec<&str> = facts.iter().map(|f| f["name"].as_str().unwrap()).collect();
    for expected in [
        "conversation_opened",
        "incoming_message",
        "private_note",
        "outgoing_message",
        "first_response",
        "reply_time",
        "requester_wait",
        "resolution",
        "first_resolution",
        "full_resolution",
        "conversation_reopened",
    ] {
        assert!(names.contains(&expected), "no {expected} in {names:?}");
    }
    let first = of(&facts, "first_response")[0];
    assert_eq!(first["user_id"], "ben", "credited to who answered: {first:#}");
    assert_eq!(first["team_id"], "tier-2", "the team when it ended");
    assert_eq!((first["inbox_id"].as_str(), first["channel"].as_str()), (Some("support"), Some("email")));
    assert_eq!((first["priority"].as_str(), first["labels"].clone()), (Some("high"), json!(["vip"])));
    assert_eq!(first["bot"], true, "the bot spoke before the reply");
    assert!(first["value"].as_i64().unwrap() >= 0 && first["value_in_business_hours"].is_i64());
    assert_eq!(of(&facts, "outgoing_message").len(), 2, "the bot's and ben's; the note is not sent");
    assert_eq!(of(&facts, "resolution").len(), 2);
    assert_eq!(of(&facts, "first_resolution").len(), 1);
    // The listing leaves out the full resolution the second one replaced, unless asked.
    assert_eq!(of(&facts, "full_resolution").len(), 1);
    let every = server.get(&format!("/v1/conversations/{id}/reports/events?include_superseded=true")).await;
    let every = every.body["data"].as_array().unwrap().clone();
    let full = of(&every, "full_resolution");
    assert_eq!(full.len(), 2);
    assert_eq!(full[0]["superseded_at"], full[1]["end_position"]);

    // Each fact links to the events that started and ended it.
    let link = first["events"].as_array().unwrap().last().unwrap().as_str().unwrap().to_owned();
    let ended = server.get(&link).await;
    let event = &ended.body["data"][0];
    assert_eq!(event["position"], first["end_position"]);
    assert_eq!(event["event_type"], "MessageAdded");
    assert_eq!(event["data"]["sender"]["id"], "ben");
    let started = server.get(first["events"][0].as_str().unwrap()).await;
    assert_eq!(started.body["data"][0]["event_type"], "ConversationOpened");

    // A later team does not rewrite the facts.
    ok(server, Method::POST, &at("assignment"), Some(json!({"assignee_id": "cy", "team_id": "tier-3"})))
        .await;
    let head = self::head(server).await;
    let again = server
        .get(&format!("/v1/conversations/{id}/reports/events?min_position={head}&metric=first_response"))
        .await;
    assert_eq!(again.body["data"][0]["team_id"], "tier-2");
}

/// One step of a generated history.
fn step(rng: &mut StdRng, id: &str, agents: &[&str], teams: &[&str]) -> (String, Value) {
    let at = |path: &str| format!("/v1/conversations/{id}/{path}");
    let agent = agents[rng.gen_range(0..agents.len())];
    match rng.gen_range(0..10) {
        0..=2 => (at("messages"), json!({"sender": {"kind": "customer"}, "text": "hello?"})),
        3..=4 => (at("messages"), json!({"sender": {"kind": "user", "id": agent}, "text": "hi"})),
        5 => (at("messages"), json!({"sender": {"kind": "bot", "id": "faq"}, "text": "beep"})),
        6 => (
            at("messages"),
            json!({"sender": {"kind": "user", "id": agent}, "text": "note", "visibility": "internal"}),
        ),
        7 => {
            (at("assignment"), json!({"assignee_id": agent, "team_id": teams[rng.gen_range(0..teams.len())]}))
        }
        8 => {
            let label = ["a", "b", "c"][rng.gen_range(0..3)];
            (at("labels"), json!({"add": [label]}))
        }
        _ => {
            let status = ["open", "pending", "snoozed", "closed"][rng.gen_range(0..4)];
            (at("status"), json!({ "status": status }))
        }
    }
}

/// A naive recount of the raw events: per metric, how many facts each should have made.
fn recount(events: &[Value]) -> BTreeMap<&'static str, u64> {
    let mut counts: BTreeMap<&'static str, u64> = BTreeMap::new();
    // Per conversation: whether the customer wrote, whether a person replied, whether it waits,
    // whether it was resolved before.
    let mut state: HashMap<String, (bool, bool, bool, bool)> = HashMap::new();
    for event in events.iter().filter(|e| e["aggregate_type"] == "conversation") {
        let id = event["aggregate_id"].as_str().unwrap().to_owned();
        let (wrote, replied, waiting, resolved) = state.entry(id).or_default();
        let data = &event["data"];
        let mut count = |name: &'static str| *counts.entry(name).or_default() += 1;
        match event["event_type"].as_str().unwrap() {
            "ConversationOpened" => count("conversation_opened"),
            "MessageAdded" => {
                let message = data;
                let kind = message["sender"]["kind"].as_str().unwrap();
                match (message["visibility"].as_str().unwrap(), kind) {
                    ("internal", _) => count("private_note"),
                    ("public", "customer") => {
                        count("incoming_message");
                        *wrote = true;
                        *waiting = true;
                    }
                    ("public", _) => {
                        count("outgoing_message");
                        if kind == "user" {
                            if *waiting {
                                count("reply_time");
                            }
                            if *wrote && !*replied {
                                count("first_response");
                            }
                            *replied = true;
                            *waiting = false;
                        }
                    }
                    _ => {}
                }
            }
            "StatusChanged" => {
                let change = data;
                let (from, to) = (change["from"].as_str().unwrap(), change["to"].as_str().unwrap());
                match from {
                    "open" => count("requester_wait"),
                    "pending" | "snoozed" => count("agent_wait"),
                    _ => {}
                }
                if to == "closed" {
                    count("resolution");
                    count("full_resolution");
                    if !*resolved {
                        count("first_resolution");
                    }
                    *resolved = true;
                    *waiting = false;
                }
                if from == "closed" && to != "closed" {
                    count("conversation_reopened");
                }
            }
            _ => {}
        }
    }
    counts
}

async fn every_report_agrees_with_the_others_and_with_a_recount_of_the_raw_events(backend: Backend) {
    let seed: u64 = rand::random();
    eprintln!("history seed: {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut server = TestServer::start(backend).await;
    let started = chrono::Utc::now();
    // Two days back to a day ahead: today's facts are read from the rollups' day cells.
    let since = started - chrono::Duration::days(2);
    let (agents, teams) = (["ana", "ben", "cy"], ["tier-1", "tier-2"]);
    for n in 0..12 {
        let contact = server.contact().await;
        let channel = ["whatsapp", "email", "chat"][n % 3];
        let inbox = ["sales", "support"][n % 2];
        let body = json!({"contact_id": contact, "channel": channel, "inbox_id": inbox});
        let id = ok(&server, Method::POST, "/v1/conversations", Some(body)).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        for _ in 0..rng.gen_range(3..15) {
            let (path, body) = step(&mut rng, &id, &agents, &teams);
            let reply = server.post(&path, body).await;
            // A status change to the status it has is refused; everything else is accepted.
            assert!(
                reply.status.is_success() || reply.status == StatusCode::UNPROCESSABLE_ENTITY,
                "{:?}",
                reply.body
            );
        }
    }
    let head = head(&server).await;
    let until = chrono::Utc::now() + chrono::Duration::days(1);
    let period = format!(
        "since={}&until={}&min_position={head}",
        since.format("%Y-%m-%dT%H:%M:%SZ"),
        until.format("%Y-%m-%dT%H:%M:%SZ")
    );

    // The facts against a recount of the raw events.
    let all_facts = facts(&server, &period).await;
    let mut counted: BTreeMap<&str, u64> = BTreeMap::new();
    for fact in &all_facts {
        *counted.entry(fact["name"].as_str().unwrap()).or_default() += 1;
    }
    let mut events = Vec::new();
    let mut after = 0;
    loop {
        let page = server.get(&format!("/v1/events?after={after}&limit=1000")).await;
        let data = page.body["data"].as_array().unwrap().clone();
        after = page.body["last_position"].as_i64().unwrap();
        let done = data.len() < 1000;
        events.extend(data);
        if done {
            break;
        }
    }
    let expected = recount(&events);
    for (name, count) in &expected {
        // Full resolutions a later one replaced are not listed: one per resolved conversation.
        if *name == "full_resolution" {
            continue;
        }
        assert_eq!(
            counted.get(name).copied().unwrap_or_default(),
            *count,
            "{name}: facts {counted:?}, recount {expected:?}"
        );
    }

    // The summary against the facts, and each report against the summary.
    let summary = server.get(&format!("/v1/reports/summary?{period}")).await;
    assert_eq!(summary.status, StatusCode::OK, "{:?}", summary.body);
    let lines = summary.body["metrics"].as_array().unwrap().clone();
    assert_eq!(lines.len(), 16);
    for line in &lines {
        let name = line["metric"].as_str().unwrap();
        let current = &line["current"];
        let listed = counted.get(name).copied().unwrap_or_default();
        assert_eq!(current["count"].as_u64().unwrap(), listed, "{name}: the summary counts the facts listed");
        assert_eq!(line["previous"]["count"], 0, "nothing happened in the days before");
        let sum = |figure: &Value| figure["calendar"]["sum"].as_i64().unwrap_or_default();

        let series = server
            .get(&format!("/v1/reports/timeseries?metric={name}&group_by=hour&tz=Asia/Kolkata&{period}"))
            .await;
        assert_eq!(series.status, StatusCode::OK, "{:?}", series.body);
        let buckets = series.body["data"].as_array().unwrap();
        let bucket_count: u64 = buckets.iter().map(|b| b["figure"]["count"].as_u64().unwrap()).sum();
        assert_eq!(bucket_count, listed, "{name}: the buckets add up to the summary");
        let bucket_sum: i64 = buckets.iter().map(|b| sum(&b["figure"])).sum();
        assert_eq!(bucket_sum, sum(current), "{name}: the buckets' durations add up");
        assert_eq!(series.body["total"]["count"], current["count"]);

        for dimension in ["agent", "team", "inbox", "channel", "priority"] {
            let by = server.get(&format!("/v1/reports/by/{dimension}?metric={name}&{period}")).await;
            assert_eq!(by.status, StatusCode::OK, "{:?}", by.body);
            let rows = by.body["data"].as_array().unwrap();
            let row_count: u64 =
                rows.iter().map(|r| r["metrics"][0]["figure"]["count"].as_u64().unwrap()).sum();
            assert_eq!(row_count, listed, "{name} by {dimension}: the rows add up to the summary");
            let row_sum: i64 = rows.iter().map(|r| sum(&r["metrics"][0]["figure"])).sum();
            assert_eq!(row_sum, sum(current), "{name} by {dimension}");
        }
    }

    // Read from the rollups (day, six-hour, hour and five-minute cells, and the facts of what is
    // left at the ends), the summary and each breakdown are the facts' fold, field for field:
    // distinct conversations and contacts, medians and p90s included.
    let in_hours = format!(
        "since={}&until={}&min_position={head}",
        (started - chrono::Duration::minutes(61)).format("%Y-%m-%dT%H:%M:%SZ"),
        (chrono::Utc::now() + chrono::Duration::hours(2)).format("%Y-%m-%dT%H:%M:%SZ")
    );
    // Six minutes either side of the history: it lies in whole five minutes' cells. A second
    // either side: in the partial five minutes at the ends, folded from the facts.
    let around = |margin: chrono::Duration| {
        format!(
            "since={}&until={}&min_position={head}",
            (started - margin).format("%Y-%m-%dT%H:%M:%SZ"),
            (chrono::Utc::now() + margin).format("%Y-%m-%dT%H:%M:%SZ")
        )
    };
    let (in_minutes, at_the_ends) =
        (around(chrono::Duration::minutes(6)), around(chrono::Duration::seconds(1)));
    // The whole six UTC hours around the history: a breakdown reads its keys' six-hour cells.
    let six_hours = |at: chrono::DateTime<chrono::Utc>| {
        chrono::DurationRound::duration_trunc(at, chrono::Duration::hours(6)).unwrap()
    };
    let in_six_hours = format!(
        "since={}&until={}&min_position={head}",
        six_hours(started).format("%Y-%m-%dT%H:%M:%SZ"),
        (six_hours(chrono::Utc::now()) + chrono::Duration::hours(6)).format("%Y-%m-%dT%H:%M:%SZ")
    );
    for period in [&period, &in_hours, &in_six_hours, &in_minutes, &at_the_ends] {
        let rolled = server.get(&format!("/v1/reports/summary?{period}")).await;
        let folded = server.get(&format!("/v1/reports/summary?exact=true&{period}")).await;
        assert_eq!(rolled.body["metrics"], folded.body["metrics"], "the summary over {period}");
        for metric in ["incoming_message", "first_response", "full_resolution"] {
            // A half-hour zone: its local hours start at half past, in five minutes' cells.
            let series =
                format!("/v1/reports/timeseries?metric={metric}&group_by=hour&tz=Asia/Kolkata&{period}");
            let rolled = server.get(&series).await;
            let folded = server.get(&format!("{series}&exact=true")).await;
            assert_eq!(rolled.status, StatusCode::OK, "{:?}", rolled.body);
            assert_eq!(rolled.body["data"], folded.body["data"], "{metric} by hour over {period}");
            assert_eq!(rolled.body["total"], folded.body["total"], "{metric}'s total over {period}");
        }
        for dimension in ["agent", "team", "inbox", "channel", "label", "priority"] {
            let rolled = server.get(&format!("/v1/reports/by/{dimension}?{period}")).await;
            let folded = server.get(&format!("/v1/reports/by/{dimension}?exact=true&{period}")).await;
            assert_eq!(rolled.status, StatusCode::OK, "{:?}", rolled.body);
            assert_eq!(rolled.body["data"], folded.body["data"], "by {dimension} over {period}");
        }
    }

    // A figure drills down to its facts.
    let line = lines.iter().find(|l| l["metric"] == "incoming_message").unwrap();
    let drilled = server.get(line["current"]["facts"].as_str().unwrap()).await;
    assert_eq!(drilled.status, StatusCode::OK, "{:?}", drilled.body);
    assert_eq!(
        drilled.body["data"].as_array().unwrap().len() as u64,
        line["current"]["count"].as_u64().unwrap().min(100)
    );

    // The first-response distribution counts every first response once, all under an hour.
    let bands = server.get(&format!("/v1/reports/first-response-distribution?{period}")).await;
    let total: u64 =
        bands.body["data"].as_array().unwrap().iter().map(|r| r["bands"]["0-1h"].as_u64().unwrap()).sum();
    assert_eq!(total, counted.get("first_response").copied().unwrap_or_default());

    // The matrix counts each opened conversation under its inbox.
    let matrix = server.get(&format!("/v1/reports/inbox-labels?{period}")).await;
    let opened: u64 =
        matrix.body["data"].as_array().unwrap().iter().map(|c| c["conversations"].as_u64().unwrap()).sum();
    assert_eq!(opened, 12, "opened without labels: one cell per inbox");

    // One row per conversation: its facts summed up.
    let rows = server.get(&format!("/v1/reports/conversations?limit=5&{period}")).await;
    assert_eq!(rows.status, StatusCode::OK, "{:?}", rows.body);
    let mut all_rows = rows.body["data"].as_array().unwrap().clone();
    let mut cursor = rows.body["next_cursor"].as_str().map(str::to_owned);
    while let Some(next) = cursor {
        let page = server.get(&format!("/v1/reports/conversations?limit=5&cursor={next}&{period}")).await;
        all_rows.extend(page.body["data"].as_array().unwrap().iter().cloned());
        cursor = page.body["next_cursor"].as_str().map(str::to_owned);
    }
    assert_eq!(all_rows.len(), 12, "every conversation once");
    for (field, metric) in
        [("incoming_messages", "incoming_message"), ("replies", "reply_time"), ("resolutions", "resolution")]
    {
        let total: u64 = all_rows.iter().map(|r| r[field].as_u64().unwrap()).sum();
        assert_eq!(total, counted.get(metric).copied().unwrap_or_default(), "{field}");
    }
    let with_first: usize = all_rows.iter().filter(|r| !r["first_response"].is_null()).count();
    assert_eq!(with_first as u64, counted.get("first_response").copied().unwrap_or_default());

    // CSV: one row per fact, under a header.
    let csv = reqwest::Client::new()
        .get(server.url(&format!("/v1/reports/events?{period}")))
        .bearer_auth(&server.token)
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(csv.status(), StatusCode::OK);
    assert!(csv.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
    let text = csv.text().await.unwrap();
    assert_eq!(text.lines().count(), all_facts.len() + 1, "{text}");
    assert!(text.starts_with("id,name,kind,value"));
    let csv = reqwest::Client::new()
        .get(server.url(&format!("/v1/reports/conversations?{period}")))
        .bearer_auth(&server.token)
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(csv.text().await.unwrap().lines().count(), 13, "a header and a row per conversation");

    // Rebuilt from the log, the facts are the same, superseded ones included.
    let before = facts(&server, "include_superseded=true").await;
    server.shut_down().await;
    let store = server.config().open_store(&colloquy_projections::read_model_tables()).await.unwrap();
    let log = colloquy_infra::GlobalLog::start(store.clone()).await.unwrap();
    let projection = colloquy_projections::by_name("reports_v1").unwrap();
    let rebuilt = colloquy_projections::Projector::new(log, projection).rebuild(|_| {}).await.unwrap();
    assert_eq!(rebuilt, head);
    drop(store);
    server.start_again().await;
    let after = facts(&server, &format!("include_superseded=true&min_position={head}")).await;
    assert_eq!(after.len(), before.len());
    assert_eq!(after, before, "a rebuild gives the same facts");
    let rebuilt_summary = server.get(&format!("/v1/reports/summary?{period}")).await;
    assert_eq!(rebuilt_summary.body["metrics"], summary.body["metrics"], "and the same rollups");
    server.stop().await;
}

async fn bad_report_parameters_are_400s_and_odd_periods_are_answered(backend: Backend) {
    let server = TestServer::start(backend).await;
    for path in [
        "/v1/reports/summary?tz=Mars/Olympus",
        "/v1/reports/summary?channel=pigeon",
        "/v1/reports/summary?label=a,b",
        "/v1/reports/timeseries?metric=nonsense",
        "/v1/reports/timeseries",
        "/v1/reports/timeseries?metric=first_response&group_by=fortnight",
        "/v1/reports/events?cursor=bm90IGEgY3Vyc29y",
        "/v1/reports/events?limit=0",
        "/v1/reports/summary?unknown=1",
        "/v1/reports/summary?min_position=-1",
    ] {
        server.get(path).await.assert_problem(StatusCode::BAD_REQUEST);
    }
    server.get("/v1/reports/summary?version=99").await.assert_problem(StatusCode::NOT_FOUND);
    server.get("/v1/reports/by/planet").await.assert_problem(StatusCode::NOT_FOUND);

    // A reversed period is empty, not an error.
    let reversed =
        server.get("/v1/reports/summary?since=2026-02-01T00:00:00Z&until=2026-01-01T00:00:00Z").await;
    assert_eq!(reversed.status, StatusCode::OK, "{:?}", reversed.body);
    assert!(reversed.body["metrics"].as_array().unwrap().iter().all(|l| l["current"]["count"] == 0));
    // A period of more hours than one answer holds stops at its 1,000th and says where to go on.
    let long = server
        .get("/v1/reports/timeseries?metric=first_response&group_by=hour&since=2020-01-01T00:00:00Z&until=2026-01-01T00:00:00Z")
        .await;
    assert_eq!(long.status, StatusCode::OK, "{:?}", long.body);
    assert_eq!(long.body["data"].as_array().unwrap().len(), 1000);
    assert_eq!(long.body["next_since"], "2020-02-11T16:00:00Z");
    assert_eq!(long.body["period"]["until"], "2020-02-11T16:00:00Z");
    // The first page's cursor.
    let first = server.get("/v1/reports/events?cursor=ZmFjdHM6MDo").await;
    assert_eq!(first.status, StatusCode::OK, "{:?}", first.body);
    server.stop().await;
}

/// A process told to skip the facts' projection runs the others; the next one that runs it
/// catches up from its checkpoint.
async fn a_process_that_skips_the_reports_leaves_them_to_the_next(backend: Backend) {
    let mut server =
        TestServer::start_with(backend, |config| config.skip_projections = vec!["reports_v1".into()]).await;
    let id = server.conversation().await;
    let position = server.customer_message(&id, "hello").await;
    let list = server.get(&format!("/v1/conversations?min_position={position}")).await;
    assert_eq!(list.status, StatusCode::OK, "the other read models run");
    let facts = server.get(&format!("/v1/conversations/{id}/reports/events")).await;
    assert_eq!(facts.body["data"], json!([]), "no facts here: {:?}", facts.body);
    assert_eq!(facts.body["as_of_position"], 0);
    server.shut_down().await;
    server.config_mut().skip_projections.clear();
    server.start_again().await;
    let facts = server.get(&format!("/v1/conversations/{id}/reports/events?min_position={position}")).await;
    assert_eq!(facts.status, StatusCode::OK, "{:?}", facts.body);
    let names: Vec<&str> =
        facts.body["data"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["conversation_opened", "incoming_message"]);
    server.stop().await;
}

/// A summary line's figure of `metric` (`current`, or a comparison's `figure` and `against`).
fn line<'a>(answer: &'a Value, metric: &str) -> &'a Value {
    answer["metrics"].as_array().unwrap().iter().find(|l| l["metric"] == metric).unwrap()
}

/// A new definition version builds beside the established one; the tenant compares them, then
/// makes it current with an event; the old one stays readable by `?version=`.
async fn a_new_definition_is_compared_then_made_current_and_the_old_stays_readable(backend: Backend) {
    let server = TestServer::start(backend).await;
    let id = server.conversation().await;
    let at = |path: &str| format!("/v1/conversations/{id}/{path}");
    server.customer_message(&id, "hello").await;
    let until = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    ok(&server, Method::POST, &at("status"), Some(json!({"status": "snoozed", "snoozed_until": until})))
        .await;
    ok(&server, Method::POST, &at("status"), Some(json!({"status": "open"}))).await;
    ok(&server, Method::POST, &at("status"), Some(json!({"status": "pending"}))).await;
    ok(&server, Method::POST, &at("status"), Some(json!({"status": "closed"}))).await;
    let head = head(&server).await;

    let listed = server.get("/v1/reports/definitions").await;
    assert_eq!(listed.status, StatusCode::OK, "{:?}", listed.body);
    assert_eq!(
        (listed.body["current_version"].clone(), listed.body["chosen"].clone()),
        (json!(1), json!(false))
    );
    assert!(listed.headers.get("etag").is_none(), "no settings yet");
    let versions = listed.body["versions"].as_array().unwrap();
    assert_eq!(versions.iter().map(|v| v["version"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 2]);
    let derives = |v: &Value, metric: &str| v["metrics"].as_array().unwrap().contains(&json!(metric));
    assert!(!derives(&versions[0], "on_hold") && derives(&versions[1], "on_hold"));

    // By default the tenant reads version 1: a snooze is agent wait.
    let summary = server.get(&format!("/v1/reports/summary?min_position={head}")).await;
    assert_eq!(summary.status, StatusCode::OK, "{:?}", summary.body);
    assert_eq!(summary.body["version"], 1);
    assert_eq!(line(&summary.body, "agent_wait")["current"]["count"], 2, "snoozed and pending");
    assert!(
        !summary.body["metrics"].as_array().unwrap().iter().any(|l| l["metric"] == "on_hold"),
        "not of version 1"
    );

    let compared = server.get(&format!("/v1/reports/compare?version=2&against=1&min_position={head}")).await;
    assert_eq!(compared.status, StatusCode::OK, "{:?}", compared.body);
    assert_eq!(
        (compared.body["version"].clone(), compared.body["against_version"].clone()),
        (json!(2), json!(1))
    );
    let on_hold = line(&compared.body, "on_hold");
    assert_eq!(
        (on_hold["figure"]["count"].clone(), on_hold["against"]["count"].clone()),
        (json!(1), json!(0))
    );
    assert_eq!(on_hold["differs"], true);
    let agent_wait = line(&compared.body, "agent_wait");
    assert_eq!(
        (agent_wait["figure"]["count"].clone(), agent_wait["against"]["count"].clone()),
        (json!(1), json!(2))
    );
    let requester_wait = line(&compared.body, "requester_wait");
    assert_eq!(
        requester_wait["figure"]["count"].as_u64().unwrap(),
        requester_wait["against"]["count"].as_u64().unwrap() + 1,
        "version 2's requester waits while snoozed"
    );
    for same in ["conversation_opened", "resolution", "incoming_message"] {
        assert_eq!(line(&compared.body, same)["differs"], false, "{same}");
    }
    let csv = server
        .call_with(Method::GET, "/v1/reports/compare?against=1&version=2", None, &[("accept", "text/csv")])
        .await;
    assert_eq!(csv.status, StatusCode::OK);

    // Making it current is the tenant's settings, and refuses what is not kept.
    let created = server.post("/v1/tokens", json!({"name": "analyst", "scopes": ["reports:read"]})).await;
    let reader = created.body["secret"].as_str().unwrap().to_owned();
    let refused = server
        .client
        .put(server.url("/v1/reports/definitions/current"))
        .bearer_auth(&reader)
        .json(&json!({"current_version": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let unknown = server
        .call(Method::PUT, "/v1/reports/definitions/current", Some(json!({"current_version": 9})))
        .await;
    unknown.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);

    let made = server
        .call(Method::PUT, "/v1/reports/definitions/current", Some(json!({"current_version": 2})))
        .await;
    assert_eq!(made.status, StatusCode::OK, "{:?}", made.body);
    assert_eq!((made.body["current_version"].clone(), made.body["chosen"].clone()), (json!(2), json!(true)));
    assert_eq!(made.etag(), "\"1\"");
    let summary = server.get(&format!("/v1/reports/summary?min_position={head}")).await;
    assert_eq!(summary.body["version"], 2, "the default now");
    assert_eq!(line(&summary.body, "on_hold")["current"]["count"], 1);
    let old = server.get(&format!("/v1/reports/summary?version=1&min_position={head}")).await;
    assert_eq!(old.body["version"], 1, "the old version stays readable");
    assert_eq!(line(&old.body, "agent_wait")["current"]["count"], 2);

    // A stale If-Match changes nothing; the current one goes back, as a second event.
    let stale = server
        .call_with(
            Method::PUT,
            "/v1/reports/definitions/current",
            Some(json!({"current_version": 1})),
            &[("if-match", "\"7\"")],
        )
        .await;
    stale.assert_problem(StatusCode::PRECONDITION_FAILED);
    let back = server
        .call_with(
            Method::PUT,
            "/v1/reports/definitions/current",
            Some(json!({"current_version": 1})),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(back.status, StatusCode::OK, "{:?}", back.body);
    assert_eq!(back.body["current_version"], 1);
    let events = server.get("/v1/events?limit=1000").await;
    let settings: Vec<(String, Value)> = events.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["aggregate_type"] == "report_settings")
        .map(|e| {
            (e["event_type"].as_str().unwrap().to_owned(), e["data"]["definition"]["current_version"].clone())
        })
        .collect();
    assert_eq!(
        settings,
        [("ReportSettingsCreated".to_owned(), json!(2)), ("ReportSettingsRevised".to_owned(), json!(1))],
        "each change of the current version is an event"
    );
    server.stop().await;
}

/// A version whose facts have not caught up with the log cannot be made current.
async fn a_version_still_being_built_is_not_made_current(backend: Backend) {
    let server = TestServer::start_with(backend, |config| {
        config.skip_projections = vec!["reports_v2".into()];
        config.min_position_timeout_ms = 300;
    })
    .await;
    let id = server.conversation().await;
    server.customer_message(&id, "hello").await;
    let listed = server.get("/v1/reports/definitions").await;
    let v2 = &listed.body["versions"][1];
    assert_eq!((v2["version"].clone(), v2["caught_up"].clone()), (json!(2), json!(false)), "{listed:?}");
    let refused = server
        .call(Method::PUT, "/v1/reports/definitions/current", Some(json!({"current_version": 2})))
        .await;
    let detail = refused.assert_problem(StatusCode::CONFLICT);
    assert!(detail.contains("still being built"), "{detail}");
    let listed = server.get("/v1/reports/definitions").await;
    assert_eq!(listed.body["current_version"], 1, "nothing changed");
    server.stop().await;
}

on_both_stores!(
    a_new_definition_is_compared_then_made_current_and_the_old_stays_readable,
    a_version_still_being_built_is_not_made_current,
    a_process_that_skips_the_reports_leaves_them_to_the_next,
    a_conversations_facts_carry_the_dimensions_then_and_link_to_their_events,
    facts_fed_through_jetstream_are_the_same,
    every_report_agrees_with_the_others_and_with_a_recount_of_the_raw_events,
    bad_report_parameters_are_400s_and_odd_periods_are_answered,
);
