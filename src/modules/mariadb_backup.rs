//! `mariadb_backup`: hot physical backups of a MariaDB server with `mariadb-backup`,
//! kept as chains (a full backup and incrementals on top of it, see
//! [`super::backup_chain`]), and the way back: `prepare` (unpack and apply the chain,
//! in order, into a scratch directory) and `restore` (prepare beside the datadir, stop
//! the server, move the old datadir aside, move the prepared files in, fix their
//! ownership, start the server and wait until it answers). The old datadir stays aside,
//! so that a failure, or the rollback of a later step, puts it back and brings the
//! server back to the state it was in before the step (running, or stopped); a
//! rollback keeps the restored datadir aside, never removes it.
//!
//! Backups stream (`--stream=xbstream`) through zstd (gzip where zstd is missing) into
//! a hidden directory of the chain, which is renamed to its number only once the
//! stream, its sha256 and its manifest are written: a backup that is not complete never
//! looks complete. The server's password reaches the tool through the 0600 option
//! file of [`Client`], never a command line.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::backup_chain::{self, Backup, Chain, Kind, LIST_SCRIPT, Upto};
use super::backup_common::{check_choice, choice, failed_with};
use super::copy::sibling;
use super::mysql::{Client, Login, PIPEFAIL, validate_login, with_login_args};
use super::service::{Control, MANAGERS, validate_commands};
use super::{
    ArgKind, Module, ModuleContext, ModuleDoc, ModuleError, Outcome, arg, duration_arg, parse_args,
};
use crate::connection::{CommandSpec, quote};
use crate::error::{SourceError, SourceFile};
use crate::template::Templates;
use crate::yaml::{Node, Value};

/// The `mariadb_backup` module.
pub struct MariadbBackup;

const ACTIONS: &[&str] = &["full", "incremental", "prepare", "restore", "verify"];
const COMPRESS: &[&str] = &["auto", "zstd", "gzip"];

/// The arguments only some actions take, and which.
const ONLY_FOR: &[(&str, &[&str])] = &[
    ("compress", &["full", "incremental"]),
    ("parallel", &["full", "incremental"]),
    ("full_if_missing", &["incremental"]),
    ("max_incrementals", &["incremental"]),
    ("galera", &["full", "incremental", "restore"]),
    ("upto", &["prepare", "restore", "verify"]),
    ("target", &["prepare", "verify"]),
    ("datadir", &["restore"]),
    ("owner", &["restore"]),
    ("service", &["restore"]),
    ("manager", &["restore"]),
    ("commands", &["restore"]),
    ("wait", &["restore"]),
];

static DOC: ModuleDoc = ModuleDoc {
    name: "mariadb_backup",
    summary: "Physical MariaDB backups (full and incremental chains) with mariadb-backup, and their prepare and restore",
    description: "Keeps chains in `dir` on the database host: `<dir>/<chain>/000-full/`, \
`001-incr/`, ... each with the stream (`backup.xb.zst`, or `.gz` where zstd is missing), \
`xtrabackup_checkpoints`, `xtrabackup_info` and a `manifest.json` (format, chain, number, kind, \
parent, from_lsn/to_lsn/last_lsn, size, sha256, compression, server and tool versions, host, \
start and end time, Galera position) written last. Actions: \
`full` starts a new chain (named `chain`, default the run id) with a hot full backup \
(`mariadb-backup --backup --stream=xbstream`, piped under pipefail through the compressor into a \
hidden directory, renamed to its number once complete). `incremental` adds the next backup to a \
chain (`chain`, default the newest one with a full backup), from the LSN where its last backup \
ended; with `full_if_missing` it makes a full backup in a new chain when there is no chain to add \
to (or the newest one is broken), and with `max_incrementals` when the chain has that many \
incrementals already. With `galera`, the node is desynced (`wsrep_desync`) for the backup and \
resynced after it (also when it fails), and `--galera-info` records its position. \
`prepare` unpacks the chain in order, up to `upto` (default its last backup), each piece's \
sha256 checked against its manifest, and applies it (`--prepare`, then `--prepare \
--incremental-dir` per incremental) into `target`, which must be absent or empty. `verify` proves a chain opens, as a restore would need it to: it prepares the chain \
into a scratch directory, starts a throw-away server on it (`mariadbd --skip-networking \
--skip-grant-tables` on a socket of its own), checks every table (`CHECK TABLE`), records the \
databases, the number of tables and their `CHECKSUM TABLE`s, stops the server and removes the \
scratch directory; the host needs mariadb-server (and never touches a running server). `restore` checks \
the chain the same way before anything is stopped (a missing, unfinished or out-of-order piece is \
refused with what to do), prepares it in a directory beside `datadir` while the server still \
runs, then stops the server (`service`, through the `service` module's managers), moves the old \
datadir aside to `.<datadir>.lifeboat-old-<run id>-...`, moves the prepared files into a new empty \
datadir (`mariadb-backup --move-back`), gives them the old datadir's owner (or `owner`), starts the \
server and waits (`wait`) until it answers a query with the login arguments. With `galera` it \
writes `grastate.dat` from the backup's Galera position with `safe_to_bootstrap: 1`, for a start \
that bootstraps a new cluster (the other nodes then join it by SST). When anything fails after \
the server was stopped, the step puts the old datadir back (removing the restored files: the \
chain is intact) and, when the server was running before the step, starts it on it, before it \
fails. After a successful restore the old datadir stays aside (its path is in the result): remove \
it once the restore is verified. Every action but `verify` is `changed`. The dry run checks the chain, \
the server and the directories and says what would be made, stopped, moved and started; nothing \
changes.",
    free_form: None,
    args: with_login_args![
        arg(
            "action",
            ArgKind::Str,
            true,
            "full | incremental | prepare | restore | verify",
        ),
        arg(
            "dir",
            ArgKind::Str,
            true,
            "the chain store on the host (it must exist): one directory per chain",
        ),
        arg(
            "chain",
            ArgKind::Str,
            false,
            "the chain: with full, the new chain's name (default the run id); otherwise the chain to add to, prepare or restore (default the newest one with a full backup)",
        ),
        arg(
            "upto",
            ArgKind::Any,
            false,
            "prepare/restore: the last backup to apply, by number (2) or name (002-incr) (default the chain's last)",
        ),
        arg(
            "compress",
            ArgKind::Str,
            false,
            "full/incremental: auto (zstd when the host has it, else gzip), zstd or gzip (default auto)",
        ),
        arg(
            "parallel",
            ArgKind::Int,
            false,
            "full/incremental: files copied at once (mariadb-backup --parallel; default 1)",
        ),
        arg(
            "full_if_missing",
            ArgKind::Bool,
            false,
            "incremental: make a full backup in a new chain when there is no whole chain to add to (default false: fail)",
        ),
        arg(
            "max_incrementals",
            ArgKind::Int,
            false,
            "incremental: start a new chain with a full backup when the chain has this many incrementals",
        ),
        arg(
            "galera",
            ArgKind::Bool,
            false,
            "backup: desync the node while it is copied and record its position; restore: write grastate.dat to bootstrap from the restored node (default false)",
        ),
        arg(
            "target",
            ArgKind::Str,
            false,
            "prepare: where the prepared datadir goes (absent or empty); verify: the scratch directory (default a hidden one in dir, removed after)",
        ),
        arg(
            "datadir",
            ArgKind::Str,
            false,
            "restore: the server's datadir, e.g. /var/lib/mysql",
        ),
        arg(
            "owner",
            ArgKind::Str,
            false,
            "restore: user:group of the restored files (default the old datadir's, e.g. mysql:mysql)",
        ),
        arg(
            "service",
            ArgKind::Str,
            false,
            "restore: the server's service (default mariadb)",
        ),
        arg(
            "manager",
            ArgKind::Str,
            false,
            "restore: how to stop and start it, as in the service module: auto | systemd | sysv | openrc | docker | podman | command (default auto)",
        ),
        arg(
            "commands",
            ArgKind::Map,
            false,
            "restore, with manager command: start, stop, status shell templates, as in the service module",
        ),
        arg(
            "wait",
            ArgKind::Duration,
            false,
            "restore: how long to wait for the server to stop, to start and to answer (default 2m)",
        ),
    ],
    open_args: false,
    example: "- id: db-backup\n  mariadb_backup:\n    action: incremental\n    dir: /var/backups/mariadb\n    full_if_missing: true\n    max_incrementals: 6\n    login_user: backup\n    login_password: \"{{ db_backup_password }}\"\n\n- id: db-restore\n  mariadb_backup:\n    action: restore\n    dir: /var/backups/mariadb\n    datadir: /var/lib/mysql\n    service: mariadb\n    login_user: backup\n    login_password: \"{{ db_backup_password }}\"\n",
    returns: &[
        (
            "kind",
            "full/incremental: full or incremental (what was made)",
        ),
        ("chain", "the chain"),
        (
            "name",
            "full/incremental: the backup's directory name, e.g. 001-incr",
        ),
        ("path", "full/incremental: the backup's directory"),
        (
            "from_lsn, to_lsn",
            "the LSN range of the backup (prepare/restore: to_lsn of the last applied)",
        ),
        ("size, sha256", "full/incremental: the stream file's"),
        (
            "manifest",
            "full/incremental: the manifest (also in <path>/manifest.json)",
        ),
        ("backups", "prepare/restore: the backups applied, in order"),
        ("target", "prepare: the prepared datadir"),
        (
            "databases, tables, checksums",
            "verify: the databases of the prepared chain, its number of tables, and CHECKSUM TABLE by table",
        ),
        (
            "datadir, old_datadir",
            "restore: the datadir, and where the old one was moved aside",
        ),
        (
            "prepare_seconds, downtime_seconds",
            "restore: time to unpack and apply the chain; time from the stop to the first answer",
        ),
    ],
    rollback: "full/incremental: removes the backup made (and the chain directory a full backup \
made). prepare: removes the prepared directory. verify: nothing (it leaves nothing behind). \
restore: brings back the state of before the step: stops the server, moves the restored datadir \
aside to `<datadir>.lifeboat-restored-<run id>` (never removes it: it may be the best copy of the \
data there is; the rollback's message prints its path), moves the old datadir back (an empty one \
too; none when there was none) and starts the server only when it was running before the step: \
a server that was down, its datadir lost, stays down, and the run ends with the rollback done \
(exit 2), the restored copy waiting to be moved back by hand.",
};

#[derive(Debug, Deserialize)]
struct Args {
    action: String,
    dir: String,
    chain: Option<String>,
    #[serde(default)]
    upto: Json,
    compress: Option<String>,
    #[serde(default, deserialize_with = "number")]
    parallel: Option<u64>,
    #[serde(default, deserialize_with = "flag")]
    full_if_missing: bool,
    #[serde(default, deserialize_with = "number")]
    max_incrementals: Option<u64>,
    #[serde(default, deserialize_with = "flag")]
    galera: bool,
    target: Option<String>,
    datadir: Option<String>,
    owner: Option<String>,
    service: Option<String>,
    manager: Option<String>,
    commands: Option<Json>,
    wait: Option<Json>,
    #[serde(flatten)]
    login: Login,
}

/// A whole number, given as one or as the text of one (`-e max_incrementals=6`).
fn number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match Option::<Json>::deserialize(d)? {
        None | Some(Json::Null) => Ok(None),
        Some(Json::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64()),
        Some(Json::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Json::String(s)) if s.trim().parse::<u64>().is_ok() => Ok(s.trim().parse().ok()),
        Some(other) => Err(serde::de::Error::custom(format!(
            "expected a whole number, found {other}"
        ))),
    }
}

/// true or false, given as a boolean or as its text (`-e galera=true`).
fn flag<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    match Option::<Json>::deserialize(d)? {
        None | Some(Json::Null) => Ok(false),
        Some(Json::Bool(b)) => Ok(b),
        Some(Json::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => Ok(true),
            "false" | "no" | "off" | "0" | "" => Ok(false),
            _ => Err(serde::de::Error::custom(format!(
                "expected true or false, found `{s}`"
            ))),
        },
        Some(other) => Err(serde::de::Error::custom(format!(
            "expected true or false, found {other}"
        ))),
    }
}

impl Args {
    fn wait(&self) -> Result<Duration, ModuleError> {
        self.wait
            .as_ref()
            .map_or(Ok(Duration::from_secs(120)), duration_arg)
    }

    fn chain(&self) -> Option<&str> {
        self.chain.as_deref().filter(|c| !c.trim().is_empty())
    }
}

/// Shell lines finding the tools as `$mb` (mariadb-backup) and `$mbs` (mbstream).
const FIND_TOOLS: &str = "mb=$(command -v mariadb-backup || command -v mariabackup) || { echo 'mariadb-backup is not installed on the host (apt-get install mariadb-backup)' >&2; exit 127; }\n\
mbs=$(command -v mbstream) || { echo 'mbstream is not installed on the host (it comes with mariadb-backup)' >&2; exit 127; }\n";

#[async_trait]
impl Module for MariadbBackup {
    fn doc(&self) -> &'static ModuleDoc {
        &DOC
    }

    fn validate(&self, args: &Node, file: &SourceFile) -> Vec<SourceError> {
        let mut errors = check_choice(args, file, "mariadb_backup", "action", ACTIONS);
        errors.extend(check_choice(
            args,
            file,
            "mariadb_backup",
            "compress",
            COMPRESS,
        ));
        errors.extend(check_choice(
            args,
            file,
            "mariadb_backup",
            "manager",
            MANAGERS,
        ));
        errors.extend(validate_login(args, file));
        let action = args
            .get("action")
            .and_then(Node::as_str)
            .filter(|a| ACTIONS.contains(a));
        if let Some(action) = action {
            for (key, actions) in ONLY_FOR {
                if let Some(n) = args.get(key)
                    && !actions.contains(&action)
                {
                    errors.push(
                        n.error(
                            file,
                            format!("`{key}` is not an argument of action {action}"),
                        )
                        .with_help(format!("`{key}` is for action {}", actions.join(" or "))),
                    );
                }
            }
            for (key, needed_by) in [("target", "prepare"), ("datadir", "restore")] {
                // verify makes its own scratch directory when target is not given
                if action == needed_by && args.get(key).is_none() {
                    errors.push(
                        args.error(file, format!("action {action} needs `{key}`"))
                            .with_help(match key {
                                "target" => "e.g. target: /var/tmp/prepared (absent or empty)",
                                _ => "e.g. datadir: /var/lib/mysql",
                            }),
                    );
                }
            }
        }
        if let Some(n) = args.get("chain")
            && let Some(c) = n.as_str()
            && !Templates::is_template(c)
            && (c.is_empty() || c.contains('/') || c.starts_with('.'))
        {
            errors.push(
                n.error(file, format!("`{c}` is not a chain name"))
                    .with_help("a chain is a directory name in dir: no `/`, not starting with `.`"),
            );
        }
        if let Some(n) = args.get("upto")
            && !matches!(&n.value, Value::Str(s) if Templates::is_template(s))
            && let Err(e) = Upto::from_json(&n.to_json())
        {
            errors.push(
                n.error(file, e)
                    .with_help("e.g. upto: 2, or upto: 002-incr"),
            );
        }
        for key in ["parallel", "max_incrementals"] {
            if let Some(n) = args.get(key)
                && let Value::Int(i) = n.value
                && (i < 0 || (key == "parallel" && i == 0))
            {
                errors.push(n.error(file, format!("`{key}` must be a positive number")));
            }
        }
        errors.extend(validate_commands(args, file));
        errors
    }

    async fn run(&self, ctx: &ModuleContext, args: &Json) -> Result<Outcome, ModuleError> {
        let a: Args = parse_args("mariadb_backup", args)?;
        match choice("mariadb_backup", "action", &a.action, ACTIONS)? {
            "full" => backup(ctx, &a, Kind::Full).await,
            "incremental" => backup(ctx, &a, Kind::Incremental).await,
            "prepare" => prepare(ctx, &a).await,
            "verify" => verify(ctx, &a).await,
            _ => restore(ctx, &a).await,
        }
    }

    async fn undo(
        &self,
        ctx: &ModuleContext,
        args: &Json,
        undo: &Json,
    ) -> Result<Outcome, ModuleError> {
        let a: Args = parse_args("mariadb_backup", args)?;
        let text = |k: &str| undo.get(k).and_then(Json::as_str).map(str::to_string);
        match a.action.as_str() {
            "verify" => Ok(Outcome::ok().with_msg("nothing to undo")),
            "full" | "incremental" | "prepare" => {
                let mut paths: Vec<String> = text("path").into_iter().collect();
                paths.extend(text("made_chain"));
                if paths.is_empty() {
                    return Ok(Outcome::ok().with_msg("nothing to undo"));
                }
                if ctx.check {
                    return Ok(
                        Outcome::changed().with_msg(format!("would remove {}", paths.join(", ")))
                    );
                }
                let mut argv = vec!["rm".to_string(), "-rf".into(), "--".into()];
                argv.extend(paths.iter().cloned());
                let out = ctx.probe(CommandSpec::argv(argv)).await?;
                if !out.success() {
                    return Err(failed_with("cannot remove what the step made", out));
                }
                Ok(Outcome::changed().with_msg(format!("removed {}", paths.join(", "))))
            }
            _ => undo_restore(ctx, &a, undo).await,
        }
    }
}

/// The rollback of a restore: the state of before the step comes back. The restored
/// datadir is moved aside (never removed), the old one moved back (an empty one too:
/// that is what was there), and the server is started only when it ran before the step
/// (a server that was down, its datadir lost, stays down).
async fn undo_restore(ctx: &ModuleContext, a: &Args, undo: &Json) -> Result<Outcome, ModuleError> {
    let text = |k: &str| undo.get(k).and_then(Json::as_str).map(str::to_string);
    let Some(datadir) = text("datadir") else {
        return Ok(Outcome::ok().with_msg("nothing to undo"));
    };
    let old = text("old_datadir");
    // Recorded by a lifeboat that did not observe the server before the step: it
    // always ran on the old datadir, and a missing datadir was left alone.
    let observed = undo.get("was_running").and_then(Json::as_bool);
    if observed.is_none() && old.is_none() {
        return Ok(
            Outcome::ok().with_msg("no datadir was there before the restore: nothing to put back")
        );
    }
    let was_running = observed.unwrap_or(true);
    let old_empty = undo
        .get("old_datadir_empty")
        .and_then(Json::as_bool)
        .unwrap_or(false);
    let control = control(ctx, a).await?;
    let c = control.describe();
    let stem = restored_stem(&datadir, &ctx.run_id);
    let before = match (&old, old_empty) {
        (None, _) => format!("leave no {datadir} (there was none before the step)"),
        (Some(_), true) => format!("put the old, empty {datadir} back"),
        (Some(old), false) => format!("put {old} back as {datadir}"),
    };
    let server = if was_running {
        format!("start {c} (it ran before the step)")
    } else {
        format!("leave {c} stopped (it was stopped before the step)")
    };
    if ctx.check {
        return Ok(Outcome::changed().with_msg(format!(
            "would stop {c}, move the restored datadir aside to {stem} (kept, not removed), {before} and {server}"
        )));
    }
    let kept = swap_back(ctx, &control, &datadir, old.as_deref(), Replaced::KeepAside).await?;
    if was_running {
        let client = Client::open(ctx, &a.login).await?;
        let result = async {
            control.start(ctx).await?;
            answers(ctx, &client, a.wait()?).await
        }
        .await;
        client.close(ctx).await;
        result.map_err(|e| {
            ModuleError::failed(format!(
                "{e} (the datadir of before the restore is back in {datadir}, {c} does not run on it; the restored datadir is kept at {}: move it back to {datadir} and start {c} to run on the restored data)",
                if kept.is_empty() { stem.clone() } else { kept.join(", ") }
            ))
        })?;
    }
    let kept = if kept.is_empty() {
        "there was no restored datadir to keep".to_string()
    } else {
        format!(
            "the restored datadir is kept at {} (not removed: move it back to {datadir} to use it, or remove it once it is not needed)",
            kept.join(", ")
        )
    };
    let now = match (&old, old_empty) {
        (None, _) => format!("there is no {datadir}, as before the step"),
        (Some(_), true) => format!("the old, empty {datadir} is back"),
        (Some(_), false) => format!("the old datadir is back as {datadir}"),
    };
    let server = if was_running {
        format!("{c} runs on it")
    } else {
        format!("{c} is stopped, as it was before the step")
    };
    Ok(Outcome::changed().with_msg(format!("{kept}; {now}; {server}")))
}

/// Lists the chains of the store `dir`.
async fn chains(ctx: &ModuleContext, dir: &str) -> Result<Vec<Chain>, ModuleError> {
    let out = ctx
        .probe(CommandSpec::shell(format!(
            "dir={}\n{LIST_SCRIPT}",
            quote(dir)
        )))
        .await?;
    match out.rc {
        Some(0) => Ok(backup_chain::parse_listing(&out.stdout_text())),
        Some(3) => Err(ModuleError::failed(format!(
            "the chain store {dir} does not exist on the host (create it with a `file` step, state: directory)"
        ))),
        _ => Err(failed_with(
            &format!("cannot list the chains in {dir}"),
            out,
        )),
    }
}

/// Joins a directory and a name.
fn join(dir: &str, name: &str) -> String {
    format!("{}/{name}", dir.trim_end_matches('/'))
}

/// What a backup step will make.
struct BackupPlan {
    kind: Kind,
    chain: String,
    index: u32,
    /// The backup it builds on (incremental).
    parent: Option<Backup>,
    /// Why a full backup was made where an incremental was asked for.
    why_full: Option<String>,
}

fn plan_backup(
    ctx: &ModuleContext,
    a: &Args,
    chains: &[Chain],
    asked: Kind,
) -> Result<BackupPlan, ModuleError> {
    let new_chain = |why: Option<String>| -> Result<BackupPlan, ModuleError> {
        let name = match (asked, a.chain()) {
            (Kind::Full, Some(c)) => c.to_string(),
            _ => ctx.run_id.clone(),
        };
        if chains.iter().any(|c| c.name == name) {
            return Err(ModuleError::failed(format!(
                "chain {name} exists already in {}: a full backup starts a new chain (leave chain out to name it after the run)",
                a.dir
            )));
        }
        Ok(BackupPlan {
            kind: Kind::Full,
            chain: name,
            index: 0,
            parent: None,
            why_full: why,
        })
    };
    if asked == Kind::Full {
        return new_chain(None);
    }
    let chain = match backup_chain::pick(chains, a.chain(), &a.dir) {
        Ok(c) => c,
        Err(e) if a.full_if_missing && a.chain().is_none() => return new_chain(Some(e)),
        Err(e) => {
            return Err(ModuleError::failed(format!(
                "{e}{}",
                if a.chain().is_none() {
                    " (or set full_if_missing: true)"
                } else {
                    ""
                }
            )));
        }
    };
    let pieces = match backup_chain::verify(chain, None) {
        Ok(p) => p,
        Err(e) if a.full_if_missing && a.chain().is_none() => return new_chain(Some(e)),
        Err(e) => return Err(ModuleError::failed(e)),
    };
    if let Some(max) = a.max_incrementals
        && a.chain().is_none()
        && chain.incrementals() as u64 >= max
    {
        return new_chain(Some(format!(
            "chain {} has {} incrementals (max_incrementals {max})",
            chain.name,
            chain.incrementals()
        )));
    }
    let last = pieces
        .last()
        .ok_or_else(|| ModuleError::failed(format!("chain {} has no backups", chain.name)))?;
    Ok(BackupPlan {
        kind: Kind::Incremental,
        chain: chain.name.clone(),
        index: last.index + 1,
        parent: Some((*last).clone()),
        why_full: None,
    })
}

async fn backup(ctx: &ModuleContext, a: &Args, asked: Kind) -> Result<Outcome, ModuleError> {
    let dir_missing = !matches!(ctx.stat(&a.dir).await?, Some(s) if s.kind == "directory");
    if dir_missing && ctx.check {
        let client = Client::open(ctx, &a.login).await?;
        let version = client.server_version(ctx).await;
        client.close(ctx).await;
        version?;
        return Ok(Outcome::changed().with_msg(format!(
            "would make a {} backup in {} ({} does not exist yet: an earlier step must create it)",
            asked.word(),
            a.dir,
            a.dir
        )));
    }
    let chains = chains(ctx, &a.dir).await?;
    let plan = plan_backup(ctx, a, &chains, asked)?;
    let client = Client::open(ctx, &a.login).await?;
    let result = backup_with(ctx, a, &client, &plan).await;
    client.close(ctx).await;
    result
}

async fn backup_with(
    ctx: &ModuleContext,
    a: &Args,
    client: &Client,
    plan: &BackupPlan,
) -> Result<Outcome, ModuleError> {
    let server_version = client.server_version(ctx).await?;
    let chain_dir = join(&a.dir, &plan.chain);
    let name = Backup::dir_name(plan.index, plan.kind);
    let path = join(&chain_dir, &name);
    let what = match &plan.parent {
        None => format!("a full backup (chain {})", plan.chain),
        Some(p) => format!(
            "incremental {name} of chain {} (from LSN {})",
            plan.chain,
            p.end_lsn().unwrap_or(0)
        ),
    };
    let why = plan
        .why_full
        .as_ref()
        .map(|w| format!(": {w}"))
        .unwrap_or_default();
    if ctx.check {
        return Ok(Outcome::changed()
            .with_data(json!({ "kind": plan.kind.word(), "chain": plan.chain, "name": name, "path": path }))
            .with_msg(format!("would make {what} in {}{why}", a.dir)));
    }
    if a.galera {
        client
            .query(ctx, "SET GLOBAL wsrep_desync = ON", None, false)
            .await?;
    }
    let made = run_backup(ctx, a, client, plan, &chain_dir, &name).await;
    if a.galera {
        let resync = client
            .query(ctx, "SET GLOBAL wsrep_desync = OFF", None, false)
            .await;
        if let Err(e) = resync {
            if let Ok(f) = &made {
                remove(ctx, &[f.work.as_str()]).await;
            }
            return Err(ModuleError::failed(format!(
                "cannot put the Galera node back in sync (SET GLOBAL wsrep_desync = OFF): {e}"
            )));
        }
    }
    let facts = made?;
    // The exact position is inside the backup (xtrabackup_galera_info, used by the
    // restore); the manifest names the cluster and where the node was just after.
    let galera_status = if a.galera {
        galera_position(ctx, client).await.ok()
    } else {
        None
    };
    let manifest = json!({
        "format": backup_chain::FORMAT,
        "chain": plan.chain,
        "index": plan.index,
        "name": name,
        "kind": plan.kind.word(),
        "parent": plan.parent.as_ref().map(|p| p.name.clone()),
        "from_lsn": facts.num("from_lsn"),
        "to_lsn": facts.num("to_lsn"),
        "last_lsn": facts.num("last_lsn"),
        "file": facts.get("file"),
        "compress": facts.get("compress"),
        "size": facts.num("size"),
        "sha256": facts.get("sha256"),
        "server_version": server_version,
        "tool": facts.get("tool"),
        "host": ctx.host,
        "started": facts.get("started"),
        "finished": facts.get("finished"),
        "galera": a.galera,
        "galera_cluster_uuid": galera_status.as_ref().map(|g| g.0.clone()),
        "galera_seqno_after": galera_status.as_ref().map(|g| g.1.clone()),
        "run_id": ctx.run_id,
    });
    if let Some(parent) = &plan.parent
        && manifest["from_lsn"].as_u64() != parent.end_lsn()
    {
        remove(ctx, &[facts.work.as_str()]).await;
        return Err(ModuleError::failed(format!(
            "mariadb-backup made an incremental from LSN {} but {} of chain {} ends at LSN {}",
            manifest["from_lsn"],
            parent.name,
            plan.chain,
            parent.end_lsn().unwrap_or(0)
        )));
    }
    let text = serde_json::to_string_pretty(&manifest)
        .map_err(|e| ModuleError::failed(format!("cannot write the manifest: {e}")))?
        + "\n";
    let script = format!(
        "set -e\nw={w}; p={p}\n[ ! -e \"$p\" ] || {{ echo \"$p exists already\" >&2; exit 1; }}\numask 077\ncat > \"$w/manifest.json\"\nsync -- \"$w/manifest.json\" 2>/dev/null || true\nmv -- \"$w\" \"$p\"\n",
        w = quote(&facts.work),
        p = quote(&path),
    );
    let out = ctx
        .probe(CommandSpec::shell(script).stdin(text.into_bytes()))
        .await?;
    if !out.success() {
        remove(ctx, &[facts.work.as_str()]).await;
        return Err(failed_with(
            &format!("cannot put the backup in place at {path}"),
            out,
        ));
    }
    let undo = json!({
        "path": path,
        "made_chain": facts.made_chain.then_some(chain_dir.clone()),
    });
    let size = facts.num("size").unwrap_or(0);
    Ok(Outcome::changed()
        .with_data(json!({
            "kind": plan.kind.word(),
            "chain": plan.chain,
            "name": name,
            "path": path,
            "from_lsn": manifest["from_lsn"],
            "to_lsn": manifest["to_lsn"],
            "size": size,
            "sha256": manifest["sha256"],
            "manifest": manifest,
            "manifest_path": join(&path, "manifest.json"),
        }))
        .with_undo(undo)
        .with_msg(format!("made {what}{why}: {size} bytes")))
}

/// The node's cluster (`wsrep_cluster_state_uuid`) and last committed seqno.
async fn galera_position(
    ctx: &ModuleContext,
    client: &Client,
) -> Result<(String, String), ModuleError> {
    let sets = client
        .query(
            ctx,
            "SHOW GLOBAL STATUS WHERE Variable_name IN ('wsrep_cluster_state_uuid', 'wsrep_last_committed')",
            None,
            true,
        )
        .await?;
    let mut uuid = String::new();
    let mut seqno = String::new();
    for row in sets.into_iter().flat_map(|s| s.rows) {
        let mut cells = row.into_iter().map(|(_, v)| v.unwrap_or_default());
        match (cells.next().as_deref(), cells.next()) {
            (Some("wsrep_cluster_state_uuid"), Some(v)) => uuid = v,
            (Some("wsrep_last_committed"), Some(v)) => seqno = v,
            _ => {}
        }
    }
    Ok((uuid, seqno))
}

/// The `key=value` lines a host script printed.
struct Facts {
    values: Vec<(String, String)>,
    work: String,
    made_chain: bool,
}

impl Facts {
    fn parse(text: &str, work: String) -> Facts {
        let values: Vec<(String, String)> = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let made_chain = values.iter().any(|(k, _)| k == "made_chain");
        Facts {
            values,
            work,
            made_chain,
        }
    }

    fn get(&self, key: &str) -> Json {
        self.values
            .iter()
            .find(|(k, _)| k == key)
            .map_or(Json::Null, |(_, v)| Json::from(v.clone()))
    }

    fn num(&self, key: &str) -> Option<u64> {
        self.values
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.parse().ok())
    }
}

async fn run_backup(
    ctx: &ModuleContext,
    a: &Args,
    client: &Client,
    plan: &BackupPlan,
    chain_dir: &str,
    name: &str,
) -> Result<Facts, ModuleError> {
    let work = join(chain_dir, &format!(".{name}.tmp-{}", ctx.run_id));
    let compress = a.compress.as_deref().unwrap_or("auto");
    choice("mariadb_backup", "compress", compress, COMPRESS)?;
    let mut opts = vec!["--backup".to_string(), "--stream=xbstream".into()];
    if let Some(p) = &plan.parent {
        opts.push(format!(
            "--incremental-basedir={}",
            join(chain_dir, &p.name)
        ));
    }
    if a.galera {
        opts.push("--galera-info".into());
    }
    if let Some(n) = a.parallel {
        opts.push(format!("--parallel={n}"));
    }
    let opts: Vec<String> = opts.iter().map(|o| quote(o)).collect();
    let script = format!(
        "set -eu\n{PIPEFAIL}umask 077\n{FIND_TOOLS}chain={chain}; work={work}\n\
case {compress} in auto) if command -v zstd >/dev/null 2>&1; then c=zstd; else c=gzip; fi ;; *) c={compress} ;; esac\n\
if [ \"$c\" = zstd ]; then z='zstd -q -c'; f=backup.xb.zst; else z='gzip -c'; f=backup.xb.gz; fi\n\
if [ ! -d \"$chain\" ]; then mkdir -- \"$chain\"; echo made_chain=1; fi\n\
trap 'rm -rf -- \"$work\"' EXIT\n\
mkdir -- \"$work\" \"$work/tmp\"\n\
echo \"tool=$(\"$mb\" --version 2>&1 | head -n 1)\"\n\
echo \"started=$(date -u +%Y-%m-%dT%H:%M:%SZ)\"\n\
\"$mb\" {login} {opts} --extra-lsndir=\"$work\" --target-dir=\"$work/tmp\" 2> \"$work/backup.log\" | $z | tee -- \"$work/$f\" | sha256sum | cut -c1-64 > \"$work/sha256\" || {{ tail -n 20 \"$work/backup.log\" >&2; exit 1; }}\n\
grep -q 'completed OK!' \"$work/backup.log\" || {{ tail -n 20 \"$work/backup.log\" >&2; echo 'mariadb-backup did not say \"completed OK!\"' >&2; exit 1; }}\n\
echo \"finished=$(date -u +%Y-%m-%dT%H:%M:%SZ)\"\n\
rm -rf -- \"$work/tmp\"\n\
sync -- \"$work/$f\" 2>/dev/null || true\n\
echo \"file=$f\"; echo \"compress=$c\"; echo \"sha256=$(cat \"$work/sha256\")\"; rm -f -- \"$work/sha256\"\n\
echo \"size=$(stat -c %s -- \"$work/$f\")\"\n\
sed -n 's/^\\(from_lsn\\|to_lsn\\|last_lsn\\) = /\\1=/p' \"$work/xtrabackup_checkpoints\"\n\
trap - EXIT\n",
        chain = quote(chain_dir),
        work = quote(&work),
        compress = quote(compress),
        login = client.opts(),
        opts = opts.join(" "),
    );
    let out = ctx.run(CommandSpec::shell(script)).await?;
    if !out.success() {
        return Err(failed_with("mariadb-backup failed", out));
    }
    let facts = Facts::parse(&out.stdout_text(), work);
    if facts.num("to_lsn").is_none() || facts.get("sha256").as_str().is_none_or(|s| s.len() != 64) {
        remove(ctx, &[facts.work.as_str()]).await;
        return Err(ModuleError::Failed {
            message: "mariadb-backup ran but its LSNs or the stream's sha256 could not be read"
                .into(),
            output: Some(out),
        });
    }
    Ok(facts)
}

async fn remove(ctx: &ModuleContext, paths: &[&str]) {
    let mut argv = vec!["rm", "-rf", "--"];
    argv.extend_from_slice(paths);
    let _ = ctx.probe(CommandSpec::argv(argv)).await;
}

/// The chain a prepare or restore applies, checked whole, with its pieces in order.
async fn chain_to_apply(
    ctx: &ModuleContext,
    a: &Args,
) -> Result<(Chain, Vec<Backup>), ModuleError> {
    let all = chains(ctx, &a.dir).await?;
    let chain = backup_chain::pick(&all, a.chain(), &a.dir).map_err(ModuleError::failed)?;
    let upto = Upto::from_json(&a.upto).map_err(ModuleError::Args)?;
    let pieces = backup_chain::verify(chain, upto.as_ref())
        .map_err(ModuleError::failed)?
        .into_iter()
        .cloned()
        .collect();
    Ok((chain.clone(), pieces))
}

/// The result data every action that applies a chain returns: the chain, the backups
/// applied and the LSN they reach, and `more`.
fn applied(chain: &Chain, pieces: &[Backup], more: Json) -> Json {
    let mut data = json!({
        "chain": chain.name,
        "backups": pieces.iter().map(|b| b.name.clone()).collect::<Vec<_>>(),
        "to_lsn": pieces.last().and_then(Backup::end_lsn),
    });
    if let (Some(d), Json::Object(m)) = (data.as_object_mut(), more) {
        d.extend(m);
    }
    data
}

fn describe(chain: &Chain, pieces: &[Backup]) -> String {
    let last = pieces.last().map_or("none", |b| b.name.as_str());
    format!(
        "chain {} up to {last} ({} backup{}, to LSN {})",
        chain.name,
        pieces.len(),
        if pieces.len() == 1 { "" } else { "s" },
        pieces.last().and_then(Backup::end_lsn).unwrap_or(0)
    )
}

/// Unpacks and applies `pieces` into `target` (absent or empty), each stream's sha256
/// checked as it is read. On failure nothing is left at `target`.
async fn prepare_into(
    ctx: &ModuleContext,
    dir: &str,
    chain: &Chain,
    pieces: &[Backup],
    target: &str,
) -> Result<(), ModuleError> {
    let chain_dir = join(dir, &chain.name);
    let mut steps = String::new();
    for b in pieces {
        let file = b.text("file").unwrap_or("backup.xb.zst");
        let reader = match b.text("compress") {
            Some("gzip") => "gzip -dc",
            _ => "zstd -dcq",
        };
        let sha = b.text("sha256").unwrap_or("");
        let into = if b.kind == Kind::Full {
            "\"$t\""
        } else {
            "\"$inc\""
        };
        steps.push_str(&format!(
            "{fresh}piece {file} {into} {sha} {name} '{reader}'\n",
            fresh = if b.kind == Kind::Full {
                ""
            } else {
                "rm -rf -- \"$inc\"; mkdir -- \"$inc\"\n"
            },
            file = quote(&join(&join(&chain_dir, &b.name), file)),
            sha = quote(sha),
            name = quote(&b.name),
        ));
        if b.kind == Kind::Full {
            steps.push_str("\"$mb\" --prepare --target-dir=\"$t\" > \"$priv/log\" 2>&1 || { tail -n 20 \"$priv/log\" >&2; exit 1; }\n");
        } else {
            steps.push_str("\"$mb\" --prepare --target-dir=\"$t\" --incremental-dir=\"$inc\" > \"$priv/log\" 2>&1 || { tail -n 20 \"$priv/log\" >&2; exit 1; }\nrm -rf -- \"$inc\"\n");
        }
    }
    let script = format!(
        "set -eu\n{PIPEFAIL}umask 077\n{FIND_TOOLS}t={t}; inc={inc}\n\
if [ -e \"$t\" ] && [ -n \"$(ls -A -- \"$t\")\" ]; then echo \"$t is not empty: prepare into an absent or empty directory\" >&2; exit 1; fi\n\
priv=$(mktemp -d \"${{TMPDIR:-/tmp}}/lifeboat-prepare.XXXXXXXX\")\n\
trap 'rm -rf -- \"$priv\" \"$inc\"; [ -n \"${{prepared:-}}\" ] || rm -rf -- \"$t\"' EXIT\n\
mkdir -p -- \"$t\"\nmkfifo \"$priv/f\"\n\
piece() {{\n  sha256sum < \"$priv/f\" > \"$priv/sum\" &\n  s=$!\n  \
if ! tee -- \"$priv/f\" < \"$1\" | $5 | \"$mbs\" -x -C \"$2\"; then wait $s || true; echo \"cannot unpack $4 ($1)\" >&2; exit 1; fi\n  \
wait $s\n  [ \"$(cut -c1-64 \"$priv/sum\")\" = \"$3\" ] || {{ echo \"$4: the sha256 of $1 is not the one in its manifest: the file is damaged\" >&2; exit 1; }}\n}}\n\
{steps}prepared=1\n",
        t = quote(target),
        inc = quote(&format!("{}.lifeboat-incr", target.trim_end_matches('/'))),
    );
    let out = ctx.run(CommandSpec::shell(script)).await?;
    if out.success() {
        Ok(())
    } else {
        Err(failed_with(
            &format!("cannot prepare {}", describe(chain, pieces)),
            out,
        ))
    }
}

async fn prepare(ctx: &ModuleContext, a: &Args) -> Result<Outcome, ModuleError> {
    let target = a
        .target
        .clone()
        .ok_or_else(|| ModuleError::Args("mariadb_backup: prepare needs target".into()))?;
    let (chain, pieces) = chain_to_apply(ctx, a).await?;
    let what = describe(&chain, &pieces);
    let existed = ctx.stat(&target).await?.is_some();
    let data = applied(&chain, &pieces, json!({ "target": target }));
    if ctx.check {
        return Ok(Outcome::changed()
            .with_data(data)
            .with_msg(format!("would prepare {what} into {target}")));
    }
    prepare_into(ctx, &a.dir, &chain, &pieces, &target).await?;
    Ok(Outcome::changed()
        .with_data(data)
        .with_undo(json!({ "path": target, "existed": existed }))
        .with_msg(format!("prepared {what} into {target}")))
}

async fn control(ctx: &ModuleContext, a: &Args) -> Result<Control, ModuleError> {
    Control::resolve(
        ctx,
        a.service.as_deref().unwrap_or("mariadb"),
        a.manager.as_deref().unwrap_or("auto"),
        a.commands.as_ref(),
        a.wait()?,
    )
    .await
}

/// Waits until the server answers a query, for up to `wait`.
async fn answers(ctx: &ModuleContext, client: &Client, wait: Duration) -> Result<(), ModuleError> {
    let deadline = Instant::now() + wait;
    loop {
        match client.server_version(ctx).await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                return Err(ModuleError::failed(format!(
                    "the server does not answer {} after it was started: {e}",
                    humantime::format_duration(wait)
                )));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

async fn restore(ctx: &ModuleContext, a: &Args) -> Result<Outcome, ModuleError> {
    let datadir = a
        .datadir
        .clone()
        .ok_or_else(|| ModuleError::Args("mariadb_backup: restore needs datadir".into()))?
        .trim_end_matches('/')
        .to_string();
    if datadir.is_empty() {
        return Err(ModuleError::Args(
            "mariadb_backup: datadir cannot be /".into(),
        ));
    }
    // A dry run before the step that copies the chain in (restore-control-plane.yml
    // stages it first): the store is not there yet, so there is nothing to check.
    if ctx.check && ctx.stat(&a.dir).await?.is_none() {
        let control = control(ctx, a).await?;
        return Ok(Outcome::changed()
            .with_data(json!({ "datadir": datadir, "chain": a.chain() }))
            .with_msg(format!(
                "would restore chain {} from {} (not there yet: an earlier step makes it) into {datadir}: prepare it beside {datadir}, stop {c}, move {datadir} aside, move the prepared files in and start {c}",
                a.chain().unwrap_or("(the newest)"),
                a.dir,
                c = control.describe()
            )));
    }
    // Everything that can be refused is refused before anything is stopped.
    let (chain, pieces) = chain_to_apply(ctx, a).await?;
    let what = describe(&chain, &pieces);
    let had_datadir = match ctx.stat(&datadir).await? {
        Some(s) if s.kind == "directory" => true,
        Some(s) => {
            return Err(ModuleError::failed(format!(
                "{datadir} is a {}, not a datadir",
                s.kind
            )));
        }
        None => false,
    };
    let control = control(ctx, a).await?;
    let wait = a.wait()?;
    // What was there before, for a rollback that must bring back exactly that: a server
    // that was down (the datadir lost) stays down, and its empty datadir comes back.
    let was_running = control.running(ctx).await?;
    let old_empty = had_datadir && is_empty_dir(ctx, &datadir).await?;
    let old = sibling(&datadir, "old-", &ctx.run_id);
    let new = sibling(&datadir, "restore-", &ctx.run_id);
    if ctx.check {
        let aside = if had_datadir {
            format!("move {datadir} aside to {old}")
        } else {
            format!("make {datadir} (it does not exist)")
        };
        return Ok(Outcome::changed()
            .with_data(applied(&chain, &pieces, json!({
                "datadir": datadir,
                "old_datadir": had_datadir.then_some(old.clone()),
            })))
            .with_msg(format!(
                "would prepare {what} beside {datadir}, stop {}, {aside}, move the prepared files in, fix their owner and start {}",
                control.describe(),
                control.describe()
            )));
    }
    let started = Instant::now();
    prepare_into(ctx, &a.dir, &chain, &pieces, &new).await?;
    let prepared = started.elapsed();
    let client = Client::open(ctx, &a.login).await?;
    let result = swap_in(
        ctx,
        a,
        &client,
        &control,
        &datadir,
        had_datadir.then_some(old.as_str()),
        &new,
        was_running,
        wait,
    )
    .await;
    client.close(ctx).await;
    if result.is_err() {
        remove(ctx, &[new.as_str()]).await;
    }
    let downtime = result?;
    Ok(Outcome::changed()
        .with_data(applied(
            &chain,
            &pieces,
            json!({
                "datadir": datadir,
                "old_datadir": had_datadir.then_some(old.clone()),
                "prepare_seconds": prepared.as_secs_f64(),
                "downtime_seconds": downtime.as_secs_f64(),
                "total_seconds": started.elapsed().as_secs_f64(),
            }),
        ))
        .with_undo(json!({
            "datadir": datadir,
            "old_datadir": had_datadir.then_some(old.clone()),
            "was_running": was_running,
            "old_datadir_empty": old_empty,
        }))
        .with_msg(format!(
            "restored {what} into {datadir}{}; {} answers",
            if had_datadir {
                format!(" (the old datadir is at {old})")
            } else {
                String::new()
            },
            control.describe()
        )))
}

/// Stops the server, swaps the prepared directory in and starts the server; returns the
/// downtime. When anything fails after the old datadir was moved, it is put back and the
/// server started on it before the error is returned.
#[allow(clippy::too_many_arguments)]
async fn swap_in(
    ctx: &ModuleContext,
    a: &Args,
    client: &Client,
    control: &Control,
    datadir: &str,
    old: Option<&str>,
    new: &str,
    was_running: bool,
    wait: Duration,
) -> Result<Duration, ModuleError> {
    let stopped_at = Instant::now();
    control.stop(ctx).await?;
    if client.server_version(ctx).await.is_ok() {
        // Back as it was: started again only when it ran before the step.
        let back = if was_running {
            match control.start(ctx).await {
                Ok(()) => format!("{} was started again", control.describe()),
                Err(e) => format!("starting {} again failed: {e}", control.describe()),
            }
        } else {
            format!("{} is left stopped, as it was", control.describe())
        };
        return Err(ModuleError::failed(format!(
            "the server still answers after {} was stopped: is the datadir {datadir} really this server's, and do the login arguments reach it? Nothing was moved ({back})",
            control.describe()
        )));
    }
    let galera = if a.galera {
        "gi=$(cat -- \"$new/xtrabackup_galera_info\" 2>/dev/null) || { echo 'the backup has no Galera position (xtrabackup_galera_info): it was not made with galera: true' >&2; exit 1; }\n\
uuid=${gi%%:*}; rest=${gi#*:}; seqno=${rest%%[!0-9-]*}\n\
[ -n \"$uuid\" ] && [ -n \"$seqno\" ] || { echo \"cannot read the Galera position: $gi\" >&2; exit 1; }\n"
    } else {
        ""
    };
    let grastate = if a.galera {
        "printf '# GALERA saved state\\nversion: 2.1\\nuuid:    %s\\nseqno:   %s\\nsafe_to_bootstrap: 1\\n' \"$uuid\" \"$seqno\" > \"$d/grastate.dat\"\n\
chown -- \"$owner\" \"$d/grastate.dat\"\n"
    } else {
        ""
    };
    let script = format!(
        "set -eu\n{FIND_TOOLS}d={d}; old={old}; new={new}; owner={owner}\n{galera}\
if [ -n \"$old\" ]; then\n  [ -n \"$owner\" ] || owner=$(stat -c %u:%g -- \"$d\")\n  mode=$(stat -c %a -- \"$d\")\n  mv -- \"$d\" \"$old\"\n  echo moved_aside\n\
else\n  [ -n \"$owner\" ] || {{ owner=$(id -u mysql 2>/dev/null):$(id -g mysql 2>/dev/null); [ \"$owner\" != : ] || owner=$(id -u):$(id -g); }}\n  mode=750\nfi\n\
mkdir -m \"$mode\" -- \"$d\"\n\
\"$mb\" --move-back --target-dir=\"$new\" --datadir=\"$d\" > \"$new.log\" 2>&1 || {{ tail -n 20 \"$new.log\" >&2; rm -f -- \"$new.log\"; exit 1; }}\n\
rm -f -- \"$new.log\"\n\
chown -R -- \"$owner\" \"$d\"\n{grastate}\
rm -rf -- \"$new\"\n",
        d = quote(datadir),
        old = quote(old.unwrap_or("")),
        new = quote(new),
        owner = quote(a.owner.as_deref().unwrap_or("")),
    );
    let out = ctx.run(CommandSpec::shell(script)).await?;
    let moved = out.stdout_text().lines().any(|l| l == "moved_aside");
    let started = if out.success() {
        match control.start(ctx).await {
            Ok(()) => answers(ctx, client, wait).await,
            Err(e) => Err(e),
        }
    } else {
        Err(failed_with(
            "cannot move the restored files into the datadir",
            out,
        ))
    };
    let Err(e) = started else {
        return Ok(stopped_at.elapsed());
    };
    let Some(old) = old.filter(|_| moved) else {
        if old.is_some() && was_running {
            // Failed before the datadir moved: it is untouched, the server goes back up.
            let back = async {
                control.start(ctx).await?;
                answers(ctx, client, wait).await
            };
            return Err(match back.await {
                Ok(()) => ModuleError::failed(format!(
                    "{e} (nothing was moved; {} was started again)",
                    control.describe()
                )),
                Err(b) => ModuleError::failed(format!(
                    "{e}; nothing was moved, but starting {} again failed: {b}",
                    control.describe()
                )),
            });
        }
        return Err(e);
    };
    let back = async {
        swap_back(ctx, control, datadir, Some(old), Replaced::Remove).await?;
        if was_running {
            control.start(ctx).await?;
            answers(ctx, client, wait).await?;
        }
        Ok::<(), ModuleError>(())
    };
    match back.await {
        Ok(()) if was_running => Err(ModuleError::failed(format!(
            "{e} (the old datadir was put back and {} started on it)",
            control.describe()
        ))),
        Ok(()) => Err(ModuleError::failed(format!(
            "{e} (the old datadir was put back; {} is left stopped, as it was before the step)",
            control.describe()
        ))),
        Err(back) => Err(ModuleError::failed(format!(
            "{e}; putting the old datadir back failed too: {back} (it is at {old})"
        ))),
    }
}

/// What becomes of the datadir a put-back replaces.
#[derive(Clone, Copy, PartialEq)]
enum Replaced {
    /// Removed: a restore that failed in its own step (the chain it came from is intact).
    Remove,
    /// Moved aside to `<datadir>.lifeboat-restored-<run id>` (`-2`, `-3`, ... when that
    /// is taken), never removed: in a rollback it is a restore that worked, maybe the
    /// operator's best copy of the data.
    KeepAside,
}

/// The stem of the paths a rollback keeps a restored datadir at.
fn restored_stem(datadir: &str, run_id: &str) -> String {
    format!("{datadir}.lifeboat-restored-{run_id}")
}

/// Whether `dir` (a directory) has no entries.
async fn is_empty_dir(ctx: &ModuleContext, dir: &str) -> Result<bool, ModuleError> {
    let out = ctx
        .probe(CommandSpec::shell(format!(
            "d={}\n[ -d \"$d\" ] && [ -r \"$d\" ] || exit 2\n[ -z \"$(ls -A -- \"$d\")\" ]",
            quote(dir)
        )))
        .await?;
    match out.rc {
        Some(0) => Ok(true),
        Some(1) => Ok(false),
        _ => Err(failed_with(
            &format!(
                "cannot read the datadir {dir} (is it readable by the login user, or is become needed?)"
            ),
            out,
        )),
    }
}

/// Stops the server and swaps back what was there before the restore: the datadir
/// there now is removed or kept aside (`replaced`), and the old one kept aside (`old`,
/// None when there was no datadir) moved back. Returns the paths a restored datadir is
/// kept at. Run again after it went through (a rollback retried), it finds the old
/// datadir back in place and changes nothing.
async fn swap_back(
    ctx: &ModuleContext,
    control: &Control,
    datadir: &str,
    old: Option<&str>,
    replaced: Replaced,
) -> Result<Vec<String>, ModuleError> {
    control.stop(ctx).await?;
    let failed = sibling(datadir, "failed-", &ctx.run_id);
    let script = format!(
        "set -eu\nd={d}; old={old}; failed={failed}; keep={keep}; stem={stem}\n\
if [ -n \"$old\" ] && [ ! -d \"$old\" ]; then\n\
  [ -d \"$d\" ] || {{ echo \"neither the old datadir $old nor $d is there: nothing can be put back\" >&2; exit 1; }}\n\
  for k in \"$stem\" \"$stem\"-*; do if [ -e \"$k\" ]; then echo \"kept $k\"; fi; done\n\
  echo already\n  exit 0\nfi\n\
if [ -e \"$d\" ]; then\n\
  if [ -n \"$keep\" ]; then\n\
    k=$stem; i=1; while [ -e \"$k\" ]; do i=$((i + 1)); k=$stem-$i; done\n\
    mv -- \"$d\" \"$k\"\n    echo \"kept $k\"\n\
  else\n    mv -- \"$d\" \"$failed\"\n  fi\nfi\n\
if [ -n \"$old\" ]; then mv -- \"$old\" \"$d\"; fi\n\
if [ -z \"$keep\" ]; then rm -rf -- \"$failed\"; fi\n",
        d = quote(datadir),
        old = quote(old.unwrap_or("")),
        failed = quote(&failed),
        keep = if replaced == Replaced::KeepAside {
            "1"
        } else {
            "''"
        },
        stem = quote(&restored_stem(datadir, &ctx.run_id)),
    );
    let out = ctx.run(CommandSpec::shell(script)).await?;
    if !out.success() {
        return Err(failed_with(
            &format!("cannot put back the datadir {datadir} of before the restore"),
            out,
        ));
    }
    Ok(out
        .stdout_text()
        .lines()
        .filter_map(|l| l.strip_prefix("kept "))
        .map(str::to_string)
        .collect())
}

/// Prepares the chain into a scratch directory, opens it with a throw-away server and
/// checks its tables; leaves nothing behind.
async fn verify(ctx: &ModuleContext, a: &Args) -> Result<Outcome, ModuleError> {
    let (chain, pieces) = chain_to_apply(ctx, a).await?;
    let what = describe(&chain, &pieces);
    let scratch = a.target.clone().unwrap_or_else(|| {
        join(
            &a.dir,
            &format!(".verify-{}", super::copy::unique_suffix(&ctx.run_id)),
        )
    });
    if ctx.check {
        return Ok(Outcome::ok().with_msg(format!(
            "would prepare {what} into {scratch} and open it with a throw-away server"
        )));
    }
    let started = Instant::now();
    prepare_into(ctx, &a.dir, &chain, &pieces, &scratch).await?;
    let script = format!(
        "set -eu\nt={t}\nd=$(mktemp -d \"${{TMPDIR:-/tmp}}/lifeboat-verify.XXXXXXXX\")\n\
trap 'if [ -f \"$d/pid\" ]; then kill \"$(cat \"$d/pid\")\" 2>/dev/null; i=0; while [ -f \"$d/pid\" ] && [ \"$i\" -lt 600 ]; do i=$((i + 1)); sleep 0.1; done; fi; rm -rf -- \"$d\" \"$t\"' EXIT\n\
server=$(command -v mariadbd || command -v mysqld || {{ [ -x /usr/sbin/mariadbd ] && echo /usr/sbin/mariadbd; }}) || {{ echo 'mariadbd is not installed on the host (apt-get install mariadb-server): a throw-away server opens the chain' >&2; exit 127; }}\n\
client=$(command -v mariadb || command -v mysql) || {{ echo 'the mariadb client is not installed on the host' >&2; exit 127; }}\n\
mkdir \"$d/tmp\"\n\
\"$server\" --no-defaults --user=\"$(id -un)\" --datadir=\"$t\" --socket=\"$d/sock\" --pid-file=\"$d/pid\" --tmpdir=\"$d/tmp\" --skip-networking --skip-grant-tables --skip-log-bin --log-error=\"$d/error.log\" --innodb-buffer-pool-size=128M < /dev/null > /dev/null 2>&1 &\n\
i=0\nuntil \"$client\" --no-defaults --socket=\"$d/sock\" -e 'SELECT 1' > /dev/null 2>&1; do\n  i=$((i + 1))\n  if [ \"$i\" -gt 1200 ] || ! kill -0 $! 2>/dev/null; then tail -n 20 \"$d/error.log\" >&2; echo 'the throw-away server did not open the prepared chain' >&2; exit 1; fi\n  sleep 0.1\ndone\n\
q() {{ \"$client\" --no-defaults --socket=\"$d/sock\" --batch --skip-column-names -e \"$1\"; }}\n\
tables=$(q \"SELECT CONCAT('\\`', REPLACE(table_schema, '\\`', '\\`\\`'), '\\`.\\`', REPLACE(table_name, '\\`', '\\`\\`'), '\\`') FROM information_schema.tables WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys') ORDER BY 1\" | paste -sd, -)\n\
q 'SHOW DATABASES' | sed 's/^/database\\t/'\n\
if [ -n \"$tables\" ]; then\n  q \"CHECK TABLE $tables\" | awk -F '\\t' '$3 == \"error\" || ($3 == \"status\" && $4 != \"OK\") {{ bad = 1; print \"check\\t\" $0 }} END {{ exit bad }}' || {{ echo 'CHECK TABLE found damaged tables' >&2; exit 1; }}\n  q \"CHECKSUM TABLE $tables\" | sed 's/^/checksum\\t/'\nfi\n",
        t = quote(&scratch),
    );
    let out = ctx.run(CommandSpec::shell(script)).await?;
    if !out.success() {
        return Err(failed_with(
            &format!("the prepared {what} does not open"),
            out,
        ));
    }
    let mut databases = Vec::new();
    let mut checksums = serde_json::Map::new();
    for line in out.stdout_text().lines() {
        let mut f = line.split('\t');
        match (f.next(), f.next(), f.next()) {
            (Some("database"), Some(d), _) => databases.push(Json::from(d)),
            (Some("checksum"), Some(t), Some(c)) => {
                checksums.insert(t.to_string(), Json::from(c));
            }
            _ => {}
        }
    }
    let tables = checksums.len();
    Ok(Outcome::ok()
        .with_data(applied(
            &chain,
            &pieces,
            json!({
                "databases": databases,
                "tables": tables,
                "checksums": checksums,
                "seconds": started.elapsed().as_secs_f64(),
            }),
        ))
        .with_msg(format!(
            "{what} opens: {tables} tables checked in {} databases",
            databases.len()
        )))
}
