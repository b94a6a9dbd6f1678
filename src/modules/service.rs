//! `service`: starts, stops or restarts services (systemd, SysV init scripts, OpenRC,
//! docker or podman containers, or any manager through `commands`), waits until the
//! new state is observed, and on rollback puts every service back as it was.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::backup_common::{check_choice, choice, failed_with, str_list};
use super::{
    ArgKind, Module, ModuleContext, ModuleDoc, ModuleError, Outcome, arg, duration_arg, parse_args,
};
use crate::connection::{CommandSpec, quote};
use crate::error::{SourceError, SourceFile};
use crate::yaml::Node;

/// The `service` module.
pub struct Service;

const STATES: &[&str] = &["started", "stopped", "restarted"];
pub(crate) const MANAGERS: &[&str] = &[
    "auto", "systemd", "sysv", "openrc", "docker", "podman", "command",
];

/// How often the status is polled while waiting.
const POLL: Duration = Duration::from_millis(200);

static DOC: ModuleDoc = ModuleDoc {
    name: "service",
    summary: "Start, stop or restart services and containers, and wait for the new state",
    description: "Acts on `name` or on each of `names`, in order. The status is probed first: \
`started` starts what is not running, `stopped` stops what is running, `restarted` restarts (or \
starts) every one. After each action the status is polled until the new state is observed, for up to \
`wait` (default 30s); otherwise the step fails. Changed when any service was acted on. \
Managers: `systemd` (`systemctl is-active/start/stop/restart`), `sysv` (`<init_dir>/<name> \
status/start/stop/restart`, init_dir default /etc/init.d; status exit 0 means running, as LSB \
says), `openrc` (`rc-service`), `docker` and `podman` (containers by name: `inspect` State.Running, \
`start`, `stop`, `restart`), and `command`: `commands: {start, stop, status, restart}` shell \
templates for anything else (pacemaker, supervisord, a test harness), where `{name}` is replaced by \
the service's name, shell-quoted (`{{ }}` templates are rendered by the engine before, with the \
step's variables); status exit 0 means running; without `restart`, restart is stop then start. \
`auto` (the default) picks systemd when it is running as init (`/run/systemd/system` exists and \
systemctl is there), else sysv when `<init_dir>/<name>` is executable, else openrc when rc-service \
exists. A dry run only probes the status and says which services would change. When an action \
fails, the services this step already changed are put back before the step fails. `pidfiles` maps \
a service to the pid file its daemon writes: its status is then \"that file names a live process\" \
whatever the manager says (Debian's uwsgi init scripts answer `status` with `pidof uwsgi_python311`, \
\"running\" while any of them runs). `missing: skip` leaves out a service that is not installed on the \
host (no init script, unit or container), reported as `absent`; the default `fail` fails on it.",
    free_form: Some("name"),
    args: &[
        arg(
            "name",
            ArgKind::Str,
            false,
            "the service (or container); or give names",
        ),
        arg(
            "names",
            ArgKind::StrOrList,
            false,
            "several services, acted on in this order",
        ),
        arg("state", ArgKind::Str, true, "started | stopped | restarted"),
        arg(
            "manager",
            ArgKind::Str,
            false,
            "auto | systemd | sysv | openrc | docker | podman | command (default auto)",
        ),
        arg(
            "commands",
            ArgKind::Map,
            false,
            "with manager command: start, stop, status (and optional restart) shell templates; {name} is the service",
        ),
        arg(
            "init_dir",
            ArgKind::Str,
            false,
            "where sysv init scripts are (default /etc/init.d)",
        ),
        arg(
            "wait",
            ArgKind::Duration,
            false,
            "how long to wait for the new state to be observed (default 30s)",
        ),
        arg(
            "pidfiles",
            ArgKind::Map,
            false,
            "service -> the pid file of its daemon: running means the file names a live process",
        ),
        arg(
            "missing",
            ArgKind::Str,
            false,
            "fail (default) | skip: leave out a service that is not installed on the host",
        ),
    ],
    open_args: false,
    example: "- id: stop-nova\n  service:\n    names: [nova-api, nova-scheduler, nova-conductor]\n    state: stopped\n",
    returns: &[(
        "services",
        "list of {name, before, after, changed}: before/after are running, stopped or absent",
    )],
    rollback: "puts every service the step acted on back as it was before: a stop step starts \
exactly the services it stopped, a start step stops what it started, a restart step stops what was \
not running before (a restarted running service stays running). Waits for each state like the step.",
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Commands {
    start: String,
    stop: String,
    status: String,
    restart: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Args {
    name: Option<String>,
    #[serde(default, deserialize_with = "str_list")]
    names: Vec<String>,
    state: String,
    #[serde(default = "auto")]
    manager: String,
    commands: Option<Commands>,
    #[serde(default = "init_d")]
    init_dir: String,
    wait: Option<Json>,
    #[serde(default)]
    pidfiles: BTreeMap<String, String>,
    #[serde(default = "fail")]
    missing: String,
}

fn fail() -> String {
    "fail".to_string()
}

const MISSING: &[&str] = &["fail", "skip"];

fn auto() -> String {
    "auto".to_string()
}

fn init_d() -> String {
    "/etc/init.d".to_string()
}

/// What an action is.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Action {
    Start,
    Stop,
    Restart,
}

impl Action {
    fn verb(self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Restart => "restart",
        }
    }
}

/// A resolved manager: how to probe and act on one service.
struct Manager {
    kind: String,
    init_dir: String,
    commands: Option<Commands>,
    /// service -> its daemon's pid file: the status then reads it.
    pidfiles: BTreeMap<String, String>,
}

impl Manager {
    fn status(&self, name: &str) -> String {
        let n = quote(name);
        if let Some(f) = self.pidfiles.get(name) {
            // A live process, not a zombie (a stopped daemon whose parent has not reaped it).
            return format!(
                "p=$(cat -- {} 2>/dev/null) && [ -n \"$p\" ] && [ -d \"/proc/$p\" ] && \
                 ! grep -q '^State:.*Z' \"/proc/$p/status\" 2>/dev/null",
                quote(f)
            );
        }
        match self.kind.as_str() {
            "systemd" => format!("systemctl is-active --quiet -- {n}"),
            "sysv" => format!("{} status", quote(&self.script(name))),
            "openrc" => format!("rc-service {n} status"),
            "docker" | "podman" => format!(
                "[ \"$({} inspect -f '{{{{.State.Running}}}}' -- {n} 2>/dev/null)\" = true ]",
                self.kind
            ),
            _ => self
                .commands
                .as_ref()
                .map_or_else(|| "false".to_string(), |c| c.status.replace("{name}", &n)),
        }
    }

    /// Exits 0 when the service is installed on the host.
    fn installed(&self, name: &str) -> String {
        let n = quote(name);
        match self.kind.as_str() {
            "systemd" => format!("systemctl cat -- {n} >/dev/null 2>&1"),
            "sysv" => format!("[ -x {} ]", quote(&self.script(name))),
            "openrc" => format!("[ -x /etc/init.d/{n} ]"),
            "docker" | "podman" => format!("{} inspect -- {n} >/dev/null 2>&1", self.kind),
            _ => "true".to_string(),
        }
    }

    fn action(&self, name: &str, action: Action) -> String {
        let n = quote(name);
        let verb = action.verb();
        match self.kind.as_str() {
            "systemd" => format!("systemctl {verb} -- {n}"),
            "sysv" => format!("{} {verb}", quote(&self.script(name))),
            "openrc" => format!("rc-service {n} {verb}"),
            "docker" | "podman" => format!("{} {verb} -- {n}", self.kind),
            _ => match (&self.commands, action) {
                (None, _) => "false".to_string(),
                (Some(c), Action::Start) => c.start.replace("{name}", &n),
                (Some(c), Action::Stop) => c.stop.replace("{name}", &n),
                (Some(c), Action::Restart) => match &c.restart {
                    Some(r) => r.replace("{name}", &n),
                    None => format!(
                        "{{ {}\n}} && {{ {}\n}}",
                        c.stop.replace("{name}", &n),
                        c.start.replace("{name}", &n)
                    ),
                },
            },
        }
    }

    fn script(&self, name: &str) -> String {
        format!("{}/{name}", self.init_dir.trim_end_matches('/'))
    }
}

/// Resolves `auto` on the host.
async fn detect(ctx: &ModuleContext, init_dir: &str, first: &str) -> Result<String, ModuleError> {
    let script = format!(
        "if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then echo systemd\n\
         elif [ -x {} ]; then echo sysv\n\
         elif command -v rc-service >/dev/null 2>&1; then echo openrc\n\
         else echo none; fi",
        quote(&format!("{}/{first}", init_dir.trim_end_matches('/')))
    );
    let out = ctx.probe(CommandSpec::shell(script)).await?;
    match out.stdout_text().trim() {
        m @ ("systemd" | "sysv" | "openrc") => Ok(m.to_string()),
        _ => Err(ModuleError::failed(format!(
            "service: no service manager found on the host (no systemd as init, no {init_dir}/{first}, no rc-service); set manager"
        ))),
    }
}

/// Fails when systemd is not the host's init: `systemctl is-active` would then call
/// every service stopped, and a plan would say "already stopped" of running daemons.
async fn systemd_runs(ctx: &ModuleContext) -> Result<(), ModuleError> {
    let out = ctx
        .probe(CommandSpec::shell(
            "[ -d /run/systemd/system ] || { ps -o comm= -p 1 2>/dev/null || echo unknown; exit 1; }",
        ))
        .await?;
    if out.success() {
        return Ok(());
    }
    Err(ModuleError::failed(format!(
        "service: manager systemd, but systemd is not running on this host (its init is {}): \
         set manager (service_manager in the OpenStack playbooks) to sysv, openrc or command",
        out.stdout_text().trim()
    )))
}

async fn running(ctx: &ModuleContext, m: &Manager, name: &str) -> Result<bool, ModuleError> {
    Ok(ctx
        .probe(CommandSpec::shell(m.status(name)))
        .await?
        .success())
}

/// Acts and waits until the status says `want_running`.
async fn act(
    ctx: &ModuleContext,
    m: &Manager,
    name: &str,
    action: Action,
    wait: Duration,
) -> Result<(), ModuleError> {
    let out = ctx.run(CommandSpec::shell(m.action(name, action))).await?;
    if !out.success() {
        return Err(failed_with(
            &format!("cannot {} {name}", action.verb()),
            out,
        ));
    }
    let want = action != Action::Stop;
    let deadline = Instant::now() + wait;
    loop {
        if running(ctx, m, name).await? == want {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(ModuleError::failed(format!(
                "{name} is still {} {} after `{}`",
                if want { "not running" } else { "running" },
                humantime::format_duration(wait),
                m.action(name, action)
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

fn word(running: bool) -> &'static str {
    if running { "running" } else { "stopped" }
}

/// Puts services back: `(name, was_running)`, in reverse order.
async fn restore(
    ctx: &ModuleContext,
    m: &Manager,
    list: &[(String, bool)],
    wait: Duration,
) -> Result<Vec<String>, ModuleError> {
    let mut done = Vec::new();
    for (name, was) in list.iter().rev() {
        if running(ctx, m, name).await? != *was {
            let action = if *was { Action::Start } else { Action::Stop };
            act(ctx, m, name, action, wait).await?;
            done.push(format!("{name} {}", word(*was)));
        }
    }
    Ok(done)
}

fn manager_of(a: &Args, kind: String) -> Manager {
    Manager {
        kind,
        pidfiles: a.pidfiles.clone(),
        init_dir: a.init_dir.clone(),
        commands: a.commands.as_ref().map(|c| Commands {
            start: c.start.clone(),
            stop: c.stop.clone(),
            status: c.status.clone(),
            restart: c.restart.clone(),
        }),
    }
}

#[async_trait]
impl Module for Service {
    fn doc(&self) -> &'static ModuleDoc {
        &DOC
    }

    fn validate(&self, args: &Node, file: &SourceFile) -> Vec<SourceError> {
        let mut errors = check_choice(args, file, "service", "state", STATES);
        errors.extend(check_choice(args, file, "service", "manager", MANAGERS));
        errors.extend(check_choice(args, file, "service", "missing", MISSING));
        match (args.get("name"), args.get("names")) {
            (Some(_), Some(n)) => errors.push(
                n.error(file, "`service` takes `name` or `names`, not both")
                    .with_help("put every service in names"),
            ),
            (None, None) => errors.push(
                args.error(file, "`service` needs `name` or `names`")
                    .with_help("e.g. names: [nova-api, nova-scheduler]"),
            ),
            _ => {}
        }
        errors.extend(validate_commands(args, file));
        errors
    }

    async fn run(&self, ctx: &ModuleContext, args: &Json) -> Result<Outcome, ModuleError> {
        let a: Args = parse_args("service", args)?;
        let state = choice("service", "state", &a.state, STATES)?;
        let kind = choice("service", "manager", &a.manager, MANAGERS)?.to_string();
        let wait = match &a.wait {
            Some(w) => duration_arg(w)?,
            None => Duration::from_secs(30),
        };
        let mut names = a.names.clone();
        if let Some(n) = &a.name {
            names.insert(0, n.clone());
        }
        if names.is_empty() {
            return Err(ModuleError::Args("service: no service named".into()));
        }
        if kind == "command" && a.commands.is_none() {
            return Err(ModuleError::Args(
                "service: manager command needs commands: {start, stop, status}".into(),
            ));
        }
        let kind = if kind == "auto" {
            detect(ctx, &a.init_dir, &names[0]).await?
        } else {
            kind
        };
        if kind == "systemd" {
            systemd_runs(ctx).await?;
        }
        let m = manager_of(&a, kind.clone());
        let skip_missing = choice("service", "missing", &a.missing, MISSING)? == "skip";

        let mut plan = Vec::new();
        let mut absent = Vec::new();
        for n in &names {
            if skip_missing
                && !ctx
                    .probe(CommandSpec::shell(m.installed(n)))
                    .await?
                    .success()
            {
                absent.push(n.clone());
                continue;
            }
            let was = running(ctx, &m, n).await?;
            let action = match (state, was) {
                ("started", false) => Some(Action::Start),
                ("stopped", true) => Some(Action::Stop),
                ("restarted", true) => Some(Action::Restart),
                ("restarted", false) => Some(Action::Start),
                _ => None,
            };
            plan.push((n.clone(), was, action));
        }
        let report = |after: &dyn Fn(usize) -> bool| -> Json {
            json!(
                plan.iter()
                    .enumerate()
                    .map(|(i, (n, was, act))| json!({
                        "name": n,
                        "before": word(*was),
                        "after": word(after(i)),
                        "changed": act.is_some(),
                    }))
                    .chain(absent.iter().map(|n| json!({
                        "name": n, "before": "absent", "after": "absent", "changed": false,
                    })))
                    .collect::<Vec<_>>()
            )
        };
        let absent_note = if absent.is_empty() {
            String::new()
        } else {
            format!(" (not installed: {})", absent.join(", "))
        };
        let acting: Vec<&str> = plan
            .iter()
            .filter(|p| p.2.is_some())
            .map(|p| p.0.as_str())
            .collect();
        let expected = |i: usize| match plan[i].2 {
            Some(Action::Stop) => false,
            Some(_) => true,
            None => plan[i].1,
        };
        if acting.is_empty() {
            return Ok(Outcome::ok()
                .with_data(json!({ "manager": kind, "services": report(&expected) }))
                .with_msg(format!(
                    "{}: already {}{absent_note}",
                    plan.iter()
                        .map(|p| p.0.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    if state == "stopped" {
                        "stopped"
                    } else {
                        "running"
                    }
                )));
        }
        let verb = match state {
            "started" => "start",
            "stopped" => "stop",
            _ => "restart",
        };
        if ctx.check {
            return Ok(Outcome::changed()
                .with_data(json!({ "manager": kind, "services": report(&expected) }))
                .with_msg(format!("would {verb} {}{absent_note}", acting.join(", "))));
        }
        let mut changed: Vec<(String, bool)> = Vec::new();
        for (n, was, action) in &plan {
            let Some(action) = action else { continue };
            if let Err(e) = act(ctx, &m, n, *action, wait).await {
                // Put back what this step already changed, then fail.
                let note = match restore(ctx, &m, &changed, wait).await {
                    Ok(done) if done.is_empty() => String::new(),
                    Ok(done) => format!(" (put back: {})", done.join(", ")),
                    Err(r) => format!(" (putting back the others failed too: {r})"),
                };
                return Err(ModuleError::failed(format!("{e}{note}")));
            }
            changed.push((n.clone(), *was));
        }
        let undo = json!({
            "manager": kind,
            "init_dir": a.init_dir,
            "commands": a.commands.as_ref().map(|c| json!({
                "start": c.start, "stop": c.stop, "status": c.status, "restart": c.restart,
            })),
            "wait_secs": wait.as_secs_f64(),
            "pidfiles": a.pidfiles,
            "services": changed.iter().map(|(n, w)| json!({ "name": n, "was_running": w })).collect::<Vec<_>>(),
        });
        let verb_past = match state {
            "started" => "started",
            "stopped" => "stopped",
            _ => "restarted",
        };
        Ok(Outcome::changed()
            .with_data(json!({ "manager": kind, "services": report(&expected) }))
            .with_undo(undo)
            .with_msg(format!("{verb_past} {}{absent_note}", acting.join(", "))))
    }

    async fn undo(
        &self,
        ctx: &ModuleContext,
        _args: &Json,
        undo: &Json,
    ) -> Result<Outcome, ModuleError> {
        let kind = undo
            .get("manager")
            .and_then(Json::as_str)
            .ok_or_else(|| ModuleError::failed("the undo data names no manager"))?;
        let commands = match undo.get("commands") {
            Some(Json::Null) | None => None,
            Some(c) => Some(serde_json::from_value::<Commands>(c.clone()).map_err(|e| {
                ModuleError::failed(format!("the undo data's commands are unreadable: {e}"))
            })?),
        };
        let m = Manager {
            kind: kind.to_string(),
            pidfiles: undo
                .get("pidfiles")
                .and_then(|p| serde_json::from_value(p.clone()).ok())
                .unwrap_or_default(),
            init_dir: undo
                .get("init_dir")
                .and_then(Json::as_str)
                .unwrap_or("/etc/init.d")
                .to_string(),
            commands,
        };
        let wait = undo
            .get("wait_secs")
            .and_then(Json::as_f64)
            .and_then(|w| Duration::try_from_secs_f64(w).ok())
            .unwrap_or(Duration::from_secs(30));
        let list: Vec<(String, bool)> = undo
            .get("services")
            .and_then(Json::as_array)
            .map(|v| {
                v.iter()
                    .filter_map(|s| {
                        Some((
                            s.get("name")?.as_str()?.to_string(),
                            s.get("was_running")?.as_bool()?,
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        if ctx.check {
            let mut would = Vec::new();
            for (n, was) in &list {
                if running(ctx, &m, n).await? != *was {
                    would.push(format!("{n} {}", word(*was)));
                }
            }
            return Ok(Outcome {
                changed: !would.is_empty(),
                ..Outcome::default()
            }
            .with_msg(format!("would put back: {}", would.join(", "))));
        }
        let done = restore(ctx, &m, &list, wait).await?;
        if done.is_empty() {
            return Ok(Outcome::ok().with_msg("every service is as it was"));
        }
        Ok(Outcome::changed().with_msg(format!("put back: {}", done.join(", "))))
    }
}

/// One service that another module stops and starts (the MariaDB server, for
/// `mariadb_backup`'s restore): the same managers and the same waiting as this module.
pub(crate) struct Control {
    m: Manager,
    name: String,
    wait: Duration,
}

impl Control {
    /// Resolves the manager (`auto` on the host) for the service `name`. `commands` is
    /// the rendered `{start, stop, status}` mapping of `manager: command`.
    pub(crate) async fn resolve(
        ctx: &ModuleContext,
        name: &str,
        manager: &str,
        commands: Option<&Json>,
        wait: Duration,
    ) -> Result<Control, ModuleError> {
        let kind = choice("service", "manager", manager, MANAGERS)?.to_string();
        let commands = match commands {
            None | Some(Json::Null) => None,
            Some(c) => Some(serde_json::from_value::<Commands>(c.clone()).map_err(|e| {
                ModuleError::Args(format!(
                    "commands must be {{start, stop, status}} shell templates: {e}"
                ))
            })?),
        };
        if kind == "command" && commands.is_none() {
            return Err(ModuleError::Args(
                "manager command needs commands: {start, stop, status}".into(),
            ));
        }
        let init_dir = init_d();
        if kind == "systemd" {
            systemd_runs(ctx).await?;
        }
        let kind = if kind == "auto" {
            detect(ctx, &init_dir, name).await?
        } else {
            kind
        };
        Ok(Control {
            m: Manager {
                kind,
                init_dir,
                commands,
                pidfiles: BTreeMap::new(),
            },
            name: name.to_string(),
            wait,
        })
    }

    /// The service and its manager, for messages: `mariadb (systemd)`.
    pub(crate) fn describe(&self) -> String {
        format!("{} ({})", self.name, self.m.kind)
    }

    /// Whether it runs now.
    pub(crate) async fn running(&self, ctx: &ModuleContext) -> Result<bool, ModuleError> {
        running(ctx, &self.m, &self.name).await
    }

    /// Stops it (when it runs) and waits until it is observed stopped.
    pub(crate) async fn stop(&self, ctx: &ModuleContext) -> Result<(), ModuleError> {
        if self.running(ctx).await? {
            act(ctx, &self.m, &self.name, Action::Stop, self.wait).await?;
        }
        Ok(())
    }

    /// Starts it (when it does not run) and waits until it is observed running.
    pub(crate) async fn start(&self, ctx: &ModuleContext) -> Result<(), ModuleError> {
        if !self.running(ctx).await? {
            act(ctx, &self.m, &self.name, Action::Start, self.wait).await?;
        }
        Ok(())
    }
}

/// Load-time check of `manager` and `commands` (here and wherever a service is
/// controlled, as in `mariadb_backup`'s restore): `manager: command` needs `commands`
/// with start, stop and status; `commands` is only for `manager: command`.
pub(crate) fn validate_commands(args: &Node, file: &SourceFile) -> Vec<SourceError> {
    let mut errors = Vec::new();
    let manager = args.get("manager").and_then(Node::as_str);
    match (manager, args.get("commands")) {
        (Some("command"), None) => errors.push(
            args.error(
                file,
                "`manager: command` needs `commands: {start, stop, status}`",
            )
            .with_help("shell templates; {name} is the service, status exit 0 = running"),
        ),
        (Some("command"), Some(c)) if c.as_map().is_some() => {
            for key in ["start", "stop", "status"] {
                if c.get(key).is_none() {
                    errors.push(
                        c.error(file, format!("`commands` needs `{key}`"))
                            .with_help("start, stop and status are required; restart is optional"),
                    );
                }
            }
        }
        (Some("command"), Some(_)) => {}
        (m, Some(c)) if m.is_none_or(|m| !m.contains("{{")) => errors.push(
            c.error(file, "`commands` is only for `manager: command`")
                .with_help("set manager: command"),
        ),
        _ => {}
    }
    errors
}
