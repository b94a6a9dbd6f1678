//! `unarchive`: extracts a tar archive on the host into a directory, after listing it
//! and refusing members that would land outside, and refusing to overwrite what is
//! already there unless told to (Freezer's "restore into a non-empty directory").

use std::collections::BTreeSet;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::archive::{COMPRESS, compression, tar_flag};
use super::backup_common::{check_choice, exists, failed_with, refuse_root, stays_inside};
use super::{ArgKind, Module, ModuleContext, ModuleDoc, ModuleError, Outcome, arg, parse_args};
use crate::connection::{CommandSpec, quote};
use crate::error::{SourceError, SourceFile};
use crate::yaml::Node;

/// The `unarchive` module.
pub struct Unarchive;

/// How many offending names a message shows.
const SHOWN: usize = 10;

static DOC: ModuleDoc = ModuleDoc {
    name: "unarchive",
    summary: "Extract a tar archive on the host into a directory, safely",
    description: "Lists the archive first (`tar --list`) and refuses it when any member name is \
absolute or contains a `..` component (nothing is extracted then); GNU tar's own protections apply \
on top. The top-level entries of the archive (e.g. `nova` for `nova/nova.conf`) must not exist in \
`dest`: restoring over existing files is refused unless `force: true`, so a restore never mixes \
old and restored files unnoticed; move the old ones away first (`move_aside`). `dest` is created \
when missing. Extraction keeps modes (`-p`) and numeric ownership (`--numeric-owner`; as root tar \
also restores owners). When extraction fails, what it extracted is removed again (the created dest, or \
the new top-level entries). Compression (gzip, zstd, none) is detected by tar; `compress` forces one. \
With `creates`, the step is ok and does nothing when that path exists. Changed when it extracted. A \
dry run lists the archive and checks the same conditions, then says what it would extract.",
    free_form: None,
    args: &[
        arg("src", ArgKind::Str, true, "host path of the archive"),
        arg(
            "dest",
            ArgKind::Str,
            true,
            "host directory to extract into (created when missing)",
        ),
        arg(
            "creates",
            ArgKind::Str,
            false,
            "a host path; when it exists nothing is extracted",
        ),
        arg(
            "force",
            ArgKind::Bool,
            false,
            "extract even when top-level entries exist in dest, overwriting files (default false)",
        ),
        arg(
            "compress",
            ArgKind::Str,
            false,
            "auto | gzip | zstd | none (default auto: tar detects it)",
        ),
    ],
    open_args: false,
    example: "- id: restore-nova-etc\n  unarchive:\n    src: /var/backups/nova-etc.tar.zst\n    dest: /etc\n",
    returns: &[
        ("dest", "the directory extracted into"),
        ("members", "number of archive members"),
        ("top_level", "the archive's top-level entries"),
        ("created_dest", "whether dest was created"),
        (
            "overwritten",
            "top-level entries that existed before (only with force)",
        ),
    ],
    rollback: "removes what the step extracted: dest itself when the step created it, otherwise \
the top-level entries that did not exist before. Entries that existed and were overwritten \
(`force: true`) cannot be put back: rollback removes the new entries and then fails naming them.",
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Args {
    src: String,
    dest: String,
    creates: Option<String>,
    #[serde(default)]
    force: bool,
    #[serde(default = "auto")]
    compress: String,
}

fn auto() -> String {
    "auto".to_string()
}

fn first(list: &[String]) -> String {
    let mut s = list
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if list.len() > SHOWN {
        s.push_str(&format!(" and {} more", list.len() - SHOWN));
    }
    s
}

/// A member's first path component (`./nova/x` -> `nova`); `None` for `.` itself.
fn top_level(name: &str) -> Option<String> {
    name.split('/')
        .find(|c| !c.is_empty() && *c != ".")
        .map(str::to_string)
}

/// Shell lines removing `dest/<entry>` for each entry.
fn remove_entries(dest: &str, entries: &[String]) -> String {
    entries
        .iter()
        .map(|e| format!("rm -rf -- {}\n", quote(&format!("{dest}/{e}"))))
        .collect()
}

#[async_trait]
impl Module for Unarchive {
    fn doc(&self) -> &'static ModuleDoc {
        &DOC
    }

    fn validate(&self, args: &Node, file: &SourceFile) -> Vec<SourceError> {
        check_choice(args, file, "unarchive", "compress", COMPRESS)
    }

    async fn run(&self, ctx: &ModuleContext, args: &Json) -> Result<Outcome, ModuleError> {
        let a: Args = parse_args("unarchive", args)?;
        refuse_root("unarchive", &a.dest)?;
        let flag = if a.compress == "auto" {
            ""
        } else {
            tar_flag(compression("unarchive", &a.compress, &a.src)?)
        };
        let dest = a.dest.trim_end_matches('/').to_string();
        if let Some(c) = &a.creates
            && exists(ctx, c).await?
        {
            return Ok(Outcome::ok().with_msg(format!("skipped: {c} exists")));
        }
        if !exists(ctx, &a.src).await? {
            if ctx.check {
                return Ok(Outcome::changed().with_msg(format!(
                    "would extract {} into {dest} ({} does not exist now: an earlier step must create it)",
                    a.src, a.src
                )));
            }
            return Err(ModuleError::failed(format!("{} does not exist", a.src)));
        }
        // List first: names are checked before anything is written.
        let list = ctx
            .probe(CommandSpec::shell(format!(
                "tar --list {flag} --file={}",
                quote(&a.src)
            )))
            .await?;
        if !list.success() {
            return Err(failed_with(&format!("cannot list {}", a.src), list));
        }
        // GNU tar escapes unusual characters (a newline is `\n`): one name per line.
        let names: Vec<String> = list
            .stdout_text()
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        let outside: Vec<String> = names.iter().filter(|n| !stays_inside(n)).cloned().collect();
        if !outside.is_empty() {
            return Err(ModuleError::failed(format!(
                "refusing to extract {}: {} member(s) would land outside {dest}: {}",
                a.src,
                outside.len(),
                first(&outside)
            )));
        }
        let tops: Vec<String> = names
            .iter()
            .filter_map(|n| top_level(n))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let dest_stat = ctx.stat(&dest).await?;
        let created_dest = match dest_stat.as_ref().map(|s| s.kind.as_str()) {
            None => true,
            Some("directory") => false,
            Some(k) => {
                return Err(ModuleError::failed(format!(
                    "{dest} is a {k}, not a directory"
                )));
            }
        };
        let mut existing = Vec::new();
        if !created_dest {
            for t in &tops {
                if exists(ctx, &format!("{dest}/{t}")).await? {
                    existing.push(t.clone());
                }
            }
        }
        if !existing.is_empty() && !a.force {
            return Err(ModuleError::failed(format!(
                "refusing to extract {} into {dest}: {} exist there already; move them aside first (move_aside) or set force: true to overwrite",
                a.src,
                first(&existing)
            )));
        }
        let new_entries: Vec<String> = tops
            .iter()
            .filter(|t| !existing.contains(t))
            .cloned()
            .collect();
        let data = json!({
            "dest": dest,
            "members": names.len(),
            "top_level": tops,
            "created_dest": created_dest,
            "overwritten": existing,
        });
        if ctx.check {
            return Ok(Outcome::changed().with_data(data).with_msg(format!(
                "would extract {} members of {} into {dest}{}",
                names.len(),
                a.src,
                if existing.is_empty() {
                    String::new()
                } else {
                    format!(", overwriting {}", first(&existing))
                }
            )));
        }
        let d = quote(&dest);
        let cleanup = if created_dest {
            format!("rm -rf -- {d}\n")
        } else {
            remove_entries(&dest, &new_entries)
        };
        let script = format!(
            "mkdir -p -- {d} || exit\ntar --extract {flag} --file={} -C {d} -p --numeric-owner && exit 0\nrc=$?\n{cleanup}exit $rc\n",
            quote(&a.src)
        );
        let out = ctx.run(CommandSpec::shell(script)).await?;
        if !out.success() {
            return Err(failed_with(
                &format!(
                    "tar could not extract {} into {dest} (what it extracted is removed)",
                    a.src
                ),
                out,
            ));
        }
        Ok(Outcome::changed()
            .with_data(data)
            .with_undo(json!({
                "dest": dest,
                "created_dest": created_dest,
                "created": new_entries,
                "overwritten": existing,
            }))
            .with_msg(format!(
                "extracted {} members of {} into {dest}",
                names.len(),
                a.src
            )))
    }

    async fn undo(
        &self,
        ctx: &ModuleContext,
        _args: &Json,
        undo: &Json,
    ) -> Result<Outcome, ModuleError> {
        let dest = undo
            .get("dest")
            .and_then(Json::as_str)
            .ok_or_else(|| ModuleError::failed("the undo data names no dest"))?;
        let list = |k: &str| -> Vec<String> {
            undo.get(k)
                .and_then(Json::as_array)
                .map(|v| {
                    v.iter()
                        .filter_map(Json::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default()
        };
        let created_dest = undo
            .get("created_dest")
            .and_then(Json::as_bool)
            .unwrap_or(false);
        let (created, overwritten) = (list("created"), list("overwritten"));
        let what = if created_dest {
            dest.to_string()
        } else {
            format!("{} in {dest}", first(&created))
        };
        if ctx.check {
            return Ok(Outcome::changed().with_msg(format!("would remove {what}")));
        }
        let script = if created_dest {
            format!("rm -rf -- {}\n", quote(dest))
        } else {
            remove_entries(dest, &created)
        };
        if !script.is_empty() {
            super::backup_common::script_ok(ctx, &format!("cannot remove {what}"), script).await?;
        }
        if !overwritten.is_empty() {
            return Err(ModuleError::failed(format!(
                "removed {what}, but {} in {dest} were overwritten (force: true) and cannot be put back",
                first(&overwritten)
            )));
        }
        Ok(Outcome::changed().with_msg(format!("removed {what}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_level_entries() {
        assert_eq!(top_level("nova/nova.conf").as_deref(), Some("nova"));
        assert_eq!(top_level("./nova/x").as_deref(), Some("nova"));
        assert_eq!(top_level("./").as_deref(), None);
        assert_eq!(top_level("a").as_deref(), Some("a"));
    }
}
