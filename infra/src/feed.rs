//! The JetStream feed: one durable consumer per process that passes the stream on to the
//! process's in-process bus, which its projectors read. The only place besides the relay that
//! reads NATS.

use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use futures::StreamExt;
use tokio::sync::watch;

use crate::bus::EventBus;
use crate::envelope::from_cloud_event;
use crate::relay::{JetStreamTransport, RelayError, STORE_HEADER};

/// A fetch (or a wait for one) that takes longer than this is logged as a warning.
const SLOW_FETCH: Duration = Duration::from_secs(1);

/// The durable JetStream consumer through which a process's projectors read the stream.
pub const JETSTREAM_CONSUMER: &str = "projections";

/// Feeds `bus` from JetStream until `stop` turns true, for this process's projectors, each of
/// which reads the bus: one durable consumer, [`JETSTREAM_CONSUMER`], for them all, so NATS
/// delivers each event to the process once and takes one ack for it, instead of once per
/// projection (`former_consumers`, the consumers each projection once had, are deleted here).
///
/// A batch is acknowledged once it is on the bus, before the projectors apply it: what makes
/// each projection exactly-once is its checkpoint, not the ack. A projector that misses events
/// (it was restarting, or fell more than the bus holds behind) sees the gap at its next batch and
/// catches up from the store, as it does when it starts; a message redelivered after a crash is
/// skipped by the checkpoint. The feed does not wait for a slow projector: one that falls more
/// than the bus holds (8,192 events) behind reads the store instead, so it holds no other back.
///
/// Where JetStream fails (at the start or on a fetch) or the client is not connected,
/// `catch_up` brings the projectors up from the store before the feed tries again (every 50 ms while
/// disconnected), so their read models do not wait for NATS to come back.
pub async fn run<E, F, Fut>(
    transport: &JetStreamTransport,
    bus: &EventBus,
    former_consumers: &[String],
    catch_up: F,
    mut stop: watch::Receiver<bool>,
) -> Result<(), E>
where
    E: From<RelayError>,
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    let consumer = match shared_consumer(transport, former_consumers).await {
        Ok(consumer) => consumer,
        Err(error) => {
            catch_up().await?;
            return Err(error.into());
        }
    };
    let mut connected = true;
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        // A fetch on a client that knows it is disconnected neither fails nor delivers; it only
        // waits out its expiry. The projectors read the store meanwhile.
        let state = transport.context().client().connection_state();
        if state != async_nats::connection::State::Connected {
            if connected {
                tracing::warn!(%state, "NATS is not connected; the projectors follow the store until it is");
                connected = false;
            }
            catch_up().await?;
            if wait_or_stop(&mut stop, Duration::from_millis(50)).await {
                return Ok(());
            }
            continue;
        }
        connected = true;
        let fetching = tokio::time::Instant::now();
        let fetched =
            consumer.fetch().max_messages(1000).expires(Duration::from_millis(250)).messages().await;
        let mut messages = match fetched {
            Ok(messages) => messages,
            Err(error) => {
                tracing::warn!(%error, "JetStream fetch failed; the projectors catch up from the store");
                catch_up().await?;
                if wait_or_stop(&mut stop, Duration::from_millis(200)).await {
                    return Ok(());
                }
                continue;
            }
        };
        let mut received = Vec::new();
        let mut batch = Vec::new();
        let mut foreign = 0;
        while let Some(message) = messages.next().await {
            let Ok(message) = message else { break };
            // Only this store's relay publishes what the read models take: a message from
            // anything else (another store's relay, a stray publisher) never replaces an event.
            let from = message.headers.as_ref().and_then(|h| h.get(STORE_HEADER)).map(|v| v.as_str());
            if from.is_some() && from == transport.store_id() {
                if let Some(event) = from_cloud_event(&message.payload) {
                    batch.push(event);
                }
            } else {
                foreign += 1;
            }
            received.push(message);
        }
        if foreign > 0 {
            tracing::error!(
                foreign,
                stream = transport.stream_name(),
                "the stream holds messages that this store's relay did not publish; the projectors take them from the store"
            );
            catch_up().await?;
        }
        let took = fetching.elapsed();
        if took > SLOW_FETCH {
            // The fetch expires after 250 ms: NATS (or this process) was stalled.
            tracing::warn!(
                events = batch.len(),
                took_ms = took.as_secs_f64() * 1e3,
                "a JetStream fetch took over a second"
            );
        }
        batch.sort_by_key(|e| e.position);
        batch.dedup_by_key(|e| e.position);
        bus.publish(&batch);
        for message in received {
            if let Err(error) = message.ack().await {
                tracing::debug!(%error, "ack failed; the message will be redelivered and skipped");
            }
        }
    }
}

/// The process's projectors' shared consumer, made if missing, after deleting the consumers of
/// their own that projections had before.
async fn shared_consumer(
    transport: &JetStreamTransport,
    former_consumers: &[String],
) -> Result<PullConsumer, RelayError> {
    let nats = |e: &dyn std::fmt::Display| RelayError::Nats(e.to_string());
    let stream = transport.context().get_stream(transport.stream_name()).await.map_err(|e| nats(&e))?;
    for former in former_consumers {
        if stream.delete_consumer(former).await.is_ok() {
            tracing::info!(consumer = %former, "deleted a projection's own JetStream consumer, replaced by one for all");
        }
    }
    stream
        .get_or_create_consumer::<pull::Config>(
            JETSTREAM_CONSUMER,
            pull::Config {
                durable_name: Some(JETSTREAM_CONSUMER.to_owned()),
                ack_policy: AckPolicy::Explicit,
                deliver_policy: DeliverPolicy::All,
                ack_wait: Duration::from_secs(30),
                max_ack_pending: 20_000,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| nats(&e))
}

async fn wait_or_stop(stop: &mut watch::Receiver<bool>, pause: Duration) -> bool {
    tokio::select! {
        _ = stop.changed() => {}
        () = tokio::time::sleep(pause) => {}
    }
    *stop.borrow()
}
