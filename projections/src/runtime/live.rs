//! Following the log live: from the in-process bus (fed by the relay or by JetStream), or by
//! polling the store.

use super::*;

impl Projector {
    /// Keeps the read model current until `stop` turns true, fed by the in-process bus.
    pub async fn run_on_bus(
        &self,
        bus: &EventBus,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), ProjectionError> {
        // Subscribe first, then catch up, so nothing falls between the two.
        let mut events = bus.subscribe();
        // On SQLite every transaction writes each page it touches whole, and a batch's rows share
        // index pages: letting a batch gather for a moment after its first event means fewer,
        // larger transactions and fewer pages written per event.
        let sqlite = !self.log.store().is_postgres();
        let linger = self.linger.unwrap_or(if sqlite { BUS_LINGER } else { Duration::ZERO });
        self.catch_up().await?;
        self.failures.recovered();
        loop {
            let first = tokio::select! {
                received = events.recv() => received,
                _ = stop.changed() => return self.flush_checkpoint().await,
                () = tokio::time::sleep(CHECKPOINT_EVERY) => {
                    self.flush_checkpoint().await?;
                    continue;
                }
            };
            match first {
                Ok(event) => {
                    if linger > Duration::ZERO {
                        tokio::time::sleep(linger).await;
                    }
                    self.defer_to_deadlines().await;
                    let mut batch = vec![(*event).clone()];
                    while batch.len() < 1000 {
                        match events.try_recv() {
                            Ok(event) => batch.push((*event).clone()),
                            Err(_) => break,
                        }
                    }
                    let received_at = tokio::time::Instant::now();
                    let received_age = self.debug_age(&batch);
                    if let Applied::Gap { .. } = self.apply(&batch).await? {
                        self.catch_up().await?;
                    }
                    self.debug_timings(&batch, received_age, linger, received_at);
                    let took = received_at.elapsed();
                    if took > SLOW_BATCH {
                        tracing::warn!(
                            projection = self.name(),
                            events = batch.len(),
                            took_ms = took.as_secs_f64() * 1e3,
                            "a live batch took over a second to apply"
                        );
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    self.catch_up().await?;
                }
                Err(broadcast::error::RecvError::Closed) => return self.flush_checkpoint().await,
            }
        }
    }

    /// Keeps the read model current until `stop` turns true by reading the store whenever the
    /// log's head moves (or every 50 ms): for a projector process without NATS.
    pub async fn run_polling(&self, mut stop: watch::Receiver<bool>) -> Result<(), ProjectionError> {
        let mut head = self.log.watch_head();
        loop {
            self.catch_up().await?;
            self.failures.recovered();
            tokio::select! {
                _ = head.changed() => {}
                _ = stop.changed() => {}
                () = tokio::time::sleep(Duration::from_millis(50)) => self.flush_checkpoint().await?,
            }
            if *stop.borrow() {
                return self.flush_checkpoint().await;
            }
        }
    }
}

/// Feeds `bus` from JetStream until `stop` turns true, for `projectors`, each of which reads the
/// bus ([`Projector::run_on_bus`]); where JetStream fails or is not connected, the projectors
/// catch up from the store meanwhile (see [`colloquy_infra::feed`]).
pub async fn feed_from_jetstream(
    transport: &JetStreamTransport,
    bus: &EventBus,
    projectors: &[Projector],
    stop: watch::Receiver<bool>,
) -> Result<(), ProjectionError> {
    let former: Vec<String> = crate::all().iter().map(|p| format!("projection-{}", p.name())).collect();
    colloquy_infra::feed::run(transport, bus, &former, || catch_up_all(projectors), stop).await
}

/// Catches every one of `projectors` up from the store.
pub(super) async fn catch_up_all(projectors: &[Projector]) -> Result<(), ProjectionError> {
    for projector in projectors {
        projector.catch_up().await?;
    }
    Ok(())
}
