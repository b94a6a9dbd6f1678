//! Host locks: a real run locks every target host before its first step runs there, so
//! two runs never change one host at once.
//!
//! The lock is a file on the host, `{lock_dir}/{inventory host}.lock`, created atomically
//! (the shell's noclobber) by one remote command, which then makes sure the run has
//! where to keep its completion markers (the host's marker directory, made by the first
//! run there; see [`crate::marker::MarkerPaths`]). Its content ([`LockInfo`],
//! `key=value` lines) names the run, the controller (host name and pid), the user, the
//! playbook and the start time. A lock of another run refuses the host; one whose
//! controller process is gone is stale, and `--break-lock` replaces it (or any lock,
//! with a loud warning); `lifeboat resume` and `lifeboat rollback RUN_ID` take over the
//! stale locks of the runs they continue. Locks are released at the end of the run,
//! after its rollback; a dry run only reads them. Taking a free lock and releasing it
//! start one process on the host between them (the release's `rm`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{Mutex, OnceCell};

use crate::connection::{CommandSpec, Connection, quote};
use crate::marker::MarkerPaths;

/// Where locks live on a host when neither the host's `lifeboat_lock_dir`, `--lock-dir`
/// nor `LIFEBOAT_LOCK_DIR` says.
pub const DEFAULT_LOCK_DIR: &str = "/var/tmp/lifeboat/locks";

/// The host variable that chooses a host's lock directory.
pub const LOCK_DIR_VAR: &str = "lifeboat_lock_dir";

/// How long one lock command may take before the host counts as unreachable.
const LOCK_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// What a lock file says: who holds the host.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LockInfo {
    /// The run holding the lock.
    pub run_id: String,
    /// The controller's host name.
    pub controller: String,
    /// The controller's process id.
    pub pid: Option<u32>,
    /// The user running lifeboat on the controller.
    pub user: String,
    /// The playbook, as given.
    pub playbook: String,
    /// When the run started (RFC 3339).
    pub since: String,
}

impl LockInfo {
    /// The lock of this process for run `run_id` of `playbook`, starting now.
    pub fn mine(run_id: &str, playbook: &str) -> LockInfo {
        LockInfo {
            run_id: run_id.to_string(),
            controller: controller_name(),
            pid: Some(std::process::id()),
            user: user_name(),
            playbook: playbook.to_string(),
            since: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        }
    }

    /// The file's content: one `key=value` line each.
    pub fn to_text(&self) -> String {
        let one_line = |s: &str| s.replace(['\n', '\r'], " ");
        format!(
            "run_id={}\ncontroller={}\npid={}\nuser={}\nplaybook={}\nsince={}\n",
            one_line(&self.run_id),
            one_line(&self.controller),
            self.pid.map_or_else(String::new, |p| p.to_string()),
            one_line(&self.user),
            one_line(&self.playbook),
            one_line(&self.since),
        )
    }

    /// Reads a lock file's content; `None` when it names no run.
    pub fn parse(text: &str) -> Option<LockInfo> {
        let mut info = LockInfo::default();
        for line in text.lines() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let v = v.trim().to_string();
            match k.trim() {
                "run_id" => info.run_id = v,
                "controller" => info.controller = v,
                "pid" => info.pid = v.parse().ok(),
                "user" => info.user = v,
                "playbook" => info.playbook = v,
                "since" => info.since = v,
                _ => {}
            }
        }
        (!info.run_id.is_empty()).then_some(info)
    }

    /// "controller ctl01, pid 4242, user alice, playbook backup.yml, since ... (3m ago)".
    pub fn describe(&self) -> String {
        let mut parts = vec![format!("controller {}", or_unknown(&self.controller))];
        if let Some(p) = self.pid {
            parts.push(format!("pid {p}"));
        }
        parts.push(format!("user {}", or_unknown(&self.user)));
        parts.push(format!("playbook {}", or_unknown(&self.playbook)));
        parts.push(format!(
            "since {}{}",
            or_unknown(&self.since),
            age(&self.since)
        ));
        parts.join(", ")
    }
}

fn or_unknown(s: &str) -> &str {
    if s.is_empty() { "(unknown)" } else { s }
}

/// " (3m 12s ago)" for an RFC 3339 time, or "" when it does not parse.
fn age(since: &str) -> String {
    let Ok(t) = humantime::parse_rfc3339_weak(since) else {
        return String::new();
    };
    let Ok(d) = SystemTime::now().duration_since(t) else {
        return String::new();
    };
    format!(
        " ({} ago)",
        humantime::format_duration(Duration::from_secs(d.as_secs()))
    )
}

/// This machine's host name, as locks and journals name the controller.
pub fn controller_name() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "controller".into())
}

fn user_name() -> String {
    let uid = nix::unistd::getuid();
    nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| uid.to_string())
}

/// Why a lock naming process `pid` of this controller is stale, or `None` while that
/// process is alive and is lifeboat.
pub fn controller_gone(pid: u32) -> Option<String> {
    let gone = format!("its controller process {pid} is gone");
    let Ok(raw) = i32::try_from(pid) else {
        return Some(gone);
    };
    if raw <= 0 {
        return Some(gone);
    }
    // Ok or EPERM (another user's): alive.
    if let Err(nix::errno::Errno::ESRCH) =
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None)
    {
        return Some(gone);
    }
    // A zombie is dead; a reused pid is another program.
    if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        && let Some((_, rest)) = stat.rsplit_once(')')
        && rest.trim_start().starts_with(['Z', 'X'])
    {
        return Some(gone);
    }
    match std::fs::read_to_string(format!("/proc/{pid}/comm")) {
        Ok(comm) if !comm.trim().starts_with("lifeboat") => Some(format!(
            "{gone} (pid {pid} is now `{}`, not lifeboat)",
            comm.trim()
        )),
        _ => None,
    }
}

/// A file name for an inventory host (or any word): `/`, NUL and a leading `.` cannot
/// make a path escape the lock directory.
pub fn file_word(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| if c == '/' || c == '\0' { '_' } else { c })
        .collect();
    if s.is_empty() || s.starts_with('.') {
        s.insert(0, '_');
    }
    s
}

/// Whether a run id can be part of a path (it came from a journal).
pub fn is_run_id(id: &str) -> bool {
    !id.is_empty()
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// What a run needs to know to lock hosts.
#[derive(Debug, Clone)]
pub struct LockSettings {
    /// What our lock files say.
    pub me: LockInfo,
    /// Break locks of other runs (loudly).
    pub break_lock: bool,
    /// The runs this one continues (`resume`, `rollback RUN_ID`), newest first: their
    /// stale locks are taken over without `--break-lock`.
    pub lineage: Vec<String>,
}

/// Why a host could not be locked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockError {
    /// Another run holds it (or a lock file that names no run is there).
    Refused(String),
    /// The lock command could not run or failed (unreachable, no permission...).
    Failed(String),
}

impl std::fmt::Display for LockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockError::Refused(m) | LockError::Failed(m) => f.write_str(m),
        }
    }
}

/// What to do about a lock found on a host.
#[derive(Debug, Clone, PartialEq)]
enum Decision {
    /// It is ours, or ours to take: replace it with our content, saying this (if anything).
    Take(Option<String>),
    /// Refuse the host, saying why.
    Refuse(String),
}

/// Judges a lock found on `host` (its raw content).
fn judge(host: &str, path: &str, found: &str, s: &LockSettings) -> Decision {
    let Some(info) = LockInfo::parse(found) else {
        let shown: String = found.trim().chars().take(200).collect();
        // A lock file is empty between its creation and its one write.
        let (replacing, refusal) = if shown.is_empty() {
            (
                format!("the empty lock file {path} of host {host}"),
                format!(
                    "host {host} has an empty lock file {path}: another run may be taking {host} this moment, or one was stopped while writing it; run again, and if it stays empty and no lifeboat run uses {host}, remove it or pass --break-lock"
                ),
            )
        } else {
            (
                format!(
                    "the lock file {path} of host {host}, which names no run (content: {shown:?})"
                ),
                format!(
                    "host {host} has a lock file {path} that names no run (content: {shown:?}); if no lifeboat run uses {host}, remove it or pass --break-lock"
                ),
            )
        };
        return if s.break_lock {
            Decision::Take(Some(format!("--break-lock: replacing {replacing}")))
        } else {
            Decision::Refuse(refusal)
        };
    };
    let id = &info.run_id;
    if *id == s.me.run_id {
        return Decision::Take(None);
    }
    let same_controller = info.controller == s.me.controller;
    let stale = if same_controller {
        match info.pid {
            Some(pid) => controller_gone(pid),
            None => Some("it names no controller process".to_string()),
        }
    } else {
        None
    };
    match (same_controller, stale) {
        (true, Some(why)) => {
            if s.lineage.contains(id) {
                Decision::Take(Some(format!(
                    "host {host}: taking over the stale lock of run {id}, which this run continues ({why})"
                )))
            } else if s.break_lock {
                Decision::Take(Some(format!(
                    "--break-lock: breaking the stale lock of run {id} on host {host} ({why}; {})",
                    info.describe()
                )))
            } else {
                Decision::Refuse(format!(
                    "host {host} is locked by run {id}: stale lock of run {id}: {why} ({}); pass --break-lock to break it, or `lifeboat resume {id}` to continue that run",
                    info.describe()
                ))
            }
        }
        (true, None) => {
            if s.break_lock {
                Decision::Take(Some(format!(
                    "--break-lock: BREAKING THE LOCK OF RUN {id} ON HOST {host}, WHOSE CONTROLLER PROCESS STILL RUNS ({}): both runs may now change {host} at once",
                    info.describe()
                )))
            } else {
                Decision::Refuse(format!(
                    "host {host} is locked by run {id} ({}), which is still running; wait for it to end",
                    info.describe()
                ))
            }
        }
        (false, _) => {
            if s.break_lock {
                Decision::Take(Some(format!(
                    "--break-lock: BREAKING THE LOCK OF RUN {id} ON HOST {host}, held from another controller ({}); if that run still goes, both runs may now change {host} at once",
                    info.describe()
                )))
            } else {
                Decision::Refuse(format!(
                    "host {host} is locked by run {id} from another controller ({}); lifeboat cannot tell from here whether that run still goes: check on {}, then pass --break-lock to break the lock",
                    info.describe(),
                    or_unknown(&info.controller)
                ))
            }
        }
    }
}

/// A lock this run holds on one host.
#[derive(Clone)]
pub struct Held {
    /// The host's lock directory.
    pub dir: String,
    /// The lock directory the continued runs used there (for their markers).
    pub past_dir: String,
    /// The lock file.
    pub file: String,
    /// Where this run keeps the host's completion markers.
    pub markers: MarkerPaths,
    conn: Arc<dyn Connection>,
}

/// One host's lock, taken once: what the first attempt found.
type Slot = Arc<OnceCell<Result<Held, LockError>>>;

/// The locks of one run, one per host, each taken once.
pub struct HostLocks {
    settings: std::sync::OnceLock<LockSettings>,
    held: Mutex<HashMap<String, Slot>>,
    peeked: std::sync::Mutex<HashSet<String>>,
}

impl Default for HostLocks {
    fn default() -> Self {
        HostLocks {
            settings: std::sync::OnceLock::new(),
            held: Mutex::new(HashMap::new()),
            peeked: std::sync::Mutex::new(HashSet::new()),
        }
    }
}

impl std::fmt::Debug for HostLocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostLocks").finish_non_exhaustive()
    }
}

/// The path of `name` in directory `dir` (given as the user wrote it).
pub fn in_dir(dir: &str, name: &str) -> String {
    format!("{}/{name}", dir.trim_end_matches('/'))
}

/// The lock file of `host` in lock directory `dir`.
fn lock_file(dir: &str, host: &str) -> String {
    in_dir(dir, &format!("{}.lock", file_word(host)))
}

/// The shell lines that, once the lock file is this run's, make sure the run has where
/// to keep its markers on the host, and say where: the host's marker directory `$m` and
/// scratch directory `$s` (one `mkdir` for both, when either is missing, so only the
/// first run on a host or after its restart starts a process) with the run's
/// completion log `$g` in `$m`; or, when `$m` is not a directory of this user's, the
/// run's own directories (`$r`, `$rs`, log `$rg`). Otherwise they run `fail` (the
/// directories left as they are), with the reason in `$e`. (`true`, not `:`: a failed
/// redirection of a special built-in would end the script.)
fn make_markers(fail: &str) -> String {
    format!(
        "{{ [ -d \"$m\" ] && [ -d \"$s\" ]; }} || mkdir -m 0700 \"$m\" \"$s\" 2>/dev/null\n\
         if [ -d \"$m\" ] && [ ! -L \"$m\" ] && [ -O \"$m\" ] && {{ true >> \"$g\"; }} 2>/dev/null; then echo lifeboat-lock:acquired host; exit 0; fi\n\
         mkdir -m 0700 \"$r\" \"$rs\" 2>/dev/null\n\
         if [ -d \"$r\" ] && [ ! -L \"$r\" ] && [ -O \"$r\" ] && {{ true >> \"$rg\"; }} 2>/dev/null; then echo lifeboat-lock:acquired run; exit 0; fi\n\
         e=\"neither the host's marker directory $m nor the run's $r is a directory of this user's that it can write in\"; {fail}"
    )
}

/// The shell assignments of the marker paths [`make_markers`] chooses from.
fn marker_vars(dir: &str, host: &str, run_id: &str) -> String {
    let (h, r) = (
        MarkerPaths::of_host(dir, host, run_id),
        MarkerPaths::of_run(dir, host, run_id),
    );
    format!(
        "m={}; s={}; g={}; r={}; rs={}; rg={}",
        quote(&h.dir),
        quote(&h.scratch),
        quote(&h.log),
        quote(&r.dir),
        quote(&r.scratch),
        quote(&r.log),
    )
}

/// What a lock command does when the run has nowhere to keep its markers: it gives the
/// lock back (exit 4).
const NO_MARKERS: &str = "rm -f \"$f\"; echo \"cannot keep this run's completion markers on the host: $e; the lock is given back\" >&2; exit 4";

/// Where a run keeps its markers on a host (see [`MarkerPaths`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// In the host's own marker directory.
    Host,
    /// In a directory of the run's own.
    Run,
}

/// What a lock command found.
enum Answer {
    /// The lock is ours; the markers go where the layout says.
    Acquired(Layout),
    /// Another lock is there, with this content.
    Held(String),
}

impl HostLocks {
    /// This run's lock settings, made by `init` on first use (so the start time in its
    /// lock files is the same on every host).
    pub fn settings_with(&self, init: impl FnOnce() -> LockSettings) -> &LockSettings {
        self.settings.get_or_init(init)
    }

    /// What locking `host` gave, when it was tried already.
    pub async fn cached(&self, host: &str) -> Option<Result<Held, LockError>> {
        let cell = self.held.lock().await.get(host).cloned()?;
        cell.get().cloned()
    }

    /// Locks `host` (once per run; later calls return the first answer): creates the
    /// lock file in `dir`, or judges the lock found there and takes it over when it is
    /// ours to take. `warn` receives what the operator must hear (a lock broken or taken
    /// over). The error is the refusal, for the report.
    pub async fn acquire(
        &self,
        host: &str,
        conn: &Arc<dyn Connection>,
        dir: &str,
        past_dir: &str,
        settings: &LockSettings,
        warn: &(dyn Fn(String) + Send + Sync),
    ) -> Result<Held, LockError> {
        let cell = {
            let mut held = self.held.lock().await;
            held.entry(host.to_string()).or_default().clone()
        };
        cell.get_or_init(|| async {
            let file = lock_file(dir, host);
            let run_id = &settings.me.run_id;
            let held = |layout: Layout| Held {
                dir: dir.to_string(),
                past_dir: past_dir.to_string(),
                file: file.clone(),
                markers: match layout {
                    Layout::Host => MarkerPaths::of_host(dir, host, run_id),
                    Layout::Run => MarkerPaths::of_run(dir, host, run_id),
                },
                conn: conn.clone(),
            };
            // The content travels in the script (not on stdin). The lock file is
            // created only when nothing of its name is there (the shell's noclobber: an
            // exclusive create), then written by one `printf`; so taking a free lock
            // starts no process once the host's marker directories exist. Noclobber
            // opens an existing file that is not a regular one (a FIFO, a link to a
            // device) without creating it, so anything there is judged before, and
            // what was opened is checked after (a regular file, ours: nobody else can
            // replace a file in the sticky lock directory). Between the create and the
            // write the file is empty: a run that finds it so is refused (see `judge`).
            // A lock that cannot be written, or whose run has nowhere to keep its
            // markers, is removed again.
            let text = quote(&settings.me.to_text());
            let script = format!(
                "d={d}; f={f}; {vars}\n\
                 [ -d \"$d\" ] || mkdir -p -m 1777 \"$d\" 2>/dev/null || [ -d \"$d\" ] || {{ echo \"cannot create the lock directory $d\" >&2; exit 3; }}\n\
                 set -C\n\
                 if [ -e \"$f\" ] || [ -L \"$f\" ]; then :\n\
                 elif {{ command exec 9>\"$f\"; }} 2>/dev/null; then\n\
                 set +C\n\
                 if [ ! -f \"$f\" ] || [ -L \"$f\" ]; then exec 9>&-; echo \"the lock file $f turned into something that is not a regular file while this run made it: remove it, then run again\" >&2; exit 3; fi\n\
                 if ! printf '%s' {text} >&9 2>/dev/null; then exec 9>&-; rm -f \"$f\"; echo \"cannot write the lock file $f (is its file system full?)\" >&2; exit 3; fi\n\
                 exec 9>&-\n\
                 {markers}\n\
                 fi\n\
                 set +C\n\
                 if [ -L \"$f\" ]; then echo \"the lock file $f is a symbolic link, which is never followed: remove it\" >&2; exit 3\n\
                 elif [ -f \"$f\" ] && [ ! -r \"$f\" ]; then echo \"the lock file $f is there and this user cannot read it: another user's run may hold the host (ls -l $f)\" >&2; exit 3\n\
                 elif [ -f \"$f\" ]; then echo lifeboat-lock:held; cat \"$f\"\n\
                 elif [ -e \"$f\" ]; then echo \"the lock file $f is not a regular file: remove it\" >&2; exit 3\n\
                 elif [ -w \"$d\" ]; then echo \"cannot create the lock file $f: it appeared and went while this run looked, or the file system is full; run again\" >&2; exit 3\n\
                 else echo \"cannot create the lock file $f: $d is not writable by this user\" >&2; exit 3; fi",
                d = quote(dir),
                f = quote(&file),
                vars = marker_vars(dir, host, run_id),
                markers = make_markers(NO_MARKERS),
            );
            let found = match run_lock_command(conn, host, &script)
                .await
                .map_err(LockError::Failed)?
            {
                Answer::Acquired(layout) => return Ok(held(layout)),
                Answer::Held(found) => found,
            };
            match judge(host, &file, &found, settings) {
                Decision::Refuse(why) => Err(LockError::Refused(why)),
                Decision::Take(note) => {
                    // Replace the lock only if it still says what we judged.
                    let script = format!(
                        "d={d}; f={f}; {vars}\n\
                         cur=$(cat \"$f\" 2>/dev/null) || cur=\n\
                         if [ -n \"$cur\" ] && [ \"$cur\" != {old} ]; then echo lifeboat-lock:held; printf '%s\\n' \"$cur\"; exit 0; fi\n\
                         t=\"$f.$$.tmp\"\n\
                         if ! e=$( (printf '%s' {text} > \"$t\") 2>&1 && mv -f \"$t\" \"$f\" 2>&1 ); then rm -f \"$t\"; echo \"cannot replace the lock file $f: $e\" >&2; exit 3; fi\n\
                         {markers}",
                        d = quote(dir),
                        f = quote(&file),
                        vars = marker_vars(dir, host, run_id),
                        old = quote(found.trim_end_matches('\n')),
                        markers = make_markers(NO_MARKERS),
                    );
                    match run_lock_command(conn, host, &script)
                        .await
                        .map_err(LockError::Failed)?
                    {
                        Answer::Acquired(layout) => {
                            if let Some(n) = note {
                                warn(n);
                            }
                            Ok(held(layout))
                        }
                        Answer::Held(now) => Err(LockError::Refused(match judge(host, &file, &now, settings) {
                            Decision::Refuse(why) => why,
                            Decision::Take(_) => format!(
                                "host {host}: the lock {file} changed while this run was taking it over; run again"
                            ),
                        })),
                    }
                }
            }
        })
        .await
        .clone()
    }

    /// Dry run: reads `host`'s lock (once) and says whether a real run would be refused.
    pub async fn peek(
        &self,
        host: &str,
        conn: &Arc<dyn Connection>,
        dir: &str,
        settings: &LockSettings,
    ) -> Option<String> {
        {
            let mut peeked = self.peeked.lock().unwrap_or_else(|e| e.into_inner());
            if !peeked.insert(host.to_string()) {
                return None;
            }
        }
        let file = lock_file(dir, host);
        // A line first when something is there: an empty lock refuses a real run too.
        let spec = CommandSpec::sh(format!(
            "f={}; if [ -e \"$f\" ] || [ -L \"$f\" ]; then echo lifeboat-lock:there; cat \"$f\" 2>/dev/null; fi; true",
            quote(&file)
        ))
        .timeout(Some(LOCK_COMMAND_TIMEOUT));
        let out = conn.run(&spec, None).await.ok()?;
        let text = out.stdout_text();
        let text = text.strip_prefix("lifeboat-lock:there\n")?;
        match judge(host, &file, text, settings) {
            Decision::Refuse(why) => Some(format!("{why} (a real run now would be refused)")),
            Decision::Take(Some(note)) => Some(format!("a real run now would say: {note}")),
            Decision::Take(None) => None,
        }
    }

    /// Releases every lock this run holds: removes each lock file that still names
    /// `run_id`, and with `clean`, the host's marker files of this run and of `lineage`
    /// (under the directory the continued runs used). Returns what failed.
    pub async fn release_all(&self, run_id: &str, lineage: &[String], clean: bool) -> Vec<String> {
        let cells: Vec<(String, Slot)> = self
            .held
            .lock()
            .await
            .iter()
            .map(|(h, c)| (h.clone(), c.clone()))
            .collect();
        let mut tasks = tokio::task::JoinSet::new();
        for (host, cell) in cells {
            let Some(Ok(held)) = cell.get().cloned() else {
                continue;
            };
            // One `rm` for the lock (when it still names this run) and, with `clean`,
            // the markers of each run: its files in the host's marker and scratch
            // directories, or its own directories (the layout it used, see
            // `MarkerPaths`: the other one is not there). A run directory shared with
            // other hosts of the machine loses only this host's files; the last host to
            // look finds it empty and removes it. (A glob in the shell says: every host
            // of the run that shares it made its completion log there when it took its
            // lock, before any node ran, so nothing new appears meanwhile. `tmp`: where
            // runs of earlier versions wrote their lock before linking it into place.)
            // A function the host's kept shell runs in itself (no subshell's process):
            // its variables are unset at its end.
            let mut vars = String::from("__lb_f __lb_l __lb_x __lb_e");
            let mut script = format!(
                "__lb_f={f}; __lb_l=; IFS= read -r __lb_l 2>/dev/null < \"$__lb_f\"; set --; [ \"$__lb_l\" != {line} ] || set -- \"$__lb_f\"",
                f = quote(&held.file),
                line = quote(&format!("run_id={run_id}")),
            );
            if clean {
                let mut runs = vec![(run_id.to_string(), held.dir.clone())];
                for id in lineage.iter().filter(|id| is_run_id(id)) {
                    runs.push((id.clone(), held.past_dir.clone()));
                }
                let mut files = Vec::new();
                let mut after = String::new();
                for (n, (id, lock_dir)) in runs.iter().enumerate() {
                    vars.push_str(&format!(" __lb_d{n} __lb_a{n}"));
                    // The run id is a word of letters, digits, `-` and `_`: a safe glob.
                    let (host_layout, own) = (
                        MarkerPaths::of_host(lock_dir, &host, id),
                        MarkerPaths::of_run(lock_dir, &host, id),
                    );
                    files.push(format!(
                        "{}/{}*",
                        quote(&host_layout.dir),
                        host_layout.prefix
                    ));
                    files.push(format!(
                        "{}/{}*",
                        quote(&host_layout.scratch),
                        host_layout.prefix
                    ));
                    files.push(quote(&own.scratch));
                    let (log, tmp) = (
                        quote(&own.log),
                        quote(&in_dir(&own.dir, &format!("{}.lock", file_word(&host)))),
                    );
                    // Each entry of directory `$d{n}`, hidden ones too, as `$x`.
                    let each = format!(
                        "for __lb_x in \"$__lb_d{n}\"/* \"$__lb_d{n}\"/.[!.]* \"$__lb_d{n}\"/..?*; do {{ [ -e \"$__lb_x\" ] || [ -L \"$__lb_x\" ]; }}"
                    );
                    script.push_str(&format!(
                        "\n__lb_d{n}={d}; __lb_a{n}=1; {each} && [ \"$__lb_x\" != {log} ] && [ \"$__lb_x\" != {tmp} ] && {{ __lb_a{n}=; break; }}; done\n\
                         if [ ! -d \"$__lb_d{n}\" ]; then :; elif [ -n \"$__lb_a{n}\" ]; then set -- \"$@\" \"$__lb_d{n}\"; else set -- \"$@\" {log} {tmp}; fi",
                        d = quote(&own.dir),
                    ));
                    after.push_str(&format!(
                        "\n[ -n \"$__lb_a{n}\" ] || {{ __lb_e=1; {each} && {{ __lb_e=; break; }}; done; [ -z \"$__lb_e\" ] || rmdir \"$__lb_d{n}\" 2>/dev/null; }}"
                    ));
                }
                script.push_str(&format!("\nrm -rf \"$@\" {}", files.join(" ")));
                script.push_str(&after);
            } else {
                script.push_str("; [ $# -eq 0 ] || rm -f \"$@\"");
            }
            script.push_str(&format!("\nunset {vars}; return 0"));
            tasks.spawn(async move {
                let spec = CommandSpec::sh_function(script).timeout(Some(LOCK_COMMAND_TIMEOUT));
                match held.conn.run(&spec, None).await {
                    Ok(o) if o.success() => None,
                    Ok(o) => Some(format!(
                        "could not release the lock {} on host {host}: {}",
                        held.file,
                        o.stderr_text().trim()
                    )),
                    Err(e) => Some(format!(
                        "could not release the lock {} on host {host}: {e}; remove it by hand once the host is back",
                        held.file
                    )),
                }
            });
        }
        let mut problems = Vec::new();
        while let Some(r) = tasks.join_next().await {
            if let Ok(Some(p)) = r {
                problems.push(p);
            }
        }
        problems.sort();
        problems
    }
}

/// Runs a lock command: we hold the lock, or another lock is there.
async fn run_lock_command(
    conn: &Arc<dyn Connection>,
    host: &str,
    script: &str,
) -> Result<Answer, String> {
    let spec = CommandSpec::sh(script).timeout(Some(LOCK_COMMAND_TIMEOUT));
    let out = conn
        .run(&spec, None)
        .await
        .map_err(|e| format!("cannot lock host {host}: unreachable: {e}"))?;
    if out.timed_out {
        return Err(format!(
            "cannot lock host {host}: the lock command did not answer within {}s",
            LOCK_COMMAND_TIMEOUT.as_secs()
        ));
    }
    let stdout = out.stdout_text();
    if !out.success() {
        return Err(format!(
            "cannot lock host {host}: {}; check that the login user can write there, or choose another directory with `{LOCK_DIR_VAR}` (host variable) or --lock-dir",
            first_line(&out.stderr_text()).unwrap_or("the lock command failed")
        ));
    }
    let mut lines = stdout.splitn(2, '\n');
    match lines.next().map(str::trim) {
        Some("lifeboat-lock:acquired host") => Ok(Answer::Acquired(Layout::Host)),
        Some("lifeboat-lock:acquired run") => Ok(Answer::Acquired(Layout::Run)),
        Some("lifeboat-lock:held") => Ok(Answer::Held(lines.next().unwrap_or("").to_string())),
        _ => Err(format!(
            "cannot lock host {host}: unexpected answer from the lock command: {:?}",
            stdout.chars().take(200).collect::<String>()
        )),
    }
}

fn first_line(s: &str) -> Option<&str> {
    s.lines().map(str::trim).find(|l| !l.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(run_id: &str) -> LockSettings {
        LockSettings {
            me: LockInfo::mine(run_id, "pb.yml"),
            break_lock: false,
            lineage: Vec::new(),
        }
    }

    #[test]
    fn lock_text_round_trips_and_stays_one_line_per_key() {
        let mut info = LockInfo::mine("r1", "evil\nrun_id=other");
        info.pid = Some(42);
        let back = LockInfo::parse(&info.to_text()).expect("parses");
        assert_eq!(back.run_id, "r1");
        assert_eq!(back.playbook, "evil run_id=other");
        assert_eq!(back.pid, Some(42));
        assert_eq!(LockInfo::parse("garbage"), None);
    }

    #[test]
    fn judging_locks() {
        let s = settings("me");
        let mut other = LockInfo::mine("them", "x.yml");
        // No process has this pid (pid_max is at most 2^22): stale.
        other.pid = Some(u32::try_from(i32::MAX).unwrap_or(1));
        let d = judge("h1", "/l/h1.lock", &other.to_text(), &s);
        assert!(
            matches!(&d, Decision::Refuse(m) if m.contains("stale lock of run them") && m.contains("--break-lock")),
            "{d:?}"
        );
        other.controller = "elsewhere".into();
        let d = judge("h1", "/l/h1.lock", &other.to_text(), &s);
        assert!(
            matches!(&d, Decision::Refuse(m) if m.contains("from another controller") && m.contains("check on elsewhere")),
            "{d:?}"
        );
        let mut brk = settings("me");
        brk.break_lock = true;
        let d = judge("h1", "/l/h1.lock", &other.to_text(), &brk);
        assert!(
            matches!(&d, Decision::Take(Some(m)) if m.contains("BREAKING THE LOCK OF RUN them")),
            "{d:?}"
        );
        let mine = LockInfo::mine("me", "pb.yml");
        assert_eq!(
            judge("h1", "/l/h1.lock", &mine.to_text(), &s),
            Decision::Take(None)
        );
        let d = judge("h1", "/l/h1.lock", "junk\n", &s);
        assert!(
            matches!(&d, Decision::Refuse(m) if m.contains("names no run")),
            "{d:?}"
        );
        // Empty: being written by another run, or cut short.
        let d = judge("h1", "/l/h1.lock", "", &s);
        assert!(
            matches!(&d, Decision::Refuse(m) if m.contains("empty lock file /l/h1.lock") && m.contains("run again")),
            "{d:?}"
        );
        let d = judge("h1", "/l/h1.lock", "\n", &brk);
        assert!(
            matches!(&d, Decision::Take(Some(m)) if m.contains("replacing the empty lock file")),
            "{d:?}"
        );
    }

    #[test]
    fn a_continued_runs_stale_lock_is_taken_over() {
        let mut s = settings("me");
        s.lineage = vec!["old".into()];
        let mut old = LockInfo::mine("old", "pb.yml");
        old.pid = Some(u32::try_from(i32::MAX).unwrap_or(1));
        let d = judge("h1", "/l/h1.lock", &old.to_text(), &s);
        assert!(
            matches!(&d, Decision::Take(Some(m)) if m.contains("taking over the stale lock of run old")),
            "{d:?}"
        );
    }

    #[test]
    fn names_cannot_escape_the_lock_directory() {
        assert_eq!(file_word("../etc/passwd"), "_.._etc_passwd");
        assert_eq!(file_word(""), "_");
        assert!(is_run_id("20260101120000-ab12"));
        assert!(!is_run_id("../x"));
        assert_eq!(lock_file("/l/", "h1"), "/l/h1.lock");
        assert_eq!(lock_file("/", "../h1"), "/_.._h1.lock");
    }
}
