//! `wait_for`: waits, checking from the host itself, until a TCP port is open (or
//! closed), a path exists (optionally containing a pattern) or is gone, or a command
//! succeeds; fails with a clear message once the timeout has passed.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::{
    ArgKind, Module, ModuleContext, ModuleDoc, ModuleError, Outcome, arg, duration_arg, parse_args,
};
use crate::connection::{CommandSpec, quote};
use crate::error::{SourceError, SourceFile};
use crate::template::Templates;
use crate::yaml::{Node, Value};

/// The `wait_for` module.
pub struct WaitFor;

/// Exit status of the port probe when the host has neither bash nor nc.
const NO_PROBE: i32 = 90;

static DOC: ModuleDoc = ModuleDoc {
    name: "wait_for",
    summary: "Wait until a port is open or closed, a path appears or goes, or a command succeeds",
    description: "Exactly one of `port`, `path` and `cmd`. Every check runs on the host (through its \
connection), so `host: 127.0.0.1` means the host itself. A port is checked with bash's \
/dev/tcp (`timeout 3 bash -c 'exec 3<>/dev/tcp/HOST/PORT'`, coreutils and bash only, as on any \
Debian), or with `nc -z` when bash is missing. A path is checked with `test -e`, and \
`search_regex` with `grep -E` (POSIX extended regular expressions). A command is run with the \
shell and must exit 0. After `delay`, the condition is checked every `sleep` until it holds (ok, \
never changed: waiting changes nothing) or `timeout` has passed (failed, e.g. \"port 5432 on \
127.0.0.1 not open after 30s\"). In a dry run it checks once without waiting and reports ok \
either way, with a message saying whether the condition holds now or the run would wait \
(earlier steps that would make it hold did not run).",
    free_form: None,
    args: &[
        arg("port", ArgKind::Int, false, "TCP port to wait for"),
        arg(
            "host",
            ArgKind::Str,
            false,
            "with port: the address to connect to, from the host (default 127.0.0.1)",
        ),
        arg("path", ArgKind::Str, false, "a host path to wait for"),
        arg(
            "search_regex",
            ArgKind::Str,
            false,
            "with path: wait until the file contains a match (grep -E)",
        ),
        arg(
            "cmd",
            ArgKind::Str,
            false,
            "a shell command to run until it exits 0",
        ),
        arg(
            "state",
            ArgKind::Str,
            false,
            "port: started (default) | stopped; path: present (default) | absent",
        ),
        arg(
            "timeout",
            ArgKind::Duration,
            false,
            "give up after this long (default 300s)",
        ),
        arg(
            "delay",
            ArgKind::Duration,
            false,
            "wait this long before the first check (default 0)",
        ),
        arg(
            "sleep",
            ArgKind::Duration,
            false,
            "pause between checks (default 1s for port, 0.5s for path and cmd)",
        ),
    ],
    open_args: false,
    example: "- id: db-up\n  wait_for:\n    port: 3306\n    timeout: 2m\n  needs: [start-mariadb]\n",
    returns: &[("elapsed", "seconds waited until the condition held")],
    rollback: "nothing to undo",
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WaitArgs {
    port: Option<Json>,
    host: Option<String>,
    path: Option<String>,
    search_regex: Option<String>,
    cmd: Option<String>,
    state: Option<String>,
    timeout: Option<Json>,
    delay: Option<Json>,
    sleep: Option<Json>,
}

enum Condition {
    Port {
        host: String,
        port: u16,
        open: bool,
    },
    Path {
        path: String,
        present: bool,
        regex: Option<String>,
    },
    Cmd(String),
}

impl Condition {
    fn from_args(a: &WaitArgs) -> Result<Condition, ModuleError> {
        let state = a.state.as_deref();
        match (&a.port, &a.path, &a.cmd) {
            (Some(p), None, None) => {
                let port = match p {
                    Json::Number(n) => n.as_u64(),
                    Json::String(s) => s.trim().parse().ok(),
                    _ => None,
                }
                .and_then(|n| u16::try_from(n).ok())
                .filter(|n| *n > 0)
                .ok_or_else(|| {
                    ModuleError::Args(format!("wait_for: port `{p}` is not a TCP port (1-65535)"))
                })?;
                let open = match state {
                    None | Some("started") => true,
                    Some("stopped") => false,
                    Some(s) => {
                        return Err(ModuleError::Args(format!(
                            "wait_for: state `{s}` for a port: use started or stopped"
                        )));
                    }
                };
                Ok(Condition::Port {
                    host: a.host.clone().unwrap_or_else(|| "127.0.0.1".to_string()),
                    port,
                    open,
                })
            }
            (None, Some(path), None) => {
                let present = match state {
                    None | Some("present") => true,
                    Some("absent") => false,
                    Some(s) => {
                        return Err(ModuleError::Args(format!(
                            "wait_for: state `{s}` for a path: use present or absent"
                        )));
                    }
                };
                Ok(Condition::Path {
                    path: path.clone(),
                    present,
                    regex: a.search_regex.clone(),
                })
            }
            (None, None, Some(cmd)) => Ok(Condition::Cmd(cmd.clone())),
            _ => Err(ModuleError::Args(
                "wait_for: give exactly one of `port`, `path` and `cmd`".into(),
            )),
        }
    }

    fn default_sleep(&self) -> Duration {
        match self {
            Condition::Port { .. } => Duration::from_secs(1),
            _ => Duration::from_millis(500),
        }
    }

    /// What is waited for, for messages: "port 5432 on 127.0.0.1 open".
    fn describe(&self) -> String {
        match self {
            Condition::Port { host, port, open } => {
                format!(
                    "port {port} on {host} {}",
                    if *open { "open" } else { "closed" }
                )
            }
            Condition::Path {
                path,
                present,
                regex,
            } => match (present, regex) {
                (true, Some(r)) => format!("{path} containing /{r}/"),
                (true, None) => format!("{path} present"),
                (false, _) => format!("{path} absent"),
            },
            Condition::Cmd(c) => format!("`{c}` succeeding"),
        }
    }

    /// The failure message after `timeout`.
    fn timed_out(&self, timeout: Duration) -> String {
        let after = humantime::format_duration(timeout);
        match self {
            Condition::Port { host, port, open } => {
                format!(
                    "port {port} on {host} {} after {after}",
                    if *open { "not open" } else { "still open" }
                )
            }
            Condition::Path {
                path,
                present,
                regex,
            } => match (present, regex) {
                (true, Some(r)) => {
                    format!("{path} does not contain a match for /{r}/ after {after}")
                }
                (true, None) => format!("{path} does not exist after {after}"),
                (false, _) => format!("{path} still exists after {after}"),
            },
            Condition::Cmd(c) => format!("`{c}` did not succeed within {after}"),
        }
    }

    /// One check, bounded by `limit`.
    async fn holds(&self, ctx: &ModuleContext, limit: Duration) -> Result<bool, ModuleError> {
        let limit = limit.max(Duration::from_millis(100));
        let (spec, quiet_probe) = match self {
            Condition::Port { host, port, .. } => {
                let secs = limit.as_secs().clamp(1, 3);
                let (h, p) = (quote(host), port);
                let script = format!(
                    "if command -v bash >/dev/null 2>&1; then timeout {secs} bash -c 'exec 3<>\"/dev/tcp/$0/$1\"' {h} {p} 2>/dev/null; \
elif command -v nc >/dev/null 2>&1; then nc -z -w {secs} {h} {p}; \
else echo 'neither bash nor nc is available on the host to check ports' >&2; exit {NO_PROBE}; fi"
                );
                (CommandSpec::shell(script), true)
            }
            Condition::Path { path, regex, .. } => {
                let p = quote(path);
                let script = match regex {
                    None => format!("[ -e {p} ] || [ -L {p} ]"),
                    Some(r) => format!("[ -e {p} ] && grep -Eq -- {} {p}", quote(r)),
                };
                (CommandSpec::shell(script), true)
            }
            Condition::Cmd(c) => (CommandSpec::shell(c.clone()), false),
        };
        let spec = spec.timeout(Some(
            limit
                + if quiet_probe {
                    Duration::from_secs(2)
                } else {
                    Duration::ZERO
                },
        ));
        let out = match ctx.probe(spec).await {
            Ok(out) => out,
            Err(ModuleError::TimedOut { .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        match self {
            Condition::Port { open, .. } => {
                if out.rc == Some(NO_PROBE) {
                    return Err(ModuleError::Failed {
                        message: format!("wait_for: {}", out.stderr_text().trim()),
                        output: Some(out),
                    });
                }
                Ok(out.success() == *open)
            }
            Condition::Path { present, regex, .. } => {
                if regex.is_some() && out.rc == Some(2) {
                    return Err(ModuleError::Failed {
                        message: format!("wait_for: grep failed: {}", out.stderr_text().trim()),
                        output: Some(out),
                    });
                }
                Ok(out.success() == *present)
            }
            Condition::Cmd(_) => Ok(out.success()),
        }
    }
}

fn opt_duration(v: &Option<Json>, default: Duration) -> Result<Duration, ModuleError> {
    v.as_ref().map_or(Ok(default), duration_arg)
}

#[async_trait]
impl Module for WaitFor {
    fn doc(&self) -> &'static ModuleDoc {
        &DOC
    }

    fn validate(&self, args: &Node, file: &SourceFile) -> Vec<SourceError> {
        let mut errors = Vec::new();
        let given: Vec<&str> = ["port", "path", "cmd"]
            .into_iter()
            .filter(|k| args.get(k).is_some())
            .collect();
        if given.len() != 1 {
            let msg = if given.is_empty() {
                "`wait_for` needs one of `port`, `path` and `cmd`".to_string()
            } else {
                format!(
                    "`wait_for` takes exactly one of `port`, `path` and `cmd`, found {}",
                    given.join(", ")
                )
            };
            errors.push(args.error(file, msg).with_help(
                "port: a TCP port; path: a file to appear; cmd: a command that must succeed",
            ));
            return errors;
        }
        let kind = given[0];
        if kind != "port"
            && let Some(h) = args.get("host")
        {
            errors.push(h.error(file, "`host` is only for `port`"));
        }
        if kind != "path"
            && let Some(r) = args.get("search_regex")
        {
            errors.push(r.error(file, "`search_regex` is only for `path`"));
        }
        if let Some(p) = args.get("port")
            && let Value::Int(n) = p.value
            && !(1..=65535).contains(&n)
        {
            errors.push(p.error(file, format!("port {n} is not a TCP port (1-65535)")));
        }
        if let Some(s) = args.get("state")
            && let Some(text) = s.as_str()
            && !Templates::is_template(text)
        {
            let allowed: &[&str] = match kind {
                "port" => &["started", "stopped"],
                "path" => &["present", "absent"],
                _ => &[],
            };
            if !allowed.contains(&text) {
                let e = s.error(file, format!("state `{text}` does not apply to `{kind}`"));
                errors.push(if allowed.is_empty() {
                    e.with_help("`cmd` takes no state: it waits until the command exits 0")
                } else {
                    e.with_help(format!(
                        "with {kind}, state is one of: {}",
                        allowed.join(", ")
                    ))
                });
            }
        }
        errors
    }

    async fn run(&self, ctx: &ModuleContext, args: &Json) -> Result<Outcome, ModuleError> {
        let a: WaitArgs = parse_args("wait_for", args)?;
        let cond = Condition::from_args(&a)?;
        let timeout = opt_duration(&a.timeout, Duration::from_secs(300))?;
        let delay = opt_duration(&a.delay, Duration::ZERO)?;
        let sleep = opt_duration(&a.sleep, cond.default_sleep())?;
        let what = cond.describe();
        if ctx.check {
            let now = cond.holds(ctx, timeout.min(Duration::from_secs(5))).await?;
            let msg = if now {
                format!("{what}: already so")
            } else {
                format!("would wait for {what} (not so now)")
            };
            return Ok(Outcome::ok()
                .with_msg(msg)
                .with_data(json!({ "elapsed": 0.0 })));
        }
        let start = Instant::now();
        tokio::time::sleep(delay).await;
        let deadline = start + delay + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if cond.holds(ctx, remaining).await? {
                let elapsed = start.elapsed().as_secs_f64();
                return Ok(Outcome::ok()
                    .with_msg(format!("{what} after {elapsed:.1}s"))
                    .with_data(json!({ "elapsed": elapsed })));
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(ModuleError::failed(cond.timed_out(timeout)));
            }
            tokio::time::sleep(sleep.min(remaining)).await;
        }
    }
}
