//! `file`: makes a host path a directory, a symbolic link, an (empty, touched) file, or
//! absent, or only sets a file's attributes, capturing what was there so rollback can
//! put it back.

use super::Upload;
use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::copy::{
    UNDO_MAX, attr_script, decode_content, encode_content, mode_arg, mode_text, quiet_ok,
    sha256_hex, sibling, validate_mode, word,
};
use super::{ArgKind, Module, ModuleContext, ModuleDoc, ModuleError, Outcome, arg, parse_args};
use crate::connection::{CommandSpec, FileStat, quote};
use crate::error::{SourceError, SourceFile};
use crate::yaml::Node;

/// The `file` module.
pub struct File;

const STATES: &[&str] = &["directory", "absent", "touch", "link", "file"];

static DOC: ModuleDoc = ModuleDoc {
    name: "file",
    summary: "Create directories, links and empty files, remove paths, set attributes",
    description: "`state: directory` creates the directory and its missing parents (ok when it \
exists); `absent` removes a file, link or directory tree (ok when already absent); `touch` creates \
an empty file or updates its modification time (always changed); `link` makes `path` a symbolic link \
to `src`, replacing an existing link atomically (a file or directory in the way is an error); `file` \
(the default) only sets mode/owner/group and fails when the file is missing. Changed when the kind, \
link target, mode, owner or group differs. A dry run only probes (stat) and reports the predicted \
change; with --diff it shows it as `path: before -> after`, e.g. `/srv/x: absent -> directory, mode 0755`. \
With `recurse: true` (directories) owner/group/mode are applied to everything below as well \
(`chown -R`/`chmod -R`).",
    free_form: None,
    args: &[
        arg("path", ArgKind::Str, true, "the host path"),
        arg(
            "state",
            ArgKind::Str,
            false,
            "directory | absent | touch | link | file (default file: attributes only)",
        ),
        arg(
            "src",
            ArgKind::Str,
            false,
            "with state: link, the link's target",
        ),
        arg(
            "mode",
            ArgKind::Mode,
            false,
            "octal permission bits, quoted, e.g. \"0750\" (not for links)",
        ),
        arg("owner", ArgKind::Str, false, "owner user name"),
        arg("group", ArgKind::Str, false, "group name"),
        arg(
            "recurse",
            ArgKind::Bool,
            false,
            "with state: directory, also set owner/group/mode on everything below (default false)",
        ),
    ],
    open_args: false,
    example: "- id: backup-dir\n  file:\n    path: /var/backups/openstack\n    state: directory\n    mode: \"0750\"\n    owner: root\n",
    returns: &[
        ("path", "the path"),
        ("state", "the state asked for"),
        (
            "before",
            "what was there: kind, mode, owner, group, link_target (null when nothing)",
        ),
        (
            "changed_attributes",
            "what differed: any of state, link_target, mode, owner, group, mtime",
        ),
    ],
    rollback: "removes what the step created (directories it created, parents included, with rmdir: \
they must be empty again by then; a created file or link), puts back a replaced link's old target, \
restores mode/owner/group (and a touched file's modification time), and recreates a removed file \
(content up to 64 MiB from the undo data, mode, owner, group) or link. A larger removed file is \
renamed aside to `.<name>.lifeboat-removed-<run_id>-<random>` instead of deleted and renamed back \
by rollback; it stays after a successful run. A removed directory cannot be restored: rollback \
reports a failure for it. With recurse, only the top directory's attributes are restored.",
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileArgs {
    path: String,
    #[serde(default = "default_state")]
    state: String,
    src: Option<String>,
    mode: Option<String>,
    #[serde(default, deserialize_with = "word")]
    owner: Option<String>,
    #[serde(default, deserialize_with = "word")]
    group: Option<String>,
    #[serde(default)]
    recurse: bool,
}

fn default_state() -> String {
    "file".to_string()
}

fn describe(st: Option<&FileStat>) -> String {
    match st {
        None => "absent".to_string(),
        Some(s) if s.kind == "link" => {
            format!("link to {}", s.link_target.as_deref().unwrap_or("?"))
        }
        Some(s) => format!(
            "{}, mode {}, owner {}, group {}",
            s.kind,
            mode_text(s.mode),
            s.owner,
            s.group
        ),
    }
}

fn stat_json(st: &FileStat) -> Json {
    json!({
        "kind": st.kind,
        "mode": st.mode,
        "owner": st.owner,
        "group": st.group,
        "link_target": st.link_target,
    })
}

/// Attributes (owner, group, mode) that differ from what is wanted.
fn attr_changes(st: Option<&FileStat>, a: &FileArgs, mode: Option<u32>) -> Vec<&'static str> {
    let mut v = Vec::new();
    if mode.is_some_and(|m| st.is_none_or(|s| s.mode != m)) {
        v.push("mode");
    }
    if a.owner
        .as_ref()
        .is_some_and(|o| st.is_none_or(|s| &s.owner != o))
    {
        v.push("owner");
    }
    if a.group
        .as_ref()
        .is_some_and(|g| st.is_none_or(|s| &s.group != g))
    {
        v.push("group");
    }
    v
}

/// With recurse: whether anything below `path` has other attributes than wanted.
async fn recurse_differs(
    ctx: &ModuleContext,
    a: &FileArgs,
    mode: Option<u32>,
) -> Result<bool, ModuleError> {
    let mut tests = Vec::new();
    if let Some(o) = &a.owner {
        tests.push(format!("! -user {}", quote(o)));
    }
    if let Some(g) = &a.group {
        tests.push(format!("! -group {}", quote(g)));
    }
    if let Some(m) = mode {
        tests.push(format!("! -perm {}", mode_text(m)));
    }
    if tests.is_empty() {
        return Ok(false);
    }
    let script = format!(
        "find {} -mindepth 1 \\( {} \\) -print -quit",
        quote(&a.path),
        tests.join(" -o ")
    );
    let out = quiet_ok(ctx, &format!("cannot inspect {}", a.path), script).await?;
    Ok(!out.stdout.is_empty())
}

fn recurse_script(a: &FileArgs, mode: Option<u32>) -> String {
    let p = quote(&a.path);
    let mut s = String::new();
    match (&a.owner, &a.group) {
        (Some(o), Some(g)) => s.push_str(&format!("chown -R -- {}:{} {p}\n", quote(o), quote(g))),
        (Some(o), None) => s.push_str(&format!("chown -R -- {} {p}\n", quote(o))),
        (None, Some(g)) => s.push_str(&format!("chgrp -R -- {} {p}\n", quote(g))),
        (None, None) => {}
    }
    if let Some(m) = mode {
        s.push_str(&format!("chmod -R {} {p}\n", mode_text(m)));
    }
    s
}

/// The modification time of a host path, as `touch -d` reads it back.
async fn mtime(ctx: &ModuleContext, path: &str) -> Result<Option<String>, ModuleError> {
    let out = ctx
        .probe(CommandSpec::argv(["stat", "-c", "%y", "--", path]))
        .await?;
    Ok(out.success().then(|| out.stdout_text().trim().to_string()))
}

#[async_trait]
impl Module for File {
    fn doc(&self) -> &'static ModuleDoc {
        &DOC
    }

    fn validate(&self, args: &Node, file: &SourceFile) -> Vec<SourceError> {
        let mut errors = validate_mode(args, file);
        let state_node = args.get("state");
        let state = state_node.and_then(Node::as_str).unwrap_or("file");
        if crate::template::Templates::is_template(state) {
            return errors;
        }
        if let Some(n) = state_node
            && !STATES.contains(&state)
        {
            let mut e = n.error(file, format!("unknown state `{state}` for `file`"));
            e = match crate::error::did_you_mean(state, STATES.iter().copied()) {
                Some(s) => e.with_help(format!("did you mean `{s}`?")),
                None => e.with_help(format!("state is one of: {}", STATES.join(", "))),
            };
            errors.push(e);
        }
        match (state, args.get("src")) {
            ("link", None) => errors.push(
                args.error(file, "`state: link` needs `src`, the link's target")
                    .with_help("src: the path the link points to"),
            ),
            ("link", Some(_)) | (_, None) => {}
            (_, Some(s)) => errors.push(
                s.error(
                    file,
                    format!("`src` is only for `state: link`, not `{state}`"),
                )
                .with_help("to copy a file use the `copy` module"),
            ),
        }
        if state == "link"
            && let Some(m) = args.get("mode")
        {
            errors.push(
                m.error(file, "`mode` cannot be set on a symbolic link")
                    .with_help("set it on the target"),
            );
        }
        if state == "absent" {
            for key in ["mode", "owner", "group"] {
                if let Some(n) = args.get(key) {
                    errors.push(
                        n.error(file, format!("`{key}` has no meaning with `state: absent`")),
                    );
                }
            }
        }
        if state != "directory"
            && let Some(r) = args.get("recurse")
        {
            errors.push(r.error(file, "`recurse` is only for `state: directory`"));
        }
        errors
    }

    async fn run(&self, ctx: &ModuleContext, args: &Json) -> Result<Outcome, ModuleError> {
        let a: FileArgs = parse_args("file", args)?;
        let mode = mode_arg(a.mode.as_deref())?;
        let path = a.path.as_str();
        if path.trim_end_matches('/').is_empty() {
            return Err(ModuleError::Args("file: refusing to work on `/`".into()));
        }
        let before = ctx.stat(path).await?;
        let st = before.as_ref();
        let p = quote(path);
        let mut changes: Vec<&'static str> = Vec::new();
        let after: String;
        let mut script = String::new();
        let mut undo = json!({ "path": path, "before": before.as_ref().map(stat_json) });

        match a.state.as_str() {
            "directory" => {
                match st.map(|s| s.kind.as_str()) {
                    None => changes.push("state"),
                    Some("directory") => {}
                    Some(k) => {
                        return Err(ModuleError::failed(format!(
                            "{path} exists as a {k}, not a directory"
                        )));
                    }
                }
                changes.extend(attr_changes(st, &a, mode));
                if a.recurse
                    && st.is_some()
                    && !changes.contains(&"mode")
                    && recurse_differs(ctx, &a, mode).await?
                {
                    changes.push("contents");
                }
                if st.is_none() && !ctx.check {
                    // The topmost directory mkdir -p will create, for rollback.
                    let top = quiet_ok(
                        ctx,
                        &format!("cannot inspect {path}"),
                        format!(
                            "p={p}; top=$p; while [ ! -e \"$p\" ] && [ ! -L \"$p\" ] && [ \"$p\" != / ] && [ \"$p\" != . ]; do top=$p; p=$(dirname -- \"$p\"); done; printf %s \"$top\""
                        ),
                    )
                    .await?;
                    undo["created_top"] = json!(top.stdout_text());
                }
                script.push_str(&format!("mkdir -p -- {p}\n"));
                script.push_str(&attr_script(
                    path,
                    mode,
                    a.owner.as_deref(),
                    a.group.as_deref(),
                ));
                if a.recurse {
                    script.push_str(&recurse_script(&a, mode));
                }
                after = format!(
                    "directory{}",
                    mode.map(|m| format!(", mode {}", mode_text(m)))
                        .unwrap_or_default()
                );
            }
            "file" => {
                match st.map(|s| s.kind.as_str()) {
                    None if ctx.check => {
                        return Ok(Outcome::changed().with_msg(format!(
                            "{path} does not exist now: the step fails unless an earlier step creates it"
                        )));
                    }
                    None => {
                        return Err(ModuleError::failed(format!(
                            "{path} does not exist (state: file only sets attributes; use copy, or state: touch, to create it)"
                        )));
                    }
                    Some("file") => {}
                    Some(k) => {
                        return Err(ModuleError::failed(format!("{path} is a {k}, not a file")));
                    }
                }
                changes.extend(attr_changes(st, &a, mode));
                script.push_str(&attr_script(
                    path,
                    mode,
                    a.owner.as_deref(),
                    a.group.as_deref(),
                ));
                after = "file".to_string();
            }
            "touch" => {
                match st.map(|s| s.kind.as_str()) {
                    None => changes.push("state"),
                    Some("file") => {
                        changes.push("mtime");
                        if !ctx.check {
                            undo["mtime"] = json!(mtime(ctx, path).await?);
                        }
                    }
                    Some(k) => {
                        return Err(ModuleError::failed(format!(
                            "{path} is a {k}; touch only works on files"
                        )));
                    }
                }
                changes.extend(attr_changes(st, &a, mode));
                script.push_str(&format!("touch -- {p}\n"));
                script.push_str(&attr_script(
                    path,
                    mode,
                    a.owner.as_deref(),
                    a.group.as_deref(),
                ));
                after = "file (touched)".to_string();
            }
            "link" => {
                let target = a.src.as_deref().ok_or_else(|| {
                    ModuleError::Args("file: state link needs `src`, the link's target".into())
                })?;
                match st {
                    None => changes.push("state"),
                    Some(s) if s.kind == "link" => {
                        if s.link_target.as_deref() != Some(target) {
                            changes.push("link_target");
                        }
                    }
                    Some(s) => {
                        return Err(ModuleError::failed(format!(
                            "{path} exists as a {}; remove it first (state: absent) to put a link there",
                            s.kind
                        )));
                    }
                }
                let owner_change = a
                    .owner
                    .as_ref()
                    .is_some_and(|o| st.is_none_or(|s| &s.owner != o));
                let group_change = a
                    .group
                    .as_ref()
                    .is_some_and(|g| st.is_none_or(|s| &s.group != g));
                if owner_change {
                    changes.push("owner");
                }
                if group_change {
                    changes.push("group");
                }
                let tmp = sibling(path, "", &ctx.run_id);
                script.push_str(&format!(
                    "ln -s -- {} {t} && mv -Tf -- {t} {p}\n",
                    quote(target),
                    t = quote(&tmp)
                ));
                script.push_str(&attr_script(
                    path,
                    None,
                    a.owner.as_deref(),
                    a.group.as_deref(),
                ));
                after = format!("link to {target}");
            }
            "absent" => {
                match st {
                    None => {}
                    Some(s) => {
                        changes.push("state");
                        if !ctx.check {
                            match s.kind.as_str() {
                                "file" if s.size <= UNDO_MAX => {
                                    let bytes =
                                        ctx.read_file(path, UNDO_MAX).await?.unwrap_or_default();
                                    undo["content"] = encode_content(&bytes);
                                }
                                "file" => {
                                    let aside = sibling(path, "removed-", &ctx.run_id);
                                    undo["moved_aside"] = json!(aside);
                                    script.push_str(&format!("mv -- {p} {}\n", quote(&aside)));
                                }
                                "directory" => undo["unrestorable"] = json!(true),
                                _ => {}
                            }
                        }
                    }
                }
                if script.is_empty() {
                    script.push_str(&format!("rm -rf -- {p}\n"));
                }
                after = "absent".to_string();
            }
            other => {
                return Err(ModuleError::Args(format!(
                    "file: unknown state `{other}`; use one of {}",
                    STATES.join(", ")
                )));
            }
        }

        let before_text = describe(st);
        let data = json!({
            "path": path,
            "state": a.state,
            "before": before.as_ref().map(stat_json),
            "changed_attributes": changes,
        });
        if changes.is_empty() {
            return Ok(Outcome::ok().with_data(data));
        }
        let summary = format!("{path}: {before_text} -> {after}");
        let mut o = if ctx.check {
            Outcome::changed().with_msg(format!("would change {summary}"))
        } else {
            quiet_ok(
                ctx,
                &format!("cannot make {path} {}", a.state),
                format!("set -e\n{script}"),
            )
            .await?;
            Outcome::changed().with_msg(summary.clone()).with_undo(undo)
        };
        o.data = data;
        if ctx.diff {
            o.diff = Some(format!("{summary}\n"));
        }
        Ok(o)
    }

    async fn undo(
        &self,
        ctx: &ModuleContext,
        args: &Json,
        undo: &Json,
    ) -> Result<Outcome, ModuleError> {
        let path = undo
            .get("path")
            .and_then(Json::as_str)
            .ok_or_else(|| ModuleError::failed("the undo data names no path"))?;
        let state = args.get("state").and_then(Json::as_str).unwrap_or("file");
        let before = undo.get("before").filter(|b| !b.is_null());
        let p = quote(path);
        let script = match before {
            None => {
                // The step created what is at `path`: remove it (directories only when empty).
                if state == "directory" {
                    let top = undo
                        .get("created_top")
                        .and_then(Json::as_str)
                        .unwrap_or(path);
                    format!(
                        "p={p}; top={t}\nwhile :; do rmdir -- \"$p\"; [ \"$p\" = \"$top\" ] && break; p=$(dirname -- \"$p\"); done\n",
                        t = quote(top)
                    )
                } else {
                    format!("if [ -L {p} ] || [ -f {p} ]; then rm -f -- {p}; fi\n")
                }
            }
            Some(b) => {
                let kind = b.get("kind").and_then(Json::as_str).unwrap_or("file");
                let mode = b
                    .get("mode")
                    .and_then(Json::as_u64)
                    .and_then(|m| u32::try_from(m).ok());
                let owner = b.get("owner").and_then(Json::as_str);
                let group = b.get("group").and_then(Json::as_str);
                let target = b.get("link_target").and_then(Json::as_str);
                let mut s = String::new();
                if state == "absent" {
                    if undo.get("unrestorable").is_some() || kind == "directory" {
                        return Err(ModuleError::failed(format!(
                            "{path} was a directory and was removed; it cannot be restored automatically (restore it from a backup)"
                        )));
                    }
                    if let Some(content) = undo.get("content") {
                        if ctx.check {
                            return Ok(
                                Outcome::changed().with_msg(format!("would recreate {path}"))
                            );
                        }
                        let bytes = decode_content(content)?;
                        let sha = sha256_hex(&bytes);
                        let tmp = sibling(path, "", &ctx.run_id);
                        ctx.upload(Upload::Bytes(&bytes), &tmp).await?;
                        s.push_str(&attr_script(&tmp, mode, owner, group));
                        s.push_str(&format!(
                            "[ \"$(sha256sum < {t} | cut -c1-64)\" = {sha} ] || {{ rm -f -- {t}; echo 'checksum mismatch' >&2; exit 1; }}\nmv -f -- {t} {p}\n",
                            t = quote(&tmp)
                        ));
                    } else if let Some(aside) = undo.get("moved_aside").and_then(Json::as_str) {
                        s.push_str(&format!("mv -f -- {} {p}\n", quote(aside)));
                    } else if let (Some(t), "link") = (target, kind) {
                        s.push_str(&format!("ln -s -- {} {p}\n", quote(t)));
                        s.push_str(&attr_script(path, None, owner, group));
                    } else {
                        return Err(ModuleError::failed(format!(
                            "{path} was a {kind}; it cannot be recreated"
                        )));
                    }
                } else if state == "link" {
                    if let Some(t) = target {
                        let tmp = sibling(path, "", &ctx.run_id);
                        s.push_str(&format!(
                            "ln -s -- {} {tq} && mv -Tf -- {tq} {p}\n",
                            quote(t),
                            tq = quote(&tmp)
                        ));
                    }
                    s.push_str(&attr_script(path, None, owner, group));
                } else {
                    s.push_str(&attr_script(path, mode, owner, group));
                    if let Some(m) = undo.get("mtime").and_then(Json::as_str) {
                        s.push_str(&format!("touch -m -d {} -- {p}\n", quote(m)));
                    }
                }
                s
            }
        };
        if ctx.check {
            return Ok(Outcome::changed().with_msg(format!("would restore {path}")));
        }
        quiet_ok(
            ctx,
            &format!("cannot restore {path}"),
            format!("set -e\n{script}"),
        )
        .await?;
        Ok(Outcome::changed().with_msg(format!("restored {path}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_states() {
        assert_eq!(describe(None), "absent");
        let st = FileStat {
            kind: "directory".into(),
            mode: 0o755,
            owner: "root".into(),
            group: "root".into(),
            size: 0,
            link_target: None,
        };
        assert_eq!(
            describe(Some(&st)),
            "directory, mode 0755, owner root, group root"
        );
    }
}
