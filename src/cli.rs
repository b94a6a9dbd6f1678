//! The command line: `lifeboat run | plan | validate | graph | inventory | modules |
//! schema | completions`. Parses arguments (clap), loads the inventory and playbook,
//! builds the graph, wires the observers, runs, and turns the outcome into the
//! documented exit code: 0 success; 1 invalid input (nothing ran); 2 a step failed and
//! the rollback completed; 3 a step failed and the rollback failed or was disabled;
//! 130 interrupted.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use indexmap::IndexMap;
use serde_json::{Value as Json, json};

use crate::connection::ConnectionPool;
use crate::error::{InputErrors, SourceError};
use crate::executor::{Interrupts, Run, RunOptions, new_run_id};
use crate::graph::{Graph, Selection};
use crate::inventory::Inventory;
use crate::output::console::{Console, ConsoleOptions};
use crate::output::events::EventLog;
use crate::output::junit::JunitReport;
use crate::output::{Emitter, Observer};
use crate::playbook::Playbook;
use crate::template::Templates;
use crate::vars::{VarsCore, parse_extra_vars};

/// Writes a line to standard output; a closed pipe (`| head`) just ends the output.
macro_rules! say {
    ($($arg:tt)*) => {
        write_stdout(&format!("{}\n", format_args!($($arg)*)))
    };
}

/// Writes to standard output without a newline; see [`say!`].
macro_rules! say_raw {
    ($($arg:tt)*) => {
        write_stdout(&format!($($arg)*))
    };
}

fn write_stdout(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// Exit code for invalid input.
pub const EXIT_INVALID: u8 = 1;

/// lifeboat: backup and recovery runbooks over SSH, run as a dependency graph.
#[derive(Debug, Parser)]
#[command(name = "lifeboat", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a playbook (with --check: a dry run that changes nothing).
    Run(RunArgs),
    /// Dry run: show what a run would do, changing nothing (same as run --check).
    Plan(RunArgs),
    /// Run a recovery drill (backup, sabotage, restore, verify) and judge it: every
    /// verification, RTO and RPO against the drill's targets. Exit 4 when a
    /// verification failed or a target was missed.
    Drill(DrillArgs),
    /// Continue a failed or killed run: what it finished is not run again (its results
    /// come back from the journal); what failed or never started runs now. Refused
    /// when the playbook or inventory changed since, unless --force.
    Resume(ContinueArgs),
    /// Undo what a past run did, in reverse dependency order, from its journal.
    Rollback(ContinueArgs),
    /// List the runs recorded in the state directory, with their outcome.
    Runs {
        /// The state directory.
        #[arg(long, env = "LIFEBOAT_STATE_DIR", default_value = ".lifeboat")]
        state_dir: PathBuf,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check playbooks for everything a run would reject, without running.
    Validate {
        /// Playbook files.
        #[arg(required = true)]
        playbooks: Vec<PathBuf>,
        /// Inventory (file, directory or executable); default: the implicit localhost.
        #[arg(short, long)]
        inventory: Option<PathBuf>,
    },
    /// Show the dependency graph of (step, host) nodes.
    Graph {
        /// Playbook file.
        playbook: PathBuf,
        /// Inventory.
        #[arg(short, long)]
        inventory: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = GraphFormat::Text)]
        format: GraphFormat,
        /// Only hosts matching this pattern.
        #[arg(long)]
        limit: Option<String>,
    },
    /// Show what an inventory resolves to.
    Inventory {
        /// Inventory.
        #[arg(short, long)]
        inventory: Option<PathBuf>,
        /// Every group and host, as JSON in `ansible-inventory --list`'s shape: groups
        /// with their hosts and children, each host's merged variables in `_meta`.
        #[arg(long, group = "what")]
        list: bool,
        /// With --list: each group's own variables on the group and each host's own
        /// variables, unmerged (`ansible-inventory --list --export`).
        #[arg(long, requires = "list")]
        export: bool,
        /// The hosts a pattern selects, one a line, in the order a run takes them
        /// (`ansible PATTERN --list-hosts`).
        #[arg(long, group = "what", value_name = "PATTERN")]
        list_hosts: Option<String>,
        /// Every group with the hosts it stands for (its own, then its descendants'),
        /// in the order a run takes them: the `groups` variable, as JSON.
        #[arg(long, group = "what")]
        groups: bool,
        /// The group tree.
        #[arg(long, group = "what")]
        graph: bool,
        /// One host's variables and connection, as JSON.
        #[arg(long, group = "what")]
        host: Option<String>,
    },
    /// List modules, or show one module's arguments, example and result data.
    Modules {
        /// A module name.
        name: Option<String>,
    },
    /// Print the JSON Schema of the playbook format (for yaml-language-server).
    Schema,
    /// Print shell completions.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// Graph output formats.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum GraphFormat {
    /// Waves and dependencies as text.
    Text,
    /// Graphviz DOT.
    Dot,
}

/// Arguments of `resume` and `rollback`.
#[derive(Debug, clap::Args)]
pub struct ContinueArgs {
    /// The run's id (`lifeboat runs` lists them).
    pub run_id: String,
    /// Go on even though the playbook or inventory changed since the run.
    #[arg(long)]
    pub force: bool,
    /// How it executes and reports.
    #[command(flatten)]
    pub exec: ExecArgs,
}

/// Arguments of `drill`.
#[derive(Debug, clap::Args)]
pub struct DrillArgs {
    /// Everything `run` takes.
    #[command(flatten)]
    pub run: RunArgs,
    /// Write the drill report here: .md (Markdown), .html or .json; repeatable.
    #[arg(long)]
    pub report: Vec<PathBuf>,
}

/// How a run executes and reports: shared by `run`, `plan`, `drill`, `resume` and
/// `rollback`.
#[derive(Debug, Clone, clap::Args)]
pub struct ExecArgs {
    /// Hosts with work running at once.
    #[arg(long, default_value_t = 64)]
    pub forks: usize,
    /// Steps running at once on one host.
    #[arg(long, default_value_t = 8)]
    pub host_parallelism: usize,
    /// After a failure, leave everything as it is (exit 3).
    #[arg(long)]
    pub no_rollback: bool,
    /// Write one JSON object per event to this file.
    #[arg(long)]
    pub events: Option<PathBuf>,
    /// Write a JUnit XML report to this file.
    #[arg(long)]
    pub junit: Option<PathBuf>,
    /// Stream command output.
    #[arg(short, long)]
    pub verbose: bool,
    /// SSH host key checking: strict (default: unknown and changed keys are refused),
    /// accept-new (unknown keys are added to known_hosts), off (warns on every run).
    #[arg(long, value_name = "POLICY")]
    pub host_key_checking: Option<crate::connection::ssh::HostKeyPolicy>,
    /// Where run journals are kept (locked while a run uses it); dry runs keep none.
    #[arg(long, env = "LIFEBOAT_STATE_DIR", default_value = ".lifeboat")]
    pub state_dir: PathBuf,
    /// Directory of the run locks on the target hosts (a host's `lifeboat_lock_dir`
    /// variable wins) [default: /var/tmp/lifeboat/locks; resume and rollback: the one
    /// the run used].
    #[arg(long, env = "LIFEBOAT_LOCK_DIR", value_name = "DIR")]
    pub lock_dir: Option<String>,
    /// Replace the locks other runs hold on the hosts: stale ones (their controller is
    /// gone), and with a loud warning any other.
    #[arg(long)]
    pub break_lock: bool,
}

/// Arguments of `run` and `plan`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Playbook file.
    pub playbook: PathBuf,
    /// Inventory (file, directory or executable); default: the implicit localhost.
    #[arg(short, long)]
    pub inventory: Option<PathBuf>,
    /// Dry run: change nothing, show what would change.
    #[arg(long)]
    pub check: bool,
    /// Show file diffs for copy, template and file.
    #[arg(long)]
    pub diff: bool,
    /// Extra variables: key=value, JSON, or @file.yml (highest precedence).
    #[arg(short = 'e', long = "extra-vars")]
    pub extra_vars: Vec<String>,
    /// Only hosts matching this pattern.
    #[arg(long)]
    pub limit: Option<String>,
    /// Only steps with these tags (comma separated).
    #[arg(long, value_delimiter = ',')]
    pub tags: Vec<String>,
    /// Not steps with these tags (comma separated).
    #[arg(long, value_delimiter = ',')]
    pub skip_tags: Vec<String>,
    /// How it executes and reports.
    #[command(flatten)]
    pub exec: ExecArgs,
}

/// This machine's name, for the journal.
fn hostname() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "controller".into())
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    init_tracing();
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => ExitCode::from(code),
        Err(errors) => {
            let _ = writeln!(std::io::stderr(), "{errors}");
            ExitCode::from(EXIT_INVALID)
        }
    }
}

/// Diagnostics for developers: `LIFEBOAT_LOG=debug` (any tracing filter) traces the
/// scheduler and every command to standard error.
fn init_tracing() {
    if let Ok(filter) = std::env::var("LIFEBOAT_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .try_init();
    }
}

fn dispatch(cli: Cli) -> Result<u8, InputErrors> {
    match cli.command {
        Command::Run(args) => run(args, false),
        Command::Plan(args) => run(args, true),
        Command::Drill(args) => drill(args),
        Command::Resume(args) => continue_run(args, false),
        Command::Rollback(args) => continue_run(args, true),
        Command::Runs { state_dir, json } => {
            let runs = crate::journal::list_runs(&state_dir);
            if json {
                say!(
                    "{}",
                    serde_json::to_string_pretty(&runs).unwrap_or_default()
                );
            } else if runs.is_empty() {
                say!("no runs recorded in {}", state_dir.display());
            } else {
                for r in runs {
                    say!(
                        "{:<22} {:<20} {:<20} {:>5} nodes  {}",
                        r.run_id,
                        r.status,
                        r.started,
                        r.nodes_finished,
                        r.playbook
                    );
                }
            }
            Ok(0)
        }
        Command::Validate {
            playbooks,
            inventory,
        } => validate(&playbooks, inventory.as_deref()),
        Command::Graph {
            playbook,
            inventory,
            format,
            limit,
        } => {
            let inv = Inventory::load(inventory.as_deref())?;
            let pb = Playbook::load(&playbook)?;
            let graph = Graph::build(
                &pb,
                &inv,
                &Selection {
                    limit,
                    ..Selection::default()
                },
            )?;
            match format {
                GraphFormat::Text => say_raw!("{}", graph.to_text(&pb)),
                GraphFormat::Dot => say!("{}", graph.to_dot(&pb)),
            }
            Ok(0)
        }
        Command::Inventory {
            inventory,
            list,
            export,
            list_hosts,
            groups,
            graph,
            host,
        } => {
            let inv = Inventory::load(inventory.as_deref())?;
            if let Some(h) = host {
                if !inv.hosts().contains(&h) && inv.select(&h).is_err() {
                    return Err(SourceError::plain(format!(
                        "no host named `{h}` in the inventory"
                    ))
                    .with_help("`lifeboat inventory --list` shows every host")
                    .into());
                }
                let c = inv.connection(&h);
                let out = json!({
                    "vars": inv.host_vars(&h),
                    "groups": inv.group_names(&h),
                    "connection": {
                        "kind": format!("{:?}", c.kind).to_lowercase(),
                        "address": c.address,
                        "port": c.port,
                        "user": c.user,
                        "key_file": c.key_file,
                        "become": c.become_,
                    },
                });
                say!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
            } else if let Some(pattern) = list_hosts {
                let hosts = inv.select(&pattern).map_err(|e| {
                    SourceError::plain(e)
                        .with_help("`lifeboat inventory --graph` shows every group and host")
                })?;
                for h in hosts {
                    say!("{h}");
                }
            } else if groups {
                say!(
                    "{}",
                    serde_json::to_string_pretty(&inv.groups()).unwrap_or_default()
                );
            } else if graph {
                say_raw!("{}", inv.graph_text());
            } else {
                let _ = list;
                say!(
                    "{}",
                    serde_json::to_string_pretty(&inv.to_ansible_json(export)).unwrap_or_default()
                );
            }
            Ok(0)
        }
        Command::Modules { name } => modules(name.as_deref()),
        Command::Schema => {
            say!(
                "{}",
                serde_json::to_string_pretty(&crate::schema::playbook_schema()).unwrap_or_default()
            );
            Ok(0)
        }
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "lifeboat",
                &mut std::io::stdout(),
            );
            Ok(0)
        }
    }
}

fn validate(playbooks: &[PathBuf], inventory: Option<&Path>) -> Result<u8, InputErrors> {
    let inv = Inventory::load(inventory)?;
    let mut errors = InputErrors::default();
    for p in playbooks {
        match Playbook::load(p) {
            Ok(pb) => match Graph::build(&pb, &inv, &Selection::default()) {
                Ok(g) => say!(
                    "{}: ok ({} steps, {} nodes)",
                    p.display(),
                    pb.steps.len(),
                    g.nodes.len()
                ),
                Err(e) => errors.extend(e),
            },
            Err(e) => errors.extend(e),
        }
    }
    errors.into_result(0)
}

fn modules(name: Option<&str>) -> Result<u8, InputErrors> {
    let registry = crate::modules::registry();
    let Some(name) = name else {
        for (n, m) in registry {
            say!("{n:<14} {}", m.doc().summary);
        }
        return Ok(0);
    };
    let Some(m) = registry.get(name) else {
        let help = crate::error::did_you_mean(name, registry.keys().copied()).map_or_else(
            || "`lifeboat modules` lists them".to_string(),
            |s| format!("did you mean `{s}`?"),
        );
        return Err(SourceError::plain(format!("no module named `{name}`"))
            .with_help(help)
            .into());
    };
    say_raw!("{}", crate::schema::module_help(m.doc()));
    Ok(0)
}

/// Loads everything, runs, and returns the exit code.
fn run(args: RunArgs, plan: bool) -> Result<u8, InputErrors> {
    run_with(args, plan, None)
}

/// `lifeboat drill`: runs the drill, judges it, writes the reports.
fn drill(args: DrillArgs) -> Result<u8, InputErrors> {
    run_with(args.run, false, Some(args.report))
}

/// Whether a run continues a past one.
enum Continuing {
    /// A fresh run.
    No,
    /// `lifeboat resume`: skip what the past run did.
    Resume(crate::journal::PastRun),
    /// `lifeboat rollback`: undo what the past run did, run nothing.
    Rollback(crate::journal::PastRun),
}

impl Continuing {
    /// What to run again after fixing what refused it: `run \`lifeboat resume ID\` again`.
    fn again(&self) -> Option<String> {
        let (verb, past) = match self {
            Continuing::No => return None,
            Continuing::Resume(p) => ("resume", p),
            Continuing::Rollback(p) => ("rollback", p),
        };
        Some(format!("run `lifeboat {verb} {}` again", past.run_id))
    }
}

/// `lifeboat resume` / `lifeboat rollback`: the past run's playbook, inventory and
/// selection, from its journal.
fn continue_run(args: ContinueArgs, rollback: bool) -> Result<u8, InputErrors> {
    let past = crate::journal::PastRun::load(&args.exec.state_dir, &args.run_id).map_err(|e| {
        SourceError::plain(e).with_help("`lifeboat runs` lists the runs of a state directory")
    })?;
    if !rollback && past.outcome.as_deref() == Some("success") {
        say!("run {} succeeded: nothing to resume", past.run_id);
        return Ok(0);
    }
    let run_args = RunArgs {
        playbook: PathBuf::from(&past.playbook),
        inventory: past.inventory.as_ref().map(PathBuf::from),
        check: false,
        diff: false,
        extra_vars: match &past.extra_vars {
            Json::Object(m) if !m.is_empty() => vec![past.extra_vars.to_string()],
            _ => Vec::new(),
        },
        limit: past.limit.clone(),
        tags: past.tags.clone(),
        skip_tags: past.skip_tags.clone(),
        exec: args.exec.clone(),
    };
    let hashes_checked = args.force;
    let continuing = if rollback {
        Continuing::Rollback(past)
    } else {
        Continuing::Resume(past)
    };
    run_continuing(run_args, continuing, hashes_checked)
}

fn run_with(
    args: RunArgs,
    plan: bool,
    drill_reports: Option<Vec<PathBuf>>,
) -> Result<u8, InputErrors> {
    run_full(args, plan, drill_reports, Continuing::No, false)
}

fn run_continuing(args: RunArgs, continuing: Continuing, force: bool) -> Result<u8, InputErrors> {
    run_full(args, false, None, continuing, force)
}

fn run_full(
    args: RunArgs,
    plan: bool,
    drill_reports: Option<Vec<PathBuf>>,
    continuing: Continuing,
    force: bool,
) -> Result<u8, InputErrors> {
    let check = plan || args.check;
    let extra_vars = parse_extra_vars(&args.extra_vars)?;
    let extra_vars_for_journal = extra_vars.clone();
    // Made first, so that its workers are up when the first connections open.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| SourceError::plain(format!("cannot start the async runtime: {e}")))?;
    let inventory = Arc::new(Inventory::load(args.inventory.as_deref())?);
    let mut playbook = Playbook::load(&args.playbook)?;
    if drill_reports.is_some() {
        crate::drill::prepare(&mut playbook).map_err(|e| {
            SourceError::plain(e).with_help("put steps under `phases:` (backup, sabotage, restore, verify) or give each a `phase:`")
        })?;
    }
    let playbook = Arc::new(playbook);
    let selection = Selection {
        limit: args.limit.clone(),
        tags: args.tags.clone(),
        skip_tags: args.skip_tags.clone(),
    };
    let graph = Arc::new(Graph::build(&playbook, &inventory, &selection)?);
    let past = match &continuing {
        Continuing::No => None,
        Continuing::Resume(p) | Continuing::Rollback(p) => Some(p),
    };
    let mut prior = std::collections::HashMap::new();
    let mut in_doubt = std::collections::HashMap::new();
    if let Some(past) = past {
        let now = crate::journal::hash_files(playbook.files.iter().map(|f| &*f.text));
        let inv_now = args
            .inventory
            .as_ref()
            .filter(|p| p.is_file())
            .and_then(|p| std::fs::read_to_string(p).ok())
            .map(|t| crate::journal::hash_files([t.as_str()]));
        if !force && (now != past.playbook_sha256 || inv_now != past.inventory_sha256) {
            return Err(SourceError::plain(format!(
                "the playbook or inventory of run {} changed since it ran",
                past.run_id
            ))
            .with_help("continuing with other steps could do the wrong thing; check the change, then pass --force")
            .into());
        }
        for (i, node) in graph.nodes.iter().enumerate() {
            let key = (playbook.steps[node.step].id.clone(), node.host.clone());
            if let Some((status, result, undo, exec_host)) = past.done.get(&key) {
                let status = serde_json::from_value(Json::String(status.clone()))
                    .unwrap_or(crate::output::NodeStatus::Changed);
                prior.insert(
                    i,
                    crate::executor::NodeRecord {
                        status,
                        started: 0.0,
                        finished: 0.0,
                        result: result.clone(),
                        undo: serde_json::from_value(undo.clone()).unwrap_or_default(),
                        exec_host: exec_host.clone(),
                        entered: true,
                    },
                );
            } else {
                // A command that marks its start on the host may have started without
                // its start reaching the journal (a crash of the controller's
                // system): the runs that may have started it are asked.
                let runs = if playbook.steps[node.step].module.marks_its_start() {
                    past.may_have_started(&key)
                } else {
                    past.in_doubt.get(&key).cloned().unwrap_or_default()
                };
                if !runs.is_empty() {
                    in_doubt.insert(i, runs);
                }
            }
        }
    }
    let lock_dir = args
        .exec
        .lock_dir
        .clone()
        .or_else(|| past.and_then(|p| p.lock_dir.clone()))
        .unwrap_or_else(|| crate::lock::DEFAULT_LOCK_DIR.to_string());
    let mut secrets = Vec::new();
    // The secrets by name: the journal refers to them by name, never by value.
    let mut named: Vec<(String, zeroize::Zeroizing<String>)> = Vec::new();
    let mut playbook_vars: IndexMap<String, Json> = playbook.vars.clone();
    let mut errors = InputErrors::default();
    for (name, source) in &playbook.secrets {
        if source.absent() {
            // An optional secret whose source is not there: left undefined, so the
            // playbook's `default(...)` applies (or an inventory value does).
            continue;
        }
        match source.resolve(name) {
            Ok(v) => {
                secrets.push(v.clone());
                named.push((name.clone(), zeroize::Zeroizing::new(v.clone())));
                playbook_vars.insert(name.clone(), Json::String(v));
            }
            Err(e) => errors.push(SourceError::plain(e).with_help(match continuing.again() {
                None => "set the secret's source, or pass it with -e".to_string(),
                Some(again) => format!("the run had it: give it its value again, then {again}"),
            })),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    // Passwords from the inventory are secrets too.
    for host in graph.hosts() {
        let c = inventory.connection(&host);
        for (var, value) in [
            ("ansible_password", c.password),
            ("ansible_become_password", c.become_password),
        ] {
            if let Some(v) = value {
                named.push((format!("{host}/{var}"), zeroize::Zeroizing::new(v.clone())));
                secrets.push(v);
            }
        }
    }
    // What a past run recorded of its secrets (references, see Referencer) gets their
    // values again from where they come from now; one that is not given is refused.
    if let Some(past) = past {
        let value_of = |name: &str| {
            named
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        for (i, rec) in prior.iter_mut() {
            let node = &graph.nodes[*i];
            let step = &playbook.steps[node.step];
            let undo = rec
                .undo
                .iter_mut()
                .flat_map(|(args, data)| std::iter::once(args).chain(data.iter_mut()));
            // A module argument's own (`arg/...`) comes back from its step, at the undo.
            let missing = std::iter::once(&mut rec.result)
                .chain(undo)
                .try_for_each(|v| {
                    crate::output::emitter::unrefer_but(v, &value_of, &|n| {
                        n.starts_with(crate::modules::ARG_SECRET_PREFIX)
                    })
                });
            if let Err(name) = missing {
                let source = playbook
                    .secrets
                    .get(&name)
                    .map_or_else(|| "the inventory".to_string(), |s| s.describe());
                return Err(SourceError::plain(format!(
                    "run {} recorded step `{}` on {} with the secret `{name}`, which has no value now ({source})",
                    past.run_id, step.id, node.host
                ))
                .with_help(format!(
                    "give `{name}` its value again as the run had it, then {}",
                    continuing.again().unwrap_or_default()
                ))
                .into());
            }
        }
    }
    let run_id = new_run_id();
    let mut run_info = IndexMap::new();
    let dir = playbook
        .base_dir
        .canonicalize()
        .unwrap_or_else(|_| playbook.base_dir.clone());
    run_info.insert(
        "playbook_dir".to_string(),
        Json::String(dir.display().to_string()),
    );
    run_info.insert(
        "lifeboat".to_string(),
        json!({"run_id": run_id, "check_mode": check, "playbook": playbook.name}),
    );
    let mut observers: Vec<Arc<dyn Observer>> = vec![Arc::new(Console::new(
        ConsoleOptions::detect(args.exec.verbose),
    ))];
    if let Some(path) = &args.exec.events {
        let log = EventLog::create(path).map_err(|e| {
            SourceError::plain(format!(
                "cannot write the events file {}: {e}",
                path.display()
            ))
        })?;
        observers.push(Arc::new(log));
    }
    if let Some(path) = &args.exec.junit {
        observers.push(Arc::new(JunitReport::new(path, &playbook.name)));
    }
    let mut ssh_options = crate::connection::ssh::SshOptions::from_env().map_err(|e| {
        SourceError::plain(e).with_help("check the LIFEBOAT_* SSH environment variables")
    })?;
    if let Some(policy) = args.exec.host_key_checking {
        ssh_options.host_key_policy = Some(policy);
    }
    let emitter = Arc::new(Emitter::new(observers, secrets));
    let key_checking_off =
        ssh_options.host_key_policy == Some(crate::connection::ssh::HostKeyPolicy::Off);
    let conns = Arc::new(ConnectionPool::new(inventory.clone(), ssh_options));
    // A real run records what it does in a journal, in a state directory it locks.
    let mut state = None;
    let mut journal = None;
    let state_dir = if check {
        None
    } else {
        Some(
            crate::journal::StateDir::lock(&args.exec.state_dir, &run_id).map_err(|e| {
                SourceError::plain(e).with_help("one run at a time may use a state directory")
            })?,
        )
    };
    // The first hosts' handshakes overlap the journal's creation (they change nothing
    // on the hosts: the lock comes with the first node).
    if prior.is_empty() {
        let _entered = runtime.enter();
        conns.open_early(crate::executor::first_hosts(
            &graph,
            &playbook,
            args.exec.forks,
        ));
    }
    if let Some(dir) = state_dir {
        emitter.refer_to(&named);
        let mask = {
            let emitter = emitter.clone();
            Box::new(move |text: &str| emitter.for_journal(text))
        };
        let inventory_text = args
            .inventory
            .as_ref()
            .filter(|p| p.is_file())
            .and_then(|p| std::fs::read_to_string(p).ok());
        let start = crate::journal::Record::RunStart {
            run_id: run_id.clone(),
            playbook: args.playbook.display().to_string(),
            playbook_sha256: crate::journal::hash_files(playbook.files.iter().map(|f| &*f.text)),
            inventory: args.inventory.as_ref().map(|p| p.display().to_string()),
            inventory_sha256: inventory_text.map(|t| crate::journal::hash_files([t.as_str()])),
            check,
            extra_vars: serde_json::to_value(&extra_vars_for_journal).unwrap_or(Json::Null),
            limit: args.limit.clone(),
            tags: args.tags.clone(),
            skip_tags: args.skip_tags.clone(),
            continues: past.map(|p| p.run_id.clone()),
            lock_dir: Some(lock_dir.clone()),
            controller: format!("{} pid {}", hostname(), std::process::id()),
            time: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        };
        let j = match crate::journal::Journal::create(&dir, &run_id, &start, mask) {
            Ok(j) => j,
            Err(e) => {
                // The connections opening (to hosts that may not answer) are dropped.
                runtime.shutdown_background();
                return Err(
                    SourceError::plain(format!("cannot create the run journal: {e}")).into(),
                );
            }
        };
        journal = Some(Arc::new(j));
        state = Some(dir);
    }
    if key_checking_off {
        emitter.emit(crate::output::Event::Warning {
            msg: "host key checking is off: SSH hosts are not verified (--host-key-checking off)"
                .into(),
        });
    }
    let secret_names = playbook.secrets.keys().cloned().collect();
    let vars = VarsCore::new(
        &inventory,
        playbook_vars,
        secret_names,
        extra_vars,
        run_info,
    );
    let run = Arc::new(Run {
        playbook,
        inventory: inventory.clone(),
        graph,
        vars,
        templates: Arc::new(Templates::new()),
        conns,
        opts: RunOptions {
            check,
            diff: args.diff,
            forks: args.exec.forks,
            host_parallelism: args.exec.host_parallelism,
            no_rollback: args.exec.no_rollback,
            verbose: args.exec.verbose,
            run_id,
            lock_dir,
            break_lock: args.exec.break_lock,
            lineage: past.map(|p| p.lineage.clone()).unwrap_or_default(),
            past_lock_dir: past.and_then(|p| p.lock_dir.clone()),
            in_doubt,
        },
        emitter: emitter.clone(),
        partial: Default::default(),
        journal,
        prior,
        locks: Default::default(),
        start_seqs: Default::default(),
        settings: Default::default(),
    });
    let drill_inputs = (
        run.playbook.clone(),
        run.graph.clone(),
        run.vars.clone(),
        run.opts.run_id.clone(),
    );
    // Kept to the end of the process (see below).
    let kept = run.clone();
    let report = runtime.block_on(async move {
        let (tx, interrupts) = Interrupts::channel();
        tokio::spawn(async move {
            let mut presses = 0;
            while tokio::signal::ctrl_c().await.is_ok() {
                presses += 1;
                if tx.send(presses).is_err() {
                    break;
                }
            }
        });
        // The scheduler runs on the runtime's workers, beside the nodes it waits for,
        // rather than on this thread, which each node's end would have to wake.
        let scheduler = tokio::spawn(async move {
            match continuing {
                Continuing::Rollback(past) => run.rollback_only(interrupts, &past.run_id).await,
                _ => run.execute(interrupts).await,
            }
        });
        scheduler.await.map_err(|e| match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => SourceError::plain(format!("internal error: the run was cancelled: {e}")),
        })
    })?;
    let mut code = report.outcome.exit_code();
    if let Some(paths) = drill_reports {
        let (pb, graph, vars, run_id) = drill_inputs;
        let backup_time = graph
            .hosts()
            .iter()
            .filter_map(|h| {
                vars.facts
                    .of(h)
                    .get("drill_backup_time")
                    .and_then(Json::as_str)
                    .map(str::to_string)
            })
            .max();
        let verdict =
            crate::drill::DrillReport::evaluate(&pb, &graph, &report, &run_id, backup_time);
        say_raw!("{}", verdict.to_text());
        for path in paths {
            let text = match path.extension().and_then(|e| e.to_str()) {
                Some("json") => verdict.to_json(),
                Some("html" | "htm") => verdict.to_html(),
                _ => verdict.to_markdown(),
            };
            if let Err(e) = std::fs::write(&path, text) {
                eprintln!(
                    "warning: cannot write the drill report {}: {e}",
                    path.display()
                );
            }
        }
        code = verdict.exit_code();
    }
    if let Err(e) = emitter.finish()
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        eprintln!("warning: could not write a report: {e}");
    }
    // Nothing is left to wait for: the report is out and the journal's last record is
    // written (and every record before it flushed). The process ends next, and with it
    // the SSH sessions, the runtime and the run, all at once: dropping them here would
    // close each session, unlock each key buffer and free each worker's stack, one call
    // at a time, contending for the address space (milliseconds, where the process's
    // end takes a fraction), and waiting for each session to say goodbye took longer.
    std::mem::forget((runtime, kept));
    drop(state);
    Ok(u8::try_from(code).unwrap_or(1))
}
