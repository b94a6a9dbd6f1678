//! Exactly-once `command` and `shell` steps across SIGKILL and `lifeboat resume`: a
//! playbook whose steps each append a line to a file on the host (one after another, two
//! at once, a loop, one that uses another's registered output) is run, the controller is
//! killed with SIGKILL at pseudo-random points (when the journal has N records, when
//! the file has K lines, or a few milliseconds in, plus a small random delay), resumed,
//! and the resumes are killed too, until a resume completes. Then every line is in the
//! file exactly once. Locally over many kill points, and over SSH over a few.
//!
//! The seed is printed; `LIFEBOAT_TEST_SEED=N` replays one.

#[path = "support/sshd.rs"]
mod sshd;
mod support;

use std::collections::BTreeSet;
use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use support::binary::Lifeboat;

const PLAYBOOK: &str = r#"
hosts: all
steps:
  - id: s1
    shell: echo s1 >> {{ out }}/log
  - id: s2
    needs: s1
    shell: echo s2 >> {{ out }}/log; sleep 0.02
  - id: p1
    needs: s2
    shell: sleep 0.03; echo p1 >> {{ out }}/log
  - id: p2
    needs: s2
    command: ["sh", "-c", "echo p2 >> {{ out }}/log; echo token-p2"]
    register: p2out
  - id: items
    needs: [p1, p2]
    shell: echo "items-{{ item }}" >> {{ out }}/log
    loop: [a, b, c]
  - id: uses
    needs: items
    shell: echo "uses-{{ p2out.stdout | trim }}" >> {{ out }}/log
  - id: s3
    needs: uses
    shell: echo s3 >> {{ out }}/log; sleep 0.01
"#;

/// Every line the playbook writes, once each.
const LINES: [&str; 9] = [
    "s1",
    "s2",
    "p1",
    "p2",
    "items-a",
    "items-b",
    "items-c",
    "uses-token-p2",
    "s3",
];

/// Cuts the end off run `id`'s journal as a crash of the controller's system could
/// (at random, up to the longest such end): records written but not yet flushed. A
/// command waits for no record of the journal (its start is in the host's completion
/// log), so the cut may take the start of any step. Returns how many records went.
fn lose_unflushed_records(s: &Scenario, id: &str, rng: &mut Rng) -> usize {
    // A successful run flushes its journal before it removes its completion markers
    // (its completion log among the locks) and those of the runs it continues: nothing
    // it wrote can be lost once it has begun to remove them, even when it was killed
    // half way (its own log still there, an earlier run's gone). Every earlier run of
    // the scenario's chain keeps its log until then (one killed before it took its lock
    // never had one: then nothing is lost either, which is only less of a test).
    let locks = s.locks.to_string_lossy();
    let markers_kept = |run: &str| {
        [
            lifeboat::marker::MarkerPaths::of_host(&locks, "box", run),
            lifeboat::marker::MarkerPaths::of_run(&locks, "box", run),
        ]
        .iter()
        .any(|m| Path::new(&m.log).exists())
    };
    if !markers_kept(id) || s.runs().iter().any(|r| r != id && !markers_kept(r)) {
        return 0;
    }
    let path = s.dir.join("state/runs").join(id).join("journal.jsonl");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return 0;
    };
    let lines: Vec<&str> = text.lines().collect();
    // Every step is a command, which waits for no record: any end after the run's
    // start (written and flushed before anything ran) may be lost.
    let longest = lines.len().saturating_sub(1);
    let n = rng.below(longest as u64 + 1) as usize;
    let kept: String = lines[..lines.len() - n]
        .iter()
        .map(|l| format!("{l}\n"))
        .collect();
    ok(std::fs::write(&path, kept));
    n
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn seed() -> u64 {
    std::env::var("LIFEBOAT_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1
        })
}

/// Where one scenario runs: its controller folder (state dir, outputs), the folder the
/// host writes the log into, the lock directory and the inventory.
struct Scenario {
    dir: PathBuf,
    out: PathBuf,
    locks: PathBuf,
    inventory: PathBuf,
    home: PathBuf,
    /// Every lifeboat started, for the failure message.
    history: Vec<String>,
}

impl Scenario {
    fn log_lines(&self) -> Vec<String> {
        std::fs::read_to_string(self.out.join("log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn runs(&self) -> BTreeSet<String> {
        std::fs::read_dir(self.dir.join("state/runs"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    // A journal being created (renamed into place with its first record).
                    .filter(|n| !n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn journal_records(&self) -> usize {
        self.runs()
            .iter()
            .map(|id| {
                std::fs::read_to_string(self.dir.join("state/runs").join(id).join("journal.jsonl"))
                    .map(|t| t.lines().count())
                    .unwrap_or(0)
            })
            .sum()
    }

    fn spawn(&mut self, args: &[&str]) -> Child {
        let n = self.history.len();
        self.history.push(args.join(" "));
        let output = |kind: &str| {
            Stdio::from(
                File::create(self.dir.join(format!("lifeboat-{n}.{kind}"))).expect("output file"),
            )
        };
        Lifeboat::new(&self.dir)
            .args(args)
            .lock_dir(&self.locks)
            .home(&self.home)
            .stdout(output("out"))
            .stderr(output("err"))
            .spawn()
    }

    /// What every lifeboat of this scenario printed.
    fn transcript(&self) -> String {
        let mut t = String::new();
        for (n, args) in self.history.iter().enumerate() {
            let read = |kind: &str| {
                std::fs::read_to_string(self.dir.join(format!("lifeboat-{n}.{kind}")))
                    .unwrap_or_default()
            };
            t.push_str(&format!(
                "--- lifeboat {args}\n{}{}",
                read("out"),
                read("err")
            ));
        }
        t
    }
}

/// Waits until `cond` holds or the child ends, at most `secs`; true when it ended.
fn wait_for_point(child: &mut Child, secs: u64, cond: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return true;
        }
        if cond() {
            return false;
        }
        assert!(
            Instant::now() < deadline,
            "no kill point reached within {secs}s"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Waits for the child's end (at most 60 s) and returns its exit code (None: killed).
fn finish(child: &mut Child) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("lifeboat did not end within 60s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs the playbook, killing the controller (and resumes) at random points, until a
/// resume completes; then checks that every line is there exactly once. Returns how
/// many lifeboats ran and how many commands a resume adopted instead of running.
fn scenario(s: &mut Scenario, rng: &mut Rng, label: &str) -> (usize, usize) {
    let playbook = s.dir.join("playbook.yml").display().to_string();
    let inventory = s.inventory.display().to_string();
    let out_var = format!("out={}", s.out.display());
    let mut current: Option<String> = None;
    let mut finished = false;
    for attempt in 0..12 {
        let before = s.runs();
        let records = s.journal_records();
        let mut child = match &current {
            None => s.spawn(&["run", &playbook, "-i", &inventory, "-e", &out_var]),
            Some(id) => s.spawn(&["resume", id]),
        };
        // Kill the first run always, the resumes half of the time, the late ones never.
        let kill = attempt == 0 || (attempt < 6 && rng.below(2) == 0);
        if kill {
            let ended = match rng.below(3) {
                0 => {
                    let n = 1 + rng.below(20) as usize;
                    wait_for_point(&mut child, 30, || s.journal_records() >= records + n)
                }
                1 => {
                    let k = 1 + rng.below(LINES.len() as u64) as usize;
                    wait_for_point(&mut child, 30, || s.log_lines().len() >= k)
                }
                _ => {
                    let at = Instant::now() + Duration::from_millis(rng.below(150));
                    wait_for_point(&mut child, 30, || Instant::now() >= at)
                }
            };
            if !ended {
                std::thread::sleep(Duration::from_millis(rng.below(15)));
                let _ = child.kill();
            }
        }
        let code = finish(&mut child);
        let after = s.runs();
        if let Some(new) = after.difference(&before).next() {
            current = Some(new.clone());
            // Half the kills are crashes of the controller's system too.
            if code.is_none() && rng.below(2) == 0 {
                let lost = lose_unflushed_records(s, new, rng);
                s.history.push(format!(
                    "(crash: the last {lost} records of {new}'s journal lost)"
                ));
            }
        }
        match code {
            Some(0) => {
                finished = true;
                break;
            }
            None if kill => {}
            // A kill that came as it ended anyway.
            Some(_) | None => panic!(
                "{label}: lifeboat ended with {code:?} without being killed\n{}",
                s.transcript()
            ),
        }
    }
    assert!(finished, "{label}: no resume completed\n{}", s.transcript());
    let mut lines = s.log_lines();
    lines.sort();
    let mut want: Vec<String> = LINES.iter().map(|l| l.to_string()).collect();
    want.sort();
    assert_eq!(
        lines,
        want,
        "{label}: every step exactly once\n{}",
        s.transcript()
    );
    let ids: Vec<String> = std::fs::read_dir(s.dir.join("state/runs"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let leftovers = support::left_in_locks(&s.locks, &["box"], &ids);
    assert!(
        leftovers.is_empty(),
        "{label}: the completed run releases its locks and removes the markers of its lineage: {leftovers:?}\n{}",
        s.transcript()
    );
    (
        s.history.iter().filter(|h| !h.starts_with('(')).count(),
        s.transcript()
            .matches("not run again: it completed under run")
            .count(),
    )
}

fn local_scenario(root: &Path, n: usize) -> Scenario {
    let dir = root.join(format!("local-{n}"));
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("playbook.yml"), PLAYBOOK).expect("playbook");
    std::fs::write(dir.join("hosts.ini"), "box ansible_connection=local\n").expect("inventory");
    Scenario {
        out: dir.clone(),
        locks: dir.join("locks"),
        inventory: dir.join("hosts.ini"),
        home: dir.clone(),
        dir,
        history: Vec::new(),
    }
}

#[test]
fn every_step_runs_exactly_once_however_often_the_controller_is_killed() {
    let seed = seed();
    eprintln!("seed {seed} (LIFEBOAT_TEST_SEED={seed} replays it)");
    let mut rng = Rng(seed);
    let root = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    let (mut runs, mut adopted) = (0, 0);
    for n in 0..20 {
        let mut s = local_scenario(root.path(), n);
        let (r, a) = scenario(
            &mut s,
            &mut rng,
            &format!("seed {seed}, local scenario {n}"),
        );
        runs += r;
        adopted += a;
    }
    eprintln!(
        "20 local scenarios, {runs} lifeboats, {adopted} commands adopted, in {:?}",
        started.elapsed()
    );
}

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn over_ssh_every_step_runs_exactly_once_too() {
    let seed = seed();
    eprintln!("seed {seed} (LIFEBOAT_TEST_SEED={seed} replays it)");
    let mut rng = Rng(seed);
    let server = ok(sshd::Sshd::start("127.0.0.1"));
    let root = ok(tempfile::tempdir());
    ok(std::fs::set_permissions(
        root.path(),
        std::fs::Permissions::from_mode(0o755),
    ));
    for n in 0..6 {
        let dir = root.path().join(format!("ssh-{n}"));
        let out = dir.join("host");
        let locks = dir.join("locks");
        for d in [&out, &locks] {
            ok(std::fs::create_dir_all(d));
            ok(std::fs::set_permissions(
                d,
                std::fs::Permissions::from_mode(0o1777),
            ));
        }
        ok(std::fs::set_permissions(
            &dir,
            std::fs::Permissions::from_mode(0o755),
        ));
        ok(std::fs::write(dir.join("playbook.yml"), PLAYBOOK));
        ok(std::fs::write(
            dir.join("hosts.ini"),
            format!(
                "box ansible_host={} ansible_port={} ansible_user={} ansible_ssh_private_key_file={} lifeboat_known_hosts={}\n",
                server.addr,
                server.port,
                sshd::USER,
                server.ed25519_key.display(),
                server.known_hosts.display()
            ),
        ));
        let mut s = Scenario {
            inventory: dir.join("hosts.ini"),
            home: dir.clone(),
            dir,
            out,
            locks,
            history: Vec::new(),
        };
        let (r, a) = scenario(&mut s, &mut rng, &format!("seed {seed}, SSH scenario {n}"));
        eprintln!("SSH scenario {n}: {r} lifeboats, {a} commands adopted");
    }
}
