//! `mysql_checksum`: the proof a restore drill compares. For every base table of the
//! given databases (default: every user database) it takes `COUNT(*)` and
//! `CHECKSUM TABLE`, and a digest over all of them. Read-only: it also runs in a dry run.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::copy::sha256_hex;
use super::mysql::{
    Client, Databases, Login, ident, is_system_schema, sql_str, validate_databases, validate_login,
    with_login_args,
};
use super::{ArgKind, Module, ModuleContext, ModuleDoc, ModuleError, Outcome, arg, parse_args};
use crate::error::{SourceError, SourceFile};
use crate::yaml::Node;

/// The `mysql_checksum` module.
pub struct MysqlChecksum;

static DOC: ModuleDoc = ModuleDoc {
    name: "mysql_checksum",
    summary: "Row counts and CHECKSUM TABLE of every table, and one digest over them",
    description: "Lists the base tables of `databases` (default: every database but \
information_schema, performance_schema, mysql and sys; views and sequences are left out), then \
runs `SELECT COUNT(*)` (exact, unlike the estimates of information_schema) and `CHECKSUM TABLE` \
for each, in one session. `digest` is a sha256 over the sorted `db.table rows checksum` lines: \
two servers (or one, before and after a restore) hold the same table data when their digests \
are equal. Checksums are comparable between servers of the same version and row format only. \
Tables written while it runs give counts and checksums of different moments: run it when the \
data is quiet, or leave out with `exclude_tables` the tables a running service keeps rewriting \
(nova's and cinder's `services` heartbeats). Read-only: always `ok`, and it runs in a dry run too.",
    free_form: Some("databases"),
    args: with_login_args![
        arg(
            "databases",
            ArgKind::StrOrList,
            false,
            "database names (default: every database but the server's own schemas)",
        ),
        arg(
            "exclude_tables",
            ArgKind::StrOrList,
            false,
            "tables left out: `db.table`, or `table` in every database (e.g. [services])",
        )
    ],
    open_args: false,
    example: "- id: proof-before\n  mysql_checksum:\n    databases: [nova, glance, keystone]\n  register: before\n- id: proof-after\n  mysql_checksum: [nova, glance, keystone]\n  needs: [restore-nova]\n  register: after\n- id: compare\n  assert: before.data.digest == after.data.digest\n  needs: [proof-before, proof-after]\n",
    returns: &[
        (
            "tables",
            "per table, keyed `db.table`: {rows, checksum} (checksum null when the server has none)",
        ),
        ("digest", "sha256 over the sorted entries"),
        ("databases", "the databases covered"),
        ("excluded", "the tables left out (`db.table`)"),
        ("table_count", "how many tables"),
    ],
    rollback: "none needed: it changes nothing",
};

#[derive(Debug, Deserialize)]
struct ChecksumArgs {
    databases: Option<Json>,
    #[serde(default, deserialize_with = "super::backup_common::str_list")]
    exclude_tables: Vec<String>,
    #[serde(flatten)]
    login: Login,
}

#[async_trait]
impl Module for MysqlChecksum {
    fn doc(&self) -> &'static ModuleDoc {
        &DOC
    }

    fn validate(&self, args: &Node, file: &SourceFile) -> Vec<SourceError> {
        let mut errors = validate_login(args, file);
        errors.extend(validate_databases(args, file, false));
        errors
    }

    fn read_only(&self) -> bool {
        true
    }

    async fn run(&self, ctx: &ModuleContext, args: &Json) -> Result<Outcome, ModuleError> {
        let a: ChecksumArgs = parse_args("mysql_checksum", args)?;
        let databases = match Databases::from_json(a.databases.as_ref(), "mysql_checksum")? {
            Some(Databases::All) => {
                return Err(ModuleError::Args(
                    "mysql_checksum: leave databases out for every user database".into(),
                ));
            }
            Some(Databases::Named(n)) => Some(n),
            None => None,
        };
        let client = Client::open(ctx, &a.login).await?;
        let result = checksum(ctx, &client, databases, &a.exclude_tables).await;
        client.close(ctx).await;
        result
    }
}

async fn checksum(
    ctx: &ModuleContext,
    client: &Client,
    databases: Option<Vec<String>>,
    exclude_tables: &[String],
) -> Result<Outcome, ModuleError> {
    let present = client.databases(ctx).await?;
    let dbs: Vec<String> = match databases {
        Some(names) => {
            let missing: Vec<&str> = names
                .iter()
                .filter(|d| !present.contains(d))
                .map(String::as_str)
                .collect();
            if !missing.is_empty() {
                return Err(ModuleError::failed(format!(
                    "no such database on the server: {}",
                    missing.join(", ")
                )));
            }
            names
        }
        None => present
            .into_iter()
            .filter(|d| !is_system_schema(d))
            .collect(),
    };
    let mut tables: Vec<(String, String)> = Vec::new();
    if !dbs.is_empty() {
        let list = dbs
            .iter()
            .map(|d| sql_str(d))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT TABLE_SCHEMA AS db, TABLE_NAME AS t FROM information_schema.TABLES \
WHERE TABLE_TYPE IN ('BASE TABLE', 'SYSTEM VERSIONED') AND TABLE_SCHEMA IN ({list}) \
ORDER BY TABLE_SCHEMA, TABLE_NAME"
        );
        for set in client.query(ctx, &sql, None, true).await? {
            for row in set.rows {
                let get = |k: &str| {
                    row.iter()
                        .find(|(c, _)| c == k)
                        .and_then(|(_, v)| v.clone())
                };
                if let (Some(d), Some(t)) = (get("db"), get("t")) {
                    tables.push((d, t));
                }
            }
        }
    }
    let mut excluded = Vec::new();
    tables.retain(|(d, t)| {
        let out = exclude_tables
            .iter()
            .any(|e| e == t || *e == format!("{d}.{t}"));
        if out {
            excluded.push(format!("{d}.{t}"));
        }
        !out
    });
    let mut entries: BTreeMap<String, (u64, Option<u64>)> = BTreeMap::new();
    if !tables.is_empty() {
        let full = |(d, t): &(String, String)| format!("{}.{}", ident(d), ident(t));
        let counts = tables
            .iter()
            .map(|dt| format!("SELECT COUNT(*) AS n FROM {}", full(dt)))
            .collect::<Vec<_>>()
            .join("\nUNION ALL ");
        let names = tables.iter().map(full).collect::<Vec<_>>().join(", ");
        let sql = format!("{counts};\nCHECKSUM TABLE {names};\n");
        let sets = client.query(ctx, &sql, None, true).await?;
        let (Some(count_set), Some(sum_set)) = (sets.first(), sets.get(1)) else {
            return Err(ModuleError::failed(
                "the server did not answer the counts and checksums",
            ));
        };
        if count_set.rows.len() != tables.len() || sum_set.rows.len() != tables.len() {
            return Err(ModuleError::failed(format!(
                "the server answered {} counts and {} checksums for {} tables",
                count_set.rows.len(),
                sum_set.rows.len(),
                tables.len()
            )));
        }
        for (((d, t), count), sum) in tables.iter().zip(&count_set.rows).zip(&sum_set.rows) {
            let n = count
                .first()
                .and_then(|(_, v)| v.as_deref())
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| ModuleError::failed(format!("no row count for {d}.{t}")))?;
            let c = sum
                .iter()
                .find(|(k, _)| k == "Checksum")
                .and_then(|(_, v)| v.as_deref())
                .and_then(|v| v.parse::<u64>().ok());
            entries.insert(format!("{d}.{t}"), (n, c));
        }
    }
    let mut lines = String::new();
    let mut map = serde_json::Map::new();
    for (k, (n, c)) in &entries {
        lines.push_str(&format!(
            "{k}\t{n}\t{}\n",
            c.map_or("NULL".to_string(), |c| c.to_string())
        ));
        map.insert(k.clone(), json!({ "rows": n, "checksum": c }));
    }
    let digest = sha256_hex(lines.as_bytes());
    Ok(Outcome::ok()
        .with_msg(format!(
            "{} table(s) in {}: digest {}",
            entries.len(),
            dbs.join(", "),
            &digest[..12]
        ))
        .with_data(json!({
            "tables": Json::Object(map),
            "digest": digest,
            "databases": dbs,
            "excluded": excluded,
            "table_count": entries.len(),
        })))
}
