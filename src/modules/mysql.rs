//! What the MariaDB/MySQL modules (`mysql_dump`, `mysql_restore`, `mysql_query`,
//! `mysql_checksum`) share: the `login_*` arguments and their load-time checks, a
//! [`Client`] that hands the password to the client programs through a 0600
//! defaults file in a private temporary directory on the host (never on a command
//! line, never in the environment of a command line), queries with their result sets
//! parsed from the client's XML output, the statement splitter behind read-only
//! detection, and the dump pipeline (`mariadb-dump | gzip > temporary name`, under
//! pipefail, with the completion trailer checked) that `mysql_dump` and the safety dump
//! of `mysql_restore` both use.
//!
//! Everything runs as commands through [`ModuleContext`], so the same code works over
//! any connection.

use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value as Json};

use super::{ArgKind, ArgSpec, ModuleContext, ModuleError, arg};
use crate::connection::{CommandOutput, CommandSpec, quote};
use crate::error::{SourceError, SourceFile};
use crate::template::Templates;
use crate::yaml::{Node, Value};

/// The connection arguments every MariaDB module takes, documented once.
pub(crate) const LOGIN_ARGS: [ArgSpec; 6] = [
    arg(
        "login_host",
        ArgKind::Str,
        false,
        "server host name or address (default: the client's, usually the local socket); not with login_socket",
    ),
    arg(
        "login_port",
        ArgKind::Int,
        false,
        "TCP port (default: the client's, usually 3306)",
    ),
    arg(
        "login_socket",
        ArgKind::Str,
        false,
        "Unix socket path of a local server; not with login_host",
    ),
    arg(
        "login_user",
        ArgKind::Str,
        false,
        "user name (default: the client's, usually the user running the command)",
    ),
    arg(
        "login_password",
        ArgKind::Str,
        false,
        "password, best from a `secrets:` entry; handed to the client in a 0600 file in a private temporary directory on the host, removed afterwards: never on a command line",
    ),
    arg(
        "defaults_file",
        ArgKind::Str,
        false,
        "a client option file on the host (e.g. /etc/mysql/debian.cnf) read instead of the default ones; login_* arguments win over its [client] group",
    ),
];

/// Builds a module's argument list: its own arguments followed by [`LOGIN_ARGS`].
macro_rules! with_login_args {
    ($($a:expr),* $(,)?) => {
        &[
            $($a,)*
            $crate::modules::mysql::LOGIN_ARGS[0],
            $crate::modules::mysql::LOGIN_ARGS[1],
            $crate::modules::mysql::LOGIN_ARGS[2],
            $crate::modules::mysql::LOGIN_ARGS[3],
            $crate::modules::mysql::LOGIN_ARGS[4],
            $crate::modules::mysql::LOGIN_ARGS[5],
        ]
    };
}
pub(crate) use with_login_args;

/// Schemas that are the server's own: never listed as user data, never dropped.
pub(crate) const SYSTEM_SCHEMAS: [&str; 4] =
    ["information_schema", "performance_schema", "mysql", "sys"];

/// Whether a schema is one of the server's own.
pub(crate) fn is_system_schema(name: &str) -> bool {
    SYSTEM_SCHEMAS.iter().any(|s| s.eq_ignore_ascii_case(name))
}

/// The `login_*` and `defaults_file` arguments, rendered.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Login {
    /// Server host.
    pub login_host: Option<String>,
    /// Server port.
    #[serde(default, deserialize_with = "port")]
    pub login_port: Option<u16>,
    /// Unix socket.
    pub login_socket: Option<String>,
    /// User name.
    pub login_user: Option<String>,
    /// Password (secret).
    pub login_password: Option<String>,
    /// Option file on the host.
    pub defaults_file: Option<String>,
}

/// A port given as a number or as the text of one (a rendered template).
fn port<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    let v = Option::<Json>::deserialize(d)?;
    let n = match &v {
        None | Some(Json::Null) => return Ok(None),
        Some(Json::Number(n)) => n.as_u64(),
        Some(Json::String(s)) => s.trim().parse::<u64>().ok(),
        Some(_) => None,
    };
    n.and_then(|n| u16::try_from(n).ok())
        .filter(|n| *n > 0)
        .map(Some)
        .ok_or_else(|| {
            serde::de::Error::custom(format!(
                "login_port must be a port number (1-65535), found {}",
                v.unwrap_or(Json::Null)
            ))
        })
}

/// Load-time checks of the login arguments: host and socket exclude each other, the
/// port is a port, no value holds a line break (it would break the option file).
pub(crate) fn validate_login(args: &Node, file: &SourceFile) -> Vec<SourceError> {
    let mut errors = Vec::new();
    // Only literal values can be judged now: a template may render to nothing.
    let literal = |k: &str| {
        args.get(k).filter(|n| match &n.value {
            Value::Null => false,
            Value::Str(s) => !Templates::is_template(s) && !s.is_empty(),
            _ => true,
        })
    };
    if let (Some(_), Some(sock)) = (literal("login_host"), literal("login_socket")) {
        errors.push(
            sock.error(file, "give `login_host` or `login_socket`, not both")
                .with_help(
                    "a socket reaches a server on this host; login_host reaches it over TCP",
                ),
        );
    }
    if let Some(p) = args.get("login_port")
        && let Value::Int(n) = p.value
        && !(1..=65535).contains(&n)
    {
        errors.push(
            p.error(file, format!("login_port {n} is not a port number"))
                .with_help("a TCP port is between 1 and 65535"),
        );
    }
    for key in ["login_host", "login_socket", "login_user", "defaults_file"] {
        if let Some(n) = args.get(key)
            && let Some(s) = n.as_str()
            && !Templates::is_template(s)
            && (s.contains('\n') || s.is_empty())
        {
            errors.push(n.error(file, format!("`{key}` must be a non-empty single line")));
        }
    }
    errors
}

/// Load-time check of a `databases` list: names, or the word `all` alone.
pub(crate) fn validate_databases(
    args: &Node,
    file: &SourceFile,
    allow_all: bool,
) -> Vec<SourceError> {
    let Some(node) = args.get("databases") else {
        return Vec::new();
    };
    let mut errors = Vec::new();
    let names: Vec<&Node> = match &node.value {
        Value::Seq(items) => items.iter().collect(),
        _ => vec![node],
    };
    if let Value::Seq(items) = &node.value
        && items.is_empty()
    {
        errors.push(
            node.error(file, "`databases` is an empty list")
                .with_help(if allow_all {
                    "name the databases, or write databases: all"
                } else {
                    "name the databases, or leave the argument out for every user database"
                }),
        );
    }
    for n in names {
        match n.scalar_text() {
            Some(s) if Templates::is_template(&s) => {}
            Some(s) if s == "all" && matches!(node.value, Value::Seq(_)) => errors.push(
                n.error(file, "`all` is not a database name inside a list")
                    .with_help("write databases: all"),
            ),
            Some(s) if s == "all" && !allow_all => errors.push(
                n.error(file, "`all` is not accepted here")
                    .with_help("leave `databases` out for every user database"),
            ),
            Some(s) if s.is_empty() || s.contains(['\n', '\0']) || s.len() > 64 => {
                errors.push(n.error(file, format!("`{s}` is not a database name")));
            }
            Some(_) => {}
            None => errors.push(n.error(
                file,
                format!("a database name must be a string, found {}", n.kind()),
            )),
        }
    }
    errors
}

/// Which databases a step is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Databases {
    /// Every database of the server.
    All,
    /// These.
    Named(Vec<String>),
}

impl Databases {
    /// Reads `all`, a name, or a list of names; `None` when not given.
    pub(crate) fn from_json(v: Option<&Json>, module: &str) -> Result<Option<Self>, ModuleError> {
        match v {
            None | Some(Json::Null) => Ok(None),
            Some(Json::String(s)) if s == "all" => Ok(Some(Databases::All)),
            Some(Json::String(s)) => Ok(Some(Databases::Named(vec![check_db_name(s, module)?]))),
            Some(Json::Array(items)) if !items.is_empty() => {
                let mut names = Vec::new();
                for it in items {
                    match it {
                        Json::String(s) if s != "all" => names.push(check_db_name(s, module)?),
                        other => {
                            return Err(ModuleError::Args(format!(
                                "{module}: `{other}` in databases is not a database name"
                            )));
                        }
                    }
                }
                names.dedup();
                Ok(Some(Databases::Named(names)))
            }
            Some(other) => Err(ModuleError::Args(format!(
                "{module}: databases must be `all` or a list of names, found {other}"
            ))),
        }
    }
}

fn check_db_name(s: &str, module: &str) -> Result<String, ModuleError> {
    if s.is_empty() || s.contains(['\n', '\0']) || s.len() > 64 {
        Err(ModuleError::Args(format!(
            "{module}: `{s}` is not a database name"
        )))
    } else {
        Ok(s.to_string())
    }
}

/// Quotes an identifier for SQL: `` `name` `` with backticks doubled.
pub(crate) fn ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// Quotes a string literal for SQL.
pub(crate) fn sql_str(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// A value for a client option file: double-quoted, with `\`, `"` and line breaks
/// escaped as the option-file reader expects.
fn option_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Shell lines that turn on pipefail, or fail when the shell has none: a pipe whose
/// first command failed must never pass for a success.
pub(crate) const PIPEFAIL: &str = "(set -o pipefail) 2>/dev/null || { echo 'the host shell has no pipefail (install bash)' >&2; exit 1; }\nset -o pipefail\n";

/// Shell lines that find the dump tool (`mariadb-dump`, else `mysqldump`) as `$dumper`.
pub(crate) const FIND_DUMPER: &str = "dumper=$(command -v mariadb-dump || command -v mysqldump) || { echo 'neither mariadb-dump nor mysqldump is installed on the host' >&2; exit 127; }\n";

/// Shell lines that find the client (`mariadb`, else `mysql`) as `$client`.
pub(crate) const FIND_CLIENT: &str = "client=$(command -v mariadb || command -v mysql) || { echo 'neither the mariadb nor the mysql client is installed on the host' >&2; exit 127; }\n";

/// How the client programs log in on one step: options for their command lines (no
/// secret among them) and, when a password is given, the private directory holding
/// the option file with it, removed by [`Client::close`].
#[derive(Debug)]
pub(crate) struct Client {
    /// Shell-quoted options, the defaults-file option first.
    opts: String,
    /// The private temporary directory on the host, when one was made.
    private_dir: Option<String>,
}

impl Client {
    /// Prepares the login of a step: with a password, writes the option file (mode
    /// 0600 in a 0700 directory made by `mktemp -d`) through the command's standard
    /// input.
    pub(crate) async fn open(ctx: &ModuleContext, login: &Login) -> Result<Client, ModuleError> {
        let mut opts: Vec<String> = Vec::new();
        let mut private_dir = None;
        if let Some(password) = &login.login_password {
            let mut cnf = String::new();
            if let Some(df) = &login.defaults_file {
                if df.contains(['\n', '\r']) {
                    return Err(ModuleError::Args(
                        "defaults_file must be a single line".into(),
                    ));
                }
                cnf.push_str(&format!("!include {df}\n"));
            }
            cnf.push_str(&format!("[client]\npassword={}\n", option_value(password)));
            let script = "set -e\numask 077\nd=$(mktemp -d \"${TMPDIR:-/tmp}/lifeboat-mysql.XXXXXXXX\")\ncat > \"$d/client.cnf\"\nchmod 600 \"$d/client.cnf\"\nprintf '%s\\n' \"$d\"\n";
            let out = ctx
                .probe(CommandSpec::shell(script).stdin(cnf.into_bytes()))
                .await?;
            let dir = out.stdout_text().trim().to_string();
            if !out.success() || dir.is_empty() {
                return Err(ModuleError::Failed {
                    message: format!(
                        "cannot write the client option file on the host: {}",
                        out.stderr_text().trim()
                    ),
                    output: Some(out),
                });
            }
            let file = format!("{dir}/client.cnf");
            // With a defaults file of the user's, ours includes it and replaces the
            // default search; otherwise ours comes on top of the default files.
            if login.defaults_file.is_some() {
                opts.push(format!("--defaults-file={file}"));
            } else {
                opts.push(format!("--defaults-extra-file={file}"));
            }
            private_dir = Some(dir);
        } else if let Some(df) = &login.defaults_file {
            opts.push(format!("--defaults-file={df}"));
        }
        // A template that rendered to nothing means "not given".
        let given = |v: &Option<String>| {
            v.as_deref()
                .filter(|s| !s.trim().is_empty())
                .map(str::to_string)
        };
        let (host, socket) = (given(&login.login_host), given(&login.login_socket));
        if host.is_some() && socket.is_some() {
            return Err(ModuleError::Args(
                "give `login_host` or `login_socket`, not both (after rendering, both have a value)".into(),
            ));
        }
        if let Some(h) = &host {
            opts.push(format!("--host={h}"));
        }
        if let Some(p) = login.login_port {
            opts.push(format!("--port={p}"));
        }
        if let Some(s) = &socket {
            opts.push(format!("--socket={s}"));
        }
        if let Some(u) = &login.login_user {
            opts.push(format!("--user={u}"));
        }
        Ok(Client {
            opts: opts.iter().map(|o| quote(o)).collect::<Vec<_>>().join(" "),
            private_dir,
        })
    }

    /// The login options, shell-quoted, for a command line.
    pub(crate) fn opts(&self) -> &str {
        &self.opts
    }

    /// Removes the private directory with the option file, if there is one.
    pub(crate) async fn close(self, ctx: &ModuleContext) {
        if let Some(dir) = self.private_dir {
            let _ = ctx
                .probe(CommandSpec::argv(["rm", "-rf", "--", dir.as_str()]))
                .await;
        }
    }

    /// Runs `sql` (on standard input) with the client in XML mode and returns every
    /// result set it printed.
    pub(crate) async fn query(
        &self,
        ctx: &ModuleContext,
        sql: &str,
        database: Option<&str>,
        quiet: bool,
    ) -> Result<Vec<ResultSet>, ModuleError> {
        let db = database
            .map(|d| format!(" --database={}", quote(d)))
            .unwrap_or_default();
        let script = format!(
            "{FIND_CLIENT}exec \"$client\" {} --batch --xml{db}\n",
            self.opts
        );
        let spec = CommandSpec::shell(script).stdin(sql.as_bytes().to_vec());
        let out = if quiet {
            ctx.probe(spec).await?
        } else {
            ctx.run(spec).await?
        };
        if !out.success() {
            return Err(failed("the query failed", out));
        }
        parse_xml(&out.stdout_text())
    }

    /// The databases of the server (`SHOW DATABASES`).
    pub(crate) async fn databases(&self, ctx: &ModuleContext) -> Result<Vec<String>, ModuleError> {
        let sets = self.query(ctx, "SHOW DATABASES", None, true).await?;
        Ok(sets
            .into_iter()
            .flat_map(|s| s.rows)
            .filter_map(|r| r.into_iter().next().and_then(|(_, v)| v))
            .collect())
    }

    /// The server's version (`SELECT VERSION()`).
    pub(crate) async fn server_version(&self, ctx: &ModuleContext) -> Result<String, ModuleError> {
        let sets = self
            .query(ctx, "SELECT VERSION() AS version", None, true)
            .await?;
        Ok(sets
            .into_iter()
            .flat_map(|s| s.rows)
            .find_map(|r| r.into_iter().next().and_then(|(_, v)| v))
            .unwrap_or_default())
    }

    /// Drops databases (never the server's own schemas).
    pub(crate) async fn drop_databases(
        &self,
        ctx: &ModuleContext,
        names: &[String],
    ) -> Result<(), ModuleError> {
        let sql: String = names
            .iter()
            .filter(|n| !is_system_schema(n))
            .map(|n| format!("DROP DATABASE IF EXISTS {};\n", ident(n)))
            .collect();
        if sql.is_empty() {
            return Ok(());
        }
        self.query(ctx, &sql, None, false).await.map(|_| ())
    }
}

/// A failed command as a module error, with its standard error.
pub(crate) fn failed(what: &str, out: CommandOutput) -> ModuleError {
    let text = out.stderr_text();
    // The client echoes a failing statement between lines of dashes before its
    // ERROR line: leave the echo out, keep the rest (the decompressor's complaint too).
    let mut kept = Vec::new();
    let mut in_echo = false;
    for line in text.lines() {
        if line.len() >= 10 && line.chars().all(|c| c == '-') {
            in_echo = !in_echo;
        } else if !in_echo && !line.trim().is_empty() {
            kept.push(line);
        }
    }
    let joined = kept.join("\n");
    let err = match joined.char_indices().nth(2000) {
        Some((i, _)) => format!("{}...", &joined[..i]),
        None => joined,
    };
    let err = err.trim();
    ModuleError::Failed {
        message: if err.is_empty() {
            format!(
                "{what} (exit status {})",
                out.rc.map_or("none".to_string(), |c| c.to_string())
            )
        } else {
            format!("{what}: {err}")
        },
        output: Some(out),
    }
}

/// One result set of a query: its rows, each column name with its value (`None` for
/// SQL NULL), in column order.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ResultSet {
    /// The statement, as the client echoed it.
    pub statement: String,
    /// The rows.
    pub rows: Vec<Vec<(String, Option<String>)>>,
}

impl ResultSet {
    /// The rows as JSON objects by column name (NULL as null; values are strings).
    pub(crate) fn rows_json(&self) -> Vec<Json> {
        self.rows
            .iter()
            .map(|r| {
                let mut m = Map::new();
                for (k, v) in r {
                    m.insert(k.clone(), v.clone().map_or(Json::Null, Json::String));
                }
                Json::Object(m)
            })
            .collect()
    }
}

fn unescape_xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let Some(end) = rest.find(';') else {
            break;
        };
        let entity = &rest[1..end];
        let decoded = match entity {
            "lt" => Some('<'),
            "gt" => Some('>'),
            "amp" => Some('&'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            e if e.starts_with("#x") => u32::from_str_radix(&e[2..], 16)
                .ok()
                .and_then(char::from_u32),
            e if e.starts_with('#') => e[1..].parse::<u32>().ok().and_then(char::from_u32),
            _ => None,
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The value of `attr="..."` in a tag's text.
fn attribute(tag: &str, attr: &str) -> Option<String> {
    let key = format!(" {attr}=\"");
    let start = tag.find(&key)? + key.len();
    let len = tag[start..].find('"')?;
    Some(unescape_xml(&tag[start..start + len]))
}

/// Parses the client's `--xml` output: one `<resultset>` per statement that returned
/// rows, `<row>`s of `<field name="...">value</field>` (or `xsi:nil="true"` for NULL).
/// Values are escaped by the client, so a literal `<` never occurs inside one.
pub(crate) fn parse_xml(text: &str) -> Result<Vec<ResultSet>, ModuleError> {
    let bad = |what: &str| ModuleError::failed(format!("unexpected output of the client: {what}"));
    let mut sets = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("<resultset") {
        rest = &rest[i..];
        let tag_end = rest
            .find('>')
            .ok_or_else(|| bad("an unterminated <resultset>"))?;
        let tag = &rest[..tag_end];
        let mut set = ResultSet {
            statement: attribute(tag, "statement").unwrap_or_default(),
            rows: Vec::new(),
        };
        let end = rest
            .find("</resultset>")
            .ok_or_else(|| bad("a <resultset> without its end"))?;
        let mut body = &rest[tag_end + 1..end];
        rest = &rest[end + "</resultset>".len()..];
        while let Some(r) = body.find("<row>") {
            let row_end = body[r..]
                .find("</row>")
                .map(|e| r + e)
                .ok_or_else(|| bad("a <row> without its end"))?;
            let mut row_text = &body[r + "<row>".len()..row_end];
            body = &body[row_end + "</row>".len()..];
            let mut row = Vec::new();
            while let Some(f) = row_text.find("<field") {
                row_text = &row_text[f..];
                let close = row_text
                    .find('>')
                    .ok_or_else(|| bad("an unterminated <field>"))?;
                let ftag = &row_text[..close];
                let name =
                    attribute(ftag, "name").ok_or_else(|| bad("a <field> without a name"))?;
                if ftag.ends_with('/') {
                    row.push((name, None));
                    row_text = &row_text[close + 1..];
                } else {
                    let vend = row_text
                        .find("</field>")
                        .ok_or_else(|| bad("a <field> without its end"))?;
                    let value = unescape_xml(&row_text[close + 1..vend]);
                    row.push((name, Some(value)));
                    row_text = &row_text[vend + "</field>".len()..];
                }
            }
            set.rows.push(row);
        }
        sets.push(set);
    }
    Ok(sets)
}

/// Splits SQL text into statements at `;` outside quotes and comments (trimmed, empty
/// ones dropped). Client commands such as `DELIMITER` are not understood.
pub(crate) fn split_statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' | '`' => {
                cur.push(c);
                while let Some(d) = chars.next() {
                    cur.push(d);
                    if d == '\\' && c != '`' {
                        if let Some(e) = chars.next() {
                            cur.push(e);
                        }
                    } else if d == c {
                        if chars.peek() == Some(&c) {
                            if let Some(e) = chars.next() {
                                cur.push(e);
                            }
                        } else {
                            break;
                        }
                    }
                }
            }
            '#' => {
                cur.push(c);
                for d in chars.by_ref() {
                    cur.push(d);
                    if d == '\n' {
                        break;
                    }
                }
            }
            '-' if chars.peek() == Some(&'-') => {
                cur.push(c);
                if let Some(d) = chars.next() {
                    cur.push(d);
                }
                if matches!(chars.peek(), Some(' ' | '\t' | '\n' | '\r') | None) {
                    for d in chars.by_ref() {
                        cur.push(d);
                        if d == '\n' {
                            break;
                        }
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                cur.push(c);
                if let Some(d) = chars.next() {
                    cur.push(d);
                }
                let mut prev = '\0';
                for d in chars.by_ref() {
                    cur.push(d);
                    if prev == '*' && d == '/' {
                        break;
                    }
                    prev = d;
                }
            }
            ';' => {
                let s = cur.trim();
                if !s.is_empty() {
                    out.push(s.to_string());
                }
                cur.clear();
            }
            c => cur.push(c),
        }
    }
    let s = cur.trim();
    if !s.is_empty() {
        out.push(s.to_string());
    }
    out
}

/// The first keyword of a statement, upper-cased, after comments and opening
/// parentheses; `None` when it starts with an executable comment (`/*! ... */`) or
/// with something else than a word.
pub(crate) fn first_keyword(stmt: &str) -> Option<String> {
    let mut s = stmt.trim_start();
    loop {
        if s.starts_with("/*!") || s.starts_with("/*M!") {
            return None;
        } else if let Some(rest) = s.strip_prefix("/*") {
            s = rest.find("*/").map_or("", |i| &rest[i + 2..]).trim_start();
        } else if s.starts_with('#')
            || s.starts_with("-- ")
            || s.starts_with("--\t")
            || s == "--"
            || s.starts_with("--\n")
        {
            s = s.find('\n').map_or("", |i| &s[i + 1..]).trim_start();
        } else if let Some(rest) = s.strip_prefix('(') {
            s = rest.trim_start();
        } else {
            break;
        }
    }
    let word: String = s
        .chars()
        .take_while(|c| c.is_ascii_alphabetic() || *c == '_')
        .collect();
    if word.is_empty() {
        None
    } else {
        Some(word.to_ascii_uppercase())
    }
}

/// Whether a statement only reads: it starts with SELECT, SHOW, DESCRIBE, DESC, EXPLAIN
/// or USE, and does not write a file (`INTO OUTFILE` / `INTO DUMPFILE`). A stored
/// function called by a SELECT may still write; that cannot be seen from the text.
pub(crate) fn is_read_only(stmt: &str) -> bool {
    let Some(kw) = first_keyword(stmt) else {
        return false;
    };
    if !matches!(
        kw.as_str(),
        "SELECT" | "SHOW" | "DESCRIBE" | "DESC" | "EXPLAIN" | "USE"
    ) {
        return false;
    }
    let words: Vec<String> = stmt
        .split_whitespace()
        .map(str::to_ascii_uppercase)
        .collect();
    !words
        .windows(2)
        .any(|w| w[0] == "INTO" && (w[1].starts_with("OUTFILE") || w[1].starts_with("DUMPFILE")))
}

/// Compression of a dump file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compress {
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
    /// Plain SQL text.
    None,
}

impl Compress {
    /// Reads the `compress` argument.
    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "gzip" | "gz" => Some(Compress::Gzip),
            "zstd" | "zst" => Some(Compress::Zstd),
            "none" => Some(Compress::None),
            _ => None,
        }
    }

    /// The compression a file name implies: `.gz`, `.zst`, else none.
    pub(crate) fn from_name(path: &str) -> Self {
        if path.ends_with(".gz") {
            Compress::Gzip
        } else if path.ends_with(".zst") || path.ends_with(".zstd") {
            Compress::Zstd
        } else {
            Compress::None
        }
    }

    /// The compression the first bytes of a file show (gzip and zstd magic numbers).
    pub(crate) fn from_magic(hex: &str) -> Self {
        let h: String = hex.split_whitespace().collect();
        if h.starts_with("1f8b") {
            Compress::Gzip
        } else if h.starts_with("28b52ffd") {
            Compress::Zstd
        } else {
            Compress::None
        }
    }

    /// Its name in arguments and manifests.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Compress::Gzip => "gzip",
            Compress::Zstd => "zstd",
            Compress::None => "none",
        }
    }

    /// A pipeline stage compressing standard input to standard output (empty: none).
    fn compressor(self) -> &'static str {
        match self {
            Compress::Gzip => " | gzip -c",
            Compress::Zstd => " | zstd -q -c",
            Compress::None => "",
        }
    }

    /// A command writing the decompressed content of the shell word `file` to
    /// standard output.
    pub(crate) fn reader(self, file: &str) -> String {
        match self {
            Compress::Gzip => format!("gzip -dc -- {file}"),
            Compress::Zstd => format!("zstd -dcq -- {file}"),
            Compress::None => format!("cat -- {file}"),
        }
    }
}

/// What a dump should contain and where it goes.
pub(crate) struct DumpPlan<'a> {
    /// The databases (`All`: `--all-databases`).
    pub databases: &'a Databases,
    /// The temporary file written.
    pub tmp: &'a str,
    /// Its compression.
    pub compress: Compress,
    /// More options for the dump tool.
    pub extra_args: &'a [String],
}

/// What a finished dump is.
#[derive(Debug, Clone, Default)]
pub(crate) struct DumpFacts {
    /// UTC time taken just before the dump tool started.
    pub started: String,
    /// UTC time it ended.
    pub finished: String,
    /// `mariadb-dump --version`.
    pub tool: String,
    /// sha256 of the file.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
}

/// The dump tool's options for a plan, shell-quoted (after the login options):
/// consistent by default (`--single-transaction --routines --events --triggers`).
pub(crate) fn dump_options(plan: &DumpPlan<'_>) -> String {
    let mut words: Vec<String> = [
        "--single-transaction",
        "--routines",
        "--events",
        "--triggers",
    ]
    .iter()
    .map(|s| (*s).to_string())
    .collect();
    words.extend(plan.extra_args.iter().cloned());
    match plan.databases {
        Databases::All => words.push("--all-databases".into()),
        Databases::Named(names) => {
            words.push("--databases".into());
            words.push("--".into());
            words.extend(names.iter().cloned());
        }
    }
    words.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" ")
}

/// Dumps to `plan.tmp` under pipefail, checks the file decompresses and ends with the
/// tool's "-- Dump completed" trailer, syncs it, and measures it. On any failure the
/// temporary file is removed (a shell trap) and nothing is left behind.
pub(crate) async fn dump(
    ctx: &ModuleContext,
    client: &Client,
    plan: &DumpPlan<'_>,
) -> Result<DumpFacts, ModuleError> {
    let t = quote(plan.tmp);
    let script = format!(
        "set -eu\n{PIPEFAIL}umask 077\n{FIND_DUMPER}tmp={t}\ntrap 'rm -f -- \"$tmp\"' EXIT\n\
echo \"tool=$(\"$dumper\" --version)\"\n\
echo \"started=$(date -u +%Y-%m-%dT%H:%M:%SZ)\"\n\
\"$dumper\" {login} {opts}{compress} > \"$tmp\"\n\
echo \"finished=$(date -u +%Y-%m-%dT%H:%M:%SZ)\"\n\
{reader} | tail -c 256 | grep -q -- '-- Dump completed' || {{ echo 'the dump does not end with the \"-- Dump completed\" trailer: it is incomplete (or extra_args removed the comments)' >&2; exit 1; }}\n\
sync -- \"$tmp\" 2>/dev/null || true\n\
echo \"sha256=$(sha256sum < \"$tmp\" | cut -c1-64)\"\n\
echo \"size=$(stat -c %s -- \"$tmp\")\"\n\
trap - EXIT\n",
        login = client.opts(),
        opts = dump_options(plan),
        compress = plan.compress.compressor(),
        reader = plan.compress.reader("\"$tmp\""),
    );
    let out = ctx.run(CommandSpec::shell(script)).await?;
    if !out.success() {
        return Err(failed("the dump failed", out));
    }
    let mut facts = DumpFacts::default();
    for line in out.stdout_text().lines() {
        if let Some((k, v)) = line.split_once('=') {
            let v = v.trim().to_string();
            match k {
                "tool" => facts.tool = v,
                "started" => facts.started = v,
                "finished" => facts.finished = v,
                "sha256" => facts.sha256 = v,
                "size" => facts.size = v.parse().unwrap_or(0),
                _ => {}
            }
        }
    }
    if facts.sha256.len() != 64 {
        let _ = ctx
            .probe(CommandSpec::argv(["rm", "-f", "--", plan.tmp]))
            .await;
        return Err(ModuleError::Failed {
            message: "the dump ran but its sha256 could not be read".into(),
            output: Some(out),
        });
    }
    Ok(facts)
}

/// The first bytes of a host file in hex (`od`), for [`Compress::from_magic`].
pub(crate) async fn magic(ctx: &ModuleContext, path: &str) -> Result<String, ModuleError> {
    let out = ctx
        .probe(CommandSpec::argv(["od", "-An", "-tx1", "-N4", "--", path]))
        .await?;
    if out.success() {
        Ok(out.stdout_text())
    } else {
        Err(failed(&format!("cannot read {path}"), out))
    }
}

/// Imports a dump (decompressed by `compress`) with the client, under pipefail. With
/// `into`, the dump's `CREATE DATABASE` and `USE` lines are dropped and the client
/// starts in that database, so a one-database dump lands there.
pub(crate) async fn import(
    ctx: &ModuleContext,
    client: &Client,
    src: &str,
    compress: Compress,
    into: Option<&str>,
) -> Result<(), ModuleError> {
    let (filter, db) = match into {
        Some(d) => (
            " | sed -e '/^CREATE DATABASE \\/\\*!32312 IF NOT EXISTS\\*\\/ `/d' -e '/^USE `.*`;$/d'"
                .to_string(),
            format!(" --database={}", quote(d)),
        ),
        None => (String::new(), String::new()),
    };
    let script = format!(
        "set -eu\n{PIPEFAIL}{FIND_CLIENT}{reader}{filter} | \"$client\" {login} --batch{db}\n",
        reader = compress.reader(&quote(src)),
        login = client.opts(),
    );
    let out = ctx.run(CommandSpec::shell(script)).await?;
    if out.success() {
        Ok(())
    } else {
        Err(failed(&format!("the import of {src} failed"), out))
    }
}

/// The databases a dump creates, from its `USE` lines (one pass over the file).
pub(crate) async fn databases_in_dump(
    ctx: &ModuleContext,
    src: &str,
    compress: Compress,
) -> Result<Vec<String>, ModuleError> {
    let script = format!(
        "{PIPEFAIL}{} | {{ grep -E '^USE `.*`;$' || true; }}\n",
        compress.reader(&quote(src))
    );
    let out = ctx.probe(CommandSpec::shell(script)).await?;
    if !out.success() {
        return Err(failed(&format!("cannot read {src}"), out));
    }
    let mut names: Vec<String> = Vec::new();
    for line in out.stdout_text().lines() {
        if let Some(inner) = line
            .strip_prefix("USE `")
            .and_then(|l| l.strip_suffix("`;"))
        {
            let name = inner.replace("``", "`");
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_split_outside_quotes_and_comments() {
        let s = split_statements(
            "select 'a;b', \"c;\" , `d;` ; -- x; y\nshow tables;# z;\n/* ; */ select 1;;",
        );
        assert_eq!(
            s,
            vec![
                "select 'a;b', \"c;\" , `d;`",
                "-- x; y\nshow tables",
                "# z;\n/* ; */ select 1"
            ]
        );
        assert_eq!(
            split_statements("select 'it\\'s;'"),
            vec!["select 'it\\'s;'"]
        );
    }

    #[test]
    fn read_only_statements() {
        for s in [
            "SELECT 1",
            "  show databases",
            "-- c\nselect 1",
            "/* c */ DESCRIBE t",
            "(select 1) union (select 2)",
            "explain select * from t",
            "select 1 into @x",
        ] {
            assert!(is_read_only(s), "{s}");
        }
        for s in [
            "update t set a=1",
            "/*!40101 SET x=1 */",
            "select * from t into outfile '/tmp/x'",
            "WITH x AS (select 1) delete from t",
            "insert into t select 1",
            "",
        ] {
            assert!(!is_read_only(s), "{s}");
        }
    }

    #[test]
    fn xml_output_is_parsed() {
        let text = "<?xml version=\"1.0\"?>\n\n<resultset statement=\"select 1 as a, NULL as b\" xmlns:xsi=\"x\">\n  <row>\n\t<field name=\"a\">1 &lt;&amp;&quot;\n</field>\n\t<field name=\"b\" xsi:nil=\"true\" />\n  </row>\n</resultset>\n<?xml version=\"1.0\"?>\n<resultset statement=\"x\" xmlns:xsi=\"x\"></resultset>\n";
        let sets = parse_xml(text).expect("parses");
        assert_eq!(sets.len(), 2);
        assert_eq!(
            sets[0].rows,
            vec![vec![
                ("a".to_string(), Some("1 <&\"\n".to_string())),
                ("b".to_string(), None)
            ]]
        );
        assert!(sets[1].rows.is_empty());
        assert!(parse_xml("<resultset statement=\"x\"><row><field").is_err());
    }

    #[test]
    fn option_values_are_escaped() {
        assert_eq!(option_value("a\"b\\c#d\n"), "\"a\\\"b\\\\c#d\\n\"");
    }

    #[test]
    fn compression_by_name_and_magic() {
        assert_eq!(Compress::from_name("/b/x.sql.gz"), Compress::Gzip);
        assert_eq!(Compress::from_name("/b/x.sql.zst"), Compress::Zstd);
        assert_eq!(Compress::from_name("/b/x.sql"), Compress::None);
        assert_eq!(Compress::from_magic(" 1f 8b 08 00\n"), Compress::Gzip);
        assert_eq!(Compress::from_magic(" 28 b5 2f fd\n"), Compress::Zstd);
        assert_eq!(Compress::from_magic(" 2f 2a 4d 21\n"), Compress::None);
    }
}
