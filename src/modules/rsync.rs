//! `rsync`: synchronises directories with rsync, on the host itself (`mode: local`),
//! between the controller and the host (`push`, `pull`), or from the host to another
//! inventory host (`dest_host`). Changed is read from `--itemize-changes`; the dry run
//! is rsync's own `-n -i`.

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::backup_common::{check_choice, choice, failed_with, refuse_root, script_ok, str_list};
use super::copy::sibling;
use super::{ArgKind, Module, ModuleContext, ModuleDoc, ModuleError, Outcome, arg, parse_args};
use crate::connection::{CommandOutput, CommandSpec, Connection, LocalConnection, quote};
use crate::error::{SourceError, SourceFile};
use crate::yaml::Node;

/// The `rsync` module.
pub struct Rsync;

const MODES: &[&str] = &["local", "push", "pull"];

/// How many itemized lines the result data keeps.
const SHOWN: usize = 100;

static DOC: ModuleDoc = ModuleDoc {
    name: "rsync",
    summary: "Synchronise a directory with rsync: on the host, to/from the controller, or to another host",
    description: "`mode: local` (the default) runs `rsync SRC DEST` on the host, both paths on it. \
`push` runs rsync on the controller from a controller `src` (relative to the playbook) to `dest` on \
the host; `pull` from `src` on the host to a controller `dest`. With `dest_host`, the host pushes \
`src` to `dest` on that other inventory host. Remote ends are reached with `rsync -e 'ssh -p PORT -i \
KEY -o BatchMode=yes ...'` built from the inventory's connection variables (`ansible_host`, \
`ansible_port`, `ansible_user`, `ansible_ssh_private_key_file`, `ansible_ssh_common_args`, \
`lifeboat_known_hosts` as UserKnownHostsFile, `lifeboat_host_key_checking`, `lifeboat_proxy_jump` \
as -J, `ansible_ssh_timeout`), run by the OpenSSH client: no password authentication. For push \
and pull (ssh on the controller) the controller's `LIFEBOAT_KNOWN_HOSTS`, \
`LIFEBOAT_HOST_KEY_CHECKING` and `LIFEBOAT_SSH_CONFIG` (as `-F`) apply where the host's variables \
say nothing, as for the run's own connection. With `become`, push and pull start the far end's \
rsync as `sudo -n -H -u USER rsync` (`--rsync-path`): that needs sudo without a password for rsync \
on the host (the rsync protocol holds its standard input), and a become password or `su` is \
refused; with dest_host and mode local, become applies to the rsync on the host (and so to its ssh) \
and, the same way, to the receiving rsync on dest_host (`sudo -n`: NOPASSWD there too). \
With dest_host the ssh runs on the source host, as its login user (or \
the become user), with dest_host's variables: the key file they name must exist there, readable by \
that user only, the known_hosts file they name must exist there with dest_host's key as the source \
host reaches it, and ansible_host must be reachable from it. When dest_host is on the local \
connection (the controller) and the host is not, the controller pulls src from the host instead \
(as `mode: pull`); when both are local, paths are used directly. Options: `archive` (`-a`, on \
by default) does NOT include `hardlinks` (`-H`), `acls` \
(`-A`), `xattrs` (`-X`) or `numeric_ids` (`--numeric-ids`): turn them on for faithful backups. \
`delete` removes files in dest that are not in src. `link_dest` (`--link-dest`) hard-links \
unchanged files to an earlier snapshot for cheap incremental snapshots; a relative link_dest is \
relative to dest. `exclude` patterns are rsync --exclude patterns. A trailing `/` on src copies \
its content rather than the directory itself, as with rsync. Changed when rsync itemizes any change \
(`--itemize-changes`); the itemized lines are in the result. Exit 24 (files vanished during the \
transfer) is ok with a warning; 23 (partial transfer) and others fail. A dry run runs rsync with \
`-n -i` and lists what would change without changing anything.",
    free_form: None,
    args: &[
        arg("src", ArgKind::Str, true, "source path"),
        arg("dest", ArgKind::Str, true, "destination path"),
        arg(
            "mode",
            ArgKind::Str,
            false,
            "local | push | pull (default local: both paths on the host)",
        ),
        arg(
            "dest_host",
            ArgKind::Str,
            false,
            "inventory host that receives dest (mode local only)",
        ),
        arg("archive", ArgKind::Bool, false, "-a (default true)"),
        arg(
            "hardlinks",
            ArgKind::Bool,
            false,
            "-H: keep hard links (default false)",
        ),
        arg(
            "acls",
            ArgKind::Bool,
            false,
            "-A: keep ACLs (default false)",
        ),
        arg(
            "xattrs",
            ArgKind::Bool,
            false,
            "-X: keep extended attributes (default false)",
        ),
        arg(
            "numeric_ids",
            ArgKind::Bool,
            false,
            "--numeric-ids: keep uid/gid numbers (default false)",
        ),
        arg(
            "delete",
            ArgKind::Bool,
            false,
            "--delete: remove what src does not have (default false)",
        ),
        arg(
            "link_dest",
            ArgKind::Str,
            false,
            "--link-dest: an earlier snapshot to hard-link unchanged files to (relative: to dest)",
        ),
        arg(
            "exclude",
            ArgKind::StrOrList,
            false,
            "rsync --exclude patterns",
        ),
        arg(
            "checksum",
            ArgKind::Bool,
            false,
            "-c: compare content, not size and time (default false)",
        ),
        arg(
            "extra_args",
            ArgKind::StrOrList,
            false,
            "more rsync options, each one word",
        ),
        arg(
            "rollback_snapshot",
            ArgKind::Bool,
            false,
            "hard-link snapshot of an existing dest (cp -al) so rollback can restore it (default false)",
        ),
    ],
    open_args: false,
    example: "- id: snapshot-glance\n  rsync:\n    src: /var/lib/glance/images/\n    dest: /srv/backup/glance/{{ lifeboat.run_id }}\n    link_dest: ../latest\n    hardlinks: true\n    numeric_ids: true\n",
    returns: &[
        ("changes", "the itemized lines (the first 100)"),
        ("count", "number of itemized lines"),
        ("rc", "rsync's exit status (0 or 24)"),
        ("warning", "the exit-24 warning, or null"),
        (
            "snapshot",
            "the rollback snapshot of dest, when one was taken",
        ),
    ],
    rollback: "when dest did not exist before, removes it. A sync into an existing dest can only be \
undone with `rollback_snapshot: true`: before syncing, dest is copied as hard links (`cp -al`, cheap) to \
`.<name>.lifeboat-snapshot-<run_id>-<random>` beside it, and rollback puts that snapshot back in dest's \
place. This relies on rsync writing changed files to a new file and renaming it (its default): \
`--inplace`, `--append` would write through the shared inodes into the snapshot, so they are refused \
with rollback_snapshot. The snapshot stays after a successful run (its path is in the result: remove \
it with a later `file: state: absent` step). Not undone: dest on another host (`dest_host`).",
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Args {
    src: String,
    dest: String,
    #[serde(default = "local")]
    mode: String,
    dest_host: Option<String>,
    #[serde(default = "yes")]
    archive: bool,
    #[serde(default)]
    hardlinks: bool,
    #[serde(default)]
    acls: bool,
    #[serde(default)]
    xattrs: bool,
    #[serde(default)]
    numeric_ids: bool,
    #[serde(default)]
    delete: bool,
    link_dest: Option<String>,
    #[serde(default, deserialize_with = "str_list")]
    exclude: Vec<String>,
    #[serde(default)]
    checksum: bool,
    #[serde(default, deserialize_with = "str_list")]
    extra_args: Vec<String>,
    #[serde(default)]
    rollback_snapshot: bool,
}

fn local() -> String {
    "local".to_string()
}

fn yes() -> bool {
    true
}

/// How to reach one end over SSH, from its inventory variables.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Remote {
    /// `user@address`, or `address`.
    pub target: String,
    /// The `-e` value: the ssh command line.
    pub ssh: String,
}

fn var(vars: &minijinja::Value, names: &[&str]) -> Option<String> {
    names.iter().find_map(|n| {
        let v = vars.get_attr(n).ok()?;
        if v.is_undefined() || v.is_none() {
            return None;
        }
        let s = v.to_string();
        (!s.trim().is_empty()).then(|| s.trim().to_string())
    })
}

/// The controller's own SSH settings from its environment, as its transport reads them
/// (`LIFEBOAT_KNOWN_HOSTS`, `LIFEBOAT_HOST_KEY_CHECKING`, `LIFEBOAT_SSH_CONFIG`): an ssh
/// that runs on the controller (push, pull) must verify and configure like the run's own
/// connection to the same host, or it refuses a host the run reached.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct ControllerSsh {
    /// The known_hosts file to use when the host sets no `lifeboat_known_hosts`.
    pub known_hosts: Option<String>,
    /// `strict`, `accept-new` or `off`, when the host sets no policy.
    pub host_key_checking: Option<String>,
    /// `-F` value: an ssh config file, or `none`.
    pub config: Option<String>,
}

impl ControllerSsh {
    /// From the controller's environment; an invalid value is an argument error.
    pub(crate) fn from_env() -> Result<ControllerSsh, ModuleError> {
        use crate::connection::ssh::{HostKeyPolicy, SshOptions};
        let o = SshOptions::from_env().map_err(|e| ModuleError::Args(format!("rsync: {e}")))?;
        Ok(ControllerSsh {
            known_hosts: o.known_hosts_file.map(|p| p.to_string_lossy().into_owned()),
            host_key_checking: o.host_key_policy.map(|p| {
                match p {
                    HostKeyPolicy::Strict => "strict",
                    HostKeyPolicy::AcceptNew => "accept-new",
                    HostKeyPolicy::Off => "off",
                }
                .to_string()
            }),
            config: if o.read_config {
                o.config_file.map(|p| p.to_string_lossy().into_owned())
            } else {
                Some("none".to_string())
            },
        })
    }
}

/// `None` when the host is on the local connection, else how to reach it with ssh.
/// `controller`: the ssh runs on the controller, whose environment settings apply where
/// the host's variables say nothing (not for dest_host: that ssh runs on another host).
pub(crate) fn remote_of(
    host: &str,
    vars: &minijinja::Value,
    controller: Option<&ControllerSsh>,
) -> Option<Remote> {
    let address = var(vars, &["ansible_host", "ansible_ssh_host", "host"]);
    let conn = var(vars, &["ansible_connection", "connection"]);
    let is_local = match conn.as_deref() {
        Some(c) => c == "local",
        None => host == "localhost" && address.is_none(),
    };
    if is_local {
        return None;
    }
    let address = address.unwrap_or_else(|| host.to_string());
    let mut ssh = vec!["ssh".to_string()];
    if let Some(f) = controller.and_then(|c| c.config.clone()) {
        ssh.extend(["-F".to_string(), f]);
    }
    ssh.extend(["-o".to_string(), "BatchMode=yes".into()]);
    if let Some(p) = var(vars, &["ansible_port", "ansible_ssh_port", "port"]) {
        ssh.extend(["-p".to_string(), p]);
    }
    if let Some(k) = var(
        vars,
        &[
            "ansible_ssh_private_key_file",
            "ansible_private_key_file",
            "key_file",
        ],
    ) {
        ssh.extend(["-i".to_string(), k]);
    }
    if let Some(f) = var(vars, &["lifeboat_known_hosts"])
        .or_else(|| controller.and_then(|c| c.known_hosts.clone()))
    {
        ssh.extend(["-o".to_string(), format!("UserKnownHostsFile={f}")]);
    }
    match var(
        vars,
        &["lifeboat_host_key_checking", "ansible_host_key_checking"],
    )
    .or_else(|| controller.and_then(|c| c.host_key_checking.clone()))
    .as_deref()
    {
        Some("strict") => ssh.extend(["-o".into(), "StrictHostKeyChecking=yes".into()]),
        Some("accept-new") => ssh.extend(["-o".into(), "StrictHostKeyChecking=accept-new".into()]),
        Some("off" | "false" | "no") => {
            ssh.extend(["-o".into(), "StrictHostKeyChecking=no".into()])
        }
        _ => {}
    }
    if let Some(j) = var(vars, &["lifeboat_proxy_jump"]) {
        ssh.extend(["-J".to_string(), j]);
    }
    if let Some(t) = var(vars, &["ansible_ssh_timeout", "ansible_timeout"]) {
        ssh.extend(["-o".to_string(), format!("ConnectTimeout={t}")]);
    }
    let mut line = ssh.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" ");
    if let Some(common) = var(vars, &["ansible_ssh_common_args"]) {
        line.push(' ');
        line.push_str(&common);
    }
    let target = match var(vars, &["ansible_user", "ansible_ssh_user", "user"]) {
        Some(u) => format!("{u}@{address}"),
        None => address,
    };
    Some(Remote { target, ssh: line })
}

/// A remote path as rsync writes it: `target:path` (the path is quoted for the far shell
/// by rsync's `--protect-args`, so it is passed as is).
fn remote_path(r: &Remote, path: &str) -> String {
    format!("{}:{path}", r.target)
}

/// What rsync's exit status means: `Ok(None)` success, `Ok(Some(warning))`, or a failure.
pub(crate) fn classify(rc: Option<i32>) -> Result<Option<String>, String> {
    match rc {
        Some(0) => Ok(None),
        Some(24) => Ok(Some(
            "rsync exit 24: some source files vanished during the transfer".to_string(),
        )),
        Some(23) => {
            Err("rsync exit 23: partial transfer (some files could not be transferred)".into())
        }
        Some(c) => Err(format!("rsync exit {c}")),
        None => Err("rsync ended without an exit status".into()),
    }
}

/// The rsync options (without the paths).
fn options(a: &Args, check: bool) -> Vec<String> {
    let mut v = vec!["rsync".to_string(), "--itemize-changes".to_string()];
    if check {
        v.push("--dry-run".into());
    }
    for (on, flag) in [
        (a.archive, "-a"),
        (a.hardlinks, "-H"),
        (a.acls, "-A"),
        (a.xattrs, "-X"),
        (a.numeric_ids, "--numeric-ids"),
        (a.delete, "--delete"),
        (a.checksum, "--checksum"),
    ] {
        if on {
            v.push(flag.to_string());
        }
    }
    if let Some(l) = &a.link_dest {
        v.push(format!("--link-dest={l}"));
    }
    v.extend(a.exclude.iter().map(|e| format!("--exclude={e}")));
    v.extend(a.extra_args.iter().cloned());
    v
}

/// Where dest lives, for the pre-state and rollback.
enum DestSide {
    /// On the host (local, push).
    Host,
    /// On the controller (pull).
    Controller,
    /// On another host: not undone.
    Other,
}

#[async_trait]
impl Module for Rsync {
    fn doc(&self) -> &'static ModuleDoc {
        &DOC
    }

    fn validate(&self, args: &Node, file: &SourceFile) -> Vec<SourceError> {
        let mut errors = check_choice(args, file, "rsync", "mode", MODES);
        if let Some(d) = args.get("dest_host")
            && let Some(m) = args.get("mode").and_then(Node::as_str)
            && m != "local"
        {
            errors.push(
                d.error(
                    file,
                    format!("`dest_host` is for host-to-host copies, not mode `{m}`"),
                )
                .with_help("leave mode out: the host pushes to dest_host"),
            );
        }
        errors
    }

    async fn run(&self, ctx: &ModuleContext, args: &Json) -> Result<Outcome, ModuleError> {
        let a: Args = parse_args("rsync", args)?;
        let mode = choice("rsync", "mode", &a.mode, MODES)?;
        refuse_root("rsync", &a.dest)?;
        if a.rollback_snapshot
            && a.extra_args
                .iter()
                .any(|x| x.starts_with("--inplace") || x.starts_with("--append"))
        {
            return Err(ModuleError::Args(
                "rsync: --inplace/--append would write into the rollback snapshot's shared inodes; drop them or rollback_snapshot".into(),
            ));
        }
        let mut argv = options(&a, ctx.check);
        // Where rsync runs, its two paths, and where dest is.
        let controller: std::sync::Arc<dyn Connection> =
            std::sync::Arc::new(LocalConnection::new("controller"));
        let (runner, src, dest, side): (std::sync::Arc<dyn Connection>, String, String, DestSide) =
            match (mode, &a.dest_host) {
                ("local", None) => (
                    ctx.conn.clone(),
                    a.src.clone(),
                    a.dest.clone(),
                    DestSide::Host,
                ),
                ("local", Some(h)) => {
                    let hv = ctx
                        .vars
                        .get_attr("hostvars")
                        .and_then(|hv| hv.get_item(&minijinja::Value::from(h.as_str())))
                        .ok()
                        .filter(|v| !v.is_undefined())
                        .ok_or_else(|| {
                            ModuleError::Args(format!(
                                "rsync: dest_host `{h}` is not in the inventory"
                            ))
                        })?;
                    let env = ControllerSsh::from_env()?;
                    let me = remote_of(&ctx.host, &ctx.vars, Some(&env));
                    // The ssh to dest_host runs where rsync runs: on the controller when
                    // the host is local (its environment applies), else on the host.
                    let there = remote_of(h, &hv, me.is_none().then_some(&env));
                    match (there, me) {
                        // Both on the controller: one local rsync.
                        (None, None) => (
                            ctx.conn.clone(),
                            a.src.clone(),
                            a.dest.clone(),
                            DestSide::Other,
                        ),
                        // dest_host is the controller, the host is not: an rsync on the
                        // host would write dest on the host itself. The controller pulls.
                        (None, Some(me)) => {
                            argv.extend([
                                "-e".to_string(),
                                me.ssh.clone(),
                                "--protect-args".into(),
                            ]);
                            if let Some(b) = &ctx.become_ {
                                argv.push(format!("--rsync-path={}", rsync_path_for(b)?));
                            }
                            (
                                controller.clone(),
                                remote_path(&me, &a.src),
                                a.dest.clone(),
                                DestSide::Other,
                            )
                        }
                        (Some(r), _) => {
                            argv.extend(["-e".to_string(), r.ssh.clone(), "--protect-args".into()]);
                            // The receiving rsync runs as dest_host's login user: with
                            // become it gets the same sudo as the host's end, or it could
                            // neither write root's trees nor keep their owners.
                            if let Some(b) = &ctx.become_ {
                                argv.push(format!("--rsync-path={}", rsync_path_for(b)?));
                            }
                            (
                                ctx.conn.clone(),
                                a.src.clone(),
                                remote_path(&r, &a.dest),
                                DestSide::Other,
                            )
                        }
                    }
                }
                (m, Some(_)) => {
                    return Err(ModuleError::Args(format!(
                        "rsync: dest_host is for host-to-host copies, not mode {m}"
                    )));
                }
                (m, None) => {
                    let local = |p: &str| ctx.local_path(p).to_string_lossy().into_owned();
                    let env = ControllerSsh::from_env()?;
                    let remote = remote_of(&ctx.host, &ctx.vars, Some(&env));
                    // Over ssh the step's become applies at the far end, through the
                    // rsync it starts; on a local host, to rsync itself (ctx.run).
                    let runner = match &remote {
                        Some(r) => {
                            argv.extend(["-e".to_string(), r.ssh.clone(), "--protect-args".into()]);
                            if let Some(b) = &ctx.become_ {
                                argv.push(format!("--rsync-path={}", rsync_path_for(b)?));
                            }
                            controller.clone()
                        }
                        None => ctx.conn.clone(),
                    };
                    let far = |p: &str| match &remote {
                        Some(r) => remote_path(r, p),
                        None => p.to_string(),
                    };
                    // A trailing slash on a controller src is meaningful: keep it.
                    let keep_slash = |orig: &str, p: String| {
                        if orig.ends_with('/') && !p.ends_with('/') {
                            format!("{p}/")
                        } else {
                            p
                        }
                    };
                    if m == "push" {
                        (
                            runner,
                            keep_slash(&a.src, local(&a.src)),
                            far(&a.dest),
                            DestSide::Host,
                        )
                    } else {
                        (runner, far(&a.src), local(&a.dest), DestSide::Controller)
                    }
                }
            };

        // Pre-state of dest, for rollback.
        let mut undo = None;
        let mut snapshot = None;
        if !ctx.check {
            let dest_path = a.dest.trim_end_matches('/').to_string();
            let existed = match side {
                DestSide::Host => Some(ctx.stat(&dest_path).await?.is_some()),
                DestSide::Controller => {
                    let p = ctx.local_path(&dest_path);
                    Some(tokio::fs::symlink_metadata(&p).await.is_ok())
                }
                DestSide::Other => None,
            };
            let conn_for_dest: Option<std::sync::Arc<dyn Connection>> = match side {
                DestSide::Host => Some(ctx.conn.clone()),
                DestSide::Controller => Some(controller.clone()),
                DestSide::Other => None,
            };
            let abs_dest = match side {
                DestSide::Controller => ctx.local_path(&dest_path).to_string_lossy().into_owned(),
                _ => dest_path.clone(),
            };
            match (existed, conn_for_dest) {
                (Some(false), Some(_)) => {
                    undo = Some(
                        json!({ "dest": abs_dest, "existed": false, "side": side_name(&side) }),
                    );
                }
                (Some(true), Some(c)) if a.rollback_snapshot => {
                    let snap = sibling(&abs_dest, "snapshot-", &ctx.run_id);
                    let spec = CommandSpec::shell(format!(
                        "cp -al -- {} {}",
                        quote(&abs_dest),
                        quote(&snap)
                    ));
                    // On the host with the step's become, like the sync itself.
                    let out = if std::sync::Arc::ptr_eq(&c, &ctx.conn) {
                        ctx.probe(spec).await?
                    } else {
                        c.run(&spec, None).await?
                    };
                    if !out.success() {
                        return Err(failed_with(
                            &format!("cannot take a rollback snapshot of {abs_dest}"),
                            out,
                        ));
                    }
                    undo = Some(json!({
                        "dest": abs_dest,
                        "existed": true,
                        "snapshot": snap,
                        "side": side_name(&side),
                    }));
                    snapshot = Some(snap);
                }
                _ => {}
            }
        }

        argv.extend(["--".to_string(), src.clone(), dest.clone()]);
        // On the host, the step's become applies (ctx.run); on the controller, none.
        let spec = CommandSpec::argv(argv).timeout(ctx.timeout);
        let out: CommandOutput = if std::sync::Arc::ptr_eq(&runner, &ctx.conn) {
            ctx.run(spec).await?
        } else {
            let out = runner.run(&spec, ctx.sink.clone()).await?;
            if out.timed_out {
                return Err(ModuleError::TimedOut {
                    after: ctx.timeout.unwrap_or_default(),
                    output: out,
                });
            }
            out
        };
        // A dry run's source may be made by an earlier step of the same run: rsync -n
        // cannot see it yet (exit 23), which predicts a change rather than a failure.
        if ctx.check
            && out.rc == Some(23)
            && out.stderr_text().contains("No such file or directory")
        {
            return Ok(Outcome::changed().with_msg(format!(
                "would copy {src} to {dest} ({src} does not exist yet: an earlier step must create it)"
            )));
        }
        let warning = match classify(out.rc) {
            Ok(w) => w,
            Err(why) => {
                // failed_with adds "(exit N)": say the bare status once.
                let what = if out.rc.is_some_and(|c| why == format!("rsync exit {c}")) {
                    format!("rsync {src} -> {dest} failed")
                } else {
                    format!("rsync {src} -> {dest} failed: {why}")
                };
                return Err(failed_with(&what, out));
            }
        };
        let lines: Vec<String> = out
            .stdout_text()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect();
        let count = lines.len();
        let changed = count > 0;
        let data = json!({
            "changes": lines.iter().take(SHOWN).collect::<Vec<_>>(),
            "count": count,
            "rc": out.rc,
            "warning": warning,
            "snapshot": snapshot,
        });
        let verb = if ctx.check { "would change" } else { "changed" };
        let mut msg = if changed {
            let shown: Vec<&str> = lines.iter().take(5).map(String::as_str).collect();
            format!(
                "{verb} {count} item(s) in {dest}: {}{}",
                shown.join("; "),
                if count > 5 { "; ..." } else { "" }
            )
        } else {
            format!("{dest} is up to date")
        };
        if let Some(w) = &warning {
            msg.push_str(&format!(" (warning: {w})"));
        }
        let mut o = Outcome {
            changed,
            rc: out.rc,
            stdout: out.stdout_text(),
            stderr: out.stderr_text(),
            ..Outcome::default()
        }
        .with_data(data)
        .with_msg(msg);
        if changed || snapshot.is_some() {
            o.undo = undo;
        }
        Ok(o)
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
        refuse_root("rsync", dest)?;
        let snapshot = undo.get("snapshot").and_then(Json::as_str);
        let what = match snapshot {
            Some(s) => format!("put the snapshot {s} back at {dest}"),
            None => format!("remove {dest}"),
        };
        if ctx.check {
            return Ok(Outcome::changed().with_msg(format!("would {what}")));
        }
        let d = quote(dest);
        let script = match snapshot {
            Some(s) => {
                let trash = quote(&sibling(dest, "rollback-", &ctx.run_id));
                format!(
                    "set -e\n[ -e {s} ]\nif [ -e {d} ]; then mv -T -- {d} {trash}; fi\nmv -T -- {s} {d}\nrm -rf -- {trash}\n",
                    s = quote(s)
                )
            }
            None => format!("rm -rf -- {d}\n"),
        };
        if undo.get("side").and_then(Json::as_str) == Some("controller") {
            let c = LocalConnection::new("controller");
            let out = c.run(&CommandSpec::shell(script), None).await?;
            if !out.success() {
                return Err(failed_with(&format!("cannot {what}"), out));
            }
        } else {
            script_ok(ctx, &format!("cannot {what}"), script).await?;
        }
        Ok(Outcome::changed().with_msg(what))
    }
}

/// `--rsync-path` for the far end of a push or pull with become: rsync under
/// `sudo -n`. The rsync protocol holds the far end's standard input, so sudo cannot be
/// given a password there, nor su a terminal: those are refused rather than running the
/// far end as the login user (a pull would miss root-only files, a push would give
/// every file to the login user).
fn rsync_path_for(b: &crate::connection::Become) -> Result<String, ModuleError> {
    if b.method.as_deref().is_some_and(|m| m != "sudo") {
        return Err(ModuleError::Args(format!(
            "rsync: push and pull run rsync at the far end through ssh; become_method {} cannot \
             be used there (only sudo without a password)",
            b.method.as_deref().unwrap_or_default()
        )));
    }
    if b.password.is_some() {
        return Err(ModuleError::Args(
            "rsync: push and pull with become need sudo without a password on the host (NOPASSWD \
             for rsync): the rsync protocol holds the far end's standard input, so the become \
             password cannot be given there"
                .into(),
        ));
    }
    let user = b.user.as_deref().unwrap_or("root");
    Ok(format!("sudo -n -H -u {} rsync", quote(user)))
}

fn side_name(s: &DestSide) -> &'static str {
    match s {
        DestSide::Host => "host",
        DestSide::Controller => "controller",
        DestSide::Other => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        assert_eq!(classify(Some(0)), Ok(None));
        assert!(classify(Some(24)).is_ok_and(|w| w.is_some()));
        assert!(classify(Some(23)).is_err());
        assert!(classify(Some(12)).is_err());
        assert!(classify(None).is_err());
    }

    fn vars_of(j: Json) -> minijinja::Value {
        minijinja::Value::from(minijinja::value::Serde(j))
    }

    #[test]
    fn ssh_settings_from_inventory_vars() {
        let vars = vars_of(serde_json::json!({
            "ansible_host": "10.0.0.5",
            "ansible_port": 2222,
            "ansible_user": "backup",
            "ansible_ssh_private_key_file": "/keys/id ed",
            "ansible_ssh_common_args": "-o StrictHostKeyChecking=no",
        }));
        let r = remote_of("ctl1", &vars, None).expect("ssh");
        assert_eq!(r.target, "backup@10.0.0.5");
        assert_eq!(
            r.ssh,
            "ssh -o 'BatchMode=yes' -p 2222 -i '/keys/id ed' -o StrictHostKeyChecking=no"
        );
        let local = vars_of(serde_json::json!({"ansible_connection": "local"}));
        assert_eq!(remote_of("ctl1", &local, None), None);
        let implicit = vars_of(serde_json::json!({}));
        assert_eq!(remote_of("localhost", &implicit, None), None);
        assert!(remote_of("db1", &implicit, None).is_some());
    }

    #[test]
    fn the_controllers_ssh_settings_apply_where_the_host_says_nothing() {
        let env = ControllerSsh {
            known_hosts: Some("/ctl/known hosts".into()),
            host_key_checking: Some("accept-new".into()),
            config: Some("none".into()),
        };
        let bare = vars_of(serde_json::json!({ "ansible_host": "10.0.0.5" }));
        assert_eq!(
            remote_of("ctl1", &bare, Some(&env)).expect("ssh").ssh,
            "ssh -F none -o 'BatchMode=yes' -o 'UserKnownHostsFile=/ctl/known hosts' -o 'StrictHostKeyChecking=accept-new'"
        );
        // The host's own variables win.
        let own = vars_of(serde_json::json!({
            "ansible_host": "10.0.0.5",
            "lifeboat_known_hosts": "/inv/kh",
            "lifeboat_host_key_checking": "strict",
        }));
        assert_eq!(
            remote_of("ctl1", &own, Some(&env)).expect("ssh").ssh,
            "ssh -F none -o 'BatchMode=yes' -o 'UserKnownHostsFile=/inv/kh' -o 'StrictHostKeyChecking=yes'"
        );
    }
}
