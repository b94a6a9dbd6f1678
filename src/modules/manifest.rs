//! `manifest`: records the sha256, size and mode of every regular file under a host
//! path (a directory, or one file) in a JSON manifest on the host, written atomically
//! (through `copy`'s placement, so it is idempotent and undoable). Also home of the
//! scan that `verify_manifest` compares against.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};

use super::backup_common::{failed_with, nul_records, str_list};
use super::copy::{Content, Placement, mode_text, place, undo_place};
use super::{
    ArgKind, Module, ModuleContext, ModuleDoc, ModuleError, Outcome, arg, parse_args, parse_mode,
};
use crate::connection::{CommandSpec, quote};

/// The `manifest` module.
pub struct Manifest;

static DOC: ModuleDoc = ModuleDoc {
    name: "manifest",
    summary: "Record sha256, size and mode of every file under a path (or of one file) in a JSON manifest",
    description: "Scans `path` on the host (`find -type f -printf` for size and mode, `find -print0 | \
xargs -0 sha256sum -z` for content: the files are read on the host, nothing is copied to the \
controller) and writes the manifest to `dest` on the host, atomically (a temporary name, then a \
rename). Only regular files are recorded, by their path relative to `path`; symbolic links, empty \
directories, devices and sockets are not. `exclude` patterns are `find -path` globs matched against \
`./<relative path>` (`*` also matches `/`); a matching directory is skipped whole, e.g. `instances` \
skips `path/instances`, `*.log` every log file. The manifest holds no timestamp, so the step is \
changed only when the manifest's content changes (a file was added, removed or changed). A dry run \
scans the tree too (read only) and reports whether the manifest would change. File names that are \
not UTF-8 are recorded with U+FFFD replacement characters. `path` may also be one regular file: \
the manifest then records that file alone, by its name. With `missing: record`, a `path` that does \
not exist is recorded as absent (an optional file: `verify_manifest` then expects it absent); by \
default it is an error.",
    free_form: None,
    args: &[
        arg(
            "path",
            ArgKind::Str,
            true,
            "the host directory (or regular file) to describe",
        ),
        arg(
            "dest",
            ArgKind::Str,
            true,
            "host path of the manifest file to write (JSON)",
        ),
        arg(
            "exclude",
            ArgKind::StrOrList,
            false,
            "find -path globs relative to path, e.g. [instances, \"*.log\"]",
        ),
        arg(
            "missing",
            ArgKind::Str,
            false,
            "fail | record: what a path that does not exist means (default fail; record: \
the manifest says it is absent)",
        ),
    ],
    open_args: false,
    example: "- id: nova-manifest\n  manifest:\n    path: /var/lib/nova\n    dest: /var/backups/nova.manifest.json\n    exclude: [instances]\n",
    returns: &[
        ("dest", "the manifest file"),
        ("path", "the directory (or file) described"),
        ("kind", "directory, file, or absent (missing: record)"),
        ("files", "number of files recorded"),
        ("bytes", "their total size"),
        ("sha256", "sha256 of the manifest file itself"),
    ],
    rollback: "puts back the previous manifest file (its content and attributes), or removes it when \
the step created it, as `copy` does.",
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Args {
    path: String,
    dest: String,
    #[serde(default, deserialize_with = "str_list")]
    exclude: Vec<String>,
    #[serde(default)]
    missing: Missing,
}

/// What a `path` that does not exist means.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Missing {
    /// An error (the default).
    #[default]
    Fail,
    /// The manifest records it as absent.
    Record,
}

/// What a manifest describes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Kind {
    /// Every regular file under a directory, by relative path (older manifests).
    #[default]
    Directory,
    /// One regular file, by its name.
    File,
    /// Nothing: the path did not exist (`missing: record`).
    Absent,
}

impl Kind {
    /// The kind a host path's stat shows, if a manifest can describe it.
    pub(crate) fn of(stat_kind: &str) -> Option<Kind> {
        match stat_kind {
            "directory" => Some(Kind::Directory),
            "file" => Some(Kind::File),
            _ => None,
        }
    }

    /// As the manifest and messages say it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Directory => "directory",
            Kind::File => "file",
            Kind::Absent => "absent",
        }
    }
}

/// One file of a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FileEntry {
    /// sha256 of the content.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits, e.g. `"0644"`.
    pub mode: String,
}

/// A manifest file.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ManifestFile {
    /// Format version (1).
    pub version: u32,
    /// The directory (or file) described.
    pub path: String,
    /// What it is (older manifests: a directory).
    #[serde(default)]
    pub kind: Kind,
    /// The exclude patterns used.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Files by relative path.
    pub files: BTreeMap<String, FileEntry>,
}

/// The `find` prefix that skips excluded paths: `\( -path ./a -o -path ./b \) -prune -o`.
fn prune_clause(exclude: &[String]) -> String {
    let pats: Vec<String> = exclude
        .iter()
        .map(|e| e.trim_start_matches("./").trim_start_matches('/'))
        .filter(|e| !e.is_empty())
        .map(|e| format!("-path {}", quote(&format!("./{}", e.trim_end_matches('/')))))
        .collect();
    if pats.is_empty() {
        String::new()
    } else {
        format!("\\( {} \\) -prune -o", pats.join(" -o "))
    }
}

/// Scans a host directory (every regular file's sha256, size and mode, by relative
/// path) or one regular file (by its name).
pub(crate) async fn scan(
    ctx: &ModuleContext,
    path: &str,
    exclude: &[String],
    kind: Kind,
) -> Result<BTreeMap<String, FileEntry>, ModuleError> {
    let (cd, start, name_format) = match kind {
        Kind::Absent => return Ok(BTreeMap::new()),
        Kind::Directory => (format!("cd -- {} && ", quote(path)), ".".to_string(), "%P"),
        Kind::File => {
            let (dir, name) = match path.rsplit_once('/') {
                Some(("", name)) => ("/", name),
                Some((dir, name)) => (dir, name),
                None => (".", path),
            };
            (
                format!("cd -- {} && ", quote(dir)),
                format!("{} -maxdepth 0", quote(&format!("./{name}"))),
                "%f",
            )
        }
    };
    let prune = prune_clause(exclude);
    let stats = ctx
        .probe(CommandSpec::shell(format!(
            "{cd}find {start} {prune} -type f -printf '%s %m {name_format}\\0'"
        )))
        .await?;
    if !stats.success() {
        return Err(failed_with(
            &format!("cannot list the files under {path}"),
            stats,
        ));
    }
    let sums = ctx
        .probe(CommandSpec::shell(format!(
            "{cd}find {start} {prune} -type f -print0 | xargs -0 -r sha256sum -z --"
        )))
        .await?;
    if !sums.success() {
        return Err(failed_with(
            &format!("cannot checksum the files under {path}"),
            sums,
        ));
    }
    let mut hashes = BTreeMap::new();
    for rec in nul_records(&sums.stdout) {
        let (sum, rest) = rec.split_at_checked(64).unwrap_or(("", ""));
        let name = rest
            .strip_prefix("  ")
            .or_else(|| rest.strip_prefix(" *"))
            .unwrap_or(rest);
        let name = name.strip_prefix("./").unwrap_or(name);
        if sum.bytes().all(|b| b.is_ascii_hexdigit()) && !sum.is_empty() {
            hashes.insert(name.to_string(), sum.to_ascii_lowercase());
        }
    }
    let mut files = BTreeMap::new();
    for rec in nul_records(&stats.stdout) {
        let mut it = rec.splitn(3, ' ');
        let (Some(size), Some(mode), Some(name)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        let sha256 = hashes.remove(name).ok_or_else(|| {
            ModuleError::failed(format!(
                "{path}/{name} changed while the manifest was computed (no checksum); run again"
            ))
        })?;
        files.insert(
            name.to_string(),
            FileEntry {
                sha256,
                size: size.parse().unwrap_or(0),
                mode: mode_text(parse_mode(mode).unwrap_or(0)),
            },
        );
    }
    Ok(files)
}

#[async_trait]
impl Module for Manifest {
    fn doc(&self) -> &'static ModuleDoc {
        &DOC
    }

    async fn run(&self, ctx: &ModuleContext, args: &Json) -> Result<Outcome, ModuleError> {
        let a: Args = parse_args("manifest", args)?;
        let st = ctx.stat(&a.path).await?;
        let kind = match st.as_ref().map(|s| s.kind.as_str()) {
            Some(k) => Kind::of(k).ok_or_else(|| {
                ModuleError::failed(format!(
                    "{} is a {k}, not a directory or a regular file",
                    a.path
                ))
            })?,
            None if a.missing == Missing::Record => Kind::Absent,
            None if ctx.check => {
                return Ok(Outcome::changed().with_msg(format!(
                    "would write {} ({} does not exist now: an earlier step must create it)",
                    a.dest, a.path
                )));
            }
            None => {
                return Err(ModuleError::failed(format!(
                    "{} does not exist (give `missing: record` if it may be absent)",
                    a.path
                )));
            }
        };
        let files = scan(ctx, &a.path, &a.exclude, kind).await?;
        let count = files.len();
        let bytes: u64 = files.values().map(|f| f.size).sum();
        let manifest = ManifestFile {
            version: 1,
            path: a.path.clone(),
            kind,
            exclude: a.exclude.clone(),
            files,
        };
        let mut text = serde_json::to_string_pretty(&manifest)
            .map_err(|e| ModuleError::failed(format!("cannot encode the manifest: {e}")))?;
        text.push('\n');
        let sha = super::copy::sha256_hex(text.as_bytes());
        let mut o = place(
            ctx,
            Placement {
                dest: a.dest.clone(),
                into_name: None,
                content: Content::Bytes(text.into_bytes()),
                mode: None,
                owner: None,
                group: None,
            },
        )
        .await?;
        o.data = json!({
            "dest": a.dest,
            "path": a.path,
            "kind": kind.name(),
            "files": count,
            "bytes": bytes,
            "sha256": sha,
        });
        o.msg = Some(match (o.changed, ctx.check) {
            (true, true) => format!("would write {} ({count} files)", a.dest),
            (true, false) => format!("wrote {} ({count} files, {bytes} bytes)", a.dest),
            (false, _) => format!("{} is up to date ({count} files)", a.dest),
        });
        Ok(o)
    }

    async fn undo(
        &self,
        ctx: &ModuleContext,
        _args: &Json,
        undo: &Json,
    ) -> Result<Outcome, ModuleError> {
        undo_place(ctx, undo).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excludes_become_prune_clauses() {
        assert_eq!(prune_clause(&[]), "");
        assert_eq!(
            prune_clause(&["instances/".into(), "*.log".into()]),
            "\\( -path ./instances -o -path './*.log' \\) -prune -o"
        );
    }
}
