//! `mysql_dump`: a consistent logical dump of MariaDB/MySQL databases to a file on the
//! host. `mariadb-dump` (else `mysqldump`) runs with `--single-transaction --routines
//! --events --triggers`, piped under pipefail into gzip or zstd, into a temporary name
//! beside `dest`; the file is checked (it decompresses, it ends with the "-- Dump
//! completed" trailer), measured (size, sha256), described by a manifest
//! (`<dest>.manifest.json`) and only then renamed into place. Rollback puts back what
//! was there before.

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::copy::{sibling, split_path};
use super::mysql::{
    Client, Compress, Databases, DumpPlan, Login, dump, failed, is_system_schema,
    validate_databases, validate_login, with_login_args,
};
use super::{ArgKind, Module, ModuleContext, ModuleDoc, ModuleError, Outcome, arg, parse_args};
use crate::connection::{CommandSpec, quote};
use crate::error::{SourceError, SourceFile};
use crate::template::Templates;
use crate::yaml::Node;

/// The `mysql_dump` module.
pub struct MysqlDump;

static DOC: ModuleDoc = ModuleDoc {
    name: "mysql_dump",
    summary: "Dump MariaDB/MySQL databases to a file on the host, consistently and verifiably",
    description: "Runs `mariadb-dump` (or `mysqldump` when that is what the host has) with \
`--single-transaction --routines --events --triggers`: one consistent InnoDB snapshot without \
table locks, stored procedures, functions, events and triggers included (DDL during the dump is \
not isolated; MyISAM tables are not consistent). The output is piped under pipefail through \
gzip or zstd into a temporary name beside dest (mode 0600), so a failure anywhere in the pipe \
fails the step and leaves nothing behind. The file must then decompress cleanly and end with the \
tool's \"-- Dump completed\" trailer (extra_args such as --skip-comments or --compact remove it \
and make the step fail). Its size and sha256 are recorded in a manifest, `<dest>.manifest.json` \
(also: databases, compression, tool and server versions, host, and `consistent_point`: the UTC \
time just before the dump tool started, which is at or before the snapshot). Only then are the \
dump and the manifest renamed over any previous ones. A dump is always `changed`. The password \
(login_password) reaches the client through a 0600 option file in a private temporary directory \
on the host, removed at the end; it never appears on a command line. In a dry run it checks that \
the server answers, that the databases exist (read-only queries) and that dest's directory \
exists, and reports `would change`; the private option file is still written and removed.",
    free_form: None,
    args: with_login_args![
        arg(
            "databases",
            ArgKind::StrOrList,
            true,
            "`all` (every database, with --all-databases) or a list of database names",
        ),
        arg(
            "dest",
            ArgKind::Str,
            true,
            "the dump file on the host; its directory must exist",
        ),
        arg(
            "compress",
            ArgKind::Str,
            false,
            "gzip, zstd or none (default: by dest's extension: .gz gzip, .zst zstd, anything else none)",
        ),
        arg(
            "extra_args",
            ArgKind::List,
            false,
            "more options for the dump tool, e.g. [\"--hex-blob\"]",
        ),
    ],
    open_args: false,
    example: "- id: dump-nova\n  mysql_dump:\n    databases: [nova, nova_api, placement]\n    dest: /backup/db/nova-{{ run_id }}.sql.gz\n    login_user: backup\n    login_password: \"{{ db_backup_password }}\"\n  register: nova_dump\n",
    returns: &[
        ("path", "the dump file"),
        ("size", "its size in bytes"),
        ("sha256", "its sha256"),
        (
            "manifest",
            "the manifest's content (also written to <path>.manifest.json)",
        ),
        ("manifest_path", "where the manifest is"),
    ],
    rollback: "removes the dump and its manifest; when dest (or its manifest) existed before, the \
previous file, kept aside as a hard link (or copy) `.<name>.lifeboat-backup-<run_id>-<random>` next \
to it, is renamed back. After a successful run those backups stay (delete them when no longer needed).",
};

#[derive(Debug, Deserialize)]
struct DumpArgs {
    databases: Json,
    dest: String,
    compress: Option<String>,
    #[serde(default)]
    extra_args: Vec<Json>,
    #[serde(flatten)]
    login: Login,
}

/// The manifest beside a dump.
pub(crate) fn manifest_path(dest: &str) -> String {
    format!("{dest}.manifest.json")
}

#[async_trait]
impl Module for MysqlDump {
    fn doc(&self) -> &'static ModuleDoc {
        &DOC
    }

    fn validate(&self, args: &Node, file: &SourceFile) -> Vec<SourceError> {
        let mut errors = validate_login(args, file);
        errors.extend(validate_databases(args, file, true));
        if let Some(c) = args.get("compress")
            && let Some(s) = c.as_str()
            && !Templates::is_template(s)
        {
            match Compress::parse(s) {
                None => errors.push(
                    c.error(file, format!("compress `{s}` is not supported"))
                        .with_help("use gzip, zstd or none"),
                ),
                Some(want) => {
                    if let Some(d) = args.get("dest").and_then(Node::as_str)
                        && !Templates::is_template(d)
                    {
                        let implied = Compress::from_name(d);
                        if implied != Compress::None && implied != want {
                            errors.push(
                                c.error(
                                    file,
                                    format!(
                                        "compress is {} but dest's extension says {}",
                                        want.name(),
                                        implied.name()
                                    ),
                                )
                                .with_help(
                                    "leave compress out, or give dest the matching extension",
                                ),
                            );
                        }
                    }
                }
            }
        }
        if let Some(d) = args.get("dest")
            && let Some(s) = d.as_str()
            && (s.ends_with('/') || s.is_empty())
        {
            errors.push(
                d.error(file, "dest must name the dump file, not a directory")
                    .with_help("e.g. dest: /backup/db/nova.sql.gz"),
            );
        }
        errors
    }

    async fn run(&self, ctx: &ModuleContext, args: &Json) -> Result<Outcome, ModuleError> {
        let a: DumpArgs = parse_args("mysql_dump", args)?;
        let databases = Databases::from_json(Some(&a.databases), "mysql_dump")?
            .ok_or_else(|| ModuleError::Args("mysql_dump: databases is required".into()))?;
        let compress = match &a.compress {
            Some(c) => Compress::parse(c).ok_or_else(|| {
                ModuleError::Args(format!(
                    "mysql_dump: compress `{c}` is not one of gzip, zstd, none"
                ))
            })?,
            None => Compress::from_name(&a.dest),
        };
        let extra_args: Vec<String> = a
            .extra_args
            .iter()
            .map(|v| match v {
                Json::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect();
        let dest = a.dest.clone();
        let (dir, _) = split_path(&dest);
        // In a dry run an earlier step may be about to create the directory: that is
        // a prediction to report, not a failure.
        let dir_missing = !matches!(ctx.stat(&dir).await?, Some(s) if s.kind == "directory");
        if dir_missing && !ctx.check {
            return Err(ModuleError::failed(format!(
                "cannot write {dest}: the directory {dir} does not exist (create it with a `file` step, state: directory)"
            )));
        }
        if let Some(s) = ctx.stat(&dest).await?
            && s.kind != "file"
        {
            return Err(ModuleError::failed(format!(
                "{dest} exists and is a {}, not a file",
                s.kind
            )));
        }
        let client = Client::open(ctx, &a.login).await?;
        let result = run_dump(ctx, &client, &dest, &databases, compress, &extra_args).await;
        client.close(ctx).await;
        result
    }

    async fn undo(
        &self,
        ctx: &ModuleContext,
        _args: &Json,
        undo: &Json,
    ) -> Result<Outcome, ModuleError> {
        undo_files(ctx, undo).await
    }
}

async fn run_dump(
    ctx: &ModuleContext,
    client: &Client,
    dest: &str,
    databases: &Databases,
    compress: Compress,
    extra_args: &[String],
) -> Result<Outcome, ModuleError> {
    let present = client.databases(ctx).await?;
    let names: Vec<String> = match databases {
        Databases::All => present
            .iter()
            .filter(|d| {
                !d.eq_ignore_ascii_case("information_schema")
                    && !d.eq_ignore_ascii_case("performance_schema")
            })
            .cloned()
            .collect(),
        Databases::Named(n) => {
            let missing: Vec<&String> = n.iter().filter(|d| !present.contains(d)).collect();
            if !missing.is_empty() {
                return Err(ModuleError::failed(format!(
                    "no such database on the server: {}",
                    missing
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            n.clone()
        }
    };
    let server_version = client.server_version(ctx).await?;
    let manifest_path = manifest_path(dest);
    if ctx.check {
        let (dir, _) = split_path(dest);
        let dir_missing = !matches!(ctx.stat(&dir).await?, Some(s) if s.kind == "directory");
        return Ok(Outcome::changed()
            .with_data(json!({
                "path": dest,
                "size": null,
                "sha256": null,
                "manifest": null,
                "manifest_path": manifest_path,
                "databases": names,
            }))
            .with_msg(format!(
                "would dump {} to {dest}{}",
                describe_dbs(databases, &names),
                if dir_missing {
                    format!(" ({dir} does not exist yet: an earlier step must create it)")
                } else {
                    String::new()
                }
            )));
    }

    let tmp = sibling(dest, "", &ctx.run_id);
    let facts = dump(
        ctx,
        client,
        &DumpPlan {
            databases,
            tmp: &tmp,
            compress,
            extra_args,
        },
    )
    .await?;
    let (_, file_name) = split_path(dest);
    let manifest = json!({
        "format": "lifeboat-mysql-dump/1",
        "file": file_name,
        "path": dest,
        "size": facts.size,
        "sha256": facts.sha256,
        "compress": compress.name(),
        "all_databases": *databases == Databases::All,
        "databases": names,
        "user_databases": names.iter().filter(|n| !is_system_schema(n)).collect::<Vec<_>>(),
        "tool": facts.tool,
        "server_version": server_version,
        "host": ctx.host,
        "consistent_point": facts.started,
        "consistent_point_note": "UTC time taken on the host just before the dump tool started; the --single-transaction snapshot is at or after it",
        "finished": facts.finished,
        "options": ["--single-transaction", "--routines", "--events", "--triggers"],
        "extra_args": extra_args,
        "run_id": ctx.run_id,
    });
    let text = match serde_json::to_string_pretty(&manifest) {
        Ok(t) => t + "\n",
        Err(e) => {
            remove(ctx, &[&tmp]).await;
            return Err(ModuleError::failed(format!(
                "cannot write the manifest: {e}"
            )));
        }
    };
    let mtmp = sibling(&manifest_path, "", &ctx.run_id);
    let dest_backup = sibling(dest, "backup-", &ctx.run_id);
    let manifest_backup = sibling(&manifest_path, "backup-", &ctx.run_id);
    let script = format!(
        "set -e\numask 077\nt={t}; mt={mt}; d={d}; m={m}; db={db}; mb={mb}\n\
cat > \"$mt\"\n\
if [ -e \"$d\" ]; then ln -- \"$d\" \"$db\" 2>/dev/null || cp -p -- \"$d\" \"$db\"; echo dest_backup; fi\n\
if [ -e \"$m\" ]; then ln -- \"$m\" \"$mb\" 2>/dev/null || cp -p -- \"$m\" \"$mb\"; echo manifest_backup; fi\n\
mv -f -- \"$t\" \"$d\"\necho dest_placed\n\
mv -f -- \"$mt\" \"$m\"\necho manifest_placed\n",
        t = quote(&tmp),
        mt = quote(&mtmp),
        d = quote(dest),
        m = quote(&manifest_path),
        db = quote(&dest_backup),
        mb = quote(&manifest_backup),
    );
    let out = ctx
        .probe(CommandSpec::shell(script).stdin(text.into_bytes()))
        .await?;
    let said = out.stdout_text();
    let has = |w: &str| said.lines().any(|l| l == w);
    let undo = json!({
        "path": dest,
        "backup": has("dest_backup").then_some(dest_backup.clone()),
        "manifest_path": manifest_path,
        "manifest_backup": has("manifest_backup").then_some(manifest_backup.clone()),
    });
    if !out.success() {
        // Put back whatever had been placed, and remove the temporary files.
        remove(ctx, &[&tmp, &mtmp]).await;
        if has("dest_placed") {
            let _ = undo_files(ctx, &undo).await;
        } else {
            let mut leftovers = Vec::new();
            if has("dest_backup") {
                leftovers.push(dest_backup.as_str());
            }
            if has("manifest_backup") {
                leftovers.push(manifest_backup.as_str());
            }
            remove(ctx, &leftovers).await;
        }
        return Err(failed(
            &format!("cannot put the dump in place at {dest}"),
            out,
        ));
    }
    Ok(Outcome::changed()
        .with_data(json!({
            "path": dest,
            "size": facts.size,
            "sha256": facts.sha256,
            "manifest": manifest,
            "manifest_path": manifest_path,
        }))
        .with_undo(undo)
        .with_msg(format!(
            "dumped {} to {dest} ({} bytes)",
            describe_dbs(databases, &names),
            facts.size
        )))
}

fn describe_dbs(databases: &Databases, names: &[String]) -> String {
    match databases {
        Databases::All => format!("all databases ({})", names.join(", ")),
        Databases::Named(_) => names.join(", "),
    }
}

async fn remove(ctx: &ModuleContext, paths: &[&str]) {
    if paths.is_empty() {
        return;
    }
    let mut argv = vec!["rm", "-f", "--"];
    argv.extend_from_slice(paths);
    let _ = ctx.probe(CommandSpec::argv(argv)).await;
}

/// Puts back the dump and manifest that were there before, or removes the new ones.
async fn undo_files(ctx: &ModuleContext, undo: &Json) -> Result<Outcome, ModuleError> {
    let mut pairs = Vec::new();
    for (p, b) in [("path", "backup"), ("manifest_path", "manifest_backup")] {
        let path = undo
            .get(p)
            .and_then(Json::as_str)
            .ok_or_else(|| ModuleError::failed("the undo data names no dump file"))?;
        pairs.push((
            path.to_string(),
            undo.get(b).and_then(Json::as_str).map(String::from),
        ));
    }
    let what: Vec<String> = pairs
        .iter()
        .map(|(p, b)| match b {
            Some(_) => format!("restore the previous {p}"),
            None => format!("remove {p}"),
        })
        .collect();
    if ctx.check {
        return Ok(Outcome::changed().with_msg(format!("would {}", what.join(", "))));
    }
    let mut script = String::from("set -e\n");
    for (path, backup) in &pairs {
        match backup {
            Some(b) => script.push_str(&format!("mv -f -- {} {}\n", quote(b), quote(path))),
            None => script.push_str(&format!("rm -f -- {}\n", quote(path))),
        }
    }
    let out = ctx.probe(CommandSpec::shell(script)).await?;
    if !out.success() {
        return Err(failed("cannot undo the dump", out));
    }
    Ok(Outcome::changed().with_msg(what.join(", ")))
}
