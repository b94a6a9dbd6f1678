//! `prune`: retention of backups in a host directory by count and age, which never
//! deletes the newest complete backup (Freezer's retention could delete a chain's
//! level 0).

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::backup_common::{exists, failed_with, host_epoch, nul_records, script_ok};
use super::{
    ArgKind, Module, ModuleContext, ModuleDoc, ModuleError, Outcome, arg, duration_arg, parse_args,
};
use crate::connection::{CommandSpec, quote};
use crate::error::{SourceError, SourceFile};
use crate::yaml::Node;

/// The `prune` module.
pub struct Prune;

static DOC: ModuleDoc = ModuleDoc {
    name: "prune",
    summary: "Delete old backups by count and age, never the newest complete one",
    description: "Looks at the entries (files or directories) directly in `path` whose name matches \
`pattern` (a shell glob, `find -name`), newest first by modification time. An entry is removed when \
it is not among the `keep_last` newest (when given) and it is older than `older_than` (when given); \
at least one of the two is needed. A backup is complete when its marker exists: `complete_marker` \
names it relative to `path`, with `{name}` standing for the entry's name (default \
`{name}.manifest.json`, the manifest written beside it; `{name}/MANIFEST` would be a file inside \
it). The newest complete backup is never removed, even when every entry is older than `older_than`; \
when no entry is complete nothing is removed at all. Files matching the pattern that are another \
entry's marker are not entries themselves; a removed entry's marker beside it is removed with it. \
Ages are measured with the host's clock. Changed when something was removed. A dry run lists what \
would be removed and what kept, and removes nothing.",
    free_form: None,
    args: &[
        arg(
            "path",
            ArgKind::Str,
            true,
            "the host directory holding the backups",
        ),
        arg(
            "pattern",
            ArgKind::Str,
            true,
            "shell glob of the backup names, e.g. \"nova-*.tar.zst\"",
        ),
        arg(
            "keep_last",
            ArgKind::Int,
            false,
            "keep at least this many of the newest entries",
        ),
        arg(
            "older_than",
            ArgKind::Duration,
            false,
            "remove only entries older than this, e.g. 7d",
        ),
        arg(
            "complete_marker",
            ArgKind::Str,
            false,
            "marker of a complete backup, relative to path; {name} is the entry (default {name}.manifest.json)",
        ),
    ],
    open_args: false,
    example: "- id: retention\n  prune:\n    path: /var/backups/openstack\n    pattern: \"nova-*.tar.zst\"\n    keep_last: 7\n    older_than: 7d\n",
    returns: &[
        (
            "removed",
            "names removed (in a dry run: that would be removed)",
        ),
        ("kept", "names kept"),
        (
            "newest_complete",
            "the newest complete backup (null when none)",
        ),
        ("incomplete", "names without a marker"),
    ],
    rollback: "not possible: deleted backups cannot be brought back. Rollback runs nothing and \
reports which entries stay deleted; put prune last, after the new backup is verified.",
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Args {
    path: String,
    pattern: String,
    keep_last: Option<u64>,
    older_than: Option<Json>,
    complete_marker: Option<String>,
}

/// An entry: its name and modification time.
struct Entry {
    name: String,
    mtime: f64,
    complete: bool,
}

fn marker_of(template: &str, name: &str) -> String {
    template.replace("{name}", name)
}

#[async_trait]
impl Module for Prune {
    fn doc(&self) -> &'static ModuleDoc {
        &DOC
    }

    fn validate(&self, args: &Node, file: &SourceFile) -> Vec<SourceError> {
        let mut errors = Vec::new();
        if args.get("keep_last").is_none() && args.get("older_than").is_none() {
            errors.push(
                args.error(file, "`prune` needs `keep_last`, `older_than` or both")
                    .with_help("e.g. keep_last: 7, older_than: 7d"),
            );
        }
        if let Some(n) = args.get("pattern")
            && let Some(p) = n.as_str()
            && (p.contains('/') || p.is_empty())
        {
            errors.push(
                n.error(
                    file,
                    "`pattern` matches names in `path`; it cannot contain `/`",
                )
                .with_help("put the directory in `path`"),
            );
        }
        if let Some(n) = args.get("complete_marker")
            && let Some(m) = n.as_str()
            && !m.contains("{name}")
            && !m.contains("{{")
        {
            errors.push(
                n.error(file, "`complete_marker` must contain `{name}`")
                    .with_help("e.g. complete_marker: \"{name}.manifest.json\""),
            );
        }
        errors
    }

    async fn run(&self, ctx: &ModuleContext, args: &Json) -> Result<Outcome, ModuleError> {
        let a: Args = parse_args("prune", args)?;
        let older_than = a.older_than.as_ref().map(duration_arg).transpose()?;
        if a.keep_last.is_none() && older_than.is_none() {
            return Err(ModuleError::Args(
                "prune: give keep_last, older_than or both".into(),
            ));
        }
        if a.pattern.contains('/') || a.pattern.is_empty() {
            return Err(ModuleError::Args(format!(
                "prune: pattern `{}` cannot contain `/`",
                a.pattern
            )));
        }
        let marker = a
            .complete_marker
            .clone()
            .unwrap_or_else(|| "{name}.manifest.json".to_string());
        if !marker.contains("{name}") {
            return Err(ModuleError::Args(
                "prune: complete_marker must contain {name}".into(),
            ));
        }
        let dir = a.path.trim_end_matches('/').to_string();
        if !exists(ctx, &dir).await? {
            if ctx.check {
                return Ok(Outcome::ok().with_msg(format!(
                    "{dir} does not exist now: nothing to prune unless an earlier step creates it"
                )));
            }
            return Err(ModuleError::failed(format!("{dir} does not exist")));
        }
        let list = ctx
            .probe(CommandSpec::shell(format!(
                "find {} -mindepth 1 -maxdepth 1 -name {} -printf '%T@ %f\\0'",
                quote(&dir),
                quote(&a.pattern)
            )))
            .await?;
        if !list.success() {
            return Err(failed_with(&format!("cannot list {dir}"), list));
        }
        let mut entries: Vec<Entry> = nul_records(&list.stdout)
            .filter_map(|r| {
                let (t, name) = r.split_once(' ')?;
                Some(Entry {
                    name: name.to_string(),
                    mtime: t.parse().ok()?,
                    complete: false,
                })
            })
            .collect();
        // Markers that match the pattern are not backups of their own.
        let markers: Vec<String> = entries
            .iter()
            .map(|e| marker_of(&marker, &e.name))
            .collect();
        entries.retain(|e| !markers.contains(&e.name));
        if !entries.is_empty() {
            let tests: String = entries
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    format!(
                        "[ -e {} ] && printf '%s\\0' {i}\n",
                        quote(&format!("{dir}/{}", marker_of(&marker, &e.name)))
                    )
                })
                .collect();
            let out = ctx
                .probe(CommandSpec::shell(format!("{tests}true")))
                .await?;
            if !out.success() {
                return Err(failed_with("cannot look for the complete markers", out));
            }
            for i in nul_records(&out.stdout).filter_map(|i| i.parse::<usize>().ok()) {
                if let Some(e) = entries.get_mut(i) {
                    e.complete = true;
                }
            }
        }
        entries.sort_by(|x, y| {
            y.mtime
                .total_cmp(&x.mtime)
                .then_with(|| y.name.cmp(&x.name))
        });
        let now = host_epoch(ctx).await?;
        let newest_complete = entries.iter().position(|e| e.complete);
        let mut removed = Vec::new();
        let mut kept = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            let beyond_count = a.keep_last.is_none_or(|k| i as u64 >= k);
            let old_enough = older_than.is_none_or(|d| now - e.mtime > d.as_secs_f64());
            if beyond_count && old_enough && newest_complete.is_some_and(|n| n != i) {
                removed.push(e.name.clone());
            } else {
                kept.push(e.name.clone());
            }
        }
        let data = json!({
            "removed": removed,
            "kept": kept,
            "newest_complete": newest_complete.and_then(|n| entries.get(n)).map(|e| e.name.clone()),
            "incomplete": entries.iter().filter(|e| !e.complete).map(|e| e.name.clone()).collect::<Vec<_>>(),
        });
        let note = if newest_complete.is_none() && !entries.is_empty() {
            " (no complete backup: nothing is removed)"
        } else {
            ""
        };
        if removed.is_empty() {
            return Ok(Outcome::ok().with_data(data).with_msg(format!(
                "nothing to remove in {dir}, {} kept{note}",
                kept.len()
            )));
        }
        if ctx.check {
            return Ok(Outcome::changed().with_data(data).with_msg(format!(
                "would remove {} of {} in {dir}: {}",
                removed.len(),
                entries.len(),
                removed.join(", ")
            )));
        }
        let marker_inside = marker.starts_with("{name}/");
        let mut script = String::from("set -e\n");
        for name in &removed {
            script.push_str(&format!("rm -rf -- {}\n", quote(&format!("{dir}/{name}"))));
            if !marker_inside {
                script.push_str(&format!(
                    "rm -f -- {}\n",
                    quote(&format!("{dir}/{}", marker_of(&marker, name)))
                ));
            }
        }
        script_ok(ctx, &format!("cannot remove old backups in {dir}"), script).await?;
        Ok(Outcome::changed()
            .with_data(data)
            .with_undo(json!({ "path": dir, "removed": removed }))
            .with_msg(format!(
                "removed {} of {} in {dir}: {}",
                removed.len(),
                entries.len(),
                removed.join(", ")
            )))
    }

    async fn undo(
        &self,
        _ctx: &ModuleContext,
        _args: &Json,
        undo: &Json,
    ) -> Result<Outcome, ModuleError> {
        let dir = undo.get("path").and_then(Json::as_str).unwrap_or("?");
        let removed: Vec<&str> = undo
            .get("removed")
            .and_then(Json::as_array)
            .map(|v| v.iter().filter_map(Json::as_str).collect())
            .unwrap_or_default();
        Ok(Outcome::ok().with_msg(format!(
            "prune cannot be undone: {} deleted in {dir} stay deleted: {}",
            removed.len(),
            removed.join(", ")
        )))
    }
}
