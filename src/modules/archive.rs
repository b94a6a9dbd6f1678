//! `archive`: packs host paths into a tar archive on the host (gzip, zstd or none),
//! keeping numeric ownership, written under a temporary name and renamed into place
//! only when tar succeeded. Also home of the compression choice `unarchive` shares.

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::backup_common::{check_choice, choice, exists, refuse_root, script_ok, str_list};
use super::copy::{host_sha256, sibling, split_path};
use super::{ArgKind, Module, ModuleContext, ModuleDoc, ModuleError, Outcome, arg, parse_args};
use crate::connection::quote;
use crate::error::{SourceError, SourceFile};
use crate::yaml::Node;

/// The `archive` module.
pub struct Archive;

/// The `compress` values.
pub(crate) const COMPRESS: &[&str] = &["auto", "gzip", "zstd", "none"];

static DOC: ModuleDoc = ModuleDoc {
    name: "archive",
    summary: "Pack host paths into a tar archive (gzip, zstd or none), atomically",
    description: "Runs GNU tar on the host: `tar --create --numeric-owner [--gzip|--zstd] \
--exclude=... -C <parent> <name> ...` into a temporary name beside `dest` \
(`.<name>.lifeboat-<run_id>-<random>`), then renames it to `dest`: a failed or interrupted tar never \
leaves a file that looks complete, and its temporary file is removed. The compressor runs inside tar \
(no shell pipe that could hide a failure). Each `src` is stored under its own name: `/etc/nova` \
becomes `nova/...` in the archive (tar runs with `-C /etc nova`), so `unarchive` with `dest: /etc` \
puts it back; with `chdir`, every src is taken relative to that directory and stored as written. \
`exclude` patterns are GNU tar `--exclude` globs matched against member names (e.g. \
`nova/instances`, `*.log`) and are placed before the paths, where tar applies them. File ownership is \
stored as numbers and names, modes as they are. tar warnings such as `file changed as we read it` \
(exit 1) fail the step. `compress` is chosen from dest's extension by default (`.tar.gz`/`.tgz`: \
gzip, `.tar.zst`/`.tzst`: zstd, `.tar`: none). When dest exists already the step is ok and writes \
nothing (backup names carry a date), unless `force: true` rebuilds it. A dry run checks that every src \
exists and says whether it would write dest.",
    free_form: None,
    args: &[
        arg(
            "src",
            ArgKind::StrOrList,
            true,
            "host path or list of paths to pack",
        ),
        arg(
            "dest",
            ArgKind::Str,
            true,
            "host path of the archive; its directory must exist",
        ),
        arg(
            "compress",
            ArgKind::Str,
            false,
            "auto | gzip | zstd | none (default auto: from dest's extension)",
        ),
        arg(
            "exclude",
            ArgKind::StrOrList,
            false,
            "GNU tar --exclude patterns, matched against member names",
        ),
        arg(
            "chdir",
            ArgKind::Str,
            false,
            "take src relative to this directory and store the names as written",
        ),
        arg(
            "force",
            ArgKind::Bool,
            false,
            "rebuild dest when it exists (default false: an existing dest is left as it is)",
        ),
    ],
    open_args: false,
    example: "- id: nova-etc-archive\n  archive:\n    src: [/etc/nova, /var/lib/nova]\n    dest: /var/backups/nova-{{ lifeboat.run_id }}.tar.zst\n    exclude: [nova/instances]\n",
    returns: &[
        ("path", "the archive written"),
        ("size", "its size in bytes"),
        ("sha256", "its sha256"),
        ("compress", "gzip, zstd or none"),
    ],
    rollback: "removes the archive the step wrote. An archive that replaced an existing one \
(`force: true`) is kept, and rollback fails saying the previous archive cannot be brought back.",
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Args {
    #[serde(deserialize_with = "str_list")]
    src: Vec<String>,
    dest: String,
    #[serde(default = "auto")]
    compress: String,
    #[serde(default, deserialize_with = "str_list")]
    exclude: Vec<String>,
    chdir: Option<String>,
    #[serde(default)]
    force: bool,
}

fn auto() -> String {
    "auto".to_string()
}

/// The compression of an archive: the given one, or from the file name's extension.
pub(crate) fn compression(
    module: &str,
    compress: &str,
    path: &str,
) -> Result<&'static str, ModuleError> {
    let c = choice(module, "compress", compress, COMPRESS)?;
    if c != "auto" {
        return Ok(match c {
            "gzip" => "gzip",
            "zstd" => "zstd",
            _ => "none",
        });
    }
    let lower = path.to_ascii_lowercase();
    if lower.ends_with(".tar.gz") || lower.ends_with(".tgz") {
        Ok("gzip")
    } else if lower.ends_with(".tar.zst")
        || lower.ends_with(".tar.zstd")
        || lower.ends_with(".tzst")
    {
        Ok("zstd")
    } else if lower.ends_with(".tar") {
        Ok("none")
    } else {
        Err(ModuleError::Args(format!(
            "{module}: cannot tell the compression of {path} from its name: give compress: gzip, zstd or none"
        )))
    }
}

/// tar's option for a compression.
pub(crate) fn tar_flag(c: &str) -> &'static str {
    match c {
        "gzip" => "--gzip",
        "zstd" => "--zstd",
        _ => "",
    }
}

#[async_trait]
impl Module for Archive {
    fn doc(&self) -> &'static ModuleDoc {
        &DOC
    }

    fn validate(&self, args: &Node, file: &SourceFile) -> Vec<SourceError> {
        check_choice(args, file, "archive", "compress", COMPRESS)
    }

    async fn run(&self, ctx: &ModuleContext, args: &Json) -> Result<Outcome, ModuleError> {
        let a: Args = parse_args("archive", args)?;
        let compress = compression("archive", &a.compress, &a.dest)?;
        if a.src.is_empty() {
            return Err(ModuleError::Args("archive: src is empty".into()));
        }
        refuse_root("archive", &a.dest)?;
        // Each src as tar sees it: -C <dir> <name>.
        let mut members = Vec::new();
        let mut missing = Vec::new();
        for src in &a.src {
            let (dir, name) = match &a.chdir {
                Some(c) => (c.clone(), src.clone()),
                None => {
                    refuse_root("archive", src)?;
                    split_path(src)
                }
            };
            let full = format!("{}/{name}", dir.trim_end_matches('/'));
            if !exists(ctx, &full).await? {
                missing.push(full);
            }
            members.push((dir, name));
        }
        let dest_exists = exists(ctx, &a.dest).await?;
        let data = |size: Json, sha: Json| json!({ "path": a.dest, "size": size, "sha256": sha, "compress": compress });
        if dest_exists && !a.force {
            let (size, sha) = if ctx.check {
                (Json::Null, Json::Null)
            } else {
                let size = ctx.stat(&a.dest).await?.map(|s| s.size);
                (json!(size), json!(host_sha256(ctx, &a.dest).await?))
            };
            return Ok(Outcome::ok()
                .with_data(data(size, sha))
                .with_msg(format!("{} exists (force: true rebuilds it)", a.dest)));
        }
        if ctx.check {
            let note = if missing.is_empty() {
                String::new()
            } else {
                format!(
                    " ({} do not exist now: an earlier step must create them)",
                    missing.join(", ")
                )
            };
            return Ok(Outcome::changed()
                .with_data(data(Json::Null, Json::Null))
                .with_msg(format!("would write {}{note}", a.dest)));
        }
        if !missing.is_empty() {
            return Err(ModuleError::failed(format!(
                "archive: {} do not exist",
                missing.join(", ")
            )));
        }
        let tmp = sibling(&a.dest, "", &ctx.run_id);
        let mut cmd = format!(
            "tar --create --file=\"$tmp\" --numeric-owner {}",
            tar_flag(compress)
        );
        for e in &a.exclude {
            cmd.push_str(&format!(" --exclude={}", quote(e)));
        }
        for (dir, name) in &members {
            // A name starting with `-` would read as an option (and `--` would end them all).
            let name = if name.starts_with('-') {
                format!("./{name}")
            } else {
                name.clone()
            };
            cmd.push_str(&format!(" -C {} {}", quote(dir), quote(&name)));
        }
        let script = format!(
            "set -e\ntmp={}\ntrap 'rm -f -- \"$tmp\"' EXIT\n{cmd}\nmv -f -- \"$tmp\" {}\n",
            quote(&tmp),
            quote(&a.dest)
        );
        script_ok(ctx, &format!("tar could not write {}", a.dest), script).await?;
        let size = ctx.stat(&a.dest).await?.map(|s| s.size);
        let sha = host_sha256(ctx, &a.dest).await?;
        Ok(Outcome::changed()
            .with_data(data(json!(size), json!(sha)))
            .with_undo(json!({ "path": a.dest, "replaced": dest_exists }))
            .with_msg(format!(
                "wrote {} ({} bytes, {compress})",
                a.dest,
                size.unwrap_or(0)
            )))
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
            .ok_or_else(|| ModuleError::failed("the undo data names no path"))?;
        if undo
            .get("replaced")
            .and_then(Json::as_bool)
            .unwrap_or(false)
        {
            return Err(ModuleError::failed(format!(
                "{path} replaced an existing archive (force: true); the previous one cannot be brought back, the new one is kept"
            )));
        }
        let present = exists(ctx, path).await?;
        if ctx.check || !present {
            return Ok(Outcome {
                changed: present,
                ..Outcome::default()
            }
            .with_msg(if present {
                format!("would remove {path}")
            } else {
                format!("{path} is already gone")
            }));
        }
        script_ok(
            ctx,
            &format!("cannot remove {path}"),
            format!("rm -f -- {}", quote(path)),
        )
        .await?;
        Ok(Outcome::changed().with_msg(format!("removed {path}")))
    }
}
