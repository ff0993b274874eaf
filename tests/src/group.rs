//! Runs group-member programs (the line protocol of `tests/clients/GROUPS.md`) as child
//! processes and records what they print, in one order shared by every member.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

/// One line a member printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The consumer exists and has subscribed.
    Ready,
    /// The member's full assignment after a change.
    Assign(BTreeSet<i32>),
    /// A consumed record.
    Rec {
        partition: i32,
        offset: i64,
        value: String,
    },
    /// A successful synchronous commit of `next` for `partition`.
    Commit { partition: i32, next: i64 },
    /// The member closed gracefully (left the group).
    Closed,
    /// A line outside the protocol (a test failure when checked).
    Garbled(String),
}

impl Event {
    /// Parses one protocol line.
    pub fn parse(line: &str) -> Event {
        let garbled = || Event::Garbled(line.to_string());
        let mut words = line.splitn(4, ' ');
        match (words.next(), words.next(), words.next(), words.next()) {
            (Some("READY"), None, ..) => Event::Ready,
            (Some("CLOSED"), None, ..) => Event::Closed,
            (Some("ASSIGN"), Some("-"), None, _) => Event::Assign(BTreeSet::new()),
            (Some("ASSIGN"), Some(list), None, _) => list
                .split(',')
                .map(str::parse)
                .collect::<Result<BTreeSet<i32>, _>>()
                .map_or_else(|_| garbled(), Event::Assign),
            (Some("REC"), Some(p), Some(o), value) => match (p.parse(), o.parse()) {
                (Ok(partition), Ok(offset)) => Event::Rec {
                    partition,
                    offset,
                    value: value.unwrap_or_default().to_string(),
                },
                _ => garbled(),
            },
            (Some("COMMIT"), Some(p), Some(n), None) => match (p.parse(), n.parse()) {
                (Ok(partition), Ok(next)) => Event::Commit { partition, next },
                _ => garbled(),
            },
            _ => garbled(),
        }
    }
}

/// An event with the member that printed it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The member's name.
    pub member: String,
    /// What it printed.
    pub event: Event,
}

/// Every member's events in the order the orchestrator read them.
#[derive(Debug, Default)]
pub struct Journal {
    entries: Mutex<Vec<Entry>>,
}

impl Journal {
    /// A new, empty journal to share between members.
    pub fn new() -> Arc<Journal> {
        Arc::default()
    }

    fn push(&self, member: &str, event: Event) {
        self.lock().push(Entry {
            member: member.to_string(),
            event,
        });
    }

    /// The entries so far.
    pub fn lock(&self) -> MutexGuard<'_, Vec<Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A copy of the entries so far.
    pub fn snapshot(&self) -> Vec<Entry> {
        self.lock().clone()
    }

    /// Polls `done` over the journal until it returns true or `timeout` passes.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        mut done: impl FnMut(&[Entry]) -> bool,
    ) -> Result<Duration> {
        let start = Instant::now();
        loop {
            if done(&self.lock()) {
                return Ok(start.elapsed());
            }
            if start.elapsed() >= timeout {
                bail!("timed out after {timeout:?} waiting for {what}");
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A member program running as a child process (in its own process group).
pub struct MemberProcess {
    name: String,
    child: Option<Child>,
    stderr_path: PathBuf,
    reader: Option<thread::JoinHandle<()>>,
}

impl MemberProcess {
    /// Spawns `cmd`, feeding its stdout lines into `journal` under `name`; stderr goes to a
    /// file in `log_dir`.
    pub fn spawn(
        name: &str,
        mut cmd: Command,
        journal: &Arc<Journal>,
        log_dir: &Path,
    ) -> Result<MemberProcess> {
        use std::os::unix::process::CommandExt;
        let stderr_path = log_dir.join(format!("{name}.stderr"));
        let stderr = File::create(&stderr_path).context("create member stderr file")?;
        let mut child = cmd
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("spawn member {name}: {cmd:?}"))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let journal = Arc::clone(journal);
        let member = name.to_string();
        let reader = thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                journal.push(&member, Event::parse(line.trim_end()));
            }
        });
        Ok(MemberProcess {
            name: name.to_string(),
            child: Some(child),
            stderr_path,
            reader: Some(reader),
        })
    }

    /// The member's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What the member wrote to stderr so far.
    pub fn stderr(&self) -> String {
        let mut buf = Vec::new();
        if let Ok(mut f) = File::open(&self.stderr_path) {
            let _ = f.read_to_end(&mut buf);
        }
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// Sends SIGTERM and waits (up to `timeout`) for the member to exit; returns its status
    /// once its stdout has been read to the end.
    pub fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let child = self.child.as_mut().context("member already gone")?;
        signal(&child.id().to_string(), "TERM");
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() >= deadline {
                self.kill();
                bail!(
                    "member {} did not exit within {timeout:?} of SIGTERM; stderr:\n{}",
                    self.name,
                    self.stderr()
                );
            }
            thread::sleep(Duration::from_millis(20));
        };
        self.child = None;
        self.join_reader();
        Ok(status)
    }

    /// SIGKILLs the member and everything it started; no goodbye to the group.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&format!("-{}", child.id()), "KILL");
            let _ = child.kill();
            let _ = child.wait();
        }
        self.join_reader();
    }

    fn join_reader(&mut self) {
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

impl Drop for MemberProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends `SIG<sig>` to a pid (or `-pgid`) through kill(1): the workspace forbids `unsafe`.
fn signal(target: &str, sig: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), "--", target])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_line_kind() {
        assert_eq!(Event::parse("READY"), Event::Ready);
        assert_eq!(Event::parse("CLOSED"), Event::Closed);
        assert_eq!(Event::parse("ASSIGN -"), Event::Assign(BTreeSet::new()));
        assert_eq!(
            Event::parse("ASSIGN 0,3,5"),
            Event::Assign([0, 3, 5].into_iter().collect())
        );
        assert_eq!(
            Event::parse("REC 2 17 p1-4 with spaces"),
            Event::Rec {
                partition: 2,
                offset: 17,
                value: "p1-4 with spaces".into()
            }
        );
        assert_eq!(
            Event::parse("REC 2 17"),
            Event::Rec {
                partition: 2,
                offset: 17,
                value: String::new()
            }
        );
        assert_eq!(
            Event::parse("COMMIT 1 40"),
            Event::Commit {
                partition: 1,
                next: 40
            }
        );
        for bad in ["", "ASSIGN", "ASSIGN 1,x", "REC a 1 v", "COMMIT 1", "HELLO"] {
            assert_eq!(Event::parse(bad), Event::Garbled(bad.into()), "{bad:?}");
        }
    }
}
