//! `mysql_restore`: imports a dump (plain, gzip or zstd) into MariaDB/MySQL with the
//! `mariadb` (else `mysql`) client, under pipefail. Before anything is overwritten it
//! checks the dump against its manifest's sha256 and takes a safety dump of the
//! databases about to be replaced; an import that fails half way, and a rollback of
//! the run later, drop what the import left and re-import the safety dump.

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::copy::{host_sha256, split_path, unique_suffix};
use super::mysql::{
    Client, Compress, Databases, DumpPlan, Login, databases_in_dump, dump, ident, import,
    is_system_schema, magic, validate_login, with_login_args,
};
use super::mysql_dump::manifest_path;
use super::{ArgKind, Module, ModuleContext, ModuleDoc, ModuleError, Outcome, arg, parse_args};
use crate::error::{SourceError, SourceFile};
use crate::template::Templates;
use crate::yaml::Node;

/// The `mysql_restore` module.
pub struct MysqlRestore;

static DOC: ModuleDoc = ModuleDoc {
    name: "mysql_restore",
    summary: "Import a MariaDB/MySQL dump on the host, with a checksum check and a safety dump first",
    description: "Reads `src` (plain SQL, gzip or zstd, recognised by its first bytes) and pipes it \
under pipefail into the `mariadb` client (or `mysql`), so a truncated or corrupt file fails the \
step. When `<src>.manifest.json` exists (written by mysql_dump) and verify_checksum is on, src's \
sha256 must match it before anything is touched. The databases the dump replaces are those of the \
manifest, else those its `USE` lines name; with `database`, a one-database dump is imported into \
that database instead (created when missing; the dump's CREATE DATABASE and USE lines are skipped). \
With drop_first (the default) each \
database is dropped before the import, so the result is exactly the dump, not the dump laid \
over tables created since (the server's own schemas, such as mysql, are never dropped). \
Databases that exist are first dumped (safety_dump, gzip) to `<dir>/lifeboat-safety-<run_id>-<random>.sql.gz`, \
dir being safety_dir or src's directory. When the import fails, the step undoes itself before \
failing: the databases it touched are dropped and the safety dump is imported again (databases \
it created are just dropped). A restore is always `changed`. Like mysql_dump, the password goes \
through a 0600 option file in a private temporary directory, never a command line. In a dry \
run it checks that src matches its manifest's sha256, that the server answers, and says which \
databases would be overwritten and which created; a src that does not exist yet is reported as a \
change (an earlier step of the run may put it there).",
    free_form: None,
    args: with_login_args![
        arg(
            "src",
            ArgKind::Str,
            true,
            "the dump file on the host (.sql, .sql.gz, .sql.zst)",
        ),
        arg(
            "database",
            ArgKind::Str,
            false,
            "import a one-database dump into this database (created when missing), e.g. a scratch database for a drill",
        ),
        arg(
            "safety_dump",
            ArgKind::Bool,
            false,
            "dump the databases about to be overwritten first, for rollback (default true)",
        ),
        arg(
            "drop_first",
            ArgKind::Bool,
            false,
            "drop each database before importing it, so that tables created since the dump do not survive (default true; never the server's own schemas)",
        ),
        arg(
            "safety_dir",
            ArgKind::Str,
            false,
            "directory on the host for the safety dump (default: src's directory)",
        ),
        arg(
            "verify_checksum",
            ArgKind::Bool,
            false,
            "check src against the sha256 in <src>.manifest.json when it exists (default true)",
        ),
    ],
    open_args: false,
    example: "- id: restore-nova\n  mysql_restore:\n    src: /backup/db/nova.sql.gz\n    login_user: root\n    login_password: \"{{ db_root_password }}\"\n  register: restored\n",
    returns: &[
        ("src", "the dump imported"),
        ("databases", "the databases it replaced or created"),
        ("created", "those that did not exist before"),
        (
            "safety_dump",
            "the safety dump's path, or null when none was taken",
        ),
        (
            "verified",
            "whether src was checked against its manifest's sha256",
        ),
    ],
    rollback: "drops the databases the restore touched (never mysql, sys, information_schema or \
performance_schema) and imports the safety dump again, which recreates them as they were; \
databases the restore created are dropped. Without a safety dump (safety_dump: false) databases \
that existed cannot be put back and the rollback fails, saying so. The safety dump stays on the \
host after a successful run (delete it when no longer needed).",
};

#[derive(Debug, Deserialize)]
struct RestoreArgs {
    src: String,
    database: Option<String>,
    #[serde(default = "yes")]
    safety_dump: bool,
    safety_dir: Option<String>,
    #[serde(default = "yes")]
    drop_first: bool,
    #[serde(default = "yes")]
    verify_checksum: bool,
    #[serde(flatten)]
    login: Login,
}

fn yes() -> bool {
    true
}

#[async_trait]
impl Module for MysqlRestore {
    fn doc(&self) -> &'static ModuleDoc {
        &DOC
    }

    fn validate(&self, args: &Node, file: &SourceFile) -> Vec<SourceError> {
        let mut errors = validate_login(args, file);
        if let Some(d) = args.get("database")
            && let Some(s) = d.as_str()
            && !Templates::is_template(s)
            && (s.is_empty() || s.contains(['\n', '\0']) || s.len() > 64)
        {
            errors.push(d.error(file, format!("`{s}` is not a database name")));
        }
        if let Some(d) = args.get("safety_dir")
            && args.get("safety_dump").and_then(|n| match n.value {
                crate::yaml::Value::Bool(b) => Some(b),
                _ => None,
            }) == Some(false)
        {
            errors.push(
                d.error(file, "safety_dir is given but safety_dump is false")
                    .with_help("drop safety_dir, or turn safety_dump on"),
            );
        }
        errors
    }

    async fn run(&self, ctx: &ModuleContext, args: &Json) -> Result<Outcome, ModuleError> {
        let a: RestoreArgs = parse_args("mysql_restore", args)?;
        if let Some(d) = &a.database {
            Databases::from_json(Some(&json!(d)), "mysql_restore")?;
        }
        match ctx.stat(&a.src).await? {
            Some(s) if s.kind == "file" => {}
            Some(s) => {
                return Err(ModuleError::failed(format!(
                    "src {} is a {}, not a dump file",
                    a.src, s.kind
                )));
            }
            // In a dry run an earlier step may be about to put it there (a copy from the
            // backup host): a prediction to report, not a failure.
            None if ctx.check => {
                return Ok(Outcome::changed().with_msg(format!(
                    "would import {} ({} does not exist yet: an earlier step must create it)",
                    a.src, a.src
                )));
            }
            None => {
                return Err(ModuleError::failed(format!("src {} does not exist", a.src)));
            }
        }
        let manifest = read_manifest(ctx, &a.src).await?;
        let verified = match (&manifest, a.verify_checksum) {
            (Some(m), true) => {
                let want = m.get("sha256").and_then(Json::as_str).ok_or_else(|| {
                    ModuleError::failed(format!("{} has no sha256", manifest_path(&a.src)))
                })?;
                let have = host_sha256(ctx, &a.src).await?;
                if !have.eq_ignore_ascii_case(want) {
                    return Err(ModuleError::failed(format!(
                        "{} does not match its manifest: sha256 {have}, the manifest says {want}; not importing it",
                        a.src
                    )));
                }
                true
            }
            _ => false,
        };
        let compress = Compress::from_magic(&magic(ctx, &a.src).await?);
        let in_dump: Vec<String> = match manifest
            .as_ref()
            .and_then(|m| m.get("databases"))
            .and_then(Json::as_array)
        {
            Some(list) => list
                .iter()
                .filter_map(Json::as_str)
                .map(String::from)
                .collect(),
            None => databases_in_dump(ctx, &a.src, compress)
                .await
                .map_err(|e| ModuleError::failed(format!("{e}; nothing was imported")))?,
        };
        let targets: Vec<String> = match &a.database {
            Some(d) => {
                if in_dump.len() > 1 {
                    return Err(ModuleError::failed(format!(
                        "{} holds several databases ({}); `database` needs a one-database dump",
                        a.src,
                        in_dump.join(", ")
                    )));
                }
                vec![d.clone()]
            }
            None if in_dump.is_empty() => {
                return Err(ModuleError::failed(format!(
                    "{} names no database (no manifest, no USE line): give `database` to say where it goes",
                    a.src
                )));
            }
            None => in_dump,
        };
        let client = Client::open(ctx, &a.login).await?;
        let result = restore(ctx, &client, &a, &targets, compress, verified).await;
        client.close(ctx).await;
        result
    }

    async fn undo(
        &self,
        ctx: &ModuleContext,
        args: &Json,
        undo: &Json,
    ) -> Result<Outcome, ModuleError> {
        let login: Login = parse_args("mysql_restore", args)?;
        let list = |k: &str| -> Vec<String> {
            undo.get(k)
                .and_then(Json::as_array)
                .map(|l| {
                    l.iter()
                        .filter_map(Json::as_str)
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default()
        };
        let state = UndoState {
            databases: list("databases"),
            created: list("created"),
            safety_dump: undo
                .get("safety_dump")
                .and_then(Json::as_str)
                .map(String::from),
        };
        if ctx.check {
            return Ok(Outcome::changed().with_msg(state.describe()));
        }
        let client = Client::open(ctx, &login).await?;
        let result = state.apply(ctx, &client).await;
        client.close(ctx).await;
        result.map(|msg| Outcome::changed().with_msg(msg))
    }
}

/// The manifest beside src, when there is one.
async fn read_manifest(ctx: &ModuleContext, src: &str) -> Result<Option<Json>, ModuleError> {
    let path = manifest_path(src);
    match ctx.read_file(&path, 4 * 1024 * 1024).await? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| ModuleError::failed(format!("{path} is not a readable manifest: {e}"))),
    }
}

/// What a rollback of a restore must do.
struct UndoState {
    /// Every database the restore replaced or created.
    databases: Vec<String>,
    /// Those it created.
    created: Vec<String>,
    /// The safety dump of those that existed.
    safety_dump: Option<String>,
}

impl UndoState {
    fn describe(&self) -> String {
        match &self.safety_dump {
            Some(s) => format!("would drop {} and re-import {s}", self.databases.join(", ")),
            None => format!("would drop {}", self.created.join(", ")),
        }
    }

    fn lost(&self) -> Vec<&String> {
        self.databases
            .iter()
            .filter(|d| !self.created.contains(d))
            .collect()
    }

    /// Drops what the restore touched and re-imports the safety dump.
    async fn apply(&self, ctx: &ModuleContext, client: &Client) -> Result<String, ModuleError> {
        match &self.safety_dump {
            Some(safety) => {
                client.drop_databases(ctx, &self.databases).await?;
                import(ctx, client, safety, Compress::Gzip, None).await?;
                Ok(format!(
                    "dropped {} and re-imported {safety}",
                    self.databases.join(", ")
                ))
            }
            None => {
                client.drop_databases(ctx, &self.created).await?;
                let lost = self.lost();
                if lost.is_empty() {
                    Ok(format!("dropped {}", self.created.join(", ")))
                } else {
                    Err(ModuleError::failed(format!(
                        "cannot put back {}: the restore ran without a safety dump",
                        lost.iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )))
                }
            }
        }
    }
}

async fn restore(
    ctx: &ModuleContext,
    client: &Client,
    a: &RestoreArgs,
    targets: &[String],
    compress: Compress,
    verified: bool,
) -> Result<Outcome, ModuleError> {
    let present = client.databases(ctx).await?;
    let existing: Vec<String> = targets
        .iter()
        .filter(|d| present.contains(d))
        .cloned()
        .collect();
    let created: Vec<String> = targets
        .iter()
        .filter(|d| !present.contains(d))
        .cloned()
        .collect();
    let mut data = json!({
        "src": a.src,
        "databases": targets,
        "created": created,
        "safety_dump": null,
        "verified": verified,
    });
    let plan = format!(
        "{}{}",
        if existing.is_empty() {
            String::new()
        } else {
            format!("overwrite {}", existing.join(", "))
        },
        if created.is_empty() {
            String::new()
        } else {
            format!(
                "{}create {}",
                if existing.is_empty() { "" } else { "; " },
                created.join(", ")
            )
        }
    );
    if ctx.check {
        return Ok(Outcome::changed()
            .with_data(data)
            .with_msg(format!("would import {}: {plan}", a.src)));
    }

    let safety_dump = if a.safety_dump && !existing.is_empty() {
        let dir = a.safety_dir.clone().unwrap_or_else(|| split_path(&a.src).0);
        let path = format!(
            "{}/lifeboat-safety-{}.sql.gz",
            dir.trim_end_matches('/'),
            unique_suffix(&ctx.run_id)
        );
        let dbs = Databases::Named(existing.clone());
        dump(
            ctx,
            client,
            &DumpPlan {
                databases: &dbs,
                tmp: &path,
                compress: Compress::Gzip,
                extra_args: &[],
            },
        )
        .await
        .map_err(|e| {
            ModuleError::failed(format!("the safety dump failed, nothing was imported: {e}"))
        })?;
        Some(path)
    } else {
        None
    };
    data["safety_dump"] = json!(safety_dump);
    let state = UndoState {
        databases: targets.to_vec(),
        created: created.clone(),
        safety_dump: safety_dump.clone(),
    };
    let undo = json!({
        "databases": targets,
        "created": created,
        "safety_dump": safety_dump,
    });

    let mut result = Ok(());
    if a.drop_first {
        result = client.drop_databases(ctx, targets).await;
    }
    if result.is_ok()
        && let Some(d) = &a.database
        && (a.drop_first || created.contains(d))
    {
        result = client
            .query(ctx, &format!("CREATE DATABASE {}", ident(d)), None, false)
            .await
            .map(|_| ());
    }
    if result.is_ok() {
        result = import(ctx, client, &a.src, compress, a.database.as_deref()).await;
    }
    if let Err(e) = result {
        // Undo the half-applied import before failing: a failed step is not rolled
        // back by the run, so it must leave things as they were.
        let rolled = state.apply(ctx, client).await;
        return Err(ModuleError::failed(match rolled {
            Ok(msg) => format!("{e}; rolled back: {msg}"),
            Err(r) => format!("{e}; and the rollback failed too: {r}"),
        }));
    }
    let system: Vec<&String> = targets.iter().filter(|d| is_system_schema(d)).collect();
    let note = if system.is_empty() {
        String::new()
    } else {
        format!(
            " (includes {}: restart or FLUSH PRIVILEGES may be needed)",
            system
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    Ok(Outcome::changed()
        .with_data(data)
        .with_undo(undo)
        .with_msg(format!("imported {}: {plan}{note}", a.src)))
}
