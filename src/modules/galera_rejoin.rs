//! `galera_rejoin`: brings a Galera node back into its cluster by a full state transfer
//! (SST). It stops the server, moves the node's saved Galera state aside (`grastate.dat`,
//! `gvwstate.dat` and its write-set cache `galera.cache`, whose old history would be
//! mistaken for the new cluster's), so that the node asks the cluster for a whole copy
//! instead of an incremental one, starts it and waits until it is `Synced`. For the other nodes of a cluster whose
//! first node was restored from a physical backup and bootstrapped a new cluster
//! (restore-control-plane.yml's `galera-rejoin` step): their own data is of the old
//! cluster and must be replaced.
//!
//! Rollback: stops the node and removes the `grastate.dat` its state transfer wrote,
//! so that its next start takes a whole copy again, from the cluster as the rollback
//! leaves it; then brings back the state observed before the step: a node that was
//! stopped (the restore playbook stops it first) stays stopped, for the rollback of the
//! step that stopped it; a node that was running is started again and waited for.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::backup_common::refuse_root;
use super::copy::sibling;
use super::mysql::{Client, Login, validate_login, with_login_args};
use super::service::{Control, MANAGERS, validate_commands};
use super::{
    ArgKind, Module, ModuleContext, ModuleDoc, ModuleError, Outcome, arg, duration_arg, parse_args,
};
use crate::connection::{CommandSpec, quote};
use crate::error::{SourceError, SourceFile};
use crate::yaml::Node;

/// The `galera_rejoin` module.
pub struct GaleraRejoin;

static DOC: ModuleDoc = ModuleDoc {
    name: "galera_rejoin",
    summary: "Bring a Galera node back into its cluster by a full state transfer (SST)",
    description: "Stops the node's server (`service`, through the `service` module's managers), \
moves the node's saved Galera state (`grastate.dat`, `gvwstate.dat`, and the write-set cache \
`galera.cache`, whose old history would be taken for the new cluster's) into \
`.<datadir>.lifeboat-galera-state-<run id>-...` beside the datadir (a node without a saved state \
asks its cluster for a whole copy), starts the server and \
waits (`wait`) until it answers with the login arguments and reports \
`wsrep_local_state_comment` = Synced. Run it on the other nodes of a cluster once its first node \
was restored (`mariadb_backup` restore with `galera: true`) and bootstrapped a new cluster: their \
data is the old cluster's, and an incremental transfer would apply the new cluster's writes to it. \
The node's server configuration (wsrep_cluster_address, wsrep_sst_method and its credentials) \
is the server's own. Always `changed`. The dry run says what it would stop, move and start; \
nothing changes.",
    free_form: None,
    args: with_login_args![
        arg(
            "datadir",
            ArgKind::Str,
            true,
            "the node's datadir, e.g. /var/lib/mysql",
        ),
        arg(
            "service",
            ArgKind::Str,
            false,
            "the server's service (default mariadb)",
        ),
        arg(
            "manager",
            ArgKind::Str,
            false,
            "how to stop and start it, as in the service module: auto | systemd | sysv | openrc | docker | podman | command (default auto)",
        ),
        arg(
            "commands",
            ArgKind::Map,
            false,
            "with manager command: start, stop, status shell templates, as in the service module",
        ),
        arg(
            "wait",
            ArgKind::Duration,
            false,
            "how long to wait for the server to stop, to start, and to be Synced after its state transfer (default 10m)",
        ),
    ],
    open_args: false,
    example: "- id: galera-rejoin\n  galera_rejoin:\n    datadir: /var/lib/mysql\n    service: mariadb\n    defaults_file: /etc/mysql/debian.cnf\n",
    returns: &[
        ("datadir", "the datadir"),
        (
            "state_aside, moved",
            "the directory the saved state went to, and the files moved there",
        ),
        ("state", "wsrep_local_state_comment at the end: Synced"),
        ("cluster_size", "wsrep_cluster_size at the end"),
        ("seconds", "from the stop to Synced"),
    ],
    rollback: "stops the node and removes the grastate.dat its state transfer wrote: its next \
start takes a whole copy from the cluster again (the old state stays aside: it describes data \
the transfer replaced). Then the node is left as it was before the step: stopped when it was \
stopped (its next start is then the rollback of the step that stopped it), started again and \
waited for until Synced (a full state transfer from the cluster as it is then) when it was \
running.",
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Args {
    datadir: String,
    service: Option<String>,
    manager: Option<String>,
    commands: Option<Json>,
    wait: Option<Json>,
    #[serde(flatten)]
    login: Login,
}

impl Args {
    fn wait(&self) -> Result<Duration, ModuleError> {
        self.wait
            .as_ref()
            .map_or(Ok(Duration::from_secs(600)), duration_arg)
    }

    fn datadir(&self) -> Result<String, ModuleError> {
        let d = self.datadir.trim_end_matches('/').to_string();
        if d.trim().is_empty() {
            return Err(ModuleError::Args(
                "galera_rejoin: datadir cannot be empty or /".into(),
            ));
        }
        refuse_root("galera_rejoin", &d)?;
        Ok(d)
    }

    async fn control(&self, ctx: &ModuleContext) -> Result<Control, ModuleError> {
        Control::resolve(
            ctx,
            self.service.as_deref().unwrap_or("mariadb"),
            self.manager.as_deref().unwrap_or("auto"),
            self.commands.as_ref(),
            self.wait()?,
        )
        .await
    }
}

/// The node's saved Galera state in its datadir: moved aside before a full transfer.
const STATE_FILES: &[&str] = &["grastate.dat", "gvwstate.dat", "galera.cache"];

/// A status variable of the server, `None` while it does not answer.
async fn status(ctx: &ModuleContext, client: &Client, name: &str) -> Option<String> {
    let sets = client
        .query(ctx, &format!("SHOW STATUS LIKE '{name}'"), None, true)
        .await
        .ok()?;
    sets.into_iter()
        .flat_map(|s| s.rows)
        .find_map(|r| r.into_iter().nth(1).and_then(|(_, v)| v))
}

/// Waits until the node reports Synced, for up to `wait`.
async fn synced(ctx: &ModuleContext, client: &Client, wait: Duration) -> Result<(), ModuleError> {
    let deadline = Instant::now() + wait;
    let mut last = None;
    loop {
        let state = status(ctx, client, "wsrep_local_state_comment").await;
        if state.as_deref() == Some("Synced") {
            return Ok(());
        }
        if state.is_some() {
            last = state;
        }
        if Instant::now() >= deadline {
            return Err(ModuleError::failed(format!(
                "the node is not Synced {} after it was started ({}): see the server's error log for its state transfer",
                humantime::format_duration(wait),
                last.map_or("it does not answer".to_string(), |s| format!("it is {s}"))
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[async_trait]
impl Module for GaleraRejoin {
    fn doc(&self) -> &'static ModuleDoc {
        &DOC
    }

    fn validate(&self, args: &Node, file: &SourceFile) -> Vec<SourceError> {
        let mut errors =
            super::backup_common::check_choice(args, file, "galera_rejoin", "manager", MANAGERS);
        errors.extend(validate_login(args, file));
        errors.extend(validate_commands(args, file));
        errors
    }

    async fn run(&self, ctx: &ModuleContext, args: &Json) -> Result<Outcome, ModuleError> {
        let a: Args = parse_args("galera_rejoin", args)?;
        let datadir = a.datadir()?;
        let control = a.control(ctx).await?;
        let wait = a.wait()?;
        let aside = sibling(&datadir, "galera-state-", &ctx.run_id);
        // For the rollback: the node comes back to this state.
        let was_running = control.running(ctx).await?;
        if ctx.check {
            // What is there now; a running node's gvwstate.dat goes with its stop.
            let mut moved = Vec::new();
            for f in STATE_FILES {
                if ctx.stat(&format!("{datadir}/{f}")).await?.is_some() {
                    moved.push(*f);
                }
            }
            return Ok(Outcome::changed()
                .with_data(json!({
                    "datadir": datadir,
                    "state_aside": (!moved.is_empty()).then_some(aside.clone()),
                    "moved": moved,
                }))
                .with_msg(format!(
                    "would stop {c}, {what}start {c} and wait until it is Synced (a full state transfer)",
                    c = control.describe(),
                    what = if moved.is_empty() {
                        String::new()
                    } else {
                        format!("move {} of {datadir} aside to {aside}, ", moved.join(", "))
                    }
                )));
        }
        let client = Client::open(ctx, &a.login).await?;
        let started = Instant::now();
        let result = async {
            control.stop(ctx).await?;
            // The files there once the server is stopped: a clean shutdown of a running
            // node removes its gvwstate.dat.
            let mut script = format!("set -e\naside={}; made=\n", quote(&aside));
            for f in STATE_FILES {
                script.push_str(&format!(
                    "if [ -e {p} ]; then\n  [ -n \"$made\" ] || {{ mkdir -m 0700 -- \"$aside\"; made=1; }}\n  mv -- {p} \"$aside\"/\n  echo {f}\nfi\n",
                    p = quote(&format!("{datadir}/{f}")),
                ));
            }
            let out = ctx.probe(CommandSpec::shell(script)).await?;
            if !out.success() {
                return Err(ModuleError::Failed {
                    message: format!(
                        "cannot move the Galera state of {datadir} aside to {aside}: {}",
                        out.stderr_text().trim()
                    ),
                    output: Some(out),
                });
            }
            let moved: Vec<String> = out.stdout_text().lines().map(str::to_string).collect();
            control.start(ctx).await?;
            synced(ctx, &client, wait).await?;
            let size = status(ctx, &client, "wsrep_cluster_size").await;
            Ok((size, moved))
        }
        .await;
        client.close(ctx).await;
        let (size, moved) = result?;
        Ok(Outcome::changed()
            .with_data(json!({
                "datadir": datadir,
                "state_aside": (!moved.is_empty()).then_some(aside.clone()),
                "moved": moved,
                "state": "Synced",
                "cluster_size": size.as_deref().and_then(|s| s.parse::<u64>().ok()),
                "seconds": started.elapsed().as_secs_f64(),
            }))
            .with_undo(json!({ "datadir": datadir, "was_running": was_running }))
            .with_msg(format!(
                "{} rejoined its cluster by a full state transfer: Synced{}",
                control.describe(),
                size.map(|s| format!(", cluster size {s}"))
                    .unwrap_or_default()
            )))
    }

    async fn undo(
        &self,
        ctx: &ModuleContext,
        args: &Json,
        undo: &Json,
    ) -> Result<Outcome, ModuleError> {
        let a: Args = parse_args("galera_rejoin", args)?;
        let Some(datadir) = undo.get("datadir").and_then(Json::as_str) else {
            return Ok(Outcome::ok().with_msg("nothing to undo"));
        };
        let control = a.control(ctx).await?;
        let grastate = format!("{datadir}/grastate.dat");
        // Undo data of a lifeboat that did not record it: the node was left stopped.
        let was_running = undo
            .get("was_running")
            .and_then(Json::as_bool)
            .unwrap_or(false);
        let c = control.describe();
        if ctx.check {
            return Ok(Outcome::changed().with_msg(if was_running {
                format!(
                    "would stop {c}, remove {grastate} and start {c} again (it ran before the step): it takes a whole copy from the cluster"
                )
            } else {
                format!("would stop {c} and remove {grastate} (it was stopped before the step)")
            }));
        }
        control.stop(ctx).await?;
        let out = ctx
            .probe(CommandSpec::argv(["rm", "-f", "--", grastate.as_str()]))
            .await?;
        if !out.success() {
            return Err(ModuleError::Failed {
                message: format!("cannot remove {grastate}: {}", out.stderr_text().trim()),
                output: Some(out),
            });
        }
        if !was_running {
            return Ok(Outcome::changed().with_msg(format!(
                "stopped {c}, as it was before the step, and removed {grastate}: its next start takes a whole copy from the cluster"
            )));
        }
        let client = Client::open(ctx, &a.login).await?;
        let result = async {
            control.start(ctx).await?;
            synced(ctx, &client, a.wait()?).await
        }
        .await;
        client.close(ctx).await;
        result.map_err(|e| {
            ModuleError::failed(format!(
                "{e} ({c} ran before the step; it was stopped, {grastate} removed and started again to rejoin the cluster as it is now by a whole copy: see the server's error log, and start it once the cluster it joins runs)"
            ))
        })?;
        Ok(Outcome::changed().with_msg(format!(
            "removed {grastate} and started {c} again, as it ran before the step: Synced with the cluster by a whole copy"
        )))
    }
}
