//! `restic`: encrypted, deduplicated backups to a repository restic speaks (a local
//! path, `sftp:`, `swift:`, `s3:`, `rclone:`...), with the actions `init`, `backup`,
//! `restore`, `forget`, `check` and `snapshots`.
//!
//! Secrets never reach a command line: every restic command runs in a script that
//! makes a private directory (`mktemp -d`, 0700), reads from its standard input a
//! 0600 file of `export` lines (the backend's variables: `ST_KEY`, `AWS_*`,
//! `RCLONE_CONFIG_*`...) and the repository password, written by the shell's builtin
//! `printf` into a 0600 file named by `RESTIC_PASSWORD_FILE`, sources it, runs restic,
//! and removes the directory on exit. The script's text holds no secret, so neither
//! `ps` nor the `sh -c` line shows one.
//!
//! restic 0.14 fails at once when another restic holds the repository's lock (a
//! `forget`, `prune` or `check` takes it exclusively): the script retries such a
//! command every second for up to `lock_wait` (default 5m), so steps of several hosts
//! on one repository (sends, or the rollback's forgets) wait for each other.
//!
//! Rollback: a snapshot made by `backup` is forgotten; a `restore` removes what it
//! restored and puts back the target it moved aside.

use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::backup_common::{check_choice, choice, exists, refuse_root, str_list};
use super::copy::sibling;
use super::{
    ArgKind, Module, ModuleContext, ModuleDoc, ModuleError, Outcome, arg, parse_args,
    parse_duration,
};
use crate::connection::{CommandOutput, CommandSpec, is_env_name, quote};
use crate::error::{SourceError, SourceFile};
use crate::template::Templates;
use crate::yaml::{Node, Value};

/// The `restic` module.
pub struct Restic;

const ACTIONS: &[&str] = &["init", "backup", "restore", "forget", "check", "snapshots"];

/// The keep policies of `forget`, with restic's option for each.
const KEEPS: &[(&str, &str)] = &[
    ("keep_last", "--keep-last"),
    ("keep_hourly", "--keep-hourly"),
    ("keep_daily", "--keep-daily"),
    ("keep_weekly", "--keep-weekly"),
    ("keep_monthly", "--keep-monthly"),
    ("keep_yearly", "--keep-yearly"),
];

/// Which arguments each action takes (beyond the common ones).
fn action_args(action: &str) -> &'static [&'static str] {
    match action {
        "backup" => &["paths", "tags", "exclude", "hostname", "chdir"],
        "restore" => &["snapshot", "target", "include", "tags", "hostname", "path"],
        "forget" => &[
            "keep_last",
            "keep_hourly",
            "keep_daily",
            "keep_weekly",
            "keep_monthly",
            "keep_yearly",
            "keep_within",
            "prune",
            "group_by",
            "tags",
            "hostname",
        ],
        "check" => &["read_data_subset"],
        "snapshots" => &["tags", "hostname", "path"],
        _ => &[],
    }
}

/// Arguments every action takes.
const COMMON: &[&str] = &[
    "action",
    "repository",
    "password",
    "password_file",
    "env",
    "options",
    "lock_wait",
];

/// How long a command waits for another restic's lock on the repository by default.
const LOCK_WAIT: Duration = Duration::from_secs(300);

static DOC: ModuleDoc = ModuleDoc {
    name: "restic",
    summary: "Encrypted, deduplicated backups with restic: init, backup, restore, forget, check, snapshots",
    description: "Runs restic (0.14 or later, Debian's `restic` package) on the host against \
`repository`: a local path, `sftp:user@host:/path`, `swift:container:/path`, `s3:...` or \
`rclone:remote:path`. The password (`password`, best from `secrets:`) reaches restic as a 0600 \
file named by RESTIC_PASSWORD_FILE, and the backend's variables (`env`: ST_AUTH/ST_USER/ST_KEY, \
AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, RCLONE_CONFIG_*, OS_*) as `export` lines of a 0600 \
file the script sources; both sit in a private `mktemp -d` directory on the host, removed when \
the command ends, and never appear on a command line. restic trims spaces around a password \
read from a file. A command refused because another restic holds the repository's lock is \
retried after a pause of a second, as many times as `lock_wait` has seconds (default 5m). For `rclone:` repositories an inherited AWS_CA_BUNDLE is unset unless `env` \
sets it (it breaks rclone against a plain-http endpoint).\n\
Actions: `init` creates the repository, ok when it already exists (a wrong password fails). \
`backup` makes a snapshot of `paths` (tags, excludes, `hostname`: default the inventory host \
name), always `changed` (restic 0.14 writes a snapshot even when nothing changed; \
`data_added` says how much was new); a snapshot restic wrote but reported incomplete \
(exit 3: files it could not read) is forgotten at once and the step fails; in a dry run it runs `restic backup --dry-run` and \
reports what would be added. A backup of `.` (with `chdir`) records the directory's own mode \
and owner in a tag `lifeboat-root:MODE:OWNER:GROUP` (restic keeps none for it). \
`restore` restores `snapshot` (an id, or `latest` among the snapshots matching `hostname`, \
`tags` and `path`; default latest) into `target`, which must not be `/`: an existing target is \
first moved aside to `.<name>.lifeboat-aside-<run_id>-<random>`; the target gets the mode and \
owner that tag recorded, or else those of the target it replaces (restic makes it 0700); a dry \
run resolves the snapshot. `forget` applies keep policies (`keep_last`, `keep_hourly`, `keep_daily`, \
`keep_weekly`, `keep_monthly`, `keep_yearly`, `keep_within`; at least one) to the snapshots \
matching `hostname`/`tags`, grouped by host and paths (`group_by` to change it), and always keeps the newest snapshot of \
each group (`--keep-last 1` at least), so the newest snapshot of a host is never removed; \
`prune: true` then removes the unreferenced data. Changed when it forgot something; a dry run \
runs `restic forget --dry-run` and lists what would go. `check` verifies the repository's \
structure, and with `read_data_subset` (`10%`, `1/5`) reads that much of the data back; it \
changes nothing and runs in a dry run too. `snapshots` lists the snapshots (filters: \
hostname, tags, path) into the result, and runs in a dry run too. In a dry run, every action but \
`init` on a repository that does not exist yet is `unknown` (an earlier `init` of the plan makes \
it in the run), never a failure of the plan.",
    free_form: None,
    args: &[
        arg(
            "action",
            ArgKind::Str,
            true,
            "init | backup | restore | forget | check | snapshots",
        ),
        arg(
            "repository",
            ArgKind::Str,
            true,
            "the repository: a host path, sftp:user@host:/path, swift:container:/path, s3:..., rclone:remote:path",
        ),
        arg(
            "password",
            ArgKind::Str,
            false,
            "the repository password (a secret): written to a 0600 file for RESTIC_PASSWORD_FILE, never on a command line; this or password_file",
        ),
        arg(
            "password_file",
            ArgKind::Str,
            false,
            "a file on the host holding the password (RESTIC_PASSWORD_FILE); this or password",
        ),
        arg(
            "env",
            ArgKind::Map,
            false,
            "the backend's variables, e.g. {ST_AUTH: ..., ST_USER: ..., ST_KEY: ...} or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or RCLONE_CONFIG_<REMOTE>_*: handed over in a 0600 file, never on a command line",
        ),
        arg(
            "options",
            ArgKind::List,
            false,
            "restic extended options (`-o`), e.g. [\"sftp.command=ssh -i /root/.ssh/offsite backup@vault -s sftp\"]: on the command line, so no secret",
        ),
        arg(
            "lock_wait",
            ArgKind::Str,
            false,
            "how long to wait while another restic holds the repository's lock (restic 0.14 gives up at once), e.g. 30s, 10m (default 5m; 0: fail at once)",
        ),
        arg(
            "paths",
            ArgKind::StrOrList,
            false,
            "backup: the host paths to back up (required for backup)",
        ),
        arg(
            "chdir",
            ArgKind::Str,
            false,
            "backup: run restic in this directory; with paths: [.] the snapshot holds the directory's contents at its root (restored as they are into a target), and records the directory as its path",
        ),
        arg(
            "tags",
            ArgKind::StrOrList,
            false,
            "backup: tags given to the snapshot; restore, forget, snapshots: only snapshots with all these tags",
        ),
        arg(
            "exclude",
            ArgKind::StrOrList,
            false,
            "backup: patterns left out (restic --exclude)",
        ),
        arg(
            "hostname",
            ArgKind::Str,
            false,
            "backup: the host name recorded in the snapshot (default: the inventory host name); restore, forget, snapshots: only that host's snapshots (restore default: the inventory host name)",
        ),
        arg(
            "snapshot",
            ArgKind::Str,
            false,
            "restore: a snapshot id, or `latest` (default) among those matching hostname, tags and path",
        ),
        arg(
            "target",
            ArgKind::Str,
            false,
            "restore: the directory restored into (required for restore; not `/`); an existing one is moved aside first",
        ),
        arg(
            "include",
            ArgKind::StrOrList,
            false,
            "restore: only these paths of the snapshot (restic --include)",
        ),
        arg(
            "path",
            ArgKind::Str,
            false,
            "restore, snapshots: only snapshots that include this backed-up path",
        ),
        arg(
            "keep_last",
            ArgKind::Int,
            false,
            "forget: keep the last n snapshots",
        ),
        arg(
            "keep_hourly",
            ArgKind::Int,
            false,
            "forget: keep the last n hourly snapshots",
        ),
        arg(
            "keep_daily",
            ArgKind::Int,
            false,
            "forget: keep the last n daily snapshots",
        ),
        arg(
            "keep_weekly",
            ArgKind::Int,
            false,
            "forget: keep the last n weekly snapshots",
        ),
        arg(
            "keep_monthly",
            ArgKind::Int,
            false,
            "forget: keep the last n monthly snapshots",
        ),
        arg(
            "keep_yearly",
            ArgKind::Int,
            false,
            "forget: keep the last n yearly snapshots",
        ),
        arg(
            "keep_within",
            ArgKind::Str,
            false,
            "forget: keep every snapshot younger than this, in restic's form (e.g. 7d, 1y2m3d)",
        ),
        arg(
            "prune",
            ArgKind::Bool,
            false,
            "forget: also remove the data no snapshot needs any more (default false)",
        ),
        arg(
            "group_by",
            ArgKind::Str,
            false,
            "forget: how snapshots are grouped before the keep policy applies to each group: host, paths and/or tags, comma-separated (default host,paths; `host` when each snapshot has a path of its own, such as a dated directory)",
        ),
        arg(
            "read_data_subset",
            ArgKind::Str,
            false,
            "check: read back this part of the data, e.g. 10% or 1/5 (default: structure only)",
        ),
    ],
    open_args: false,
    example: "- id: offsite-nova\n  restic:\n    action: backup\n    repository: swift:offsite:/controller\n    password: \"{{ offsite_password }}\"\n    env:\n      ST_AUTH: \"{{ offsite_swift_auth }}\"\n      ST_USER: \"{{ offsite_swift_user }}\"\n      ST_KEY: \"{{ offsite_swift_key }}\"\n    paths: [/backup/nova/latest]\n    tags: [nova]\n  register: sent\n",
    returns: &[
        ("action", "the action"),
        ("repository", "the repository"),
        (
            "created",
            "init: whether the repository was created (false: it existed)",
        ),
        (
            "snapshot_id",
            "backup: the new snapshot's (short) id; restore: the snapshot restored",
        ),
        (
            "files_new, files_changed, files_unmodified, data_added, total_files_processed, total_bytes_processed",
            "backup: restic's summary (dry run: what would be added)",
        ),
        (
            "target, moved_aside",
            "restore: where it restored, and where the previous target went (null: there was none)",
        ),
        (
            "snapshot",
            "restore: the snapshot restored, as `restic snapshots --json` lists it",
        ),
        (
            "removed, kept",
            "forget: the ids forgotten (dry run: that would be) and kept",
        ),
        (
            "snapshots, count, latest",
            "snapshots: the list, its length and the newest (null when none)",
        ),
        ("output", "check: restic's report"),
    ],
    rollback: "backup: forgets the snapshot it made (`restic forget ID`; the data goes at the next \
prune). restore: removes what it restored and moves the previous target back. init, forget, check \
and snapshots: nothing to undo (a forgotten snapshot cannot be brought back).",
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Args {
    action: String,
    repository: String,
    password: Option<String>,
    password_file: Option<String>,
    #[serde(default)]
    env: serde_json::Map<String, Json>,
    #[serde(default, deserialize_with = "str_list")]
    options: Vec<String>,
    #[serde(default, deserialize_with = "str_list")]
    paths: Vec<String>,
    #[serde(default, deserialize_with = "str_list")]
    tags: Vec<String>,
    #[serde(default, deserialize_with = "str_list")]
    exclude: Vec<String>,
    hostname: Option<String>,
    snapshot: Option<String>,
    target: Option<String>,
    #[serde(default, deserialize_with = "str_list")]
    include: Vec<String>,
    path: Option<String>,
    keep_last: Option<Json>,
    keep_hourly: Option<Json>,
    keep_daily: Option<Json>,
    keep_weekly: Option<Json>,
    keep_monthly: Option<Json>,
    keep_yearly: Option<Json>,
    keep_within: Option<String>,
    #[serde(default)]
    prune: Option<Json>,
    group_by: Option<String>,
    chdir: Option<String>,
    lock_wait: Option<String>,
    read_data_subset: Option<String>,
}

impl Args {
    fn keep(&self, name: &str) -> Option<&Json> {
        match name {
            "keep_last" => self.keep_last.as_ref(),
            "keep_hourly" => self.keep_hourly.as_ref(),
            "keep_daily" => self.keep_daily.as_ref(),
            "keep_weekly" => self.keep_weekly.as_ref(),
            "keep_monthly" => self.keep_monthly.as_ref(),
            "keep_yearly" => self.keep_yearly.as_ref(),
            _ => None,
        }
    }
}

/// A whole number given as a number or as the text of one (a rendered template).
fn count(name: &str, v: &Json) -> Result<u64, ModuleError> {
    match v {
        Json::Number(n) => n.as_u64(),
        Json::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    }
    .ok_or_else(|| ModuleError::Args(format!("restic: {name} must be a whole number, found {v}")))
}

/// A boolean given as one or as its text.
fn flag(name: &str, v: Option<&Json>) -> Result<bool, ModuleError> {
    match v {
        None | Some(Json::Null) => Ok(false),
        Some(Json::Bool(b)) => Ok(*b),
        Some(Json::String(s)) if s.trim() == "true" => Ok(true),
        Some(Json::String(s)) if s.trim() == "false" || s.trim().is_empty() => Ok(false),
        Some(other) => Err(ModuleError::Args(format!(
            "restic: {name} must be true or false, found {other}"
        ))),
    }
}

fn literal<'a>(args: &'a Node, key: &str) -> Option<(&'a Node, String)> {
    let n = args.get(key)?;
    let s = n.scalar_text()?;
    (!Templates::is_template(&s)).then_some((n, s))
}

#[async_trait]
impl Module for Restic {
    fn doc(&self) -> &'static ModuleDoc {
        &DOC
    }

    fn validate(&self, args: &Node, file: &SourceFile) -> Vec<SourceError> {
        let mut errors = check_choice(args, file, "restic", "action", ACTIONS);
        if !errors.is_empty() {
            return errors;
        }
        let action = literal(args, "action").map(|(_, s)| s);
        let entries = args.as_map().unwrap_or(&[]);
        if let Some(action) = &action {
            let allowed = action_args(action);
            for (k, _) in entries {
                let name = k.scalar_text().unwrap_or_default();
                if !COMMON.contains(&name.as_str()) && !allowed.contains(&name.as_str()) {
                    errors.push(
                        k.error(
                            file,
                            format!("`{name}` does not apply to the restic action `{action}`"),
                        )
                        .with_help(if allowed.is_empty() {
                            format!("`{action}` takes only: {}", COMMON.join(", "))
                        } else {
                            format!(
                                "`{action}` takes: {}, besides {}",
                                allowed.join(", "),
                                COMMON.join(", ")
                            )
                        }),
                    );
                }
            }
            let has = |k: &str| args.get(k).is_some();
            let need = |errors: &mut Vec<SourceError>, key: &str, help: &str| {
                if !has(key) {
                    errors.push(
                        args.error(file, format!("the restic action `{action}` needs `{key}`"))
                            .with_help(help.to_string()),
                    );
                }
            };
            match action.as_str() {
                "backup" => need(&mut errors, "paths", "e.g. paths: [/backup/nova/latest]"),
                "restore" => need(
                    &mut errors,
                    "target",
                    "e.g. target: /srv/restore (restore into a directory, then put files in place)",
                ),
                "forget" if !KEEPS.iter().any(|(k, _)| has(k)) && !has("keep_within") => {
                    errors.push(
                        args.error(file, "the restic action `forget` needs a keep policy")
                            .with_help(
                                "give at least one of keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly, keep_yearly, keep_within",
                            ),
                    );
                }
                _ => {}
            }
        }
        if args.get("password").is_some() == args.get("password_file").is_some() {
            errors.push(
                args.error(file, "restic needs the repository password: give `password` or `password_file` (one of them)")
                    .with_help("e.g. password: \"{{ offsite_password }}\" with offsite_password from `secrets:`"),
            );
        }
        for (key, _) in KEEPS {
            if let Some(n) = args.get(key)
                && let Value::Int(i) = n.value
                && i < 0
            {
                errors.push(
                    n.error(file, format!("`{key}` must be 0 or more, found {i}"))
                        .with_help("the number of snapshots to keep"),
                );
            }
        }
        if let Some((n, s)) = literal(args, "target")
            && s.trim_end_matches('/').is_empty()
        {
            errors.push(
                n.error(file, "restic restores into a directory of its own, not `/`")
                    .with_help("restore into e.g. /srv/restore, then move the files in place (or use rsync/copy)"),
            );
        }
        if let Some((n, s)) = literal(args, "repository")
            && s.trim().is_empty()
        {
            errors.push(n.error(file, "`repository` is empty").with_help(
                "e.g. repository: /backup/restic, sftp:backup@vault:/srv/restic or swift:offsite:/controller",
            ));
        }
        if let Some((n, s)) = literal(args, "lock_wait")
            && s.trim() != "0"
            && let Err(e) = parse_duration(&s)
        {
            errors.push(
                n.error(file, format!("lock_wait `{s}` is not a duration: {e}"))
                    .with_help(
                        "write e.g. 30s or 10m, or 0 to fail at once when the repository is locked",
                    ),
            );
        }
        if let Some((n, s)) = literal(args, "group_by")
            && group_by(&s).is_none()
        {
            errors.push(
                n.error(
                    file,
                    format!("group_by `{s}` is not a grouping restic knows"),
                )
                .with_help(
                    "write host, paths and/or tags, comma-separated (e.g. host or host,tags)",
                ),
            );
        }
        if let Some((n, s)) = literal(args, "read_data_subset")
            && !valid_subset(&s)
        {
            errors.push(
                n.error(
                    file,
                    format!("read_data_subset `{s}` is not a part of the data"),
                )
                .with_help("write a percentage such as 10% or a fraction n/t such as 1/5"),
            );
        }
        if let Some(env) = args.get("env")
            && let Some(map) = env.as_map()
        {
            for (k, _) in map {
                let name = k.scalar_text().unwrap_or_default();
                if !is_env_name(&name) {
                    errors.push(
                        k.error(
                            file,
                            format!("`{name}` is not an environment variable name"),
                        )
                        .with_help("letters, digits and _, not starting with a digit, e.g. ST_KEY"),
                    );
                }
            }
        }
        errors
    }

    async fn run(&self, ctx: &ModuleContext, args: &Json) -> Result<Outcome, ModuleError> {
        let a: Args = parse_args("restic", args)?;
        let action = choice("restic", "action", &a.action, ACTIONS)?.to_string();
        let repo = Repo::new(&a)?;
        let result = match action.as_str() {
            "init" => init(ctx, &repo).await,
            "backup" => backup(ctx, &repo, &a).await,
            "restore" => restore(ctx, &repo, &a).await,
            "forget" => forget(ctx, &repo, &a).await,
            "check" => check(ctx, &repo, &a).await,
            _ => snapshots(ctx, &repo, &a).await,
        };
        result.map_err(|e| unknown_in_plan(ctx, &repo, e))
    }

    async fn undo(
        &self,
        ctx: &ModuleContext,
        args: &Json,
        undo: &Json,
    ) -> Result<Outcome, ModuleError> {
        let a: Args = parse_args("restic", args)?;
        let repo = Repo::new(&a)?;
        if let Some(id) = undo.get("forget").and_then(Json::as_str) {
            if ctx.check {
                return Ok(Outcome::changed().with_msg(format!("would forget snapshot {id}")));
            }
            let out = repo
                .run(ctx, &format!("forget {}", quote(id)), false)
                .await?;
            if !out.success() {
                return Err(failed(&format!("cannot forget snapshot {id}"), out));
            }
            return Ok(Outcome::changed().with_msg(format!("forgot snapshot {id}")));
        }
        if let Some(target) = undo.get("target").and_then(Json::as_str) {
            let aside = undo.get("moved_aside").and_then(Json::as_str);
            let what = match aside {
                Some(p) => format!("remove the restored {target} and move {p} back"),
                None => format!("remove the restored {target}"),
            };
            if ctx.check {
                return Ok(Outcome::changed().with_msg(format!("would {what}")));
            }
            refuse_root("restic", target)?;
            let mut script = format!("set -e\nrm -rf -- {}\n", quote(target));
            if let Some(p) = aside {
                script.push_str(&format!("mv -- {} {}\n", quote(p), quote(target)));
            }
            let out = ctx.probe(CommandSpec::shell(script)).await?;
            if !out.success() {
                return Err(failed("cannot undo the restore", out));
            }
            return Ok(Outcome::changed().with_msg(what));
        }
        Ok(Outcome::ok().with_msg("nothing to undo"))
    }
}

/// Whether `s` is a `--read-data-subset` restic takes: `n%` or `n/t`.
fn valid_subset(s: &str) -> bool {
    let s = s.trim();
    if let Some(p) = s.strip_suffix('%') {
        return p.parse::<f64>().is_ok_and(|p| p > 0.0 && p <= 100.0);
    }
    if let Some((n, t)) = s.split_once('/') {
        return matches!((n.parse::<u64>(), t.parse::<u64>()), (Ok(n), Ok(t)) if n >= 1 && n <= t);
    }
    false
}

/// A `--group-by` value: host, paths and/or tags, comma-separated, each once (`None`
/// when it is not one).
fn group_by(s: &str) -> Option<String> {
    let parts: Vec<&str> = s
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    let mut seen = Vec::new();
    for p in &parts {
        if !["host", "paths", "tags"].contains(p) || seen.contains(p) {
            return None;
        }
        seen.push(*p);
    }
    (!seen.is_empty()).then(|| seen.join(","))
}

/// How to reach one repository: its location, options, and the secret file's content.
struct Repo {
    repository: String,
    options: Vec<String>,
    /// How long to retry while the repository is locked.
    lock_wait: Duration,
    /// The lines of the 0600 file sourced before restic runs (secret).
    secret_lines: String,
}

impl Repo {
    fn new(a: &Args) -> Result<Repo, ModuleError> {
        if a.repository.trim().is_empty() {
            return Err(ModuleError::Args("restic: repository is empty".into()));
        }
        let mut lines = String::new();
        let mut names = Vec::new();
        for (k, v) in &a.env {
            if !is_env_name(k) {
                return Err(ModuleError::Args(format!(
                    "restic: `{k}` in env is not an environment variable name"
                )));
            }
            let text = match v {
                Json::String(s) => s.clone(),
                Json::Null => continue,
                other => other.to_string(),
            };
            lines.push_str(&format!("export {k}={}\n", quote(&text)));
            names.push(k.as_str());
        }
        if a.repository.starts_with("rclone:") && !names.contains(&"AWS_CA_BUNDLE") {
            lines.push_str("unset AWS_CA_BUNDLE\n");
        }
        match (&a.password, &a.password_file) {
            (Some(p), None) => {
                if p.contains(['\n', '\r']) {
                    return Err(ModuleError::Args(
                        "restic: the password must be a single line".into(),
                    ));
                }
                if p.trim().is_empty() {
                    return Err(ModuleError::Args(
                        "restic: the password is empty (is the secret set?)".into(),
                    ));
                }
                // printf is a shell builtin: the password is on no process's argv.
                lines.push_str(&format!(
                    "printf '%s\\n' {} > \"$lb_dir/password\"\nexport RESTIC_PASSWORD_FILE=\"$lb_dir/password\"\n",
                    quote(p)
                ));
            }
            (None, Some(f)) => {
                lines.push_str(&format!("export RESTIC_PASSWORD_FILE={}\n", quote(f)));
            }
            _ => {
                return Err(ModuleError::Args(
                    "restic: give `password` or `password_file` (one of them)".into(),
                ));
            }
        }
        lines.push_str("unset RESTIC_PASSWORD RESTIC_PASSWORD_COMMAND\n");
        let lock_wait = match a.lock_wait.as_deref().map(str::trim) {
            None | Some("") => LOCK_WAIT,
            Some("0") => Duration::ZERO,
            Some(w) => parse_duration(w)
                .map_err(|e| ModuleError::Args(format!("restic: lock_wait: {e}")))?,
        };
        Ok(Repo {
            repository: a.repository.clone(),
            options: a.options.clone(),
            lock_wait,
            secret_lines: lines,
        })
    }

    /// Runs `restic -r REPO OPTIONS <rest>` (rest already shell-quoted), quietly or
    /// streamed with `-v`.
    async fn run(
        &self,
        ctx: &ModuleContext,
        rest: &str,
        stream: bool,
    ) -> Result<CommandOutput, ModuleError> {
        self.run_in(ctx, None, rest, stream).await
    }

    /// [`Repo::run`] in the directory `cwd` (the host's path).
    async fn run_in(
        &self,
        ctx: &ModuleContext,
        cwd: Option<&str>,
        rest: &str,
        stream: bool,
    ) -> Result<CommandOutput, ModuleError> {
        let cd = cwd.map_or_else(String::new, |d| {
            format!(
                "cd -- {q} || {{ echo {msg} >&2; exit 1; }}\n",
                q = quote(d),
                msg = quote(&format!("restic: cannot enter {d}"))
            )
        });
        let opts: String = self
            .options
            .iter()
            .map(|o| format!(" -o {}", quote(o)))
            .collect();
        // The secret files are made under umask 077; restic itself runs under the
        // caller's umask (the directories it makes for a restore target are not
        // private). A command refused because another restic holds the lock is tried again
        // every second until lock_wait has passed (restic 0.14 has no --retry-lock);
        // its standard error is kept aside to tell, and then passed on.
        let script = format!(
            "lb_umask=$(umask)\numask 077\n\
command -v restic >/dev/null 2>&1 || {{ echo 'restic is not installed on the host (apt-get install restic)' >&2; exit 127; }}\n\
lb_dir=$(mktemp -d \"${{TMPDIR:-/tmp}}/lifeboat-restic.XXXXXXXX\") || exit 1\n\
trap 'rm -rf -- \"$lb_dir\"' EXIT\n\
trap 'exit 129' HUP; trap 'exit 130' INT; trap 'exit 143' TERM\n\
cat > \"$lb_dir/env\" || exit 1\n\
. \"$lb_dir/env\"\n\
rm -f -- \"$lb_dir/env\"\n\
umask \"$lb_umask\"\n\
{cd}lb_tries=0\n\
while :; do\n\
  restic -r {repo}{opts} {rest} 2>\"$lb_dir/err\"; lb_rc=$?\n\
  if [ \"$lb_rc\" -ne 0 ] && [ \"$lb_tries\" -lt {wait} ] && grep -q 'repository is already locked' \"$lb_dir/err\"; then lb_tries=$((lb_tries + 1)); sleep 1; continue; fi\n\
  while IFS= read -r lb_line || [ -n \"$lb_line\" ]; do printf '%s\\n' \"$lb_line\"; done < \"$lb_dir/err\" >&2\n\
  exit \"$lb_rc\"\n\
done\n",
            repo = quote(&self.repository),
            wait = self.lock_wait.as_secs(),
        );
        let spec = CommandSpec::shell(script).stdin(self.secret_lines.clone().into_bytes());
        if stream {
            ctx.run(spec).await
        } else {
            ctx.probe(spec).await
        }
    }

    fn data(&self, action: &str) -> serde_json::Map<String, Json> {
        let mut m = serde_json::Map::new();
        m.insert("action".into(), json!(action));
        m.insert("repository".into(), json!(self.repository));
        m
    }
}

/// The tag a backup of `.` records the directory's mode and owner in:
/// `lifeboat-root:MODE:OWNER:GROUP`.
const ROOT_TAG: &str = "lifeboat-root:";

/// A failed restic command, with its exit status and what it said.
fn failed(what: &str, out: CommandOutput) -> ModuleError {
    let rc = out
        .rc
        .map_or("no exit status".to_string(), |c| format!("exit {c}"));
    let said = out.stderr_text();
    let said = said.trim();
    let advice = if said.contains("wrong password") {
        " (check the repository password)"
    } else if said.contains("Is there a repository at the following location?") {
        " (no repository there yet: run the restic action `init` first)"
    } else {
        ""
    };
    ModuleError::Failed {
        message: format!("{what} ({rc}){advice}: {said}"),
        output: Some(out),
    }
}

/// Whether restic said the repository does not exist (as opposed to any other error).
fn no_repository(out: &CommandOutput) -> bool {
    let e = out.stderr_text();
    e.contains("Is there a repository at the following location?")
        || e.contains("repository does not exist")
}

/// In a dry run, an action that failed because the repository does not exist yet (an
/// earlier `init` of the plan makes it, in the real run) is unknown, not a failure.
fn unknown_in_plan(ctx: &ModuleContext, repo: &Repo, e: ModuleError) -> ModuleError {
    match &e {
        ModuleError::Failed {
            output: Some(out), ..
        } if ctx.check && no_repository(out) => ModuleError::Unknown(format!(
            "the repository {} does not exist yet (an earlier `init` makes it in the run; \
             without one the run fails here)",
            repo.repository
        )),
        _ => e,
    }
}

async fn init(ctx: &ModuleContext, repo: &Repo) -> Result<Outcome, ModuleError> {
    let probe = repo.run(ctx, "cat config", false).await?;
    let mut data = repo.data("init");
    if probe.success() {
        data.insert("created".into(), json!(false));
        return Ok(Outcome::ok()
            .with_data(Json::Object(data))
            .with_msg(format!("the repository {} exists", repo.repository)));
    }
    if !no_repository(&probe) {
        return Err(failed(
            &format!("cannot open the repository {}", repo.repository),
            probe,
        ));
    }
    data.insert("created".into(), json!(!ctx.check));
    if ctx.check {
        return Ok(Outcome::changed()
            .with_data(Json::Object(data))
            .with_msg(format!("would create the repository {}", repo.repository)));
    }
    let out = repo.run(ctx, "init", true).await?;
    if !out.success() {
        return Err(failed(
            &format!("cannot create the repository {}", repo.repository),
            out,
        ));
    }
    Ok(Outcome::changed()
        .with_data(Json::Object(data))
        .with_msg(format!("created the repository {}", repo.repository)))
}

/// The `--host`/`--tag`/`--path` filters of the snapshot-selecting actions.
fn filters(hostname: Option<&str>, tags: &[String], path: Option<&str>) -> String {
    let mut s = String::new();
    if let Some(h) = hostname.filter(|h| !h.is_empty()) {
        s.push_str(&format!(" --host {}", quote(h)));
    }
    if !tags.is_empty() {
        s.push_str(&format!(" --tag {}", quote(&tags.join(","))));
    }
    if let Some(p) = path.filter(|p| !p.is_empty()) {
        s.push_str(&format!(" --path {}", quote(p)));
    }
    s
}

const SUMMARY_KEYS: &[&str] = &[
    "files_new",
    "files_changed",
    "files_unmodified",
    "dirs_new",
    "dirs_changed",
    "dirs_unmodified",
    "data_added",
    "total_files_processed",
    "total_bytes_processed",
    "total_duration",
];

/// The `summary` message of `restic backup --json`.
fn summary(stdout: &str) -> Option<serde_json::Map<String, Json>> {
    stdout.lines().rev().find_map(|l| {
        let v: Json = serde_json::from_str(l.trim()).ok()?;
        (v.get("message_type")?.as_str()? == "summary")
            .then(|| v.as_object().cloned())
            .flatten()
    })
}

async fn backup(ctx: &ModuleContext, repo: &Repo, a: &Args) -> Result<Outcome, ModuleError> {
    if a.paths.is_empty() {
        return Err(ModuleError::Args(
            "restic: backup needs `paths` (none after rendering)".into(),
        ));
    }
    let host = a
        .hostname
        .clone()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| ctx.host.clone());
    let mut cmd = format!("backup --json --host {}", quote(&host));
    for t in &a.tags {
        cmd.push_str(&format!(" --tag {}", quote(t)));
    }
    // restic keeps no metadata of the directory it is run in when `.` is backed up: its
    // mode and owner go in a tag, which a restore gives back to the target.
    let cwd = a.chdir.as_deref().filter(|d| !d.trim().is_empty());
    if let Some(d) = cwd.filter(|_| a.paths.iter().any(|p| p == "." || p == "./"))
        && let Some(st) = ctx.stat(d).await?
        && st.kind == "directory"
    {
        cmd.push_str(&format!(
            " --tag {}",
            quote(&format!(
                "{ROOT_TAG}{:04o}:{}:{}",
                st.mode & 0o7777,
                st.owner,
                st.group
            ))
        ));
    }
    for e in &a.exclude {
        cmd.push_str(&format!(" --exclude {}", quote(e)));
    }
    if ctx.check {
        cmd.push_str(" --dry-run");
    }
    cmd.push_str(" --");
    for p in &a.paths {
        cmd.push_str(&format!(" {}", quote(p)));
    }
    let mut data = repo.data("backup");
    data.insert("paths".into(), json!(a.paths));
    data.insert("hostname".into(), json!(host));
    data.insert("tags".into(), json!(a.tags));
    if let Some(d) = cwd {
        data.insert("chdir".into(), json!(d));
    }
    let out = repo.run_in(ctx, cwd, &cmd, false).await?;
    if ctx.check {
        if no_repository(&out) {
            return Err(failed("restic backup --dry-run", out));
        }
        if !out.success() {
            // The paths may be ones an earlier step makes.
            data.insert("snapshot_id".into(), Json::Null);
            return Ok(Outcome::changed()
                .with_data(Json::Object(data))
                .with_msg(format!(
                    "would back up {} to {} (restic backup --dry-run could not tell: {})",
                    a.paths.join(", "),
                    repo.repository,
                    out.stderr_text().trim().lines().last().unwrap_or("")
                )));
        }
        let sum = summary(&out.stdout_text()).unwrap_or_default();
        for k in SUMMARY_KEYS {
            data.insert((*k).into(), sum.get(*k).cloned().unwrap_or(Json::Null));
        }
        data.insert("snapshot_id".into(), Json::Null);
        return Ok(Outcome::changed()
            .with_data(Json::Object(data))
            .with_msg(format!(
                "would back up {} to {} ({} bytes new)",
                a.paths.join(", "),
                repo.repository,
                sum.get("data_added").cloned().unwrap_or(json!("?"))
            )));
    }
    let sum = summary(&out.stdout_text());
    let id = sum
        .as_ref()
        .and_then(|s| s.get("snapshot_id"))
        .and_then(Json::as_str)
        .map(str::to_string);
    // A snapshot may have been written even when restic then failed (exit 3: some
    // files could not be read): it is made by this run, so rollback forgets it.
    let Some(id) = id else {
        return Err(failed(
            &format!("restic backup of {} failed", a.paths.join(", ")),
            out,
        ));
    };
    let sum = sum.unwrap_or_default();
    for k in SUMMARY_KEYS {
        data.insert((*k).into(), sum.get(*k).cloned().unwrap_or(Json::Null));
    }
    data.insert("snapshot_id".into(), json!(id));
    if !out.success() {
        // Forget the incomplete snapshot at once: nothing later may trust it.
        let _ = repo
            .run(ctx, &format!("forget {}", quote(&id)), false)
            .await;
        return Err(failed(
            &format!(
                "restic backup of {} was incomplete (snapshot {id} forgotten)",
                a.paths.join(", ")
            ),
            out,
        ));
    }
    Ok(Outcome::changed()
        .with_undo(json!({ "forget": id }))
        .with_msg(format!(
            "snapshot {id} of {} in {}: {} files, {} bytes new",
            a.paths.join(", "),
            repo.repository,
            sum.get("total_files_processed")
                .cloned()
                .unwrap_or(json!(0)),
            sum.get("data_added").cloned().unwrap_or(json!(0))
        ))
        .with_data(Json::Object(data)))
}

/// `restic snapshots --json` with filters and optional ids, without taking the
/// repository's lock: a listing must not fail while another step (a `check`, a `forget`
/// of another host) holds it exclusively.
async fn list(ctx: &ModuleContext, repo: &Repo, rest: &str) -> Result<Vec<Json>, ModuleError> {
    let out = repo
        .run(ctx, &format!("--no-lock snapshots --json{rest}"), false)
        .await?;
    if !out.success() {
        return Err(failed(
            &format!("cannot list the snapshots of {}", repo.repository),
            out,
        ));
    }
    let text = out.stdout_text();
    let t = text.trim();
    if t.is_empty() || t == "null" {
        return Ok(Vec::new());
    }
    match serde_json::from_str::<Json>(t) {
        Ok(Json::Array(v)) => Ok(v),
        Ok(Json::Null) => Ok(Vec::new()),
        _ => Err(ModuleError::failed(format!(
            "restic snapshots printed no JSON list: {}",
            t.chars().take(200).collect::<String>()
        ))),
    }
}

/// The newest of a list from `restic snapshots --json`, which restic sorts by time,
/// oldest first.
fn newest(snaps: &[Json]) -> Option<&Json> {
    snaps.last()
}

async fn restore(ctx: &ModuleContext, repo: &Repo, a: &Args) -> Result<Outcome, ModuleError> {
    let target = a
        .target
        .clone()
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| ModuleError::Args("restic: restore needs `target`".into()))?;
    let target = target.trim_end_matches('/').to_string();
    if target.is_empty() {
        return Err(ModuleError::Args(
            "restic: restore into a directory of its own, not `/`".into(),
        ));
    }
    refuse_root("restic", &target)?;
    let wanted = a
        .snapshot
        .clone()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "latest".into());
    let host = a.hostname.clone().unwrap_or_else(|| ctx.host.clone());
    let snaps = if wanted == "latest" {
        list(
            ctx,
            repo,
            &format!(
                "{} --latest 1",
                filters(Some(&host), &a.tags, a.path.as_deref())
            ),
        )
        .await?
    } else {
        list(ctx, repo, &format!(" -- {}", quote(&wanted))).await?
    };
    let Some(snap) = newest(&snaps).cloned() else {
        return Err(ModuleError::failed(format!(
            "no snapshot in {} matches {}",
            repo.repository,
            if wanted == "latest" {
                format!(
                    "host {host}{}{}",
                    if a.tags.is_empty() {
                        String::new()
                    } else {
                        format!(", tags {}", a.tags.join(","))
                    },
                    a.path
                        .as_deref()
                        .map(|p| format!(", path {p}"))
                        .unwrap_or_default()
                )
            } else {
                format!("id {wanted}")
            }
        )));
    };
    let id = snap
        .get("short_id")
        .or_else(|| snap.get("id"))
        .and_then(Json::as_str)
        .unwrap_or_default()
        .to_string();
    let full_id = snap
        .get("id")
        .and_then(Json::as_str)
        .unwrap_or(&id)
        .to_string();
    let existed = exists(ctx, &target).await?;
    let aside = sibling(&target, "aside-", &ctx.run_id);
    let mut data = repo.data("restore");
    data.insert("snapshot_id".into(), json!(id));
    data.insert("snapshot".into(), snap.clone());
    data.insert("target".into(), json!(target));
    data.insert(
        "moved_aside".into(),
        if existed { json!(aside) } else { Json::Null },
    );
    if ctx.check {
        return Ok(Outcome::changed()
            .with_data(Json::Object(data))
            .with_msg(format!(
                "would restore snapshot {id} into {target}{}",
                if existed {
                    format!(" ({target} moved aside first)")
                } else {
                    String::new()
                }
            )));
    }
    if existed {
        let out = ctx
            .probe(CommandSpec::argv([
                "mv",
                "--",
                target.as_str(),
                aside.as_str(),
            ]))
            .await?;
        if !out.success() {
            return Err(failed(&format!("cannot move {target} aside"), out));
        }
    }
    // restic makes a missing target and its parents 0700: the parents are made first,
    // as mkdir makes them (the caller's umask), so only the target itself is private.
    if let Some(parent) = std::path::Path::new(&target)
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
    {
        let parent = parent.to_string_lossy().into_owned();
        let out = ctx
            .probe(CommandSpec::argv(["mkdir", "-p", "--", parent.as_str()]))
            .await?;
        if !out.success() {
            return Err(failed(&format!("cannot make {parent}"), out));
        }
    }
    let undo = json!({ "target": target, "moved_aside": existed.then_some(aside.clone()) });
    let mut cmd = format!("restore {} --target {}", quote(&full_id), quote(&target));
    for i in &a.include {
        cmd.push_str(&format!(" --include {}", quote(i)));
    }
    let out = repo.run(ctx, &cmd, true).await?;
    if !out.success() {
        // Put things back as they were before failing.
        let mut script = format!("rm -rf -- {}\n", quote(&target));
        if existed {
            script.push_str(&format!("mv -- {} {}\n", quote(&aside), quote(&target)));
        }
        let _ = ctx.probe(CommandSpec::shell(script)).await;
        return Err(failed(
            &format!("restic restore of snapshot {id} into {target} failed"),
            out,
        ));
    }
    // The target's own mode and owner: those the backup recorded (`.`), or else those
    // of the directory it replaces; restic makes it 0700.
    let recorded = snap
        .get("tags")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .filter_map(Json::as_str)
        .find_map(|t| t.strip_prefix(ROOT_TAG))
        .and_then(|t| {
            let mut it = t.splitn(3, ':');
            let (mode, owner, group) = (it.next()?, it.next()?, it.next()?);
            (mode.len() <= 4 && mode.bytes().all(|b| (b'0'..=b'7').contains(&b)))
                .then(|| (mode.to_string(), format!("{owner}:{group}")))
        });
    let script = match (&recorded, existed) {
        (Some((mode, owner)), _) => Some(format!(
            "chown -- {} {t} && chmod -- {} {t}",
            quote(owner),
            quote(mode),
            t = quote(&target)
        )),
        (None, true) => Some(format!(
            "chown --reference={a} -- {t} && chmod --reference={a} -- {t}",
            a = quote(&aside),
            t = quote(&target)
        )),
        (None, false) => None,
    };
    // An owner this host does not know leaves the target as restic made it, said so.
    let mut root = String::new();
    if let Some(script) = script {
        let out = ctx.probe(CommandSpec::shell(script)).await?;
        if !out.success() {
            root = format!(
                "; its own mode and owner could not be given back: {}",
                out.stderr_text().trim()
            );
        }
    }
    Ok(Outcome::changed()
        .with_undo(undo)
        .with_data(Json::Object(data))
        .with_msg(format!(
            "restored snapshot {id} into {target}{}{root}",
            if existed {
                format!(" (the previous {target} is at {aside})")
            } else {
                String::new()
            }
        )))
}

async fn forget(ctx: &ModuleContext, repo: &Repo, a: &Args) -> Result<Outcome, ModuleError> {
    let mut cmd = String::from("forget --json");
    let mut any = false;
    for (name, opt) in KEEPS {
        let Some(v) = a.keep(name) else { continue };
        if v.is_null() {
            continue;
        }
        let mut n = count(name, v)?;
        // The newest snapshot of each group always stays.
        if *name == "keep_last" {
            n = n.max(1);
        }
        cmd.push_str(&format!(" {opt} {n}"));
        any = true;
    }
    if a.keep_last.as_ref().is_none_or(Json::is_null) {
        cmd.push_str(" --keep-last 1");
    }
    if let Some(w) = a.keep_within.as_deref().filter(|w| !w.trim().is_empty()) {
        cmd.push_str(&format!(" --keep-within {}", quote(w.trim())));
        any = true;
    }
    if !any {
        return Err(ModuleError::Args(
            "restic: forget needs a keep policy (keep_last, keep_daily, ...)".into(),
        ));
    }
    let grouping = match a.group_by.as_deref().filter(|g| !g.trim().is_empty()) {
        None => "host,paths".to_string(),
        Some(g) => group_by(g).ok_or_else(|| {
            ModuleError::Args(format!(
                "restic: group_by `{g}` is not host, paths and/or tags"
            ))
        })?,
    };
    cmd.push_str(&format!(" --group-by {grouping}"));
    cmd.push_str(&filters(a.hostname.as_deref(), &a.tags, None));
    let prune = flag("prune", a.prune.as_ref())?;
    if ctx.check {
        cmd.push_str(" --dry-run");
    } else if prune {
        cmd.push_str(" --prune");
    }
    let out = repo.run(ctx, &cmd, false).await?;
    if !out.success() {
        return Err(failed(
            &format!("restic forget in {} failed", repo.repository),
            out,
        ));
    }
    let (removed, kept) = forget_plan(&out.stdout_text());
    let mut data = repo.data("forget");
    data.insert("removed".into(), json!(removed));
    data.insert("kept".into(), json!(kept));
    data.insert(
        "pruned".into(),
        json!(prune && !ctx.check && !removed.is_empty()),
    );
    let changed = !removed.is_empty();
    let msg = match (changed, ctx.check) {
        (false, _) => format!("nothing to forget ({} snapshots kept)", kept.len()),
        (true, true) => format!(
            "would forget {} snapshots: {}",
            removed.len(),
            removed.join(", ")
        ),
        (true, false) => format!(
            "forgot {} snapshots{}: {}",
            removed.len(),
            if prune { " and pruned" } else { "" },
            removed.join(", ")
        ),
    };
    let o = if changed {
        Outcome::changed()
    } else {
        Outcome::ok()
    };
    Ok(o.with_data(Json::Object(data)).with_msg(msg))
}

/// The short ids removed and kept, from `restic forget --json`'s groups.
fn forget_plan(stdout: &str) -> (Vec<String>, Vec<String>) {
    let mut removed = Vec::new();
    let mut kept = Vec::new();
    // The JSON list is one line; prune's text may follow it.
    for line in stdout.lines() {
        let Ok(Json::Array(groups)) = serde_json::from_str::<Json>(line.trim()) else {
            continue;
        };
        for g in groups {
            for (key, into) in [("remove", &mut removed), ("keep", &mut kept)] {
                for s in g.get(key).and_then(Json::as_array).into_iter().flatten() {
                    if let Some(id) = s
                        .get("short_id")
                        .or_else(|| s.get("id"))
                        .and_then(Json::as_str)
                    {
                        into.push(id.to_string());
                    }
                }
            }
        }
    }
    (removed, kept)
}

async fn check(ctx: &ModuleContext, repo: &Repo, a: &Args) -> Result<Outcome, ModuleError> {
    let mut cmd = String::from("check");
    if let Some(s) = a
        .read_data_subset
        .as_deref()
        .filter(|s| !s.trim().is_empty())
    {
        if !valid_subset(s) {
            return Err(ModuleError::Args(format!(
                "restic: read_data_subset `{s}` is not a percentage (10%) or a fraction (1/5)"
            )));
        }
        cmd.push_str(&format!(" --read-data-subset {}", quote(s.trim())));
    }
    let out = repo.run(ctx, &cmd, true).await?;
    if !out.success() {
        return Err(failed(
            &format!("restic check of {} found problems", repo.repository),
            out,
        ));
    }
    let mut data = repo.data("check");
    data.insert("output".into(), json!(out.stdout_text()));
    data.insert("read_data_subset".into(), json!(a.read_data_subset));
    Ok(Outcome::ok()
        .with_data(Json::Object(data))
        .with_msg(format!(
            "{} has no errors{}",
            repo.repository,
            a.read_data_subset
                .as_deref()
                .map(|s| format!(" ({s} of the data read back)"))
                .unwrap_or_default()
        )))
}

async fn snapshots(ctx: &ModuleContext, repo: &Repo, a: &Args) -> Result<Outcome, ModuleError> {
    let snaps = list(
        ctx,
        repo,
        &filters(a.hostname.as_deref(), &a.tags, a.path.as_deref()),
    )
    .await?;
    let latest = newest(&snaps).cloned().unwrap_or(Json::Null);
    let mut data = repo.data("snapshots");
    data.insert("count".into(), json!(snaps.len()));
    data.insert("latest".into(), latest.clone());
    data.insert("snapshots".into(), Json::Array(snaps.clone()));
    Ok(Outcome::ok()
        .with_data(Json::Object(data))
        .with_msg(format!(
            "{} snapshots in {}{}",
            snaps.len(),
            repo.repository,
            latest
                .get("time")
                .and_then(Json::as_str)
                .map(|t| format!(", newest {t}"))
                .unwrap_or_default()
        )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subsets() {
        assert!(valid_subset("10%"));
        assert!(valid_subset("1/5"));
        assert!(!valid_subset("0%"));
        assert!(!valid_subset("6/5"));
        assert!(!valid_subset("ten"));
    }

    #[test]
    fn groupings() {
        assert_eq!(group_by("host").as_deref(), Some("host"));
        assert_eq!(group_by(" host , tags ").as_deref(), Some("host,tags"));
        assert_eq!(group_by("host,host"), None);
        assert_eq!(group_by("hosts"), None);
        assert_eq!(group_by(""), None);
    }

    #[test]
    fn summary_is_the_last_summary_line() {
        let out = "{\"message_type\":\"status\"}\n{\"message_type\":\"summary\",\"snapshot_id\":\"ab12\",\"data_added\":5}\n";
        let s = summary(out).expect("a summary");
        assert_eq!(s["snapshot_id"], "ab12");
        assert!(summary("not json\n").is_none());
    }

    #[test]
    fn forget_plans_are_read() {
        let out = r#"[{"tags":null,"host":"h","paths":["/x"],"keep":[{"short_id":"k1"}],"remove":[{"short_id":"r1"},{"short_id":"r2"}],"reasons":[]}]"#;
        let (r, k) = forget_plan(out);
        assert_eq!(r, vec!["r1", "r2"]);
        assert_eq!(k, vec!["k1"]);
    }
}
