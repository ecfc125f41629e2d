//! A `colloquy` process of the tests' own, started with a role (`relay`, `project`) and killed as
//! a crash would kill it.

#![allow(dead_code, clippy::unwrap_used)]

use std::process::{Child, Command, Stdio};

/// A `colloquy <role>` process.
pub struct Worker {
    role: &'static str,
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl Worker {
    /// Starts `colloquy <role>` with `env` (its configuration).
    pub fn start(role: &'static str, env: Vec<(String, String)>) -> Self {
        let mut worker = Self { role, env, child: None };
        worker.spawn();
        worker
    }

    /// Starts the process (again, after [`Worker::kill`]). Its log is dropped unless
    /// `COLLOQUY_TEST_WORKER_LOG` names a level (`info`), for a test being looked into.
    pub fn spawn(&mut self) {
        let level = std::env::var("COLLOQUY_TEST_WORKER_LOG").ok();
        let stderr = if level.is_some() { Stdio::inherit() } else { Stdio::null() };
        let child = Command::new(env!("CARGO_BIN_EXE_colloquy"))
            .arg(self.role)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("COLLOQUY_LOG", level.as_deref().unwrap_or("warn"))
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// SIGKILL, as a crash, then a new process.
    pub fn crash_and_restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}
