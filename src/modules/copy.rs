//! `copy`: puts a controller file (`src`) or inline `content` at a host path, atomically
//! (a temporary name in the destination's directory, then a rename), idempotently
//! (sha256 and attributes compared first) and undoably (the previous content and
//! attributes are captured before anything is written).
//!
//! Also home of what the file modules share: [`place`] / [`undo_place`] (used by
//! `template`), quiet host probes, sha256 helpers, the undo content encoding and the
//! load-time mode check.

use super::Upload;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use serde::{Deserialize, Deserializer};
use serde_json::{Value as Json, json};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use super::{
    ArgKind, ArgSpec, Module, ModuleContext, ModuleDoc, ModuleError, Outcome, arg, parse_args,
    parse_mode, unified_diff,
};
use crate::connection::{CommandOutput, CommandSpec, FileStat, quote};
use crate::error::{SourceError, SourceFile};
use crate::template::Templates;
use crate::yaml::Node;

/// The `copy` module.
pub struct Copy;

/// Previous content up to this size is kept in the undo data; beyond it a host-side
/// backup (a hard link, or a `cp -p` copy) is kept next to the file instead.
pub(crate) const UNDO_MAX: u64 = 64 * 1024 * 1024;

/// Files up to this size are read to show a content diff.
const DIFF_MAX: u64 = 1024 * 1024;

/// The `mode` argument of modules that place files (`copy`, `template`).
pub(crate) const MODE_ARG: ArgSpec = arg(
    "mode",
    ArgKind::Mode,
    false,
    "octal permission bits, quoted, e.g. \"0640\" (default: keep the existing file's, umask for a new one)",
);
/// The `owner` argument of modules that place files.
pub(crate) const OWNER_ARG: ArgSpec = arg(
    "owner",
    ArgKind::Str,
    false,
    "owner user name (default: keep the existing file's)",
);
/// The `group` argument of modules that place files.
pub(crate) const GROUP_ARG: ArgSpec = arg(
    "group",
    ArgKind::Str,
    false,
    "group name (default: keep the existing file's)",
);

static DOC: ModuleDoc = ModuleDoc {
    name: "copy",
    summary: "Put a controller file or inline content at a path on the host, atomically",
    description: "Writes `src` (a file on the controller, relative to the playbook) or `content` to \
`dest` on the host. The data goes to a temporary name in dest's directory \
(`.<name>.lifeboat-<run_id>-<random>`), gets its mode/owner/group and has its size checked there \
(the bytes themselves are protected in transit by SSH's authenticated encryption), then is renamed \
over dest: readers never see a half-written file. When dest is an existing \
directory (or ends with `/`), the file is copied into it under src's name. When src is a \
directory, the tree is copied (links followed): `src: conf/` copies conf's contents into dest, `src: \
conf` copies the directory itself to dest/conf; missing directories are made, files that are the \
same are left alone, mode applies to the files and owner/group to files and made directories; the \
whole tree takes four commands and one transfer per changed file (new files are renamed into place \
over SFTP, with no process each; files that replace others, by `mv` in one command), and files it replaces are \
kept in one backup directory beside dest (`.<name>.lifeboat-backup-<run_id>-<random>`) until rollback or \
for you to remove. Changed when the \
sha256 of the content or a given mode/owner/group differs from the host's; otherwise ok and \
nothing is written. When mode/owner/group are not given, an existing file keeps its own. A \
symbolic link at dest is refused (point dest at the link's target). One command inspects dest \
(stat; sha256sum only when the sizes match), the transfer follows, and one command finishes the \
file. In a dry run only the inspection runs and the step reports whether it would change; with --diff it shows a \
unified diff of text content (\"binary files differ\" otherwise) and the attribute changes. \
Owner and group are compared by name.",
    free_form: None,
    args: &[
        arg(
            "src",
            ArgKind::Str,
            false,
            "controller file or directory to copy (relative to the playbook); a directory ending in / copies its contents; exactly one of src and content",
        ),
        arg(
            "content",
            ArgKind::Str,
            false,
            "the file's content, inline; exactly one of src and content",
        ),
        arg(
            "dest",
            ArgKind::Str,
            true,
            "host path to write; an existing directory means dest/<src's file name>",
        ),
        MODE_ARG,
        OWNER_ARG,
        GROUP_ARG,
    ],
    open_args: false,
    example: "- id: keystone-conf\n  copy:\n    src: files/keystone.conf\n    dest: /etc/keystone/keystone.conf\n    mode: \"0640\"\n    owner: root\n    group: keystone\n",
    returns: &[
        (
            "dest",
            "the host path written (dest/<name> when dest is a directory)",
        ),
        ("sha256", "sha256 of the content"),
        ("size", "size of the content in bytes"),
        (
            "mode",
            "the file's resulting mode, e.g. \"0640\" (null when unknown in a dry run)",
        ),
        (
            "changed_attributes",
            "what differed: any of content, mode, owner, group",
        ),
        ("files", "directory src: the number of files in the tree"),
        (
            "changed_files",
            "directory src: the files written or given new attributes, relative to the tree",
        ),
        (
            "created_dirs",
            "directory src: how many directories were made",
        ),
    ],
    rollback: "restores the previous content, mode, owner and group atomically, or removes the file \
when it did not exist before. Previous content up to 64 MiB is kept in the run's undo data; a larger \
file is kept on the host as a hard link (or `cp -p` copy) named `.<name>.lifeboat-backup-<run_id>-<random>` \
next to it, which rollback renames back and which stays there after a successful run (delete it when \
no longer needed). For a directory src: replaced files come back (content, mode, owner, group) from \
the backup directory, new files are removed and new directories are removed when empty.",
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CopyArgs {
    src: Option<String>,
    content: Option<Json>,
    dest: String,
    mode: Option<String>,
    #[serde(default, deserialize_with = "word")]
    owner: Option<String>,
    #[serde(default, deserialize_with = "word")]
    group: Option<String>,
}

/// Reads an optional user or group name, accepting a number (a uid/gid) as its text.
pub(crate) fn word<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<Json>::deserialize(d)? {
        None | Some(Json::Null) => None,
        Some(Json::String(s)) => Some(s),
        Some(Json::Number(n)) => Some(n.to_string()),
        Some(other) => {
            return Err(serde::de::Error::custom(format!(
                "expected a name, found {other}"
            )));
        }
    })
}

/// Where the content to place comes from.
pub(crate) enum Content {
    /// Bytes in memory (`content`, a rendered template).
    Bytes(Vec<u8>),
    /// A controller file, streamed with `put_file`.
    LocalFile(PathBuf),
}

/// What to put where, with which attributes.
pub(crate) struct Placement {
    /// Host path of the file.
    pub dest: String,
    /// When `dest` turns out to be a directory (or ends with `/`), the file goes into it
    /// under this name (`copy` with `src`); `None`: dest must be a file path.
    pub into_name: Option<String>,
    /// The content.
    pub content: Content,
    /// Permission bits, when given.
    pub mode: Option<u32>,
    /// Owner name, when given.
    pub owner: Option<String>,
    /// Group name, when given.
    pub group: Option<String>,
}

/// A mode as written in playbooks.
pub(crate) fn mode_text(m: u32) -> String {
    format!("{m:04o}")
}

/// Load-time check of a literal `mode`: an octal string (templates are checked at run time).
pub(crate) fn validate_mode(args: &Node, file: &SourceFile) -> Vec<SourceError> {
    match args.get("mode") {
        Some(node) => match node.as_str() {
            Some(s) if !Templates::is_template(s) && parse_mode(s).is_err() => vec![
                node.error(file, format!("mode `{s}` is not an octal mode"))
                    .with_help("write the permission bits in octal, quoted, e.g. mode: \"0644\""),
            ],
            _ => Vec::new(),
        },
        None => Vec::new(),
    }
}

/// A name unlikely to collide, for temporary and backup files.
pub(crate) fn unique_suffix(run_id: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{run_id}-{:x}{:x}{n:x}", std::process::id(), nanos)
}

/// Splits a host path into its directory and file name.
pub(crate) fn split_path(path: &str) -> (String, String) {
    let trimmed = path.trim_end_matches('/');
    match trimmed.rfind('/') {
        Some(0) => ("/".to_string(), trimmed[1..].to_string()),
        Some(i) => (trimmed[..i].to_string(), trimmed[i + 1..].to_string()),
        None => (".".to_string(), trimmed.to_string()),
    }
}

/// A sibling name of `path` in the same directory: `.<name>.lifeboat-<tag>-<unique>`.
pub(crate) fn sibling(path: &str, tag: &str, run_id: &str) -> String {
    let (dir, name) = split_path(path);
    let base = format!(".{name}.lifeboat-{tag}{}", unique_suffix(run_id));
    if dir == "/" {
        format!("/{base}")
    } else {
        format!("{dir}/{base}")
    }
}

/// Runs a shell script quietly and fails with its standard error unless it exits 0.
pub(crate) async fn quiet_ok(
    ctx: &ModuleContext,
    what: &str,
    script: String,
) -> Result<CommandOutput, ModuleError> {
    spec_ok(ctx, what, CommandSpec::shell(script)).await
}

/// Runs a command quietly and fails with its standard error unless it exits 0.
pub(crate) async fn spec_ok(
    ctx: &ModuleContext,
    what: &str,
    spec: CommandSpec,
) -> Result<CommandOutput, ModuleError> {
    let out = ctx.probe(spec).await?;
    if out.success() {
        Ok(out)
    } else {
        Err(ModuleError::Failed {
            message: format!("{what}: {}", out.stderr_text().trim()),
            output: Some(out),
        })
    }
}

/// sha256 of a host file, through `sha256sum`.
pub(crate) async fn host_sha256(ctx: &ModuleContext, path: &str) -> Result<String, ModuleError> {
    let out = ctx
        .probe(CommandSpec::argv(["sha256sum", "--", path]))
        .await?;
    let text = out.stdout_text();
    let sum = text.split_whitespace().next().unwrap_or("");
    if out.success() && sum.len() == 64 && sum.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(sum.to_ascii_lowercase())
    } else {
        Err(ModuleError::Failed {
            message: format!(
                "cannot compute the sha256 of {path}: {}",
                out.stderr_text().trim()
            ),
            output: Some(out),
        })
    }
}

/// sha256 of bytes, in hex.
pub(crate) fn sha256_hex(data: &[u8]) -> String {
    format!("{:x}", Sha256::digest(data))
}

/// sha256 and size of a controller file, read in constant memory; `None` when absent.
/// The answer is kept for the life of the process, keyed by the file's identity and
/// modification time, so a file copied to many hosts is read once, however many nodes
/// ask at the same time.
pub(crate) async fn local_sha256(path: &Path) -> Result<Option<(String, u64)>, ModuleError> {
    use std::collections::HashMap;
    use std::os::unix::fs::MetadataExt;
    use std::sync::{Arc, Mutex};
    type Key = (PathBuf, u64, u64, u64, i64, i64);
    type Cell = Arc<tokio::sync::OnceCell<(String, u64)>>;
    static CACHE: Mutex<Option<HashMap<Key, Cell>>> = Mutex::new(None);
    let meta = match tokio::fs::metadata(path).await {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(ModuleError::failed(format!(
                "cannot read {}: {e}",
                path.display()
            )));
        }
    };
    let key = (
        path.to_path_buf(),
        meta.dev(),
        meta.ino(),
        meta.size(),
        meta.mtime(),
        meta.mtime_nsec(),
    );
    let cell: Cell = {
        let mut guard = CACHE.lock().unwrap_or_else(|p| p.into_inner());
        guard
            .get_or_insert_with(HashMap::new)
            .entry(key)
            .or_default()
            .clone()
    };
    let got = cell
        .get_or_try_init(|| async {
            hash_local_file(path)
                .await?
                .ok_or_else(|| ModuleError::failed(format!("{} vanished", path.display())))
        })
        .await?;
    Ok(Some(got.clone()))
}

/// sha256 and size of a controller file, read now.
async fn hash_local_file(path: &Path) -> Result<Option<(String, u64)>, ModuleError> {
    let mut f = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(ModuleError::failed(format!(
                "cannot read {}: {e}",
                path.display()
            )));
        }
    };
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .await
            .map_err(|e| ModuleError::failed(format!("cannot read {}: {e}", path.display())))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok(Some((format!("{:x}", hasher.finalize()), size)))
}

fn base64_encode(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

/// Content as kept in undo data: text when it is UTF-8, base64 otherwise.
pub(crate) fn encode_content(data: &[u8]) -> Json {
    match std::str::from_utf8(data) {
        Ok(text) => json!({ "text": text }),
        Err(_) => json!({ "base64": base64_encode(data) }),
    }
}

/// The bytes of [`encode_content`]'s value.
pub(crate) fn decode_content(v: &Json) -> Result<Vec<u8>, ModuleError> {
    if let Some(t) = v.get("text").and_then(Json::as_str) {
        return Ok(t.as_bytes().to_vec());
    }
    v.get("base64")
        .and_then(Json::as_str)
        .and_then(base64_decode)
        .ok_or_else(|| ModuleError::failed("the undo data holds no readable content"))
}

/// Text for a diff, or `None` for binary data.
fn as_text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok().filter(|t| !t.contains('\0'))
}

/// Shell lines that set mode/owner/group on `path` (owner/group only when different, so
/// an unprivileged run that keeps its own ownership needs no chown).
pub(crate) fn attr_script(
    path: &str,
    mode: Option<u32>,
    owner: Option<&str>,
    group: Option<&str>,
) -> String {
    let p = quote(path);
    let mut s = String::new();
    if let Some(o) = owner {
        let o = quote(o);
        s.push_str(&format!(
            "[ \"$(stat -c %U -- {p})\" = {o} ] || chown -h -- {o} {p}\n"
        ));
    }
    if let Some(g) = group {
        let g = quote(g);
        s.push_str(&format!(
            "[ \"$(stat -c %G -- {p})\" = {g} ] || chgrp -h -- {g} {p}\n"
        ));
    }
    if let Some(m) = mode {
        s.push_str(&format!("chmod {} {p}\n", mode_text(m)));
    }
    s
}

/// Writes `data` (or a controller file) to a temporary sibling of `dest`, gives it its
/// attributes, checks its size and renames it over `dest`; returns the mode the file
/// ended with. The bytes are protected in transit by the connection (SSH's
/// authenticated encryption, or a local copy); reading them back on the host would
/// come from its page cache and prove nothing more, so the check after the transfer is
/// the size, which catches a short write.
async fn write_atomically(
    ctx: &ModuleContext,
    dest: &str,
    content: &Content,
    size: u64,
    mode: Option<u32>,
    owner: Option<&str>,
    group: Option<&str>,
) -> Result<Option<u32>, ModuleError> {
    let tmp = sibling(dest, "", &ctx.run_id);
    let put = match content {
        Content::Bytes(b) => ctx.upload(Upload::Bytes(b), &tmp).await,
        Content::LocalFile(p) => ctx.upload(Upload::File(p), &tmp).await,
    };
    if let Err(e) = put {
        let _ = ctx
            .probe(CommandSpec::argv(["rm", "-f", "--", tmp.as_str()]))
            .await;
        return Err(e);
    }
    let t = quote(&tmp);
    let script = format!(
        "set -e\ntmp={t}\ntrap 'rm -f -- \"$tmp\"' EXIT\n{attrs}got=$(stat -c %s -- {t})\n\
[ \"$got\" = {size} ] || {{ echo \"the transfer wrote $got bytes of {size}\" >&2; exit 1; }}\n\
stat -c %a -- {t}\nmv -f -- {t} {d}\n",
        attrs = attr_script(&tmp, mode, owner, group),
        d = quote(dest),
    );
    let out = quiet_ok(ctx, &format!("cannot write {dest}"), script).await?;
    Ok(u32::from_str_radix(out.stdout_text().trim(), 8).ok())
}

/// What one probe of the host says about a destination.
struct DestProbe {
    /// The file path (dest, or dest/<name> when dest is a directory).
    dest: String,
    /// Its metadata, when it exists.
    stat: Option<FileStat>,
    /// Whether its directory exists (asked only when the file does not).
    dir_exists: bool,
    /// Its sha256, asked only when it is a regular file of the expected size.
    sha256: Option<String>,
}

/// Resolves `dest` (into a directory when it is one and `into_name` is given), and
/// stats it, checks its directory and hashes it when its size matches, in one command.
async fn probe_dest(
    ctx: &ModuleContext,
    dest: &str,
    into_name: Option<&str>,
    size: u64,
) -> Result<DestProbe, ModuleError> {
    let joined = |name: &str| format!("{}/{name}", dest.trim_end_matches('/'));
    let (path, into_flag) = match into_name {
        Some(name) if dest.ends_with('/') => (joined(name), None),
        Some(name) => (dest.to_string(), Some(joined(name))),
        None if dest.ends_with('/') => {
            return Err(ModuleError::failed(format!(
                "dest {dest} is a directory; with content, dest must name the file"
            )));
        }
        None => (dest.to_string(), None),
    };
    let mut script = format!("d={}\n", quote(&path));
    if let Some(inside) = &into_flag {
        script.push_str(&format!(
            "if [ -d \"$d\" ] && [ ! -L \"$d\" ]; then d={}; echo into; fi\n",
            quote(inside)
        ));
    }
    script.push_str(&format!(
        "if [ -e \"$d\" ] || [ -L \"$d\" ]; then\n\
  echo \"stat $(stat -c '%F|%a|%U|%G|%s' -- \"$d\")\"\n\
  if [ -L \"$d\" ]; then echo \"link $(readlink -- \"$d\")\"\n\
  elif [ -f \"$d\" ] && [ \"$(stat -c %s -- \"$d\")\" = {size} ]; then echo \"sha $(sha256sum < \"$d\")\"; fi\n\
else\n\
  case \"$d\" in */*) p=${{d%/*}}; p=${{p:-/}};; *) p=.;; esac\n\
  if [ -d \"$p\" ]; then echo dir; else echo nodir; fi\n\
fi\n"
    ));
    let out = ctx.probe(CommandSpec::shell(script)).await?;
    if !out.success() {
        return Err(ModuleError::Failed {
            message: format!("cannot inspect {path}: {}", out.stderr_text().trim()),
            output: Some(out),
        });
    }
    let text = out.stdout_text();
    let mut probe = DestProbe {
        dest: path,
        stat: None,
        dir_exists: true,
        sha256: None,
    };
    let mut link = None;
    let mut fields = None;
    for line in text.lines() {
        match line.split_once(' ').unwrap_or((line, "")) {
            ("into", _) => probe.dest = into_flag.clone().unwrap_or(probe.dest),
            ("stat", rest) => fields = Some(rest.to_string()),
            ("link", rest) => link = Some(rest.to_string()),
            ("sha", rest) => {
                probe.sha256 = rest
                    .split_whitespace()
                    .next()
                    .filter(|h| h.len() == 64)
                    .map(str::to_ascii_lowercase)
            }
            ("nodir", _) => probe.dir_exists = false,
            _ => {}
        }
    }
    if let Some(f) = fields {
        probe.stat = Some(
            crate::connection::local::file_stat_from(&f, link)
                .map_err(|e| ModuleError::failed(format!("cannot inspect {}: {e}", probe.dest)))?,
        );
    }
    Ok(probe)
}

fn existing_file(path: &str, st: Option<FileStat>) -> Result<Option<FileStat>, ModuleError> {
    match st {
        Some(s) if s.kind == "file" => Ok(Some(s)),
        Some(s) if s.kind == "directory" => Err(ModuleError::failed(format!(
            "{path} is a directory, not a file"
        ))),
        Some(s) if s.kind == "link" => Err(ModuleError::failed(format!(
            "{path} is a symbolic link (to {}); lifeboat does not write through links: set dest to the link's target",
            s.link_target.unwrap_or_default()
        ))),
        Some(_) => Err(ModuleError::failed(format!(
            "{path} exists and is not a regular file"
        ))),
        None => Ok(None),
    }
}

/// Places content at `p.dest` atomically, idempotently, with pre-state captured for
/// [`undo_place`]; in a dry run only probes and predicts. Shared by `copy` and `template`.
pub(crate) async fn place(ctx: &ModuleContext, p: Placement) -> Result<Outcome, ModuleError> {
    let (sha256, size) = match &p.content {
        Content::Bytes(b) => (sha256_hex(b), b.len() as u64),
        Content::LocalFile(path) => local_sha256(path)
            .await?
            .ok_or_else(|| ModuleError::failed(format!("src {} does not exist", path.display())))?,
    };
    let probe = probe_dest(ctx, &p.dest, p.into_name.as_deref(), size).await?;
    let dest = probe.dest.as_str();
    let before = existing_file(dest, probe.stat.clone())?;
    // In a dry run a missing directory may still come from an earlier step.
    let mut note = String::new();
    if before.is_none() && !probe.dir_exists {
        let (dir, _) = split_path(dest);
        if ctx.check {
            note = format!(
                " (the directory {dir} does not exist now: an earlier step must create it)"
            );
        } else {
            return Err(ModuleError::failed(format!(
                "cannot write {dest}: the directory {dir} does not exist (create it with a `file` step, state: directory)"
            )));
        }
    }
    let content_changed = match &before {
        None => true,
        Some(st) => st.size != size || probe.sha256.as_deref() != Some(sha256.as_str()),
    };
    let mut changed_attributes = Vec::new();
    let mut attr_lines = Vec::new();
    if content_changed {
        changed_attributes.push("content");
    }
    let old = |f: fn(&FileStat) -> String| before.as_ref().map(f);
    let mode_old = old(|s| mode_text(s.mode));
    let owner_old = old(|s| s.owner.clone());
    let group_old = old(|s| s.group.clone());
    for (name, want, was) in [
        ("mode", p.mode.map(mode_text), &mode_old),
        ("owner", p.owner.clone(), &owner_old),
        ("group", p.group.clone(), &group_old),
    ] {
        if let Some(want) = want
            && was.as_ref() != Some(&want)
        {
            changed_attributes.push(name);
            attr_lines.push(format!(
                "{name}: {} -> {want}\n",
                was.as_deref().unwrap_or("(new file)")
            ));
        }
    }
    let changed = !changed_attributes.is_empty();

    // The previous content, read at most once, for the diff and the undo data.
    let mut old_bytes: Option<Vec<u8>> = None;
    let mut diff = None;
    if ctx.diff && changed {
        let mut text = String::new();
        if content_changed {
            let after: Option<Vec<u8>> = match &p.content {
                Content::Bytes(b) => Some(b.clone()),
                Content::LocalFile(path) if size <= DIFF_MAX => {
                    Some(tokio::fs::read(path).await.map_err(|e| {
                        ModuleError::failed(format!("cannot read {}: {e}", path.display()))
                    })?)
                }
                Content::LocalFile(_) => None,
            };
            let before_bytes = match &before {
                None => Some(Vec::new()),
                Some(st) if st.size <= DIFF_MAX => {
                    old_bytes = ctx.read_file(dest, DIFF_MAX).await?;
                    old_bytes.clone()
                }
                Some(_) => None,
            };
            match (
                before_bytes.as_deref().map(as_text),
                after.as_deref().map(as_text),
            ) {
                (Some(Some(b)), Some(Some(a))) => text.push_str(&unified_diff(dest, b, a)),
                (Some(_), Some(_)) => text.push_str(&format!("{dest}: binary files differ\n")),
                _ => text.push_str(&format!("{dest}: content differs (too large to show)\n")),
            }
        }
        text.extend(attr_lines.iter().map(String::as_str));
        diff = Some(text);
    }

    let mut data = json!({
        "dest": dest,
        "sha256": sha256,
        "size": size,
        "mode": p.mode.map(mode_text).or(mode_old.clone()),
        "changed_attributes": changed_attributes,
    });
    if !changed {
        return Ok(Outcome::ok().with_data(data));
    }
    if ctx.check {
        let mut o = Outcome::changed().with_data(data).with_msg(format!(
            "would change {} of {dest}{note}",
            changed_attributes.join(", ")
        ));
        o.diff = diff;
        return Ok(o);
    }

    let undo = match &before {
        None => json!({ "path": dest, "existed": false }),
        Some(st) => {
            let mut u = json!({
                "path": dest,
                "existed": true,
                "mode": st.mode,
                "owner": st.owner,
                "group": st.group,
            });
            if content_changed {
                if st.size <= UNDO_MAX {
                    let bytes = match old_bytes.take() {
                        Some(b) => Some(b),
                        None => ctx.read_file(dest, UNDO_MAX).await?,
                    };
                    let bytes = bytes.ok_or_else(|| {
                        ModuleError::failed(format!("{dest} vanished while being read"))
                    })?;
                    u["content"] = encode_content(&bytes);
                } else {
                    let backup = sibling(dest, "backup-", &ctx.run_id);
                    let (d, b) = (quote(dest), quote(&backup));
                    quiet_ok(
                        ctx,
                        &format!("cannot keep a backup of {dest} for rollback"),
                        format!("ln -- {d} {b} 2>/dev/null || cp -p -- {d} {b}"),
                    )
                    .await?;
                    u["backup"] = json!(backup);
                }
            }
            u
        }
    };

    let final_mode = if content_changed {
        // Attributes not given keep the existing file's.
        let mode = p.mode.or(before.as_ref().map(|s| s.mode));
        let owner = p.owner.as_deref().or(owner_old.as_deref());
        let group = p.group.as_deref().or(group_old.as_deref());
        write_atomically(ctx, dest, &p.content, size, mode, owner, group).await?
    } else {
        let script = format!(
            "set -e\n{}stat -L -c %a -- {}\n",
            attr_script(dest, p.mode, p.owner.as_deref(), p.group.as_deref()),
            quote(dest)
        );
        let out = quiet_ok(ctx, &format!("cannot set attributes of {dest}"), script).await?;
        u32::from_str_radix(out.stdout_text().trim(), 8).ok()
    };
    if let Some(m) = final_mode {
        data["mode"] = json!(mode_text(m));
    }
    let mut o = Outcome::changed()
        .with_data(data)
        .with_undo(undo)
        .with_msg(format!("{dest}: {}", changed_attributes.join(", ")));
    o.diff = diff;
    Ok(o)
}

/// Puts back what [`place`] captured: previous content and attributes, or no file.
pub(crate) async fn undo_place(ctx: &ModuleContext, undo: &Json) -> Result<Outcome, ModuleError> {
    let path = undo
        .get("path")
        .and_then(Json::as_str)
        .ok_or_else(|| ModuleError::failed("the undo data names no path"))?;
    let existed = undo.get("existed").and_then(Json::as_bool).unwrap_or(true);
    if !existed {
        let st = ctx.stat(path).await?;
        if ctx.check {
            return Ok(Outcome {
                changed: st.is_some(),
                ..Outcome::default()
            }
            .with_msg(format!("would remove {path}")));
        }
        return match st {
            None => Ok(Outcome::ok().with_msg(format!("{path} is already gone"))),
            Some(s) if s.kind == "file" || s.kind == "link" => {
                quiet_ok(
                    ctx,
                    &format!("cannot remove {path}"),
                    format!("rm -f -- {}", quote(path)),
                )
                .await?;
                Ok(Outcome::changed().with_msg(format!("removed {path}")))
            }
            Some(s) => Err(ModuleError::failed(format!(
                "{path} is now a {}; not removing it",
                s.kind
            ))),
        };
    }
    let mode = undo
        .get("mode")
        .and_then(Json::as_u64)
        .and_then(|m| u32::try_from(m).ok());
    let owner = undo.get("owner").and_then(Json::as_str);
    let group = undo.get("group").and_then(Json::as_str);
    if ctx.check {
        return Ok(Outcome::changed().with_msg(format!("would restore {path}")));
    }
    if let Some(content) = undo.get("content") {
        let bytes = decode_content(content)?;
        let size = bytes.len() as u64;
        write_atomically(ctx, path, &Content::Bytes(bytes), size, mode, owner, group).await?;
        return Ok(Outcome::changed().with_msg(format!("restored {path}")));
    }
    if let Some(backup) = undo.get("backup").and_then(Json::as_str) {
        let script = format!(
            "set -e\n{}mv -f -- {} {}\n",
            attr_script(backup, mode, owner, group),
            quote(backup),
            quote(path)
        );
        quiet_ok(ctx, &format!("cannot restore {path} from {backup}"), script).await?;
        return Ok(Outcome::changed().with_msg(format!("restored {path} from {backup}")));
    }
    let script = format!("set -e\n{}", attr_script(path, mode, owner, group));
    quiet_ok(
        ctx,
        &format!("cannot restore the attributes of {path}"),
        script,
    )
    .await?;
    Ok(Outcome::changed().with_msg(format!("restored the attributes of {path}")))
}

/// Parses the optional mode string.
pub(crate) fn mode_arg(mode: Option<&str>) -> Result<Option<u32>, ModuleError> {
    mode.map(parse_mode).transpose()
}

#[async_trait]
impl Module for Copy {
    fn doc(&self) -> &'static ModuleDoc {
        &DOC
    }

    fn validate(&self, args: &Node, file: &SourceFile) -> Vec<SourceError> {
        let mut errors = Vec::new();
        match (args.get("src"), args.get("content")) {
            (Some(_), Some(c)) => errors.push(
                c.error(
                    file,
                    "`copy` takes exactly one of `src` and `content`, both given",
                )
                .with_help("copy a controller file with src, or write inline text with content"),
            ),
            (None, None) => errors.push(
                args.error(file, "`copy` needs `src` or `content`")
                    .with_help("src: a file next to the playbook; content: the text to write"),
            ),
            (None, Some(_)) => {
                if let Some(d) = args.get("dest")
                    && let Some(s) = d.as_str()
                    && s.ends_with('/')
                {
                    errors.push(
                        d.error(
                            file,
                            "with `content`, dest must be a file path, not a directory",
                        )
                        .with_help("name the file to write, e.g. dest: /etc/motd"),
                    );
                }
            }
            (Some(_), None) => {}
        }
        errors.extend(validate_mode(args, file));
        errors
    }

    async fn run(&self, ctx: &ModuleContext, args: &Json) -> Result<Outcome, ModuleError> {
        let a: CopyArgs = parse_args("copy", args)?;
        let mode = mode_arg(a.mode.as_deref())?;
        let (content, src_name) = match (&a.src, &a.content) {
            (Some(src), None) => {
                let path = ctx.local_path(src);
                let meta = tokio::fs::metadata(&path).await.map_err(|e| {
                    ModuleError::failed(format!("copy: cannot read src {}: {e}", path.display()))
                })?;
                if meta.is_dir() {
                    return super::copy_tree::copy_tree(
                        ctx,
                        &path,
                        &a.dest,
                        src.ends_with('/'),
                        super::copy_tree::TreeAttrs {
                            mode,
                            owner: a.owner,
                            group: a.group,
                        },
                    )
                    .await;
                }
                if !meta.is_file() {
                    return Err(ModuleError::failed(format!(
                        "copy: src {} is neither a regular file nor a directory",
                        path.display()
                    )));
                }
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .ok_or_else(|| {
                        ModuleError::Args(format!("copy: src `{src}` has no file name"))
                    })?;
                (Content::LocalFile(path), Some(name))
            }
            (None, Some(Json::String(s))) => (Content::Bytes(s.clone().into_bytes()), None),
            (None, Some(Json::Null)) => {
                return Err(ModuleError::Args("copy: content is null".into()));
            }
            (None, Some(other)) => (Content::Bytes(other.to_string().into_bytes()), None),
            _ => {
                return Err(ModuleError::Args(
                    "copy: give exactly one of `src` and `content`".into(),
                ));
            }
        };
        place(
            ctx,
            Placement {
                dest: a.dest,
                into_name: src_name,
                content,
                mode,
                owner: a.owner,
                group: a.group,
            },
        )
        .await
    }

    async fn undo(
        &self,
        ctx: &ModuleContext,
        _args: &Json,
        undo: &Json,
    ) -> Result<Outcome, ModuleError> {
        if undo.get("tree").is_some() {
            return super::copy_tree::undo_tree(ctx, undo).await;
        }
        undo_place(ctx, undo).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for data in [&b""[..], b"a", b"ab", b"abc", b"abcd", &[0, 255, 128, 7, 9]] {
            let enc = base64_encode(data);
            assert_eq!(base64_decode(&enc).as_deref(), Some(data), "{enc}");
        }
        assert_eq!(base64_encode(b"hello"), "aGVsbG8=");
    }

    #[test]
    fn paths_split_into_dir_and_name() {
        assert_eq!(
            split_path("/etc/motd"),
            ("/etc".to_string(), "motd".to_string())
        );
        assert_eq!(split_path("/motd"), ("/".to_string(), "motd".to_string()));
        assert_eq!(split_path("motd"), (".".to_string(), "motd".to_string()));
        assert!(sibling("/etc/motd", "", "r1").starts_with("/etc/.motd.lifeboat-r1-"));
    }
}
