//! Completion markers: what makes `command` and `shell` steps run exactly once across a
//! controller killed at any point and `lifeboat resume`.
//!
//! In a real run the executor gives each (step, host, loop item) a [`Marker`] (a task
//! local, see [`scope`]); the command modules then run their command inside a wrapper,
//! in the same remote command line. The wrapper appends `<key> start` to the run's
//! completion log for the host ([`MarkerPaths`]), writes the pid file (its pid and its
//! start time from `/proc`, so that a pid used again later is not taken for it), checks
//! that the host lock still names its run (so a command whose run was taken over never
//! starts), runs the command with its output going to files (never to the connection,
//! so the controller's death cannot cut it short), appends `<key> rc <status>` to the
//! log, and only then prints the output. It ignores SIGHUP, so a dropped SSH connection
//! does not end it.
//!
//! The log is on disk and outlives a restart of the host; the pid and output files are
//! in a scratch directory on tmpfs (the marker directory when there is none), because
//! making a file on disk costs far more than the command often does. Appending a line to
//! the log costs next to nothing.
//!
//! The wrapper runs in the host's persistent shell itself (or as the `sh` of a channel
//! of its own), so the pid file names that shell; it is a process group leader only
//! there: ending a wrapper ends its process group (a persistent shell of the dead run
//! and what that runs; never the group of the script doing it).
//!
//! When a resumed run meets a step that its predecessor started but never recorded as
//! finished, [`adopt`] looks at that run's markers: an exit status there is adopted (with
//! the output) without running the command again; a wrapper still alive is waited for,
//! up to the step's timeout; otherwise the command did not complete and runs again.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::connection::{CommandOutput, CommandSpec, quote};
use crate::lock::file_word;
use crate::modules::{ModuleContext, ModuleError};

/// Where one run keeps the completion markers of the commands it runs on one host.
///
/// Normally in the host's own marker directory `{lock directory}/{host}.markers/`, which
/// the first run there makes and every later run reuses (making a directory costs the
/// host a process, every run): the run's completion log is `{run id}.done` there, and
/// its pid and output files are `{run id}.{key}.pid|out|err` in the host's scratch
/// directory `/dev/shm/lifeboat-markers-{host}/` on tmpfs. Both directories are mode
/// 0700. When the host's marker directory is not this user's (another user made it),
/// the run makes directories of its own instead, `{lock directory}/{run id}/` (log
/// `{host}.done`) and `/dev/shm/lifeboat-{run id}-{host}/`, the layout every run used
/// before the host's directory existed, which `resume` still reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkerPaths {
    /// The directory of the completion log, and of the pid and output files when the
    /// scratch directory is not usable.
    pub dir: String,
    /// The run's completion log for the host, in `dir`.
    pub log: String,
    /// The scratch directory of the pid and output files.
    pub scratch: String,
    /// What the names of the run's pid and output files start with (`{run id}.` in the
    /// host's directories, nothing in the run's own).
    pub prefix: String,
}

impl MarkerPaths {
    /// The markers of run `run_id` in `host`'s own directories, under lock directory
    /// `lock_dir`.
    pub fn of_host(lock_dir: &str, host: &str, run_id: &str) -> MarkerPaths {
        let (host, run) = (file_word(host), file_word(run_id));
        let dir = crate::lock::in_dir(lock_dir, &format!("{host}.markers"));
        MarkerPaths {
            log: format!("{dir}/{run}.done"),
            scratch: format!("/dev/shm/lifeboat-markers-{host}"),
            prefix: format!("{run}."),
            dir,
        }
    }

    /// The markers of run `run_id` on `host` in the run's own directories.
    pub fn of_run(lock_dir: &str, host: &str, run_id: &str) -> MarkerPaths {
        let (host, run) = (file_word(host), file_word(run_id));
        let dir = crate::lock::in_dir(lock_dir, &run);
        MarkerPaths {
            log: format!("{dir}/{host}.done"),
            scratch: format!("/dev/shm/lifeboat-{run}-{host}"),
            prefix: String::new(),
            dir,
        }
    }
}

/// Where one command records its completion.
#[derive(Debug, Clone)]
pub struct Marker {
    /// Where this run keeps the host's markers.
    pub paths: MarkerPaths,
    /// The inventory host the command runs on (for the files of earlier runs).
    pub host: String,
    /// The key of this (step, host, loop item) in the completion log, and the end of its
    /// files' names.
    pub key: String,
    /// The host lock file, which must name this run for the command to start.
    pub lock_file: String,
    /// This run's id.
    pub run_id: String,
    /// Earlier runs that started this command without recording its end, newest
    /// first, with the lock directory they used on the host: their result is adopted
    /// when they have one (in either layout of [`MarkerPaths`]).
    pub adopt_from: Vec<(String, String)>,
    /// Set when the command must not be retried: an earlier run's command still runs.
    pub no_retry: Arc<AtomicBool>,
}

tokio::task_local! {
    static CURRENT: Marker;
}

/// The marker of the command the current task runs, if the executor gave it one.
pub fn current() -> Option<Marker> {
    CURRENT.try_with(Clone::clone).ok()
}

/// Runs `f` with `marker` as the current marker (none: as is).
pub async fn scope<F: Future>(marker: Option<Marker>, f: F) -> F::Output {
    match marker {
        Some(m) => CURRENT.scope(m, f).await,
        None => f.await,
    }
}

/// The marker file stem of a node's loop item: the step id and host (characters outside
/// `[A-Za-z0-9._-]` replaced, with a hash of the originals then) and the item's index.
pub fn key(step: &str, host: &str, item: usize) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .take(80)
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    let (a, b) = (clean(step), clean(host));
    if a == step && b == host {
        format!("{a}@{b}.{item}")
    } else {
        let hash = crate::journal::hash_files([step, host]);
        format!("{a}@{b}-{}.{item}", &hash[..12])
    }
}

/// The remote script that runs `inner` (a whole shell line, become included) and
/// records its completion. Every command pays for it, so it starts as few processes as
/// it can and makes no file on disk: it is a function body
/// ([`crate::connection::Program::ShFunction`]) that the host's kept shell runs in
/// itself, the lock check reads one line (a lock file names its run on its first), the
/// command runs in a subshell (a fork, not a new `sh`), with the wrapper's own variables
/// unset and no positional parameters, as under `sh -c`; the log gets two short
/// appends; `cat` runs only when there is something to print. It never exits (the
/// shell is kept): it returns the command's status, or 125 when it did not run it,
/// after unsetting its variables and giving SIGHUP back its default. When the scratch
/// directory is not usable (missing, or not this user's), or the pid file cannot be made
/// there, the files go to the marker directory.
pub fn wrapper(m: &Marker, inner: &str) -> String {
    format!(
        "trap '' HUP; __lb_d={d}; __lb_g={g}; __lb_s={s}; __lb_n={n}; __lb_k={k}; __lb_f={f}; __lb_me={me}; __lb_rc=125\n\
         [ -d \"$__lb_s\" ] && [ ! -L \"$__lb_s\" ] && [ -O \"$__lb_s\" ] || __lb_s=$__lb_d\n\
         __lb_p=$$; __lb_l=; {{ IFS= read -r __lb_l < /proc/self/stat; }} 2>/dev/null && {{ __lb_p=${{__lb_l%% *}}; __lb_l=${{__lb_l##*) }}; set -- $__lb_l; __lb_l=${{20}}; }}\n\
         if {{ echo \"$__lb_n start\" >> \"$__lb_g\" && {{ {{ echo \"$__lb_p $__lb_l\" > \"$__lb_s/$__lb_k.pid\"; }} 2>/dev/null || {{ __lb_s=$__lb_d; echo \"$__lb_p $__lb_l\" > \"$__lb_s/$__lb_k.pid\"; }}; }}; }} 2>/dev/null; then\n\
         __lb_l=; IFS= read -r __lb_l 2>/dev/null < \"$__lb_f\"\n\
         if [ \"$__lb_l\" = \"$__lb_me\" ]; then\n\
         set -- {inner}\n\
         ( unset __lb_d __lb_g __lb_s __lb_n __lb_k __lb_f __lb_me __lb_l __lb_p __lb_rc; eval \"set --; $1\" ) > \"$__lb_s/$__lb_k.out\" 2> \"$__lb_s/$__lb_k.err\"\n\
         __lb_rc=$?\n\
         echo \"$__lb_n rc $__lb_rc\" >> \"$__lb_g\"\n\
         [ ! -s \"$__lb_s/$__lb_k.out\" ] || cat \"$__lb_s/$__lb_k.out\"; [ ! -s \"$__lb_s/$__lb_k.err\" ] || cat \"$__lb_s/$__lb_k.err\" >&2\n\
         else rm -f \"$__lb_s/$__lb_k.pid\"; echo \"$__lb_n gone\" >> \"$__lb_g\"; echo \"lifeboat: the host lock $__lb_f no longer names run {run}: not running the command (another run has taken the host over)\" >&2\n\
         fi\n\
         else echo \"lifeboat: cannot write the completion marker of $__lb_n in $__lb_d: not running the command\" >&2\n\
         fi\n\
         set -- \"$__lb_rc\"; unset __lb_d __lb_g __lb_s __lb_n __lb_k __lb_f __lb_me __lb_l __lb_p __lb_rc; trap - HUP; return \"$1\"",
        d = quote(&m.paths.dir),
        g = quote(&m.paths.log),
        s = quote(&m.paths.scratch),
        n = quote(&m.key),
        k = quote(&format!("{}{}", m.paths.prefix, m.key)),
        f = quote(&m.lock_file),
        me = quote(&format!("run_id={}", m.run_id)),
        run = m.run_id.replace(['"', '$', '`', '\\'], "_"),
        inner = quote(inner),
    )
}

/// Runs `spec` through the wrapper, with the step's become, timeout and output sink.
pub async fn run(
    ctx: &ModuleContext,
    m: &Marker,
    spec: &CommandSpec,
) -> Result<CommandOutput, ModuleError> {
    let timeout = spec.timeout.or(ctx.timeout);
    let inner = CommandSpec {
        timeout: None,
        become_: spec.become_.clone().or_else(|| ctx.become_.clone()),
        ..spec.clone()
    };
    // The wrapper runs as the login user (the marker directory is theirs); the command
    // inside it becomes whom the step says.
    let mut outer = CommandSpec::sh_function(wrapper(m, &inner.to_shell_line())).timeout(timeout);
    outer.stdin = inner.stdin_bytes();
    let out = ctx.conn.run(&outer, ctx.sink.clone()).await?;
    if out.timed_out {
        return Err(ModuleError::TimedOut {
            after: timeout.unwrap_or_default(),
            output: out,
        });
    }
    Ok(out)
}

/// Looks for the result of this command in the markers of the runs it is adopted from:
/// `Some((output, run id))` when one of them completed it (waiting for a wrapper still
/// running, up to the step's timeout); `None` when none did, and it must run. Until it
/// knows, the step must not be retried (an error, a timeout or a cancellation leaves
/// [`Marker::no_retry`] set): the earlier run's command may still be running.
pub async fn adopt(
    ctx: &ModuleContext,
    m: &Marker,
) -> Result<Option<(CommandOutput, String)>, ModuleError> {
    m.no_retry.store(true, Ordering::SeqCst);
    let found = look(ctx, m).await?;
    m.no_retry.store(false, Ordering::SeqCst);
    Ok(found)
}

async fn look(
    ctx: &ModuleContext,
    m: &Marker,
) -> Result<Option<(CommandOutput, String)>, ModuleError> {
    // The wait ends a little before the step's timeout, so ending the command fits in
    // the time the executor gives the step.
    let limit = ctx.timeout.map(|t| {
        t.saturating_sub(Duration::from_secs(1))
            .max(Duration::from_secs(1))
    });
    for (run, dir) in &m.adopt_from {
        // The run kept its markers in the host's directories, or (when it found that
        // directory another user's, or ran before there was one) in its own: its log
        // says which. The last line of the log about this command says whether it
        // ended (`rc N`); the `<key>.rc` file that earlier builds wrote instead is read
        // too, so their runs can still be resumed. The pid and output files are in the
        // scratch directory, or in the marker directory.
        let (host, own) = (
            MarkerPaths::of_host(dir, &m.host, run),
            MarkerPaths::of_run(dir, &m.host, run),
        );
        let script = format!(
            "d={hd}; g={hg}; sd={hs}; ks={hk}; n={n}; lim={lim}\n\
             [ -f \"$g\" ] || {{ d={od}; g={og}; sd={os}; ks=$n; }}\n\
             [ -d \"$sd\" ] && [ ! -L \"$sd\" ] && [ -O \"$sd\" ] || sd=$d\n\
             alive() {{ kill -0 \"$1\" 2>/dev/null || [ -d \"/proc/$1\" ] || return 1; if [ -n \"$st\" ]; then s=; read -r s < \"/proc/$1/stat\" 2>/dev/null || return 0; s=${{s##*) }}; set -- $s; [ \"${{20}}\" = \"$st\" ]; return; fi; [ -r \"/proc/$1/cmdline\" ] || return 0; c=$(tr '\\0' ' ' < \"/proc/$1/cmdline\" 2>/dev/null) || return 0; case $c in *\"$n\"*) return 0;; esac; return 1; }}\n\
             grp() {{ pg=$(sed 's/.*) //' \"/proc/$1/stat\" 2>/dev/null | cut -d' ' -f3); me=$(sed 's/.*) //' /proc/$$/stat 2>/dev/null | cut -d' ' -f3); if [ -n \"$pg\" ] && [ \"$pg\" != \"$me\" ]; then echo \"$pg\"; else echo \"$1\"; fi; }}\n\
             nap() {{ sleep 0.1 2>/dev/null || sleep 1; }}\n\
             rc_of() {{ r=; k_=; if [ -f \"$g\" ]; then while read -r k a b; do [ \"$k\" = \"$n\" ] && {{ k_=$a; r=$b; }}; done < \"$g\"; fi; [ \"$k_\" = rc ] && return 0; [ -z \"$k_\" ] && [ -f \"$d/$ks.rc\" ] && {{ read -r r < \"$d/$ks.rc\"; return 0; }}; return 1; }}\n\
             file_() {{ if [ -f \"$sd/$ks.$1\" ]; then echo \"$sd/$ks.$1\"; else echo \"$d/$ks.$1\"; fi; }}\n\
             done_() {{ echo \"done $r\"; o=$(file_ out); e=$(file_ err); cat \"$o\" 2>/dev/null; cat \"$e\" >&2 2>/dev/null; [ -f \"$o\" ] || echo \"[lifeboat: the output of this command is gone: the host restarted since it ran]\" >&2; exit 0; }}\n\
             rc_of && done_\n\
             p=; st=; pf=$(file_ pid); [ -f \"$pf\" ] && read -r p st < \"$pf\"\n\
             if [ -n \"$p\" ] && alive \"$p\"; then\n\
               echo \"running $p\"\n\
               end=; [ -n \"$lim\" ] && end=$(( $(date +%s) + lim ))\n\
               while ! rc_of && alive \"$p\"; do\n\
                 if [ -n \"$end\" ] && [ \"$(date +%s)\" -ge \"$end\" ]; then\n\
                   pg=$(grp \"$p\"); kill -s TERM -- \"-$pg\" 2>/dev/null || kill -TERM \"$p\" 2>/dev/null; i=0\n\
                   while alive \"$p\" && [ $i -lt 5 ]; do nap; i=$((i + 1)); done\n\
                   kill -s KILL -- \"-$pg\" 2>/dev/null || kill -KILL \"$p\" 2>/dev/null\n\
                   rc_of && done_\n\
                   echo ended; exit 0\n\
                 fi\n\
                 nap\n\
               done\n\
             fi\n\
             rc_of && done_\n\
             echo gone",
            hd = quote(&host.dir),
            hg = quote(&host.log),
            hs = quote(&host.scratch),
            hk = quote(&format!("{}{}", host.prefix, m.key)),
            od = quote(&own.dir),
            og = quote(&own.log),
            os = quote(&own.scratch),
            n = quote(&m.key),
            lim = limit.map_or_else(String::new, |l| l.as_secs().to_string()),
        );
        // A backstop only: the script keeps its own time.
        let spec = CommandSpec::shell(script).timeout(limit.map(|l| l + Duration::from_secs(30)));
        let out = ctx.conn.run(&spec, None).await?;
        let text = out.stdout_text();
        let waited = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("running "))
            .map(|p| p.trim().to_string());
        if out.timed_out {
            return Err(ModuleError::failed(format!(
                "this command, started by run {run}, is still running on the host (pid {}): it is not started again; wait for it to end, then resume again",
                waited.as_deref().unwrap_or("?")
            )));
        }
        let body = if waited.is_some() {
            out.stdout.splitn(2, |&b| b == b'\n').nth(1).unwrap_or(&[])
        } else {
            &out.stdout[..]
        };
        let mut parts = body.splitn(2, |&b| b == b'\n');
        let header = String::from_utf8_lossy(parts.next().unwrap_or(&[])).into_owned();
        let rest = parts.next().unwrap_or(&[]).to_vec();
        if let Some(rc) = header.strip_prefix("done ") {
            let rc = rc.trim().parse::<i32>().map_err(|_| {
                ModuleError::failed(format!(
                    "the completion marker of this command from run {run} (under {dir}) holds no exit status: {rc:?}"
                ))
            })?;
            return Ok(Some((
                CommandOutput {
                    rc: Some(rc),
                    stdout: rest,
                    stderr: out.stderr,
                    timed_out: false,
                },
                run.clone(),
            )));
        }
        match header.trim() {
            "gone" => {}
            "ended" => {
                // As the step's timeout would have ended it in its own run.
                m.no_retry.store(false, Ordering::SeqCst);
                return Err(ModuleError::failed(format!(
                    "this command, started by run {run}, was still running (pid {}) when the step's timeout ({}) ran out: it was ended, as a timeout ends any command",
                    waited.as_deref().unwrap_or("?"),
                    humantime::format_duration(ctx.timeout.unwrap_or_default())
                )));
            }
            _ => {
                return Err(ModuleError::failed(format!(
                    "cannot read the completion marker of this command from run {run} under {dir}: {}",
                    out.stderr_text().trim()
                )));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_file_names() {
        assert_eq!(key("dump-db", "ctl01", 0), "dump-db@ctl01.0");
        let k = key("a/b c", "h'1", 2);
        assert!(k.starts_with("a_b_c@h_1-") && k.ends_with(".2"), "{k}");
        assert_ne!(key("a/b", "h", 0), key("a_b", "h", 0));
        assert!(key(&"x".repeat(500), "h", 0).len() < 120);
    }
}
