//! `copy` of a controller directory: the tree is walked on the controller, the host is
//! inspected for every file in one command, the changed files are sent over the
//! connection's one SFTP session (eight at once) to temporary names beside their
//! destinations, and one command checks their sizes, gives them their attributes and
//! renames those that replace files into place; new files are renamed over SFTP (no
//! process on the host), or by `mv` when there is no SFTP. Four commands for any number
//! of files, where a `copy` loop runs two per file. Files it replaces are kept in one
//! backup directory beside dest for rollback.

use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use serde_json::{Value as Json, json};

use super::copy::{attr_script, local_sha256, mode_text, sibling, spec_ok, split_path};
use super::{ModuleContext, ModuleError, Outcome, Upload};
use crate::connection::CommandOutput;
use crate::connection::{CommandSpec, quote};

/// How many files are sent at once.
const UPLOADS_AT_ONCE: usize = 8;

/// How many renames are asked of the host at once (each is one small request).
const RENAMES_AT_ONCE: usize = 32;

/// One entry of the controller's tree, relative to the copied directory.
#[derive(Debug)]
enum Entry {
    /// A directory (`""` is the top).
    Dir(String),
    /// A regular file (symbolic links are followed, as `cp -L` does).
    File {
        rel: String,
        local: PathBuf,
        size: u64,
    },
}

/// What the host has at an entry's destination.
#[derive(Debug, PartialEq)]
enum Found {
    Absent,
    Dir,
    File {
        size: u64,
        mode: u32,
        owner: String,
        group: String,
        sha256: Option<String>,
    },
    /// A symbolic link or a special file: never written through.
    Other(String),
}

/// The attributes asked for.
pub(crate) struct TreeAttrs {
    /// Permission bits of the files.
    pub mode: Option<u32>,
    /// Owner of files and created directories.
    pub owner: Option<String>,
    /// Group of files and created directories.
    pub group: Option<String>,
}

/// Walks `src` (following links) into directories and files, parents first, sorted.
fn walk(src: &Path) -> Result<Vec<Entry>, ModuleError> {
    use std::os::unix::fs::MetadataExt;
    let mut out = vec![Entry::Dir(String::new())];
    let mut stack = vec![(src.to_path_buf(), String::new())];
    let mut seen = std::collections::HashSet::new();
    while let Some((dir, rel)) = stack.pop() {
        let meta = std::fs::metadata(&dir).map_err(|e| {
            ModuleError::failed(format!("copy: cannot read {}: {e}", dir.display()))
        })?;
        if !seen.insert((meta.dev(), meta.ino())) {
            return Err(ModuleError::failed(format!(
                "copy: {} leads back to a directory already copied (a symbolic link loop)",
                dir.display()
            )));
        }
        let mut names: Vec<(String, PathBuf)> = Vec::new();
        let read = std::fs::read_dir(&dir).map_err(|e| {
            ModuleError::failed(format!("copy: cannot list {}: {e}", dir.display()))
        })?;
        for entry in read {
            let entry = entry.map_err(|e| {
                ModuleError::failed(format!("copy: cannot list {}: {e}", dir.display()))
            })?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.contains('\n') {
                return Err(ModuleError::failed(format!(
                    "copy: {} has a newline in its name; rename it",
                    entry.path().display()
                )));
            }
            names.push((name, entry.path()));
        }
        names.sort();
        let mut subdirs = Vec::new();
        for (name, path) in names {
            let child = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let meta = std::fs::metadata(&path).map_err(|e| {
                ModuleError::failed(format!("copy: cannot read {}: {e}", path.display()))
            })?;
            if meta.is_dir() {
                out.push(Entry::Dir(child.clone()));
                subdirs.push((path, child));
            } else if meta.is_file() {
                out.push(Entry::File {
                    rel: child,
                    local: path,
                    size: meta.len(),
                });
            } else {
                return Err(ModuleError::failed(format!(
                    "copy: {} is neither a file nor a directory",
                    path.display()
                )));
            }
        }
        // A directory's entries in name order, then its subdirectories depth first:
        // parents always come before their children.
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(out)
}

/// Joins dest and a relative path.
fn join(dest: &str, rel: &str) -> String {
    let d = dest.trim_end_matches('/');
    match (d.is_empty(), rel.is_empty()) {
        (_, true) => dest.to_string(),
        (true, false) => format!("/{rel}"),
        (false, false) => format!("{d}/{rel}"),
    }
}

/// Asks the host about every entry in one command: the list goes on stdin, one line an
/// entry, and comes back one line an entry, in order, after a first line saying whether
/// the directory that holds dest exists.
async fn inspect(
    ctx: &ModuleContext,
    dest: &str,
    entries: &[Entry],
) -> Result<(bool, Vec<Found>), ModuleError> {
    let mut list = String::new();
    for e in entries {
        match e {
            Entry::Dir(rel) => list.push_str(&format!("d 0 {rel}\n")),
            Entry::File { rel, size, .. } => list.push_str(&format!("f {size} {rel}\n")),
        }
    }
    let script = format!(
        "D={}\n\
case \"$D\" in */*) P=${{D%/*}}; P=${{P:-/}};; *) P=.;; esac\n\
if [ -d \"$P\" ]; then echo parent; else echo noparent; fi\n\
while IFS= read -r line; do\n\
  t=${{line%% *}}; rest=${{line#* }}; size=${{rest%% *}}; rel=${{rest#* }}\n\
  if [ \"$rest\" = \"$size\" ]; then rel=; fi\n\
  if [ -n \"$rel\" ]; then p=\"$D/$rel\"; else p=\"$D\"; fi\n\
  if [ -L \"$p\" ]; then echo \"link\"\n\
  elif [ -d \"$p\" ]; then echo dir\n\
  elif [ -f \"$p\" ]; then\n\
    s=$(stat -c '%s|%a|%U|%G' -- \"$p\") || s=\"?|0|?|?\"\n\
    if [ \"$t\" = f ] && [ \"${{s%%|*}}\" = \"$size\" ]; then\n\
      echo \"file $s $(sha256sum < \"$p\" | cut -c1-64)\"\n\
    else echo \"file $s\"; fi\n\
  elif [ -e \"$p\" ]; then echo special\n\
  else echo absent; fi\n\
done\n",
        quote(dest)
    );
    let out = ctx
        .probe(CommandSpec::shell(script).stdin(list.into_bytes()))
        .await?;
    if !out.success() {
        return Err(ModuleError::Failed {
            message: format!("cannot inspect {dest}: {}", out.stderr_text().trim()),
            output: Some(out),
        });
    }
    let text = out.stdout_text();
    let mut lines = text.lines();
    let parent = lines.next() == Some("parent");
    let found: Vec<Found> = lines.map(parse_found).collect();
    if found.len() != entries.len() {
        return Err(ModuleError::failed(format!(
            "cannot inspect {dest}: the host answered for {} of {} entries",
            found.len(),
            entries.len()
        )));
    }
    Ok((parent, found))
}

fn parse_found(line: &str) -> Found {
    let mut words = line.split(' ');
    match words.next() {
        Some("absent") => Found::Absent,
        Some("dir") => Found::Dir,
        Some("file") => {
            let fields: Vec<&str> = words.next().unwrap_or("").split('|').collect();
            let sha256 = words
                .next()
                .filter(|h| h.len() == 64)
                .map(str::to_ascii_lowercase);
            Found::File {
                size: fields.first().and_then(|s| s.parse().ok()).unwrap_or(0),
                mode: fields
                    .get(1)
                    .and_then(|m| u32::from_str_radix(m, 8).ok())
                    .unwrap_or(0),
                owner: fields.get(2).unwrap_or(&"").to_string(),
                group: fields.get(3).unwrap_or(&"").to_string(),
                sha256,
            }
        }
        Some("link") => Found::Other("a symbolic link".into()),
        _ => Found::Other("not a regular file or directory".into()),
    }
}

/// What to do with one file.
struct FilePlan<'a> {
    rel: &'a str,
    local: &'a Path,
    size: u64,
    path: String,
    /// Content to send (new or different).
    send: bool,
    /// The host's file before, when it existed.
    before: Option<(u32, String, String)>,
}

/// Copies the directory `src` to `dest` on the host (the directory itself under dest,
/// or with `contents_only` its contents into dest).
pub(crate) async fn copy_tree(
    ctx: &ModuleContext,
    src: &Path,
    dest: &str,
    contents_only: bool,
    attrs: TreeAttrs,
) -> Result<Outcome, ModuleError> {
    let dest = if contents_only {
        dest.trim_end_matches('/').to_string()
    } else {
        let name = src
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| ModuleError::Args(format!("copy: src {} has no name", src.display())))?;
        join(dest, &name)
    };
    let dest = if dest.is_empty() {
        "/".to_string()
    } else {
        dest
    };
    let walked = {
        let src = src.to_path_buf();
        tokio::task::spawn_blocking(move || walk(&src))
            .await
            .map_err(|e| ModuleError::failed(format!("copy: {e}")))??
    };
    let (parent_exists, found) = inspect(ctx, &dest, &walked).await?;
    let mut note = String::new();
    if !parent_exists && found.first() == Some(&Found::Absent) {
        let (parent, _) = split_path(&dest);
        if ctx.check {
            note = format!(
                " (the directory {parent} does not exist now: an earlier step must create it)"
            );
        } else {
            return Err(ModuleError::failed(format!(
                "cannot copy to {dest}: the directory {parent} does not exist (create it with a `file` step, state: directory)"
            )));
        }
    }

    let mut new_dirs: Vec<String> = Vec::new();
    let mut files: Vec<FilePlan> = Vec::new();
    let mut total = 0u64;
    for (entry, found) in walked.iter().zip(&found) {
        match (entry, found) {
            (Entry::Dir(rel), Found::Absent) => new_dirs.push(join(&dest, rel)),
            (Entry::Dir(_), Found::Dir) => {}
            (Entry::Dir(rel), other) => {
                return Err(ModuleError::failed(format!(
                    "copy: {} is {}, where the copy needs a directory; move it away first",
                    join(&dest, rel),
                    describe(other)
                )));
            }
            (Entry::File { rel, local, size }, found) => {
                total += size;
                let path = join(&dest, rel);
                let (send, before) = match found {
                    Found::Absent => (true, None),
                    Found::File {
                        size: host_size,
                        mode,
                        owner,
                        group,
                        sha256,
                    } => {
                        let send = host_size != size || {
                            let (sum, _) = local_sha256(local).await?.ok_or_else(|| {
                                ModuleError::failed(format!("{} vanished", local.display()))
                            })?;
                            sha256.as_deref() != Some(sum.as_str())
                        };
                        (send, Some((*mode, owner.clone(), group.clone())))
                    }
                    other => {
                        return Err(ModuleError::failed(format!(
                            "copy: {path} is {}; lifeboat does not write through it (move it away first)",
                            describe(other)
                        )));
                    }
                };
                files.push(FilePlan {
                    rel,
                    local,
                    size: *size,
                    path,
                    send,
                    before,
                });
            }
        }
    }
    let attr_changed = |f: &FilePlan| match &f.before {
        None => false,
        Some((mode, owner, group)) => {
            attrs.mode.is_some_and(|m| m != *mode)
                || attrs.owner.as_ref().is_some_and(|o| o != owner)
                || attrs.group.as_ref().is_some_and(|g| g != group)
        }
    };
    let changed: Vec<&FilePlan> = files.iter().filter(|f| f.send || attr_changed(f)).collect();
    let changed_files: Vec<&str> = changed.iter().map(|f| f.rel).collect();
    let mut data = json!({
        "dest": dest,
        "files": files.len(),
        "size": total,
        "changed_files": changed_files,
        "created_dirs": new_dirs.len(),
    });
    if changed.is_empty() && new_dirs.is_empty() {
        return Ok(Outcome::ok().with_data(data));
    }
    let summary = format!(
        "{} of {} file(s) in {dest}, {} new director{}",
        changed.len(),
        files.len(),
        new_dirs.len(),
        if new_dirs.len() == 1 { "y" } else { "ies" }
    );
    if ctx.check {
        let mut o = Outcome::changed()
            .with_data(data)
            .with_msg(format!("would change {summary}{note}"));
        if ctx.diff {
            o.diff = Some(
                changed
                    .iter()
                    .map(|f| {
                        format!(
                            "{}: {}\n",
                            f.path,
                            if f.before.is_none() {
                                "new file"
                            } else if f.send {
                                "content differs"
                            } else {
                                "attributes differ"
                            }
                        )
                    })
                    .collect(),
            );
        }
        return Ok(o);
    }

    // Prepare: the new directories, and a backup of every file about to be replaced.
    let (parent, base) = split_path(&dest);
    let backup_dir = sibling(&join(&parent, &base), "backup-", &ctx.run_id);
    let mut prep = String::from("set -e\n");
    for d in &new_dirs {
        prep.push_str(&format!("mkdir -- {}\n", quote(d)));
        prep.push_str(&attr_script(
            d,
            None,
            attrs.owner.as_deref(),
            attrs.group.as_deref(),
        ));
    }
    let mut undo_files = Vec::new();
    let mut backed_up = false;
    for f in &changed {
        match &f.before {
            None => undo_files.push(json!({"path": f.path, "existed": false})),
            Some((mode, owner, group)) => {
                let mut u = json!({"path": f.path, "existed": true, "mode": mode, "owner": owner, "group": group});
                if f.send {
                    let b = join(&backup_dir, f.rel);
                    let (bdir, _) = split_path(&b);
                    prep.push_str(&format!(
                        "mkdir -p -- {bd}\nln -- {p} {bq} 2>/dev/null || cp -p -- {p} {bq}\n",
                        bd = quote(&bdir),
                        p = quote(&f.path),
                        bq = quote(&b)
                    ));
                    u["backup"] = json!(b);
                    backed_up = true;
                }
                undo_files.push(u);
            }
        }
    }
    let undo = json!({
        "tree": dest,
        "created_dirs": new_dirs,
        "files": undo_files,
        "backup_dir": if backed_up { json!(backup_dir) } else { Json::Null },
    });
    if let Err(e) = script_ok(ctx, &format!("cannot prepare {dest}"), prep).await {
        let _ = undo_tree(ctx, &undo).await;
        return Err(e);
    }

    // Send, to temporary names beside the destinations, several at once over the
    // connection's one SFTP session (a file's open, write and close are round trips).
    type Sending<'a> = BoxFuture<'a, (usize, String, Result<(), ModuleError>)>;
    let mut sending: Vec<Sending> = Vec::new();
    for (k, f) in changed.iter().enumerate().filter(|(_, f)| f.send) {
        let tmp = sibling(&f.path, "", &ctx.run_id);
        let local = f.local.to_path_buf();
        sending.push(Box::pin(async move {
            let result = ctx.upload(Upload::File(&local), &tmp).await;
            (k, tmp, result)
        }));
    }
    let uploads: Vec<_> = futures_util::stream::iter(sending)
        .buffer_unordered(UPLOADS_AT_ONCE)
        .collect()
        .await;
    let mut sent: Vec<(String, &FilePlan)> = Vec::new();
    let mut failure = None;
    for (k, tmp, result) in uploads {
        if let Err(e) = result {
            failure.get_or_insert(e);
        }
        sent.push((tmp, changed[k]));
    }
    if let Some(e) = failure {
        return Err(give_up(ctx, &sent, &undo, e).await);
    }
    sent.sort_by(|a, b| a.1.rel.cmp(b.1.rel));

    // Finish: check every size and set attributes first, then rename them all. One
    // `stat` and one `chmod` per mode for the whole tree: a process per file would be
    // most of the time the copy of many small files takes.
    let mut fin = String::from("set -e\nfail() { echo \"$1\" >&2; exit 1; }\n");
    if !sent.is_empty() {
        fin.push_str("sizes=$(stat -c %s --");
        for (tmp, _) in &sent {
            fin.push(' ');
            fin.push_str(&quote(tmp));
        }
        fin.push_str(") || fail 'cannot stat the files sent'\nset -- $sizes\n");
        for (_, f) in &sent {
            fin.push_str(&format!(
                "[ \"$1\" = {size} ] || fail {msg}; shift\n",
                size = f.size,
                msg = quote(&format!("the transfer of {} came out short", f.path))
            ));
        }
    }
    let mut by_mode: std::collections::BTreeMap<u32, Vec<&str>> = Default::default();
    for (tmp, f) in &sent {
        let keep = f.before.as_ref();
        if let Some(m) = attrs.mode.or(keep.map(|k| k.0)) {
            by_mode.entry(m).or_default().push(tmp);
        }
        let owner = attrs.owner.as_deref().or(keep.map(|k| k.1.as_str()));
        let group = attrs.group.as_deref().or(keep.map(|k| k.2.as_str()));
        if owner.is_some() || group.is_some() {
            fin.push_str(&attr_script(tmp, None, owner, group));
        }
    }
    for (m, paths) in &by_mode {
        fin.push_str(&format!("chmod {} --", mode_text(*m)));
        for p in paths {
            fin.push(' ');
            fin.push_str(&quote(p));
        }
        fin.push('\n');
    }
    for f in changed.iter().filter(|f| !f.send) {
        fin.push_str(&attr_script(
            &f.path,
            attrs.mode,
            attrs.owner.as_deref(),
            attrs.group.as_deref(),
        ));
    }
    // New files go into place by the connection's own rename when it has one (SFTP's:
    // no process on the host; a `mv` for each was most of the time a copy of many small
    // files took), after the script has checked them all; files that replace others by
    // `mv -f` in the script (SFTP's rename never replaces).
    let renaming = ctx.become_.is_none() && sent.iter().any(|(_, f)| f.before.is_none());
    for (tmp, f) in &sent {
        if !(renaming && f.before.is_none()) {
            fin.push_str(&format!("mv -f -- {} {}\n", quote(tmp), quote(&f.path)));
        }
    }
    if let Err(e) = script_ok(ctx, &format!("cannot write into {dest}"), fin).await {
        return Err(give_up(ctx, &sent, &undo, e).await);
    }
    if renaming {
        let fresh: Vec<(&str, &str)> = sent
            .iter()
            .filter(|(_, f)| f.before.is_none())
            .map(|(tmp, f)| (tmp.as_str(), f.path.as_str()))
            .collect();
        if let Err(e) = rename_fresh(ctx, &fresh).await {
            return Err(give_up(ctx, &sent, &undo, e).await);
        }
    }
    if let Some(m) = attrs.mode {
        data["mode"] = json!(mode_text(m));
    }
    Ok(Outcome::changed()
        .with_data(data)
        .with_undo(undo)
        .with_msg(summary))
}

/// Runs a script that grows with the number of files: it goes to `sh` on stdin, as a
/// command line is limited (128 KiB for one argument on Linux). Fails with its
/// standard error unless it exits 0.
async fn script_ok(
    ctx: &ModuleContext,
    what: &str,
    script: String,
) -> Result<CommandOutput, ModuleError> {
    let spec = CommandSpec::shell("exec /bin/sh -s").stdin(script.into_bytes());
    spec_ok(ctx, what, spec).await
}

/// Renames new files (`(temporary, final)` pairs) into place: by the connection's own
/// rename, several at once, or, when it has none, by one script of `mv`s.
async fn rename_fresh(ctx: &ModuleContext, fresh: &[(&str, &str)]) -> Result<(), ModuleError> {
    let Some(((tmp, path), rest)) = fresh.split_first() else {
        return Ok(());
    };
    if ctx.conn.rename_new(tmp, path).await? {
        let mut renames: Vec<BoxFuture<Result<bool, crate::connection::ConnectionError>>> =
            Vec::new();
        for &(tmp, path) in rest {
            renames.push(Box::pin(ctx.conn.rename_new(tmp, path)));
        }
        let done: Vec<_> = futures_util::stream::iter(renames)
            .buffer_unordered(RENAMES_AT_ONCE)
            .collect()
            .await;
        for r in done {
            r?;
        }
        return Ok(());
    }
    let mut script = String::from("set -e\n");
    for (tmp, path) in fresh {
        script.push_str(&format!("mv -f -- {} {}\n", quote(tmp), quote(path)));
    }
    script_ok(ctx, "cannot move the new files into place", script).await?;
    Ok(())
}

/// After a failure: removes the files sent and puts the tree back; returns `e`.
async fn give_up(
    ctx: &ModuleContext,
    sent: &[(String, &FilePlan<'_>)],
    undo: &Json,
    e: ModuleError,
) -> ModuleError {
    let mut rm = String::from("rm -f --");
    for (t, _) in sent {
        rm.push(' ');
        rm.push_str(&quote(t));
    }
    let _ = script_ok(ctx, "cannot clean up", rm).await;
    let _ = undo_tree(ctx, undo).await;
    e
}

fn describe(found: &Found) -> String {
    match found {
        Found::Absent => "absent".into(),
        Found::Dir => "a directory".into(),
        Found::File { .. } => "a file".into(),
        Found::Other(what) => what.clone(),
    }
}

/// Puts a tree back as [`copy_tree`] found it: replaced files from the backup
/// directory (with their attributes), new files removed, new directories removed when
/// empty. One command.
pub(crate) async fn undo_tree(ctx: &ModuleContext, undo: &Json) -> Result<Outcome, ModuleError> {
    let dest = undo.get("tree").and_then(Json::as_str).unwrap_or_default();
    let empty = Vec::new();
    let files = undo.get("files").and_then(Json::as_array).unwrap_or(&empty);
    let dirs = undo
        .get("created_dirs")
        .and_then(Json::as_array)
        .unwrap_or(&empty);
    if ctx.check {
        return Ok(Outcome::changed()
            .with_msg(format!("would put back {} file(s) in {dest}", files.len())));
    }
    let mut s = String::from("rc=0\n");
    let mut restored = 0;
    let mut removed = 0;
    for f in files {
        let Some(path) = f.get("path").and_then(Json::as_str) else {
            continue;
        };
        let p = quote(path);
        if f.get("existed").and_then(Json::as_bool) == Some(true) {
            if let Some(b) = f.get("backup").and_then(Json::as_str) {
                s.push_str(&format!("mv -f -- {} {p} || rc=1\n", quote(b)));
            }
            let mode = f
                .get("mode")
                .and_then(Json::as_u64)
                .and_then(|m| u32::try_from(m).ok());
            let owner = f.get("owner").and_then(Json::as_str);
            let group = f.get("group").and_then(Json::as_str);
            s.push_str(&format!(
                "{{ {} }} || rc=1\n",
                attr_script(path, mode, owner, group).replace('\n', "; ")
            ));
            restored += 1;
        } else {
            s.push_str(&format!("rm -f -- {p} || rc=1\n"));
            removed += 1;
        }
    }
    for d in dirs.iter().rev().filter_map(Json::as_str) {
        s.push_str(&format!(
            "rmdir -- {} 2>/dev/null || echo {} >&2\n",
            quote(d),
            quote(&format!("left {d}: it is not empty"))
        ));
    }
    if let Some(b) = undo.get("backup_dir").and_then(Json::as_str) {
        s.push_str(&format!("[ $rc = 0 ] && rm -rf -- {}\n", quote(b)));
    }
    s.push_str("exit $rc\n");
    let out = script_ok(ctx, &format!("cannot put {dest} back"), s).await?;
    let mut msg = format!("{dest}: restored {restored} file(s), removed {removed}");
    let left = out.stderr_text();
    if !left.trim().is_empty() {
        msg.push_str(&format!(" ({})", left.trim().replace('\n', "; ")));
    }
    Ok(Outcome::changed().with_msg(msg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_join_under_dest() {
        assert_eq!(join("/srv/x", ""), "/srv/x");
        assert_eq!(join("/srv/x/", "a/b"), "/srv/x/a/b");
        assert_eq!(join("/", "a"), "/a");
    }

    #[test]
    fn host_answers_parse() {
        assert_eq!(parse_found("absent"), Found::Absent);
        assert_eq!(parse_found("dir"), Found::Dir);
        assert!(matches!(parse_found("link"), Found::Other(_)));
        assert!(matches!(parse_found(""), Found::Other(_)));
        let sum = "a".repeat(64);
        assert_eq!(
            parse_found(&format!("file 5|644|root|staff {sum}")),
            Found::File {
                size: 5,
                mode: 0o644,
                owner: "root".into(),
                group: "staff".into(),
                sha256: Some(sum),
            }
        );
    }

    #[test]
    fn walk_lists_parents_first_and_follows_links() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("b/c")).expect("dirs");
        std::fs::write(root.join("a"), "1").expect("a");
        std::fs::write(root.join("b/c/d"), "22").expect("d");
        std::os::unix::fs::symlink(root.join("a"), root.join("b/link")).expect("link");
        let names: Vec<String> = walk(root)
            .expect("walk")
            .iter()
            .map(|e| match e {
                Entry::Dir(r) => format!("d:{r}"),
                Entry::File { rel, size, .. } => format!("f:{rel}:{size}"),
            })
            .collect();
        assert_eq!(
            names,
            ["d:", "f:a:1", "d:b", "d:b/c", "f:b/link:1", "f:b/c/d:2"]
        );
    }
}
