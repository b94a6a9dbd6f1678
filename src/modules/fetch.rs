//! `fetch`: copies a host file to the controller, into `dest/<host>/<src path>` (or to
//! `dest` itself with `flat`), through a temporary file and a rename, with its sha256
//! checked, never writing outside `dest` (no `..`, no symbolic link below dest), and
//! keeping what it replaced for rollback.

use std::path::{Component, Path, PathBuf};

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::copy::{
    UNDO_MAX, decode_content, encode_content, host_sha256, local_sha256, unique_suffix,
};
use super::{ArgKind, Module, ModuleContext, ModuleDoc, ModuleError, Outcome, arg, parse_args};

/// The `fetch` module.
pub struct Fetch;

static DOC: ModuleDoc = ModuleDoc {
    name: "fetch",
    summary: "Copy a file from the host to the controller",
    description: "Copies the host file `src` to the controller: to `<dest>/<inventory host>/<src path>` \
(so several hosts never overwrite each other), or with `flat: true` to `dest` itself (to \
`dest/<src's name>` when dest ends with `/` or is a directory). A computed path with a `..` \
component is refused, and so is a symbolic link at the target or between dest and it: fetch never \
writes outside dest. The file is written to a temporary name \
next to its destination and renamed into place once its sha256 matched the host's \
(`validate_checksum`). Changed when the local file was missing or differed; ok (nothing \
transferred) when the sha256 already match. A dry run compares the sha256 of the host file with \
the local one without transferring anything. A missing src fails the step unless \
`fail_on_missing: false` (then ok, with a message).",
    free_form: None,
    args: &[
        arg("src", ArgKind::Str, true, "the host file"),
        arg(
            "dest",
            ArgKind::Str,
            true,
            "controller directory (relative to the playbook), or the file with flat",
        ),
        arg(
            "flat",
            ArgKind::Bool,
            false,
            "write to dest itself instead of dest/<host>/<src path> (default false)",
        ),
        arg(
            "fail_on_missing",
            ArgKind::Bool,
            false,
            "fail when src does not exist (default true)",
        ),
        arg(
            "validate_checksum",
            ArgKind::Bool,
            false,
            "check the fetched file's sha256 against the host's (default true)",
        ),
    ],
    open_args: false,
    example: "- id: fetch-dump\n  fetch:\n    src: /var/backups/mysql/all.sql.gz\n    dest: backups/\n  needs: [dump]\n",
    returns: &[
        ("src", "the host file"),
        ("dest", "the controller file written"),
        ("sha256", "sha256 of the file"),
        ("size", "its size in bytes (null in a dry run)"),
    ],
    rollback: "puts back the controller file that was replaced (kept in the undo data up to 64 MiB, \
as a hard link or copy named `.<name>.lifeboat-backup-<run_id>-<random>` next to it beyond that), \
or removes the fetched file and the directories the step created when there was none.",
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FetchArgs {
    src: String,
    dest: String,
    #[serde(default)]
    flat: bool,
    #[serde(default = "yes")]
    fail_on_missing: bool,
    #[serde(default = "yes")]
    validate_checksum: bool,
}

fn yes() -> bool {
    true
}

fn traversal(what: &str, value: &str) -> ModuleError {
    ModuleError::failed(format!(
        "fetch: {what} `{value}` has a `..` component; fetch never writes outside dest"
    ))
}

/// The controller file to write, always below `dest`.
fn local_target(ctx: &ModuleContext, a: &FetchArgs) -> Result<PathBuf, ModuleError> {
    let dest = ctx.local_path(&a.dest);
    let src_name = || -> Result<String, ModuleError> {
        let name = a.src.trim_end_matches('/').rsplit('/').next().unwrap_or("");
        match name {
            "" | "." => Err(ModuleError::Args(format!(
                "fetch: src `{}` names no file",
                a.src
            ))),
            ".." => Err(traversal("src", &a.src)),
            n => Ok(n.to_string()),
        }
    };
    if a.flat {
        return if a.dest.ends_with('/') || dest.is_dir() {
            Ok(dest.join(src_name()?))
        } else {
            Ok(dest)
        };
    }
    if a.src.split('/').any(|c| c == "..") {
        return Err(traversal("src", &a.src));
    }
    if ctx.host.is_empty() || ctx.host == "." || ctx.host == ".." || ctx.host.contains('/') {
        return Err(traversal("the host name", &ctx.host));
    }
    let mut path = dest.join(&ctx.host);
    for c in a.src.split('/').filter(|c| !c.is_empty() && *c != ".") {
        path.push(c);
    }
    src_name()?;
    // Belt and braces: nothing below dest may climb out of it.
    if path.strip_prefix(&dest).map_or(true, |rest| {
        rest.components()
            .any(|c| !matches!(c, Component::Normal(_)))
    }) {
        return Err(traversal("src", &a.src));
    }
    Ok(path)
}

/// Refuses a target reached through a symbolic link below `dest` (or that is one): a
/// link there could point anywhere, and fetch never writes outside dest. `dest` itself
/// may be a link (the operator chose it).
fn no_links_below(dest: &Path, target: &Path) -> Result<(), ModuleError> {
    let rest = target.strip_prefix(dest).unwrap_or(Path::new(""));
    let mut path = if rest.as_os_str().is_empty() {
        // flat: the target is dest itself.
        return refuse_link(target).map(|_| ());
    } else {
        dest.to_path_buf()
    };
    for c in rest.components() {
        path.push(c);
        if !refuse_link(&path)? {
            break;
        }
    }
    Ok(())
}

/// An error when `path` is a symbolic link; whether it exists.
fn refuse_link(path: &Path) -> Result<bool, ModuleError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => Err(ModuleError::failed(format!(
            "fetch: {} is a symbolic link; fetch never writes through links below dest (remove it, or point dest elsewhere)",
            path.display()
        ))),
        Ok(_) => Ok(true),
        Err(_) => Ok(false),
    }
}

/// A temporary or backup name next to a controller file.
fn local_sibling(path: &Path, tag: &str, run_id: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.lifeboat-{tag}{}", unique_suffix(run_id)))
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> ModuleError {
    ModuleError::failed(format!("fetch: cannot {what} {}: {e}", path.display()))
}

#[async_trait]
impl Module for Fetch {
    fn doc(&self) -> &'static ModuleDoc {
        &DOC
    }

    async fn run(&self, ctx: &ModuleContext, args: &Json) -> Result<Outcome, ModuleError> {
        let a: FetchArgs = parse_args("fetch", args)?;
        let target = local_target(ctx, &a)?;
        no_links_below(&ctx.local_path(&a.dest), &target)?;
        let src = a.src.as_str();
        match ctx.stat(src).await? {
            None if ctx.check => {
                return Ok(Outcome::changed()
                    .with_msg(format!(
                        "would fetch {src} to {} ({src} does not exist now: an earlier step must create it)",
                        target.display()
                    ))
                    .with_data(json!({ "src": src, "dest": target, "sha256": null, "size": null })));
            }
            None if a.fail_on_missing => {
                return Err(ModuleError::failed(format!(
                    "fetch: {src} does not exist on {} (set fail_on_missing: false to allow that)",
                    ctx.host
                )));
            }
            None => {
                return Ok(Outcome::ok()
                    .with_msg(format!("skipped: {src} does not exist"))
                    .with_data(
                        json!({ "src": src, "dest": target, "sha256": null, "size": null }),
                    ));
            }
            Some(s) if s.kind == "file" || s.kind == "link" => {}
            Some(s) => {
                return Err(ModuleError::failed(format!(
                    "fetch: {src} is a {}, not a file",
                    s.kind
                )));
            }
        }
        if target.is_dir() {
            return Err(ModuleError::failed(format!(
                "fetch: {} is a directory (with flat, end dest with / to fetch into it)",
                target.display()
            )));
        }
        let remote = host_sha256(ctx, src).await?;
        let local = local_sha256(&target).await?;
        let mut data = json!({ "src": src, "dest": target, "sha256": remote, "size": null });
        if let Some((sha, size)) = &local
            && *sha == remote
        {
            data["size"] = json!(size);
            return Ok(Outcome::ok().with_data(data));
        }
        if ctx.check {
            return Ok(Outcome::changed()
                .with_data(data)
                .with_msg(format!("would fetch {src} to {}", target.display())));
        }

        let parent = target
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let mut created_top: Option<PathBuf> = None;
        let mut probe = parent.clone();
        while !tokio::fs::try_exists(&probe).await.unwrap_or(true) {
            created_top = Some(probe.clone());
            match probe.parent() {
                Some(p) => probe = p.to_path_buf(),
                None => break,
            }
        }
        tokio::fs::create_dir_all(&parent)
            .await
            .map_err(|e| io_err("create", &parent, e))?;

        let tmp = local_sibling(&target, "", &ctx.run_id);
        if let Err(e) = ctx.conn.get_file(src, &tmp).await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e.into());
        }
        let (sha, size) = match local_sha256(&tmp).await {
            Ok(Some(v)) => v,
            other => {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(other.err().unwrap_or_else(|| {
                    ModuleError::failed(format!("fetch: {} vanished", tmp.display()))
                }));
            }
        };
        if a.validate_checksum && sha != remote {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(ModuleError::failed(format!(
                "fetch: checksum mismatch for {src}: the host has {remote}, the fetched copy {sha} (did it change while being fetched?)"
            )));
        }

        let mut undo =
            json!({ "path": target, "existed": local.is_some(), "created_top": created_top });
        if let Some((_, old_size)) = &local {
            if *old_size <= UNDO_MAX {
                let old = tokio::fs::read(&target)
                    .await
                    .map_err(|e| io_err("read", &target, e))?;
                undo["content"] = encode_content(&old);
            } else {
                let backup = local_sibling(&target, "backup-", &ctx.run_id);
                if tokio::fs::hard_link(&target, &backup).await.is_err() {
                    tokio::fs::copy(&target, &backup)
                        .await
                        .map_err(|e| io_err("keep a backup of", &target, e))?;
                }
                undo["backup"] = json!(backup);
            }
        }
        if let Err(e) = tokio::fs::rename(&tmp, &target).await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(io_err("write", &target, e));
        }
        data["sha256"] = json!(sha);
        data["size"] = json!(size);
        Ok(Outcome::changed()
            .with_data(data)
            .with_undo(undo)
            .with_msg(format!("fetched {src} to {}", target.display())))
    }

    async fn undo(
        &self,
        ctx: &ModuleContext,
        _args: &Json,
        undo: &Json,
    ) -> Result<Outcome, ModuleError> {
        let path = undo
            .get("path")
            .and_then(Json::as_str)
            .map(PathBuf::from)
            .ok_or_else(|| ModuleError::failed("the undo data names no path"))?;
        if ctx.check {
            return Ok(Outcome::changed().with_msg(format!("would restore {}", path.display())));
        }
        if let Some(content) = undo.get("content") {
            let bytes = decode_content(content)?;
            let tmp = local_sibling(&path, "", &ctx.run_id);
            tokio::fs::write(&tmp, &bytes)
                .await
                .map_err(|e| io_err("write", &tmp, e))?;
            if let Err(e) = tokio::fs::rename(&tmp, &path).await {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(io_err("restore", &path, e));
            }
            return Ok(Outcome::changed().with_msg(format!("restored {}", path.display())));
        }
        if let Some(backup) = undo.get("backup").and_then(Json::as_str) {
            tokio::fs::rename(backup, &path)
                .await
                .map_err(|e| io_err("restore", &path, e))?;
            return Ok(
                Outcome::changed().with_msg(format!("restored {} from {backup}", path.display()))
            );
        }
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("remove", &path, e)),
        }
        // Directories the step created, while they are empty (best effort: another
        // step's files may live there).
        if let Some(top) = undo
            .get("created_top")
            .and_then(Json::as_str)
            .map(PathBuf::from)
        {
            let mut dir = path.parent().map(Path::to_path_buf);
            while let Some(d) = dir {
                if !d.starts_with(&top) || tokio::fs::remove_dir(&d).await.is_err() {
                    break;
                }
                dir = if d == top {
                    None
                } else {
                    d.parent().map(Path::to_path_buf)
                };
            }
        }
        Ok(Outcome::changed().with_msg(format!("removed {}", path.display())))
    }
}
