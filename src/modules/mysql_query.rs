//! `mysql_query`: runs SQL with the `mariadb` (else `mysql`) client and returns the
//! rows. Statements that only read (SELECT, SHOW, DESCRIBE, EXPLAIN) also run in a dry
//! run and report `ok`; anything else reports `changed`, and in a dry run is not sent
//! to the server at all.

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::mysql::{
    Client, Login, is_read_only, split_statements, validate_login, with_login_args,
};
use super::{ArgKind, Module, ModuleContext, ModuleDoc, ModuleError, Outcome, arg, parse_args};
use crate::error::{SourceError, SourceFile};
use crate::template::Templates;
use crate::yaml::{Node, Value};

/// The `mysql_query` module.
pub struct MysqlQuery;

static DOC: ModuleDoc = ModuleDoc {
    name: "mysql_query",
    summary: "Run SQL on a MariaDB/MySQL server and return the rows",
    description: "Sends the statements (a string, possibly with several statements separated by `;`, \
or a list) on the client's standard input, in one session; the first failing statement fails \
the step and the rest are not run. With single_transaction they run between START TRANSACTION \
and COMMIT, so a failure leaves nothing applied. Rows come back as objects by column name, every \
value a string (SQL NULL as null). A query is read-only when every statement starts with SELECT, \
SHOW, DESCRIBE, DESC, EXPLAIN or USE and none writes a file (INTO OUTFILE/DUMPFILE): it reports \
`ok` and also runs in a dry run. Anything else reports `changed` and, in a dry run, is not run: \
the step says `would change`. (A stored function called from a SELECT may still write; such a \
query is run in a dry run.) The password goes through a 0600 option file in a private temporary \
directory on the host, never a command line.",
    free_form: Some("query"),
    args: with_login_args![
        arg(
            "query",
            ArgKind::StrOrList,
            true,
            "SQL: a string (statements separated by `;`) or a list of statements",
        ),
        arg(
            "database",
            ArgKind::Str,
            false,
            "the database the statements run in",
        ),
        arg(
            "single_transaction",
            ArgKind::Bool,
            false,
            "run everything in one transaction, committed only when every statement succeeded (default false)",
        ),
    ],
    open_args: false,
    example: "- id: count-instances\n  mysql_query:\n    database: nova\n    query: SELECT COUNT(*) AS n FROM instances WHERE deleted = 0\n  register: instances\n- id: report\n  debug: \"{{ instances.data.rows[0].n }} instances\"\n  needs: [count-instances]\n",
    returns: &[
        (
            "rows",
            "rows of the last statement that returned rows: a list of objects by column name (values are strings, NULL is null)",
        ),
        ("rowcount", "how many rows that is"),
        (
            "results",
            "every result set in order: a list of {statement, rows}",
        ),
        ("statements", "how many statements were sent"),
        ("read_only", "whether every statement only reads"),
    ],
    rollback: "none: give the step a `rollback:` with the compensating SQL (e.g. a mysql_query)",
};

#[derive(Debug, Deserialize)]
struct QueryArgs {
    query: Json,
    database: Option<String>,
    #[serde(default)]
    single_transaction: bool,
    #[serde(flatten)]
    login: Login,
}

fn statements(query: &Json) -> Result<Vec<String>, ModuleError> {
    let texts: Vec<String> = match query {
        Json::String(s) => vec![s.clone()],
        Json::Array(items) => items
            .iter()
            .map(|i| match i {
                Json::String(s) => Ok(s.clone()),
                other => Err(ModuleError::Args(format!(
                    "mysql_query: `{other}` in query is not a statement"
                ))),
            })
            .collect::<Result<_, _>>()?,
        other => {
            return Err(ModuleError::Args(format!(
                "mysql_query: query must be a string or a list of strings, found {other}"
            )));
        }
    };
    let all: Vec<String> = texts.iter().flat_map(|t| split_statements(t)).collect();
    if all.is_empty() {
        return Err(ModuleError::Args("mysql_query: the query is empty".into()));
    }
    Ok(all)
}

#[async_trait]
impl Module for MysqlQuery {
    fn doc(&self) -> &'static ModuleDoc {
        &DOC
    }

    fn validate(&self, args: &Node, file: &SourceFile) -> Vec<SourceError> {
        let mut errors = validate_login(args, file);
        if let Some(q) = args.get("query") {
            let literal: Vec<&str> = match &q.value {
                Value::Str(s) => vec![s.as_str()],
                Value::Seq(items) => items.iter().filter_map(Node::as_str).collect(),
                _ => Vec::new(),
            };
            if let Value::Seq(items) = &q.value
                && let Some(bad) = items.iter().find(|i| i.as_str().is_none())
            {
                errors.push(bad.error(
                    file,
                    format!("a statement must be a string, found {}", bad.kind()),
                ));
            }
            if !literal.iter().any(|s| Templates::is_template(s))
                && literal.iter().all(|s| split_statements(s).is_empty())
            {
                errors.push(
                    q.error(file, "the query is empty")
                        .with_help("e.g. query: SELECT COUNT(*) AS n FROM instances"),
                );
            }
        }
        errors
    }

    async fn run(&self, ctx: &ModuleContext, args: &Json) -> Result<Outcome, ModuleError> {
        let a: QueryArgs = parse_args("mysql_query", args)?;
        let stmts = statements(&a.query)?;
        let read_only = stmts.iter().all(|s| is_read_only(s));
        if ctx.check && !read_only {
            let first = stmts
                .iter()
                .find(|s| !is_read_only(s))
                .map(|s| s.lines().next().unwrap_or_default().to_string())
                .unwrap_or_default();
            return Ok(Outcome::changed()
                .with_data(json!({
                    "rows": [],
                    "rowcount": 0,
                    "results": [],
                    "statements": stmts.len(),
                    "read_only": false,
                }))
                .with_msg(format!(
                    "would run {} statement(s), not run in a dry run: `{first}` may write",
                    stmts.len()
                )));
        }
        let mut sql = String::new();
        if a.single_transaction {
            sql.push_str("START TRANSACTION;\n");
        }
        for s in &stmts {
            sql.push_str(s);
            sql.push_str(";\n");
        }
        if a.single_transaction {
            sql.push_str("COMMIT;\n");
        }
        let client = Client::open(ctx, &a.login).await?;
        let result = client.query(ctx, &sql, a.database.as_deref(), false).await;
        client.close(ctx).await;
        let sets = result?;
        let rows = sets.last().map(|s| s.rows_json()).unwrap_or_default();
        let results: Vec<Json> = sets
            .iter()
            .map(|s| json!({ "statement": s.statement, "rows": s.rows_json() }))
            .collect();
        let outcome = if read_only {
            Outcome::ok()
        } else {
            Outcome::changed()
        };
        Ok(outcome
            .with_msg(format!(
                "{} statement(s), {} row(s)",
                stmts.len(),
                rows.len()
            ))
            .with_data(json!({
                "rowcount": rows.len(),
                "rows": rows,
                "results": results,
                "statements": stmts.len(),
                "read_only": read_only,
            })))
    }
}
