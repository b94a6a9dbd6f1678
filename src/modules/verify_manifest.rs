//! `verify_manifest`: compares a host directory with a manifest written by `manifest`
//! and lists every missing, extra and changed file. Read only.

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::manifest::{Kind, ManifestFile, scan};
use super::{ArgKind, Module, ModuleContext, ModuleDoc, ModuleError, Outcome, arg, parse_args};

/// The `verify_manifest` module.
pub struct VerifyManifest;

/// Manifests larger than this are refused.
const MANIFEST_MAX: u64 = 512 * 1024 * 1024;

/// How many paths of each kind the failure message names.
const SHOWN: usize = 10;

static DOC: ModuleDoc = ModuleDoc {
    name: "verify_manifest",
    summary: "Check a directory against a manifest: missing, extra and changed files",
    description: "Reads the manifest (written by `manifest`) from the host, scans `path` the same way \
(with the manifest's own exclude patterns) and compares: files in the manifest but not on disk are \
`missing`, files on disk but not in the manifest are `extra`, files whose sha256, size or mode differ \
are `changed` (with what differs). Fails when anything differs, naming the first paths of each kind, \
unless `fail_on_mismatch: false` (then the step is ok and the lists are in the result data). `path` \
defaults to the directory the manifest describes: give it to verify a restored copy elsewhere. A \
manifest of one file checks a regular file at `path`; one that recorded its path absent \
(`manifest` with `missing: record`) checks that nothing is there. Read \
only: never changed, and it runs in a dry run too.",
    free_form: None,
    args: &[
        arg(
            "manifest",
            ArgKind::Str,
            true,
            "host path of the manifest file",
        ),
        arg(
            "path",
            ArgKind::Str,
            false,
            "the host directory to check (default: the manifest's own path)",
        ),
        arg(
            "fail_on_mismatch",
            ArgKind::Bool,
            false,
            "fail when anything differs (default true)",
        ),
    ],
    open_args: false,
    example: "- id: verify-restored-nova\n  verify_manifest:\n    path: /etc/nova\n    manifest: /var/backups/nova-etc.manifest.json\n",
    returns: &[
        ("path", "the directory (or file) checked"),
        ("ok", "true when nothing differs"),
        ("files", "number of files in the manifest"),
        ("missing", "relative paths in the manifest, absent on disk"),
        ("extra", "relative paths on disk, absent from the manifest"),
        (
            "changed",
            "list of {path, differs: [content, size, mode], expected, found}",
        ),
    ],
    rollback: "none: the step changes nothing.",
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Args {
    manifest: String,
    path: Option<String>,
    #[serde(default = "yes")]
    fail_on_mismatch: bool,
}

fn yes() -> bool {
    true
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

#[async_trait]
impl Module for VerifyManifest {
    fn doc(&self) -> &'static ModuleDoc {
        &DOC
    }

    fn read_only(&self) -> bool {
        true
    }

    async fn run(&self, ctx: &ModuleContext, args: &Json) -> Result<Outcome, ModuleError> {
        let a: Args = parse_args("verify_manifest", args)?;
        // As the step's (become) user: a restore's staged manifests are root's.
        let bytes = ctx
            .read_file(&a.manifest, MANIFEST_MAX)
            .await?
            .ok_or_else(|| {
                ModuleError::failed(format!("the manifest {} does not exist", a.manifest))
            })?;
        let m: ManifestFile = serde_json::from_slice(&bytes).map_err(|e| {
            ModuleError::failed(format!("{} is not a lifeboat manifest: {e}", a.manifest))
        })?;
        let path = a.path.clone().unwrap_or_else(|| m.path.clone());
        let found_kind = ctx
            .stat(&path)
            .await?
            .map(|s| Kind::of(&s.kind).ok_or(s.kind));
        match (m.kind, found_kind) {
            (want, Some(Ok(got))) if want == got => {}
            (Kind::Absent, None) => {}
            (want, None) => {
                return Err(ModuleError::failed(format!(
                    "{path} does not exist (the manifest {} describes a {})",
                    a.manifest,
                    want.name()
                )));
            }
            (Kind::Absent, Some(_)) => {
                return Err(ModuleError::failed(format!(
                    "{path} exists, but the manifest {} recorded it absent",
                    a.manifest
                )));
            }
            (want, Some(got)) => {
                return Err(ModuleError::failed(format!(
                    "{path} is a {}, not a {} as the manifest {} says",
                    got.map_or_else(|k| k, |k| k.name().to_string()),
                    want.name(),
                    a.manifest
                )));
            }
        }
        let found = scan(ctx, &path, &m.exclude, m.kind).await?;
        let missing: Vec<String> = m
            .files
            .keys()
            .filter(|k| !found.contains_key(*k))
            .cloned()
            .collect();
        let extra: Vec<String> = found
            .keys()
            .filter(|k| !m.files.contains_key(*k))
            .cloned()
            .collect();
        let mut changed = Vec::new();
        let mut changed_names = Vec::new();
        for (name, want) in &m.files {
            let Some(got) = found.get(name) else { continue };
            let mut differs = Vec::new();
            if got.sha256 != want.sha256 {
                differs.push("content");
            }
            if got.size != want.size {
                differs.push("size");
            }
            if got.mode != want.mode {
                differs.push("mode");
            }
            if !differs.is_empty() {
                changed_names.push(name.clone());
                changed.push(json!({
                    "path": name,
                    "differs": differs,
                    "expected": want,
                    "found": got,
                }));
            }
        }
        let ok = missing.is_empty() && extra.is_empty() && changed.is_empty();
        let summary = format!(
            "{path} against {}: {} missing, {} extra, {} changed of {} files",
            a.manifest,
            missing.len(),
            extra.len(),
            changed.len(),
            m.files.len()
        );
        if !ok && a.fail_on_mismatch {
            let mut msg = summary;
            for (kind, list) in [
                ("missing", &missing),
                ("extra", &extra),
                ("changed", &changed_names),
            ] {
                if !list.is_empty() {
                    msg.push_str(&format!("; {kind}: {}", first(list)));
                }
            }
            return Err(ModuleError::failed(msg));
        }
        Ok(Outcome::ok()
            .with_data(json!({
                "path": path,
                "ok": ok,
                "files": m.files.len(),
                "missing": missing,
                "extra": extra,
                "changed": changed,
            }))
            .with_msg(summary))
    }
}
