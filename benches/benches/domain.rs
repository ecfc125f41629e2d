//! Criterion benchmarks of the domain's hot paths: rebuilding aggregates from their events,
//! handling a command on a long conversation, and turning events and their metadata into bytes
//! and back. The figures are recorded in BENCHMARKS.md.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use colloquy_domain::channel::Channel;
use colloquy_domain::contact::{ContactPatch, ContactStatus, NewContact};
use colloquy_domain::conversation::{
    MessageContent, MessageType, NewConversation, NewMessage, Sender, SenderKind, Status, Visibility,
};
use colloquy_domain::{
    Actor, ActorKind, CommandContext, Contact, ContactCommand, ContactEvent, ContactId, Conversation,
    ConversationCommand, ConversationEvent, ConversationId, EventMetadata, MessageId, TenantId,
};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use criterion::{
    criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use serde_json::{json, Map};
use tokio::runtime::Runtime;
use uuid::Uuid;

/// Stream lengths of the conversation benchmarks: a short chat, a long-running thread, and the
/// 10,000-event conversation the command runner's aggregate cache was designed for.
const CONVERSATION_LENGTHS: [usize; 3] = [10, 1_000, 10_000];

/// Contacts change rarely; 100 events is already a heavily edited profile.
const CONTACT_LENGTHS: [usize; 2] = [10, 100];

/// Seconds between two events of a generated history.
const EVENT_SPACING_SECS: i64 = 30;

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).single().expect("a valid start time")
}

/// The context of the `i`-th command of a history: each command comes a little after the last.
fn context_at(i: usize) -> CommandContext {
    let offset = i64::try_from(i).expect("history length fits in i64") * EVENT_SPACING_SECS;
    CommandContext::new(
        start() + chrono::Duration::seconds(offset),
        Actor { kind: ActorKind::Token, id: "bench".into() },
    )
}

fn tenant() -> TenantId {
    TenantId::parse("acme").expect("a valid tenant id")
}

fn runtime() -> Runtime {
    // handle never does I/O or waits on timers; the sink's tokio mutex needs no driver.
    tokio::runtime::Builder::new_current_thread().build().expect("a current-thread tokio runtime")
}

/// Handles `command` and returns the events it produced, as the command runner does.
fn decide<A: Aggregate>(
    runtime: &Runtime,
    aggregate: &mut A,
    command: A::Command,
    context: &A::Services,
) -> Vec<A::Event> {
    runtime.block_on(async {
        let sink = EventSink::default();
        if let Err(error) = aggregate.handle(command, context, &sink).await {
            panic!("the generated history was refused: {error}");
        }
        sink.collect().await
    })
}

fn text_message(sender: Sender, body: String) -> NewMessage {
    NewMessage {
        message_id: MessageId::new_v7(),
        sender,
        visibility: Visibility::Public,
        content: MessageContent {
            message_type: MessageType::Text,
            text: Some(body),
            ..MessageContent::default()
        },
    }
}

fn agent() -> Sender {
    Sender { kind: SenderKind::User, id: Some("agent-1".into()) }
}

fn customer() -> Sender {
    // The domain fills in the contact's id for a customer message.
    Sender { kind: SenderKind::Customer, id: None }
}

/// Realistic message bodies: a few words to a few sentences.
fn body(i: usize) -> String {
    const SENTENCE: &str = "Thanks for getting back to me, the order number is on the invoice. ";
    format!("Message {i}: {}", SENTENCE.repeat(1 + i % 4))
}

/// The command behind the `i`-th event of a generated conversation (i >= 1). Mostly customer
/// and agent messages in turn; every 20 commands one status change (open and pending in turn)
/// and one label change, every 40 one reassignment.
fn conversation_command(i: usize) -> ConversationCommand {
    match (i % 20, i % 40) {
        (_, 3) => ConversationCommand::Assign {
            assignee_id: Some(format!("agent-{}", 1 + (i / 40) % 3)),
            team_id: Some("support".into()),
        },
        (7, _) => ConversationCommand::ChangeStatus {
            status: if (i / 20).is_multiple_of(2) { Status::Pending } else { Status::Open },
            snoozed_until: None,
        },
        // Rotates through a few topics so the label set stays within its limit.
        (13, _) => ConversationCommand::ChangeLabels {
            add: vec![format!("topic-{}", (i / 20) % 5)],
            remove: vec![format!("topic-{}", (i / 20 + 4) % 5)],
        },
        _ if i.is_multiple_of(2) => ConversationCommand::AddMessage(text_message(customer(), body(i))),
        _ => ConversationCommand::AddMessage(text_message(agent(), body(i))),
    }
}

/// A conversation's stored events, exactly `length` of them, produced by handling real commands
/// so that they are events the domain would write (response times, normalised senders).
fn conversation_history(runtime: &Runtime, length: usize) -> Vec<ConversationEvent> {
    let mut conversation = Conversation::default();
    let open = ConversationCommand::OpenConversation {
        conversation_id: ConversationId::new_v7(),
        tenant_id: tenant(),
        number: 1,
        conversation: NewConversation {
            contact_id: Some(ContactId::new_v7()),
            channel: Some(Channel::Whatsapp),
            inbox_id: Some("inbox-1".into()),
            subject: Some("Order status".into()),
            custom_fields: Map::from_iter([("order".to_owned(), json!("A-1001"))]),
            labels: vec!["billing".into()],
            ..NewConversation::default()
        },
    };
    let mut events = decide(runtime, &mut conversation, open, &context_at(0));
    let mut i = 1;
    while events.len() < length {
        let command = conversation_command(i);
        events.extend(decide(runtime, &mut conversation, command, &context_at(i)));
        i += 1;
    }
    // A label change can write two events (removed, added); the last command may overshoot.
    events.truncate(length);
    events
}

fn replay<A: Aggregate>(events: Vec<A::Event>) -> A {
    let mut aggregate = A::default();
    for event in events {
        aggregate.apply(event);
    }
    aggregate
}

/// The `i`-th change of a generated contact: its phone, e-mail, labels or metadata, and every
/// tenth an activation or deactivation.
fn contact_command(i: usize) -> ContactCommand {
    if i % 10 == 5 {
        return ContactCommand::ChangeContactStatus {
            status: if (i / 10).is_multiple_of(2) { ContactStatus::Inactive } else { ContactStatus::Active },
        };
    }
    let patch = match i % 4 {
        0 => ContactPatch {
            phone: Some(Some(format!("+1415555{:04}", i % 10_000))),
            ..ContactPatch::default()
        },
        1 => ContactPatch { email: Some(Some(format!("ann+{i}@example.com"))), ..ContactPatch::default() },
        2 => ContactPatch {
            labels: Some(vec!["vip".into(), format!("campaign-{i}")]),
            ..ContactPatch::default()
        },
        _ => ContactPatch {
            metadata: Some(Map::from_iter([("last_order".to_owned(), json!(i))])),
            ..ContactPatch::default()
        },
    };
    ContactCommand::UpdateContact(patch)
}

fn contact_history(runtime: &Runtime, length: usize) -> Vec<ContactEvent> {
    let mut contact = Contact::default();
    let create = ContactCommand::CreateContact {
        contact_id: ContactId::new_v7(),
        tenant_id: tenant(),
        contact: NewContact {
            first_name: "Ann".into(),
            last_name: Some("Lee".into()),
            phone: Some("+14155550123".into()),
            email: Some("ann@example.com".into()),
            preferred_channel: Some(Channel::Whatsapp),
            metadata: Map::from_iter([("crm_id".to_owned(), json!("c-1"))]),
            labels: vec!["vip".into()],
            ..NewContact::default()
        },
    };
    let mut events = decide(runtime, &mut contact, create, &context_at(0));
    let mut i = 1;
    while events.len() < length {
        events.extend(decide(runtime, &mut contact, contact_command(i), &context_at(i)));
        i += 1;
    }
    events.truncate(length);
    events
}

fn apply_events(c: &mut Criterion) {
    let runtime = runtime();

    let mut group = c.benchmark_group("apply/conversation");
    // Replaying 10,000 events takes milliseconds; criterion's linear sampling would need more
    // than the measurement time for 20 samples, and flat sampling is its advice for that case.
    group.sampling_mode(SamplingMode::Flat);
    for length in CONVERSATION_LENGTHS {
        let events = conversation_history(&runtime, length);
        group.throughput(Throughput::Elements(length as u64));
        group.bench_with_input(BenchmarkId::from_parameter(length), &events, |b, events| {
            // Applying consumes the events, as loading from the store does after deserialising.
            b.iter_batched(
                || events.clone(),
                |events| replay::<Conversation>(black_box(events)),
                BatchSize::LargeInput,
            );
        });
    }
    group.finish();

    let mut group = c.benchmark_group("apply/contact");
    for length in CONTACT_LENGTHS {
        let events = contact_history(&runtime, length);
        group.throughput(Throughput::Elements(length as u64));
        group.bench_with_input(BenchmarkId::from_parameter(length), &events, |b, events| {
            b.iter_batched(
                || events.clone(),
                |events| replay::<Contact>(black_box(events)),
                BatchSize::LargeInput,
            );
        });
    }
    group.finish();

    // Applying a public MessageAdded recomputes the conversation's last-message preview, so
    // this is part of every message's apply cost; measured alone to show how large a part.
    let content =
        MessageContent { message_type: MessageType::Text, text: Some(body(1)), ..MessageContent::default() };
    let mut group = c.benchmark_group("apply/message_preview");
    group.throughput(Throughput::Elements(1));
    group.bench_function(format!("{}_chars", body(1).chars().count()), |b| {
        b.iter(|| black_box(&content).preview());
    });
    group.finish();
}

/// A copy of a loaded conversation, in the shape the command runner's cache holds it.
fn cached_copy(conversation: &Conversation) -> Conversation {
    let mut copy = conversation.clone();
    // A clone's Vec is exactly full, so the first message added would reallocate and copy every
    // message: a cost of cloning, not of handling. An aggregate loaded by applying events has
    // the spare capacity of amortised growth, which this restores.
    copy.messages.reserve(1);
    copy
}

/// An agent's text reply with a fresh id: the conversation refuses a duplicate id.
fn agent_reply() -> ConversationCommand {
    ConversationCommand::AddMessage(text_message(
        agent(),
        "Your order left the warehouse this morning.".into(),
    ))
}

/// Closes and reopens in turn, so that every command changes the status. The generated
/// histories only move between open and pending, so the first close always applies.
fn close_or_reopen(i: u64) -> ConversationCommand {
    ConversationCommand::ChangeStatus {
        status: if i.is_multiple_of(2) { Status::Closed } else { Status::Open },
        snoozed_until: None,
    }
}

/// How many timed commands run on one copy before a fresh copy is taken: a tenth of the
/// history, at least 1 and at most 100, so the stream length stays close to its label (10 grows
/// to at most 12 events, 1,000 to 1,101, 10,000 to 10,101, counting the untimed first command).
fn commands_per_copy(length: usize) -> u64 {
    (length as u64 / 10).clamp(1, 100)
}

/// Times `iters` commands on copies of `conversation`, as the command runner handles them: on
/// the cached aggregate in place, one after another, with a fresh copy every
/// [`commands_per_copy`] commands. Only `handle` is timed; copying, building the commands and
/// dropping the sinks are not. `command(0)` runs untimed on each fresh copy first: the first
/// command after a large clone pays for the allocator and cache state the clone left behind
/// (see `handle_on_fresh_clone` in BENCHMARKS.md), which the runner's cached aggregate does not.
async fn handle_in_place(
    conversation: &Conversation,
    length: usize,
    context: &CommandContext,
    command: impl Fn(u64) -> ConversationCommand,
    iters: u64,
) -> Duration {
    let mut measured = Duration::ZERO;
    let mut done = 0;
    while done < iters {
        let chunk = commands_per_copy(length).min(iters - done);
        let mut copy = cached_copy(conversation);
        let warm_up = EventSink::default();
        let result = copy.handle(command(0), context, &warm_up).await;
        result.expect("the command is accepted");
        let commands: Vec<ConversationCommand> = (1..=chunk).map(&command).collect();
        let mut sinks = Vec::with_capacity(commands.len());
        let started = Instant::now();
        for command in commands {
            let sink = EventSink::default();
            let result = copy.handle(command, context, &sink).await;
            result.expect("the command is accepted");
            sinks.push(sink);
        }
        measured += started.elapsed();
        black_box(sinks);
        done += chunk;
    }
    measured
}

fn handle_commands(c: &mut Criterion) {
    let runtime = runtime();
    let histories: Vec<(usize, Conversation)> = CONVERSATION_LENGTHS
        .into_iter()
        .map(|length| (length, replay(conversation_history(&runtime, length))))
        .collect();

    for (name, command) in [
        ("add_message", (|_| agent_reply()) as fn(u64) -> ConversationCommand),
        ("change_status", close_or_reopen),
    ] {
        let mut group = c.benchmark_group(format!("handle/{name}"));
        group.throughput(Throughput::Elements(1));
        for (length, conversation) in &histories {
            let context = context_at(length + 1);
            // Each command must be accepted and write one event, or this would time refusals.
            let mut probe = cached_copy(conversation);
            for i in 0..=commands_per_copy(*length) {
                assert_eq!(decide(&runtime, &mut probe, command(i), &context).len(), 1);
            }
            group.bench_with_input(BenchmarkId::from_parameter(length), conversation, |b, conversation| {
                b.to_async(&runtime)
                    .iter_custom(|iters| handle_in_place(conversation, *length, &context, command, iters));
            });
        }
        group.finish();
    }

    // The same reply timed on a fresh clone per command. Kept because it shows how much of a
    // command's cost on a long conversation is cache and allocator state rather than work:
    // handle does the same work at every length, yet this figure grows with the clone's size.
    let mut group = c.benchmark_group("handle_on_fresh_clone/add_message");
    group.throughput(Throughput::Elements(1));
    for (length, conversation) in &histories {
        let context = context_at(length + 1);
        group.bench_with_input(BenchmarkId::from_parameter(length), conversation, |b, conversation| {
            let context = &context;
            b.to_async(&runtime).iter_batched(
                || (cached_copy(conversation), agent_reply()),
                |(mut conversation, command)| async move {
                    let sink = EventSink::default();
                    let result = conversation.handle(command, context, &sink).await;
                    // Returned so that dropping the copy is not timed.
                    (result.expect("the reply is accepted"), conversation, sink)
                },
                BatchSize::LargeInput,
            );
        });
    }
    group.finish();
}

fn metadata() -> EventMetadata {
    EventMetadata {
        event_id: Uuid::now_v7(),
        tenant_id: tenant(),
        actor: Actor { kind: ActorKind::Token, id: "token-0191f2".into() },
        via_token: None,
        request_id: Some("req-7f3a9c2e".into()),
        correlation_id: Uuid::now_v7(),
        causation_id: Some(Uuid::now_v7()),
        recorded_at: start(),
    }
}

fn serialize_events(c: &mut Criterion) {
    let runtime = runtime();
    let history = conversation_history(&runtime, 3);
    let opened = history
        .iter()
        .find(|event| matches!(event, ConversationEvent::ConversationOpened { .. }))
        .expect("the history opens the conversation")
        .clone();
    let message_added = history
        .iter()
        .find(|event| matches!(event, ConversationEvent::MessageAdded { .. }))
        .expect("the history holds a message")
        .clone();

    let mut group = c.benchmark_group("serde");
    for (name, event) in [("MessageAdded", message_added), ("ConversationOpened", opened)] {
        let bytes = serde_json::to_vec(&event).expect("an event serialises");
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(BenchmarkId::new("to_vec", name), |b| {
            b.iter(|| serde_json::to_vec(black_box(&event)).expect("an event serialises"));
        });
        group.bench_function(BenchmarkId::new("from_slice", name), |b| {
            b.iter(|| {
                serde_json::from_slice::<ConversationEvent>(black_box(&bytes)).expect("an event deserialises")
            });
        });
    }

    let metadata = metadata();
    let map = metadata.to_map();
    let map_bytes = serde_json::to_vec(&map).expect("a metadata map serialises");
    group.throughput(Throughput::Elements(1));
    group.bench_function("metadata/to_map", |b| {
        b.iter(|| black_box(&metadata).to_map());
    });
    group.bench_function("metadata/from_map", |b| {
        b.iter(|| EventMetadata::from_map(black_box(&map)).expect("the map is well formed"));
    });
    // The stores keep the map as a JSON column, so this is the rest of the way to and from bytes.
    group.bench_function("metadata/map_to_vec", |b| {
        b.iter(|| serde_json::to_vec(black_box(&map)).expect("a metadata map serialises"));
    });
    group.bench_function("metadata/map_from_slice", |b| {
        b.iter(|| {
            serde_json::from_slice::<HashMap<String, String>>(black_box(&map_bytes))
                .expect("a metadata map deserialises")
        });
    });
    group.finish();
}

fn config() -> Criterion {
    // Small enough that the whole file runs in under two minutes on two cores; pass
    // --measurement-time or --sample-size for tighter figures. Without plots: rendering them
    // with the plotters backend took longer than the measurements (about 4 minutes in all).
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .without_plots()
}

criterion_group! {
    name = domain;
    config = config();
    targets = apply_events, handle_commands, serialize_events
}
criterion_main!(domain);
