//! A small harness for driving the real `lifeboat` binary, in the style of casey/just's
//! integration tests: describe the files and arguments, run, then look at the exit
//! code, the output and the parsed event log.
//!
//! ```ignore
//! let out = Test::new().playbook("steps: [...]").args(&["--check"]).run();
//! assert_eq!(out.status("a", "localhost"), "would_change");
//! ```
//!
//! Every file written (and every argument) may contain `[TMP]`, replaced by the test's
//! temporary directory; playbooks can also use `{{ playbook_dir }}`.

#![allow(dead_code)]

pub mod binary;
pub mod modules;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use binary::Lifeboat;
use serde_json::Value;
use tempfile::TempDir;

/// Where the test writes the playbook.
pub const PLAYBOOK: &str = "playbook.yaml";

/// The host lock directory of a test's runs, under its temporary directory
/// (`LIFEBOAT_LOCK_DIR`): tests running at once never share locks.
pub const LOCK_DIR: &str = ".lifeboat-locks";

/// A test being described.
pub struct Test {
    dir: TempDir,
    command: String,
    playbook: Option<String>,
    inventory: Option<String>,
    files: Vec<(String, String)>,
    args: Vec<String>,
    junit: bool,
    events: bool,
    relative: bool,
    env: Vec<(String, String)>,
}

impl Default for Test {
    fn default() -> Self {
        Test::new()
    }
}

impl Test {
    /// A `lifeboat run` of `playbook.yaml` in a fresh temporary directory.
    pub fn new() -> Test {
        Test {
            dir: tempfile::Builder::new()
                .prefix("lifeboat-test")
                .tempdir()
                .expect("tempdir"),
            command: "run".into(),
            playbook: None,
            inventory: None,
            files: Vec::new(),
            args: Vec::new(),
            junit: false,
            events: true,
            relative: false,
            env: Vec::new(),
        }
    }

    /// An environment variable of the run (a secret's source).
    pub fn env(mut self, key: &str, value: &str) -> Test {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The subcommand (`run` by default; `plan`, `validate`, `graph`, ...). For commands
    /// other than `run` and `plan` no `--events` is passed.
    pub fn command(mut self, command: &str) -> Test {
        self.command = command.into();
        self
    }

    /// The playbook text.
    pub fn playbook(mut self, yaml: &str) -> Test {
        self.playbook = Some(yaml.into());
        self
    }

    /// An INI/YAML inventory text, written to `inventory` and passed with `-i`.
    pub fn inventory(mut self, text: &str) -> Test {
        self.inventory = Some(text.into());
        self
    }

    /// Another file, relative to the temporary directory.
    pub fn file(mut self, path: &str, content: &str) -> Test {
        self.files.push((path.into(), content.into()));
        self
    }

    /// Extra arguments, after the playbook.
    pub fn args(mut self, args: &[&str]) -> Test {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Also write a JUnit report to `junit.xml`.
    pub fn junit(mut self) -> Test {
        self.junit = true;
        self
    }

    /// Pass the playbook as a bare relative name, running in the temporary directory.
    pub fn relative_playbook(mut self) -> Test {
        self.relative = true;
        self
    }

    /// The temporary directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    fn subst(&self, s: &str) -> String {
        s.replace("[TMP]", &self.dir.path().display().to_string())
    }

    fn write(&self, rel: &str, content: &str) {
        let p = self.dir.path().join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        let content = self.subst(content);
        if std::fs::read_to_string(&p).ok().as_deref() != Some(content.as_str()) {
            std::fs::write(&p, content).expect("write file");
        }
    }

    /// Writes the playbook and the files now (before the run), e.g. to look at them
    /// first; the run writes them again.
    pub fn write_files(&self) {
        if let Some(pb) = &self.playbook {
            self.write(PLAYBOOK, pb);
        }
        for (p, c) in &self.files {
            self.write(p, c);
        }
    }

    /// Writes the files and returns the argument list.
    fn prepare(&self) -> Vec<String> {
        self.write_files();
        let mut argv = vec![self.command.clone()];
        let takes_playbook = matches!(
            self.command.as_str(),
            "run" | "plan" | "drill" | "validate" | "graph"
        );
        if takes_playbook && self.playbook.is_some() {
            argv.push(if self.relative {
                PLAYBOOK.to_string()
            } else {
                self.dir.path().join(PLAYBOOK).display().to_string()
            });
        }
        if let Some(inv) = &self.inventory {
            self.write("inventory", inv);
            argv.push("-i".into());
            argv.push(self.dir.path().join("inventory").display().to_string());
        }
        let runs = matches!(self.command.as_str(), "run" | "plan" | "drill");
        if runs && self.events {
            argv.push("--events".into());
            argv.push(self.dir.path().join("events.jsonl").display().to_string());
        }
        if runs && self.junit {
            argv.push("--junit".into());
            argv.push(self.dir.path().join("junit.xml").display().to_string());
        }
        argv.extend(self.args.iter().map(|a| self.subst(a)));
        argv
    }

    /// The binary with this test's environment and `argv`.
    fn lifeboat(&self, argv: &[String]) -> Lifeboat {
        lifeboat_in(self.dir.path())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .args(argv)
    }

    /// Runs the binary to its end.
    pub fn run(self) -> Output {
        let argv = self.prepare();
        let out = self.lifeboat(&argv).timeout(Duration::from_secs(60)).run();
        Output::new(self.dir, argv, out.code, out.stdout, out.stderr)
    }

    /// Starts the binary and returns at once (for interrupt tests).
    pub fn spawn(self) -> Running {
        let argv = self.prepare();
        let child = self.lifeboat(&argv).spawn();
        Running {
            dir: self.dir,
            argv,
            child,
        }
    }
}

/// A run in progress.
pub struct Running {
    dir: TempDir,
    argv: Vec<String>,
    /// The child process.
    pub child: Child,
}

impl Running {
    /// The temporary directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Waits for a condition, panicking after `secs` seconds.
    pub fn wait_until(&mut self, secs: u64, what: &str, cond: impl Fn(&Path) -> bool) {
        let dir = self.dir.path().to_path_buf();
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !cond(&dir) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("lifeboat ended ({status}) before {what}");
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal (by name, e.g. `INT`) to the child.
    pub fn signal(&self, name: &str) {
        let ok = std::process::Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{name} failed");
    }

    /// Waits for the end (at most `secs` seconds, then kills it and panics).
    pub fn wait(mut self, secs: u64) -> Output {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(_status) = self.child.try_wait().expect("try_wait") {
                break;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("lifeboat did not end within {secs}s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = self.child.wait_with_output().expect("wait_with_output");
        Output::new(
            self.dir,
            self.argv,
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// The result of a run.
pub struct Output {
    dir: TempDir,
    /// The arguments passed.
    pub argv: Vec<String>,
    /// Exit code.
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// The events file, parsed (empty when there is none).
    pub events: Vec<Value>,
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "lifeboat {}", self.argv.join(" "))?;
        writeln!(f, "exit code: {}", self.code)?;
        writeln!(f, "--- stdout ---\n{}", self.stdout)?;
        writeln!(f, "--- stderr ---\n{}", self.stderr)?;
        writeln!(f, "--- events ---")?;
        for e in &self.events {
            writeln!(f, "{e}")?;
        }
        Ok(())
    }
}

impl Output {
    fn new(dir: TempDir, argv: Vec<String>, code: i32, stdout: String, stderr: String) -> Output {
        let events = match std::fs::read_to_string(dir.path().join("events.jsonl")) {
            Ok(text) => text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| {
                    serde_json::from_str(l)
                        .unwrap_or_else(|e| panic!("event line is not JSON ({e}): {l}"))
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        Output {
            dir,
            argv,
            code,
            stdout,
            stderr,
            events,
        }
    }

    /// The temporary directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A path under the temporary directory.
    pub fn join(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// A file under the temporary directory (panics when missing).
    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.join(rel))
            .unwrap_or_else(|e| panic!("cannot read {rel}: {e}\n{self:?}"))
    }

    /// Whether a file under the temporary directory exists.
    pub fn exists(&self, rel: &str) -> bool {
        self.join(rel).exists()
    }

    /// Asserts the exit code, showing everything when it differs.
    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Output {
        assert_eq!(self.code, code, "unexpected exit code\n{self:?}");
        self
    }

    /// The events of one kind.
    pub fn events_of(&self, kind: &str) -> Vec<&Value> {
        self.events.iter().filter(|e| e["event"] == kind).collect()
    }

    /// The `node_finish` event of a node.
    #[track_caller]
    pub fn finish(&self, step: &str, host: &str) -> &Value {
        let found: Vec<&Value> = self
            .events
            .iter()
            .filter(|e| e["event"] == "node_finish" && e["step"] == step && e["host"] == host)
            .collect();
        match found.as_slice() {
            [one] => one,
            [] => panic!("no node_finish for {step}@{host}\n{self:?}"),
            _ => panic!("several node_finish for {step}@{host}\n{self:?}"),
        }
    }

    /// Whether a node has a `node_finish` event.
    pub fn has_node(&self, step: &str, host: &str) -> bool {
        self.events
            .iter()
            .any(|e| e["event"] == "node_finish" && e["step"] == step && e["host"] == host)
    }

    /// The status of a node.
    #[track_caller]
    pub fn status(&self, step: &str, host: &str) -> &str {
        self.finish(step, host)["status"]
            .as_str()
            .expect("status is a string")
    }

    /// The message of a node ("" when none).
    #[track_caller]
    pub fn msg(&self, step: &str, host: &str) -> &str {
        self.finish(step, host)["msg"].as_str().unwrap_or("")
    }

    /// [start, end] of a node, in seconds since the run began.
    #[track_caller]
    pub fn interval(&self, step: &str, host: &str) -> (f64, f64) {
        let f = self.finish(step, host);
        let s = f["started"].as_f64().expect("started");
        let d = f["duration"].as_f64().expect("duration");
        (s, s + d)
    }

    /// The `rollback_node` events, in order.
    pub fn rollback_nodes(&self) -> Vec<&Value> {
        self.events_of("rollback_node")
    }

    /// The status of a node's rollback.
    #[track_caller]
    pub fn rollback_status(&self, step: &str, host: &str) -> &str {
        self.rollback_nodes()
            .into_iter()
            .find(|e| e["step"] == step && e["host"] == host)
            .unwrap_or_else(|| panic!("no rollback_node for {step}@{host}\n{self:?}"))["status"]
            .as_str()
            .expect("status")
    }

    /// Step ids of the compensations that ran (done or failed), in event order.
    pub fn rollback_order(&self) -> Vec<String> {
        self.rollback_nodes()
            .into_iter()
            .filter(|e| e["status"] == "done" || e["status"] == "failed")
            .map(|e| e["step"].as_str().unwrap_or("").to_string())
            .collect()
    }

    /// `rollback_finish.left_undone` as (step, host, why).
    #[track_caller]
    pub fn left_undone(&self) -> Vec<(String, String, String)> {
        let fin = self.events_of("rollback_finish");
        assert_eq!(fin.len(), 1, "one rollback_finish\n{self:?}");
        fin[0]["left_undone"]
            .as_array()
            .expect("left_undone is a list")
            .iter()
            .map(|t| {
                let s = |i: usize| t[i].as_str().unwrap_or("").to_string();
                (s(0), s(1), s(2))
            })
            .collect()
    }
}

/// The binary as a [`Test`] runs it, in `dir` (e.g. to resume or roll back one of its
/// runs): [`binary::Lifeboat::new`]'s environment, with the state directory `.lifeboat`
/// in `dir` and the host locks in `dir/`[`LOCK_DIR`].
pub fn lifeboat_in(dir: &Path) -> Lifeboat {
    Lifeboat::new(dir)
        .state_dir(".lifeboat")
        .lock_dir(dir.join(LOCK_DIR))
}

/// What runs left in the host lock directory `locks`: its entries (names), but the
/// hosts' marker directories (`{host}.markers`, kept from run to run) by what is in
/// them (`{host}.markers/{file}`), and the scratch files of runs `ids` on tmpfs for
/// `hosts`.
pub fn left_in_locks(locks: &Path, hosts: &[&str], ids: &[String]) -> Vec<String> {
    let names = |d: &Path| -> Vec<String> {
        std::fs::read_dir(d)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut left = Vec::new();
    for name in names(locks) {
        if name.ends_with(".markers") && locks.join(&name).is_dir() {
            left.extend(
                names(&locks.join(&name))
                    .into_iter()
                    .map(|f| format!("{name}/{f}")),
            );
        } else {
            left.push(name);
        }
    }
    for host in hosts {
        for id in ids {
            let m = lifeboat::marker::MarkerPaths::of_host(&locks.to_string_lossy(), host, id);
            left.extend(
                names(Path::new(&m.scratch))
                    .into_iter()
                    .filter(|f| f.starts_with(&m.prefix))
                    .map(|f| format!("{}/{f}", m.scratch)),
            );
        }
    }
    left.sort();
    left
}

/// The run ids in the state directory `.lifeboat` of a [`Test`]'s `dir`, oldest first.
pub fn run_ids(dir: &Path) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(dir.join(".lifeboat/runs"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

/// Waits until `cond` holds, panicking after `secs` seconds.
pub fn wait_for(secs: u64, what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every path under `root` with its kind, mode and content (for "nothing changed").
pub fn snapshot(root: &Path) -> BTreeMap<String, (u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let meta = std::fs::symlink_metadata(&p).expect("stat");
        let rel = p.strip_prefix(root).unwrap_or(&p).display().to_string();
        let mode = meta.permissions().mode();
        if meta.is_dir() {
            out.insert(format!("{rel}/"), (mode, Vec::new()));
            for e in std::fs::read_dir(&p).expect("read_dir") {
                stack.push(e.expect("dir entry").path());
            }
        } else if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&p).expect("readlink");
            out.insert(
                format!("{rel}@"),
                (mode, target.display().to_string().into_bytes()),
            );
        } else {
            out.insert(rel, (mode, std::fs::read(&p).expect("read")));
        }
    }
    out
}

/// A random-ish token for file names that must not collide between runs.
pub fn token() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:x}{:x}", std::process::id(), nanos)
}
