//! Where a phase's CPU went, by process, read from `/proc`. Divided by the commands the phase
//! answered, it is a cost per command: the server, PostgreSQL and NATS share the machine's cores
//! with the load generator, so a rate alone cannot say which of them a change made cheaper, and a
//! cost drifts less than a rate between machines and between hours of one machine.

/// The processes the machine's CPU time is split by.
const PARTS: usize = 4;

/// CPU seconds used so far: by the server (with the worker processes it forked, as a
/// pre-forking server such as the Python peer runs), by every `postgres` process, by every
/// `nats-server` process and by this process, and by the whole machine (all cores, but idle and
/// I/O wait).
#[derive(Debug, Clone, Copy)]
pub struct Snapshot {
    parts: [f64; PARTS],
    busy: f64,
}

/// CPU milliseconds per command, by process, over a phase; `rest` is the machine's busy time
/// that no process above used (the kernel's own threads and interrupts, other processes).
#[derive(Debug, Clone, Copy)]
pub struct PerCommand {
    pub server: f64,
    pub postgres: f64,
    pub nats: f64,
    pub load: f64,
    pub rest: f64,
    /// Cores busy on average over the phase.
    pub cores_busy: f64,
}

/// Clock ticks per second of `/proc`'s CPU figures (`USER_HZ`).
fn ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Reads every process's CPU time and the machine's; `None` where `/proc` cannot be read.
pub fn snapshot(server: u32) -> Option<Snapshot> {
    let ticks = ticks_per_second();
    let own = std::process::id();
    let mut parts = [0.0; PARTS];
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else {
            continue;
        };
        // A process may end between the listing and the read.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let Some((name, parent, seconds)) = process_cpu(&stat) else { continue };
        let part = match (pid, name) {
            (pid, _) if pid == server || parent == server => 0,
            (_, "postgres") => 1,
            (_, "nats-server") => 2,
            (pid, _) if pid == own => 3,
            _ => continue,
        };
        parts[part] += seconds / ticks;
    }
    let machine = std::fs::read_to_string("/proc/stat").ok()?;
    Some(Snapshot { parts, busy: machine_busy(&machine)? / ticks })
}

/// The command name, the parent's pid and the user plus system ticks of a `/proc/<pid>/stat`
/// line. The name is in parentheses and may itself hold spaces and parentheses, so the fields
/// are counted from the last `)`.
fn process_cpu(stat: &str) -> Option<(&str, u32, f64)> {
    let (head, fields) = stat.rsplit_once(')')?;
    let (_, name) = head.split_once('(')?;
    let mut fields = fields.split_whitespace().skip(1);
    let parent: u32 = fields.next()?.parse().ok()?;
    let mut fields = fields.skip(9);
    let user: f64 = fields.next()?.parse().ok()?;
    let system: f64 = fields.next()?.parse().ok()?;
    Some((name, parent, user + system))
}

/// The ticks all cores spent busy, from `/proc/stat`'s first line: everything but `idle` and
/// `iowait` (and not `guest`, which `user` already counts).
fn machine_busy(stat: &str) -> Option<f64> {
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let ticks: Vec<f64> = line.split_whitespace().map(str::parse).collect::<Result<_, _>>().ok()?;
    let counted: f64 = ticks.iter().take(8).sum();
    Some(counted - ticks.get(3)? - ticks.get(4)?)
}

impl Snapshot {
    /// What was used from `self` to `later`, per command of `commands`, over `seconds`.
    pub fn per_command(&self, later: &Snapshot, commands: u64, seconds: f64) -> PerCommand {
        let per = |used: f64| 1000.0 * used / (commands.max(1) as f64);
        let used: Vec<f64> = (0..PARTS).map(|i| (later.parts[i] - self.parts[i]).max(0.0)).collect();
        let busy = (later.busy - self.busy).max(0.0);
        PerCommand {
            server: per(used[0]),
            postgres: per(used[1]),
            nats: per(used[2]),
            load: per(used[3]),
            rest: per((busy - used.iter().sum::<f64>()).max(0.0)),
            cores_busy: busy / seconds.max(1e-9),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::{machine_busy, process_cpu, Snapshot};

    #[test]
    fn a_process_line_is_read_from_its_last_parenthesis() {
        let stat = "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 150 25 0 0 20 0 9 0";
        assert_eq!(process_cpu(stat), Some(("tokio (rt) x", 1, 175.0)));
        assert_eq!(process_cpu("4242 (cut short) S 1"), None);
    }

    #[test]
    fn the_machine_is_busy_but_for_idle_and_io_wait() {
        let stat = "cpu  100 5 40 800 30 2 3 7 50 0\ncpu0 50 2 20 400 15 1 1 3 25 0\n";
        // user, nice, system, irq, softirq, steal; guest is already in user.
        assert_eq!(machine_busy(stat), Some(157.0));
        assert_eq!(machine_busy("intr 1 2 3\n"), None);
    }

    #[test]
    fn a_phase_costs_what_each_part_used_per_command() {
        let before = Snapshot { parts: [1.0, 2.0, 0.5, 0.25], busy: 10.0 };
        let after = Snapshot { parts: [2.0, 4.0, 1.0, 0.75], busy: 15.0 };
        let cost = before.per_command(&after, 1_000, 2.5);
        assert_eq!((cost.server, cost.postgres, cost.nats, cost.load), (1.0, 2.0, 0.5, 0.5));
        assert!((cost.rest - 1.0).abs() < 1e-9, "5 s busy, 4 s of it the parts: {}", cost.rest);
        assert!((cost.cores_busy - 2.0).abs() < 1e-9);
    }
}
