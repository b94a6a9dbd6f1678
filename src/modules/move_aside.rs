//! `move_aside`: renames a host path out of the way before a restore puts a backup in
//! its place (the Operations Guide's `mv /etc/nova /etc/nova.orig`), and moves it back
//! on rollback.

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::backup_common::{check_choice, choice, exists, host_timestamp, refuse_root, script_ok};
use super::copy::sibling;
use super::{ArgKind, Module, ModuleContext, ModuleDoc, ModuleError, Outcome, arg, parse_args};
use crate::connection::quote;
use crate::error::{SourceError, SourceFile};
use crate::yaml::Node;

/// The `move_aside` module.
pub struct MoveAside;

const MISSING: &[&str] = &["ok", "fail"];

static DOC: ModuleDoc = ModuleDoc {
    name: "move_aside",
    summary: "Rename a path to <path>.orig-<timestamp> before a restore replaces it",
    description: "Renames `path` (a file, directory or link) to `path` + `suffix` in the same \
directory (one `mv`, so it is atomic and keeps everything: content, ownership, modes, \
hard links). The default suffix is `.orig-<UTC timestamp of the host>`, e.g. \
`/etc/nova.orig-20240131T235959Z`; `{timestamp}` in a given suffix is replaced by that timestamp. \
An existing path at the new name is never overwritten: the step fails. When `path` does not \
exist the step is ok and does nothing (`missing: ok`, the default) or fails (`missing: fail`). \
Changed when it moved something. A dry run only stats the path and says what it would rename.",
    free_form: Some("path"),
    args: &[
        arg("path", ArgKind::Str, true, "the host path to move aside"),
        arg(
            "suffix",
            ArgKind::Str,
            false,
            "appended to the path; `{timestamp}` is the host's UTC time (default `.orig-{timestamp}`)",
        ),
        arg(
            "missing",
            ArgKind::Str,
            false,
            "ok | fail: what a missing path means (default ok: nothing to do)",
        ),
    ],
    open_args: false,
    example: "- id: nova-conf-aside\n  move_aside:\n    path: /etc/nova\n    missing: fail\n",
    returns: &[
        ("path", "the path moved"),
        (
            "new_path",
            "where it is now (null when nothing was moved; the predicted name in a dry run)",
        ),
        ("moved", "whether it was moved"),
    ],
    rollback: "moves the renamed path back, but only when this step moved it. Whatever was put at \
the original path since (a restored copy) is first renamed to `.<name>.lifeboat-rollback-<run_id>-<random>` \
and removed once the original is back. Fails when the renamed path is gone.",
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Args {
    path: String,
    suffix: Option<String>,
    #[serde(default = "default_missing")]
    missing: String,
}

fn default_missing() -> String {
    "ok".to_string()
}

#[async_trait]
impl Module for MoveAside {
    fn doc(&self) -> &'static ModuleDoc {
        &DOC
    }

    fn validate(&self, args: &Node, file: &SourceFile) -> Vec<SourceError> {
        let mut errors = check_choice(args, file, "move_aside", "missing", MISSING);
        if let Some(n) = args.get("suffix")
            && let Some(s) = n.as_str()
            && (s.is_empty() || s.contains('/'))
        {
            errors.push(
                n.error(file, "`suffix` must be a non-empty name ending without `/`")
                    .with_help("e.g. suffix: .orig or suffix: .before-restore-{timestamp}"),
            );
        }
        errors
    }

    async fn run(&self, ctx: &ModuleContext, args: &Json) -> Result<Outcome, ModuleError> {
        let a: Args = parse_args("move_aside", args)?;
        let missing = choice("move_aside", "missing", &a.missing, MISSING)?;
        refuse_root("move_aside", &a.path)?;
        let path = a.path.trim_end_matches('/').to_string();
        let suffix = a.suffix.as_deref().unwrap_or(".orig-{timestamp}");
        if suffix.is_empty() || suffix.contains('/') {
            return Err(ModuleError::Args(format!(
                "move_aside: suffix `{suffix}` must be a non-empty name without `/`"
            )));
        }
        if !exists(ctx, &path).await? {
            if missing == "fail" {
                if ctx.check {
                    return Ok(Outcome::changed().with_msg(format!(
                        "{path} does not exist now: the step fails unless an earlier step creates it"
                    )));
                }
                return Err(ModuleError::failed(format!(
                    "{path} does not exist (missing: fail)"
                )));
            }
            return Ok(Outcome::ok()
                .with_data(json!({ "path": path, "new_path": null, "moved": false }))
                .with_msg(format!("{path} does not exist: nothing to move aside")));
        }
        let new_path = if suffix.contains("{timestamp}") {
            format!(
                "{path}{}",
                suffix.replace("{timestamp}", &host_timestamp(ctx).await?)
            )
        } else {
            format!("{path}{suffix}")
        };
        if exists(ctx, &new_path).await? {
            return Err(ModuleError::failed(format!(
                "cannot move {path} aside: {new_path} already exists (not overwriting it)"
            )));
        }
        if ctx.check {
            return Ok(Outcome::changed()
                .with_data(json!({ "path": path, "new_path": new_path, "moved": false }))
                .with_msg(format!("would move {path} to {new_path}")));
        }
        // `mv -T` refuses to move into an existing directory of the new name; the
        // check above makes a clobber unlikely, `-n` makes it impossible.
        script_ok(
            ctx,
            &format!("cannot move {path} to {new_path}"),
            format!(
                "set -e\nmv -T -n -- {p} {n}\n[ ! -e {p} ] && [ ! -L {p} ]",
                p = quote(&path),
                n = quote(&new_path)
            ),
        )
        .await?;
        Ok(Outcome::changed()
            .with_data(json!({ "path": path, "new_path": new_path, "moved": true }))
            .with_undo(json!({ "path": path, "new_path": new_path }))
            .with_msg(format!("moved {path} to {new_path}")))
    }

    async fn undo(
        &self,
        ctx: &ModuleContext,
        _args: &Json,
        undo: &Json,
    ) -> Result<Outcome, ModuleError> {
        let (Some(path), Some(new_path)) = (
            undo.get("path").and_then(Json::as_str),
            undo.get("new_path").and_then(Json::as_str),
        ) else {
            return Err(ModuleError::failed("the undo data names no paths"));
        };
        if !exists(ctx, new_path).await? {
            return Err(ModuleError::failed(format!(
                "cannot move {path} back: {new_path} is gone"
            )));
        }
        let occupied = exists(ctx, path).await?;
        if ctx.check {
            return Ok(Outcome::changed().with_msg(format!(
                "would move {new_path} back to {path}{}",
                if occupied {
                    " (removing what is there now)"
                } else {
                    ""
                }
            )));
        }
        let (p, n) = (quote(path), quote(new_path));
        let script = if occupied {
            let trash = quote(&sibling(path, "rollback-", &ctx.run_id));
            format!("set -e\nmv -T -- {p} {trash}\nmv -T -- {n} {p}\nrm -rf -- {trash}")
        } else {
            format!("set -e\nmv -T -n -- {n} {p}")
        };
        script_ok(
            ctx,
            &format!("cannot move {new_path} back to {path}"),
            script,
        )
        .await?;
        Ok(Outcome::changed().with_msg(format!(
            "moved {new_path} back to {path}{}",
            if occupied {
                " (what was there since is removed)"
            } else {
                ""
            }
        )))
    }
}
