//! What a `colloquy` process runs: the HTTP API, the relay, the projectors, or all three
//! (`colloquy serve`), with their background tasks supervised (restarted after a failure) and
//! stopped in order on shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use colloquy_domain::TenantId;
use colloquy_infra::relay::{self, JetStreamTransport, Transport};
use colloquy_infra::EventBus;
use colloquy_infra::{tokens, Config, GlobalLog, Repository, Store};
use colloquy_projections::runtime::feed_from_jetstream;
use colloquy_projections::Projector;

use crate::state::AppState;
use crate::{app, DEFAULT_TENANT};

/// Which parts a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    /// The HTTP API.
    pub http: bool,
    /// The relay (log to JetStream, or to the in-process bus).
    pub relay: bool,
    /// The projectors.
    pub projectors: bool,
}

impl Roles {
    /// Everything: `colloquy serve`.
    pub const ALL: Roles = Roles { http: true, relay: true, projectors: true };
}

/// A process that is running.
#[derive(Debug)]
pub struct Running {
    /// The address the API listens on (the real port when configured with port 0).
    pub addr: SocketAddr,
    /// The admin token generated on this start, if one was; shown once.
    pub generated_token: Option<String>,
    http_shutdown: Option<oneshot::Sender<()>>,
    http: Option<JoinHandle<std::io::Result<()>>>,
    stop: watch::Sender<bool>,
    workers: Vec<JoinHandle<()>>,
    store: Store,
    deadlines: colloquy_projections::deadlines::Deadlines,
}

impl Running {
    /// Stops accepting requests, lets in-flight ones finish, stops the relay and projectors after
    /// their current batch (whose checkpoint commits with it), and closes the store.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(shutdown) = self.http_shutdown.take() {
            let _ = shutdown.send(());
        }
        self.wait().await
    }

    /// Waits until the HTTP server ends (after [`Running::stop`], a signal or a failure), then
    /// stops the background work.
    pub async fn wait(mut self) -> anyhow::Result<()> {
        let served = match self.http.take() {
            Some(http) => http.await.context("server task failed")?,
            None => {
                let mut stop = self.stop.subscribe();
                while !*stop.borrow() {
                    if stop.changed().await.is_err() {
                        break;
                    }
                }
                Ok(())
            }
        };
        let _ = self.stop.send(true);
        // A reports' projector waiting out a hold goes on to see the stop at once.
        self.deadlines.release();
        for worker in self.workers.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(10), worker).await;
        }
        self.store.close().await;
        served.context("server failed")
    }

    /// A handle that asks the process to stop gracefully.
    pub fn shutdown_handle(&mut self) -> ShutdownHandle {
        ShutdownHandle { http: self.http_shutdown.take(), stop: self.stop.clone() }
    }
}

/// Asks a running process to stop.
#[derive(Debug)]
pub struct ShutdownHandle {
    http: Option<oneshot::Sender<()>>,
    stop: watch::Sender<bool>,
}

impl ShutdownHandle {
    /// Begins a graceful stop.
    pub fn shutdown(self) {
        match self.http {
            // `Running::wait` stops the relay and projectors once the last request has finished,
            // so the events of in-flight commands are still relayed by this process.
            Some(http) => {
                let _ = http.send(());
            }
            // Without HTTP, the stop flag is what `wait` waits on.
            None => {
                let _ = self.stop.send(true);
            }
        }
    }
}

/// How often a serving process removes expired idempotency keys (and once when it starts).
const PURGE_IDEMPOTENCY_KEYS_EVERY: Duration = Duration::from_secs(600);

async fn purge_idempotency_keys(
    store: Store,
    mut stop: watch::Receiver<bool>,
) -> Result<(), colloquy_infra::StoreError> {
    loop {
        let purged = colloquy_infra::idempotency::purge(&store, chrono::Utc::now()).await?;
        if purged > 0 {
            tracing::info!(purged, "removed expired idempotency keys");
        }
        tokio::select! {
            _ = stop.changed() => return Ok(()),
            () = tokio::time::sleep(PURGE_IDEMPOTENCY_KEYS_EVERY) => {}
        }
    }
}

/// Runs `work` until `stop`, restarting it a second after it fails.
fn supervise<F, Fut, E>(name: String, stop: watch::Receiver<bool>, work: F) -> JoinHandle<()>
where
    F: Fn(watch::Receiver<bool>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), E>> + Send,
    E: std::fmt::Display + Send + 'static,
{
    let task = name.clone();
    let on_failure = move |error: &E| {
        tracing::warn!(%task, %error, "failed; restarting in 1 s");
        Duration::from_secs(1)
    };
    supervise_with(name, stop, work, on_failure)
}

/// Runs `work` until `stop`, restarting it after each failure once the pause that `on_failure`
/// (which reports the error) returns has passed.
fn supervise_with<F, Fut, E, R>(
    name: String,
    mut stop: watch::Receiver<bool>,
    work: F,
    on_failure: R,
) -> JoinHandle<()>
where
    F: Fn(watch::Receiver<bool>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), E>> + Send,
    E: Send + 'static,
    R: Fn(&E) -> Duration + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            let pause = match work(stop.clone()).await {
                Ok(()) if *stop.borrow() => return,
                Ok(()) => {
                    tracing::warn!(task = %name, "stopped unexpectedly; restarting");
                    Duration::from_secs(1)
                }
                Err(error) => on_failure(&error),
            };
            tokio::select! {
                _ = stop.changed() => {}
                () = tokio::time::sleep(pause) => {}
            }
            if *stop.borrow() {
                return;
            }
        }
    })
}

/// Opens the store and starts the parts of a process that `roles` names.
pub async fn start(config: &Config, roles: Roles) -> anyhow::Result<Running> {
    // Every process opens it with the projections' tables, so that on SQLite they are moved into
    // the read models' file before anything (a projector, a rebuild elsewhere) writes them.
    let store = config
        .open_store(&colloquy_projections::read_model_tables())
        .await
        .context("opening the event store")?;
    let tenant = TenantId::parse(DEFAULT_TENANT).context("default tenant id")?;
    let generated_token = tokens::bootstrap(&store, &tenant, config.bootstrap_token.as_deref())
        .await
        .context("bootstrapping the default tenant")?;
    let log = GlobalLog::start(store.clone()).await.context("starting the global log")?;
    let (stop, _) = watch::channel(false);
    let mut workers = Vec::new();
    let jetstream = match &config.nats_url {
        Some(url) if roles.relay || roles.projectors => Some(
            JetStreamTransport::connect(url, &config.nats_stream, &config.nats_subject_prefix)
                .await
                .context("connecting to NATS JetStream")?
                .bound_to(&store)
                .await
                .context("binding the JetStream stream to this store")?,
        ),
        _ => None,
    };
    let bus = EventBus::new();
    // Whether this process's timers fire late, which its background projections (the reports')
    // defer to (docs/adr/0014).
    let deadlines = colloquy_projections::deadlines::Deadlines::default();
    let projectors: Vec<Projector> = colloquy_projections::all()
        .into_iter()
        .map(|p| {
            Projector::new(log.clone(), p)
                .with_linger(config.projection_linger())
                .with_deadlines(deadlines.clone())
        })
        .collect();
    for name in &config.skip_projections {
        if !projectors.iter().any(|p| p.name() == name) {
            anyhow::bail!("--skip-projection {name}: there is no such projection");
        }
    }
    // The projectors this process runs; the others' checkpoints are still read for waiting.
    let running: Vec<Projector> = projectors
        .iter()
        .filter(|p| !config.skip_projections.iter().any(|n| n == p.name()))
        .cloned()
        .collect();
    if roles.projectors {
        // Indexes a rebuild dropped and did not get to build again (it was stopped).
        let built =
            colloquy_projections::deferred::restore(&store).await.context("building deferred indexes")?;
        if built > 0 {
            tracing::warn!(indexes = built, "built the indexes a rebuild that did not finish had dropped");
        }
        let feed = match (&jetstream, roles.relay) {
            (Some(jetstream), _) => {
                // One JetStream consumer for all the projectors, passed on through a bus of
                // their own (with NATS, the relay's commits go to JetStream, not to `bus`).
                let fed = EventBus::new();
                let (jetstream, into, fed_projectors) = (jetstream.clone(), fed.clone(), running.clone());
                workers.push(supervise("jetstream feed".into(), stop.subscribe(), move |stop| {
                    let (jetstream, into, projectors) =
                        (jetstream.clone(), into.clone(), fed_projectors.clone());
                    async move { feed_from_jetstream(&jetstream, &into, &projectors, stop).await }
                }));
                Feed::Bus(fed)
            }
            (None, true) => Feed::Bus(bus.clone()),
            (None, false) => Feed::Store,
        };
        for projector in &running {
            let projector = projector.clone();
            let feed = feed.clone();
            // A projector that fails is reported (ERROR, `/readyz`, `/metrics`) and retried
            // with a growing pause: an event it cannot apply stops it loudly, never silently.
            let reporter = projector.clone();
            workers.push(supervise_with(
                format!("projector {}", projector.name()),
                stop.subscribe(),
                move |stop| {
                    let projector = projector.clone();
                    let feed = feed.clone();
                    async move {
                        match feed {
                            Feed::Bus(bus) => projector.run_on_bus(&bus, stop).await,
                            Feed::Store => projector.run_polling(stop).await,
                        }
                    }
                },
                move |error| reporter.failed(error),
            ));
        }
    }
    // One repository (one cache) of conversations per process, shared by the API and the process
    // managers that command conversations, whose commands then queue with the API's on an
    // aggregate's slot instead of conflicting with them through the store.
    let conversations = Arc::new(Repository::new(store.clone(), config.cache_limits()));
    if roles.projectors {
        // The process managers' actor halves, which send the commands their projections recorded,
        // woken when their projection half applies a batch.
        let clocks = Arc::new(Repository::new(store.clone(), config.cache_limits()));
        // The processes of one projection half run as lanes of one runner, in the order given.
        let mut lanes: Vec<(&str, Vec<Arc<dyn colloquy_projections::processes::Process>>)> = Vec::new();
        for process in colloquy_projections::processes(&store, conversations.clone(), clocks) {
            if config.skip_projections.iter().any(|n| n == process.projection()) {
                continue;
            }
            match lanes.iter_mut().find(|(projection, _)| *projection == process.projection()) {
                Some((_, of_projection)) => of_projection.push(process),
                None => lanes.push((process.projection(), vec![process])),
            }
        }
        for (projection, processes) in lanes {
            let Some(projector) = projectors.iter().find(|p| p.name() == projection) else {
                anyhow::bail!("the processes of {projection} have no projection half");
            };
            let (process_store, recorded) = (store.clone(), projector.watch_applied());
            let name = processes.iter().map(|p| p.name()).collect::<Vec<_>>().join("+");
            let deadlines = deadlines.clone();
            workers.push(supervise(format!("process {name}"), stop.subscribe(), move |stop| {
                let (store, processes, recorded) =
                    (process_store.clone(), processes.clone(), recorded.clone());
                colloquy_projections::processes::run(store, processes, recorded, stop, deadlines.clone())
            }));
        }
    }
    if roles.projectors {
        // Webhooks, delivered from the log by whichever process holds each subscription's lease.
        let (webhook_log, settings) = (log.clone(), crate::webhook_delivery::Settings::from_config(config));
        workers.push(supervise("webhooks".into(), stop.subscribe(), move |stop| {
            crate::webhook_delivery::run(webhook_log.clone(), settings, stop)
        }));
    }
    if roles.relay {
        let transport = match &jetstream {
            Some(jetstream) => {
                // The writer holds this process's commits for the relay, which publishes them
                // without reading them back.
                store.hand_commits_to_relay();
                Transport::JetStream(Box::new(jetstream.clone()))
            }
            None => {
                // SQLite's writer hands this process's commits to the bus itself.
                store.hand_commits_to(&bus);
                Transport::Bus(bus.clone())
            }
        };
        let relay_log = log.clone();
        workers.push(supervise("relay".into(), stop.subscribe(), move |stop| {
            relay::run(relay_log.clone(), transport.clone(), stop)
        }));
    }
    if roles.http {
        // Keys past their 24 hours are dead weight (a retry after them runs again anyway).
        let purge_store = store.clone();
        workers.push(supervise("idempotency key purge".into(), stop.subscribe(), move |stop| {
            purge_idempotency_keys(purge_store.clone(), stop)
        }));
    }
    let (addr, http, http_shutdown) = if roles.http {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let addr = listener.local_addr()?;
        let listener = crate::listener::CappedListener::new(listener, config.max_connections);
        let state = AppState::new(
            store.clone(),
            log,
            config.cache_limits(),
            Arc::new(projectors),
            Duration::from_millis(config.min_position_timeout_ms),
            jetstream.clone(),
            config.max_requests_in_flight,
        )
        .with_stuck_after(Duration::from_secs(config.ready_stuck_after_secs))
        .with_conversations(conversations)
        .with_webhook_settings(crate::webhook_delivery::Settings::from_config(config));
        let closer = state.clone();
        let router = app(state);
        let (shutdown, signal) = oneshot::channel::<()>();
        let http = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = signal.await;
                    closer.close_streams();
                })
                .await
        });
        tracing::info!(%addr, store = store.kind(), nats = config.nats_url.is_some(), "colloquy is serving");
        (addr, Some(http), Some(shutdown))
    } else {
        (SocketAddr::from(([0, 0, 0, 0], 0)), None, None)
    };
    Ok(Running { addr, generated_token, http_shutdown, http, stop, workers, store, deadlines })
}

/// Where a process's projectors take the log from besides the store: the in-process bus (fed by
/// this process's relay, or from JetStream), or nothing (they poll the store).
#[derive(Debug, Clone)]
enum Feed {
    Bus(EventBus),
    Store,
}
