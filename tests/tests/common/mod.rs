//! Test harness: starts the real server on a free port, on the embedded store (a fresh temp dir)
//! or on PostgreSQL (a fresh database per test, dropped afterwards), and speaks HTTP to it.

#![allow(dead_code, clippy::unwrap_used)]

pub mod receiver;

use std::net::SocketAddr;
use std::path::PathBuf;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use sqlx::{Connection, Executor, PgConnection};

use colloquy_api::Running;
use colloquy_infra::{Config, LogFormat};

/// The PostgreSQL server tests create their databases on. The test script makes sure it runs.
pub fn postgres_admin_url() -> String {
    std::env::var("COLLOQUY_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Which store a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database of its own for one test, dropped when the test ends.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

impl TestDatabase {
    pub async fn create() -> Self {
        let admin_url = postgres_admin_url();
        let mut admin = PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL must be reachable at {admin_url} for this test: {e}"));
        let name = format!("colloquy_test_{}", uuid::Uuid::new_v4().simple());
        admin.execute(format!("CREATE DATABASE {name}").as_str()).await.unwrap();
        let base = admin_url.rsplit_once('/').map_or(admin_url.as_str(), |(base, _)| base);
        Self { url: format!("{base}/{name}"), name }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside async; a short-lived runtime on its own thread does the cleanup.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async move {
                if let Ok(mut admin) = PgConnection::connect(&postgres_admin_url()).await {
                    let _ =
                        admin.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str()).await;
                }
            });
        })
        .join();
    }
}

/// A running server plus what is needed to restart it on the same data.
pub struct TestServer {
    pub backend: Backend,
    pub base: String,
    pub token: String,
    pub client: reqwest::Client,
    config: Config,
    running: Option<Running>,
    _data_dir: Option<tempfile::TempDir>,
    database: Option<TestDatabase>,
}

/// The master key every test server of this test binary is configured with, in base64, as
/// `COLLOQUY_MASTER_KEY` takes it.
pub fn master_key_text() -> &'static str {
    static KEY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    KEY.get_or_init(colloquy_infra::personal::MasterKey::generate)
}

pub fn config_for(data_dir: PathBuf, database_url: Option<String>, token: &str) -> Config {
    Config {
        data_dir,
        database_url,
        db_max_connections: 8,
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        bootstrap_token: Some(token.to_owned()),
        log_format: LogFormat::Text,
        aggregate_cache: 1_000,
        aggregate_cache_mb: 32,
        snapshot_every: 256,
        nats_url: None,
        nats_stream: "COLLOQUY_EVENTS".into(),
        nats_subject_prefix: "colloquy.events".into(),
        min_position_timeout_ms: 5_000,
        projection_linger_ms: None,
        ready_stuck_after_secs: 60,
        skip_projections: Vec::new(),
        max_requests_in_flight: 1024,
        max_connections: 4096,
        // The test binary's master key (docs/adr/0011): a `colloquy` process a test starts on
        // the same store takes it as `COLLOQUY_MASTER_KEY` (`master_key_text`).
        master_key: Some(
            colloquy_infra::personal::MasterKey::from_base64(master_key_text())
                .expect("a generated master key reads"),
        ),
        // Tests' webhook receivers listen on loopback; retries come fast.
        webhook_allow_private: true,
        webhook_retry_for_secs: 86_400,
        webhook_retry_base_ms: 100,
        webhook_timeout_ms: 5_000,
        webhook_lease_ms: 3_000,
    }
}

impl TestServer {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, |_| {}).await
    }

    /// Starts with the test's config changed by `adjust` (e.g. to add a NATS URL).
    pub async fn start_with(backend: Backend, adjust: impl FnOnce(&mut Config)) -> Self {
        Self::start_roles(backend, colloquy_api::Roles::ALL, adjust).await
    }

    /// Starts only the parts `roles` names in this process (the others run elsewhere).
    pub async fn start_roles(
        backend: Backend,
        roles: colloquy_api::Roles,
        adjust: impl FnOnce(&mut Config),
    ) -> Self {
        let token = format!("cq_test_{}", uuid::Uuid::new_v4().simple());
        let data_dir = tempfile::tempdir().unwrap();
        let database = match backend {
            Backend::Postgres => Some(TestDatabase::create().await),
            Backend::Sqlite => None,
        };
        let mut config =
            config_for(data_dir.path().to_path_buf(), database.as_ref().map(|d| d.url.clone()), &token);
        adjust(&mut config);
        let running = colloquy_api::process::start(&config, roles).await.unwrap();
        Self {
            backend,
            base: format!("http://{}", running.addr),
            token,
            client: reqwest::Client::new(),
            config,
            running: Some(running),
            _data_dir: Some(data_dir),
            database,
        }
    }

    /// A second server process on the same database (PostgreSQL only), as in a scale-out.
    pub async fn second_instance(&self) -> Running {
        colloquy_api::start(&self.config).await.unwrap()
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The configuration the next [`TestServer::start_again`] starts with.
    #[allow(dead_code)] // Each test binary compiles this module; not every one changes it.
    pub fn config_mut(&mut self) -> &mut Config {
        &mut self.config
    }

    pub fn database_url(&self) -> Option<&str> {
        self.database.as_ref().map(|d| d.url.as_str())
    }

    /// Stops the server gracefully and starts a new one on the same store and a new port.
    pub async fn restart(&mut self) {
        self.shut_down().await;
        self.start_again().await;
    }

    /// Stops the server gracefully (in-flight requests finish), keeping its store.
    pub async fn shut_down(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await.unwrap();
        }
    }

    /// Starts a server on the store of one that was shut down, on a new port.
    pub async fn start_again(&mut self) {
        let running = colloquy_api::start(&self.config).await.unwrap();
        self.base = format!("http://{}", running.addr);
        self.running = Some(running);
    }

    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await.unwrap();
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request with the admin token and returns status, headers and JSON body (Null
    /// for an empty body).
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        self.call_with(method, path, body, &[]).await
    }

    pub async fn call_with(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut request = self.client.request(method, self.url(path)).bearer_auth(&self.token);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        Reply::from(request.send().await.unwrap()).await
    }

    /// The value of one series (name and labels) on `GET /metrics`.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.client.get(self.url("/metrics")).send().await.unwrap().text().await.unwrap();
        let line = text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' '));
        line.unwrap_or_else(|| panic!("no {series} in\n{text}")).trim().parse().unwrap()
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Reply {
        self.call(Method::PATCH, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.call(Method::DELETE, path, None).await
    }

    /// Creates a contact and returns its id.
    pub async fn contact(&self) -> String {
        let reply = self
            .post(
                "/v1/contacts",
                serde_json::json!({"first_name": "Ann", "last_name": "Lee", "phone": "+14155550123"}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
        reply.body["id"].as_str().unwrap().to_owned()
    }

    /// Opens a conversation with a new contact and returns its id.
    pub async fn conversation(&self) -> String {
        let contact_id = self.contact().await;
        let reply = self
            .post(
                "/v1/conversations",
                serde_json::json!({"contact_id": contact_id, "channel": "whatsapp", "subject": "Order"}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
        reply.body["id"].as_str().unwrap().to_owned()
    }

    /// Posts a customer's message to conversation `id`; the position of its event.
    pub async fn customer_message(&self, id: &str, text: &str) -> i64 {
        let path = format!("/v1/conversations/{id}/messages");
        let reply = self.post(&path, serde_json::json!({"sender": {"kind": "customer"}, "text": text})).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
        reply.headers["colloquy-position"].to_str().unwrap().parse().unwrap()
    }

    /// Every event of a conversation, walking all pages.
    /// Appends to a new conversation an event no projection can read, as a faulty writer in
    /// another process could, and returns its position: the list stops before it, so a read
    /// with `min_position` at or past it waits until its timeout.
    #[allow(dead_code)] // Each test binary compiles this module; not every one stops the list.
    pub async fn append_unreadable(&self) -> (String, i64) {
        let id = self.conversation().await;
        let store = self.config().open_store(&[]).await.unwrap();
        let sequence = self.all_events("conversations", &id).await.len();
        let unreadable = cqrs_es::persist::SerializedEvent::new(
            id.clone(),
            sequence + 1,
            "conversation".into(),
            "MessageAdded".into(),
            "1.0".into(),
            serde_json::json!({"MessageAdded": {"not": "a message"}}),
            serde_json::json!({"event_id": uuid::Uuid::now_v7(), "tenant_id": "default", "actor_kind": "system",
                   "actor_id": "elsewhere", "correlation_id": uuid::Uuid::now_v7(), "recorded_at": "2026-12-01T00:00:00Z"}),
        );
        let position = store.append(vec![unreadable]).await.unwrap();
        (id, position)
    }

    pub async fn all_events(&self, aggregate: &str, id: &str) -> Vec<Value> {
        let mut events = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/v1/{aggregate}/{id}/events?limit=100&cursor={c}"),
                None => format!("/v1/{aggregate}/{id}/events?limit=100"),
            };
            let reply = self.get(&path).await;
            assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
            events.extend(reply.body["data"].as_array().unwrap().iter().cloned());
            match reply.body["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return events,
            }
        }
    }
}

#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    async fn from(response: reqwest::Response) -> Self {
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        Self { status, headers, body }
    }

    pub fn etag(&self) -> String {
        self.headers.get("etag").unwrap().to_str().unwrap().to_owned()
    }

    pub fn content_type(&self) -> String {
        self.headers.get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default()
    }

    /// Asserts a problem+json answer with this status and returns its detail.
    pub fn assert_problem(&self, status: StatusCode) -> String {
        assert_eq!(self.status, status, "{:?}", self.body);
        assert_eq!(self.content_type(), "application/problem+json");
        assert_eq!(self.body["status"].as_u64(), Some(u64::from(status.as_u16())));
        let detail = self.body["detail"].as_str().unwrap_or_default().to_owned();
        assert!(!detail.is_empty(), "a problem must say what went wrong");
        detail
    }
}

/// Polls `check` every 50 ms until it gives `Some`, up to `timeout`; fails the test naming
/// `what` after that.
#[allow(dead_code)] // Each test binary compiles this module; not every one waits.
pub async fn eventually<T, F, Fut>(timeout: std::time::Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "not within {timeout:?}: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Runs one async scenario against both stores, as two tests.
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Postgres).await;
                }
            )*
        }
    };
}

/// A nats-server with JetStream of the test's own, on a free port with a temp store, killed on
/// drop (as nats.rs's own test helper does).
pub struct NatsServer {
    pub port: u16,
    pub url: String,
    store_dir: tempfile::TempDir,
    child: Option<std::process::Child>,
    /// A configuration file of its own, if any.
    config: Option<PathBuf>,
}

pub fn nats_server_binary() -> String {
    std::env::var("NATS_SERVER").unwrap_or_else(|_| {
        ["/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .unwrap_or("nats-server")
            .to_owned()
    })
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl NatsServer {
    pub async fn start() -> Self {
        let port = free_port();
        let store_dir = tempfile::tempdir().unwrap();
        let mut server =
            Self { port, url: format!("nats://127.0.0.1:{port}"), store_dir, child: None, config: None };
        server.spawn().await;
        server
    }

    /// A server that takes messages of at most `bytes` (its `max_payload`; 1 MiB by default).
    pub async fn start_with_max_payload(bytes: usize) -> Self {
        let port = free_port();
        let store_dir = tempfile::tempdir().unwrap();
        let config = store_dir.path().join("nats.conf");
        std::fs::write(&config, format!("max_payload: {bytes}\n")).unwrap();
        let url = format!("nats://127.0.0.1:{port}");
        let mut server = Self { port, url, store_dir, child: None, config: Some(config) };
        server.spawn().await;
        server
    }

    /// Starts the server (again, after [`NatsServer::kill`]) on its port and store.
    pub async fn spawn(&mut self) {
        let mut command = std::process::Command::new(nats_server_binary());
        if let Some(config) = &self.config {
            command.arg("-c").arg(config);
        }
        let child = command
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string(), "--store_dir"])
            .arg(self.store_dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("nats-server must be installed for this test ({}): {e}", nats_server_binary())
            });
        self.child = Some(child);
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("nats-server did not come up on port {}", self.port);
    }

    /// Stops the server (as a crash would) and starts it again on the same port and store.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    /// Stops the server as a crash would (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `ConversationDeleted` for conversation `id` at `sequence`, as a writer in another process (the
/// system actor `writer`) would append it, in the default tenant.
pub fn deleted_event(id: &str, sequence: usize, writer: &str) -> cqrs_es::persist::SerializedEvent {
    cqrs_es::persist::SerializedEvent::new(
        id.to_owned(),
        sequence,
        "conversation".into(),
        "ConversationDeleted".into(),
        "1.0".into(),
        serde_json::json!({"ConversationDeleted": {"deleted_at": "2026-11-29T00:00:00Z"}}),
        serde_json::json!({"event_id": uuid::Uuid::now_v7(), "tenant_id": "default", "actor_kind": "system",
               "actor_id": writer, "correlation_id": uuid::Uuid::now_v7(), "recorded_at": "2026-11-29T00:00:00Z"}),
    )
}

/// The tenant the test servers' tokens act in.
#[allow(dead_code)] // Not every test binary uses it.
pub fn default_tenant() -> colloquy_domain::TenantId {
    colloquy_domain::TenantId::parse("default").expect("a valid tenant id")
}
