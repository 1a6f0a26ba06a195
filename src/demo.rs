//! `seatwarden demo`: the whole job on an embedded example, with nothing to
//! install. Starts the in-process sandbox workspace seeded with the drift a real
//! workspace collects, then shows the plan (grouped by drift kind, with reasons),
//! applies and verifies it, prints the drift report, and plans again — which must
//! come back empty. The state database stays in a directory the demo prints, so
//! `seatwarden report` can be run against it afterwards.

use std::path::{Path, PathBuf};

use crate::config::{Config, ConfigError};
use crate::report::{self, Report};
use crate::run::{self, Mode, RunError};
use crate::sandbox::{self, Sandbox, SandboxError, SandboxOptions};
use crate::store::{Store, StoreError};

const DIRECTORY: &str = include_str!("../config/demo/directory.json");
const WORKSPACE: &str = include_str!("../config/demo/workspace.json");
const CONFIG: &str = include_str!("../config/demo/seatwarden.toml");
const TOKEN: &str = "demo-token";

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("preparing the demo directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{} holds files `seatwarden demo` did not make (it has no {MARKER} file): the demo \
         replaces seatwarden.db, seatwarden.toml and directory.json in its directory. Give \
         --dir a new or empty directory",
        path.display()
    )]
    NotADemoDirectory { path: PathBuf },
    #[error("writing to stdout: {0}")]
    Stdout(#[from] std::io::Error),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Run(#[from] RunError),
}

/// What the demo ends with.
#[derive(Debug)]
pub struct DemoOutcome {
    pub dir: PathBuf,
    pub first_plan: Report,
    pub reconcile: Report,
    pub final_plan: Report,
}

impl DemoOutcome {
    /// The workspace converged: everything applied, nothing failed, nothing left to do.
    pub fn converged(&self) -> bool {
        self.reconcile.summary.actions_failed == 0
            && self.reconcile.summary.actions_held == 0
            && self.final_plan.summary.actions_planned == 0
    }
}

fn write(dir: &Path, name: &str, text: &str) -> Result<PathBuf, DemoError> {
    let path = dir.join(name);
    std::fs::write(&path, text).map_err(|source| DemoError::Io {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

/// The file that marks a directory as the demo's own, so a second demo may
/// replace its state.
const MARKER: &str = ".seatwarden-demo";

/// Lays out the demo directory: the example directory export, the sandbox seed, and
/// a configuration pointing at `workspace_url`. Any earlier demo state is removed so
/// every demo starts from the same drift; a directory the demo did not make and
/// that is not empty is refused (it may be someone's real state).
pub fn prepare(dir: &Path, workspace_url: &str) -> Result<PathBuf, DemoError> {
    let io = |source| DemoError::Io {
        path: dir.to_owned(),
        source,
    };
    let empty = match std::fs::read_dir(dir) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => return Err(io(e)),
    };
    if !empty && !dir.join(MARKER).exists() {
        return Err(DemoError::NotADemoDirectory {
            path: dir.to_owned(),
        });
    }
    std::fs::create_dir_all(dir).map_err(io)?;
    write(
        dir,
        MARKER,
        "Made by `seatwarden demo`, which replaces the state in this directory each time.\n",
    )?;
    for stale in ["seatwarden.db", "seatwarden.db-wal", "seatwarden.db-shm"] {
        let path = dir.join(stale);
        if path.exists() {
            std::fs::remove_file(&path).map_err(|source| DemoError::Io { path, source })?;
        }
    }
    write(dir, "directory.json", DIRECTORY)?;
    write(dir, "workspace.json", WORKSPACE)?;
    let config = CONFIG.replace("http://127.0.0.1:0/scim/v2", workspace_url);
    let path = write(dir, "seatwarden.toml", &config)?;
    // It holds the sandbox's token inline: owner-only, like any configuration
    // with a secret in it (one others can read is warned about at each load).
    restrict_to_owner(&path)?;
    Ok(path)
}

#[cfg(unix)]
fn restrict_to_owner(path: &Path) -> Result<(), DemoError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
        DemoError::Io {
            path: path.to_owned(),
            source,
        }
    })
}

#[cfg(not(unix))]
fn restrict_to_owner(_path: &Path) -> Result<(), DemoError> {
    Ok(())
}

/// Runs the demo, printing each step to stdout (`colour` on a TTY).
pub async fn run(dir: &Path, colour: bool) -> Result<DemoOutcome, DemoError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|source| DemoError::Io {
            path: dir.to_owned(),
            source,
        })?;
    let port = listener
        .local_addr()
        .map_err(|source| DemoError::Io {
            path: dir.to_owned(),
            source,
        })?
        .port();
    let url = format!("http://127.0.0.1:{port}/scim/v2");
    let config_path = prepare(dir, &url)?;
    let seed = sandbox::load_seed(&dir.join("workspace.json"))?;
    let sandbox = Sandbox::start(
        listener,
        SandboxOptions {
            token: TOKEN.to_owned(),
            ..SandboxOptions::default()
        },
        seed,
    )
    .await?;
    let config = Config::load_with_env(&config_path, Some(Default::default()))?;

    outln!("seatwarden demo")?;
    outln!(
        "  directory: {} (50 people)",
        config_path.with_file_name("directory.json").display()
    )?;
    outln!(
        "  workspace: sandbox SCIM 2.0 workspace at {}",
        sandbox.base_url()
    )?;
    outln!("  state:     {}", config.state.path.display())?;

    let result = steps(&config, colour).await;
    sandbox.shutdown().await;
    let (first_plan, reconcile, final_plan) = result?;
    Ok(DemoOutcome {
        dir: dir.to_owned(),
        first_plan,
        reconcile,
        final_plan,
    })
}

async fn steps(config: &Config, colour: bool) -> Result<(Report, Report, Report), DemoError> {
    let tz = config.report_timezone()?;
    let admin = config.admin_command();
    outln!("\n━━ 1. plan: what differs and why (nothing is written) ━━\n")?;
    let first = run::execute(config, Store::open(&config.state.path)?, Mode::Plan).await?;
    out!("{}", report::render_text(&first.report, tz, &admin, colour))?;

    outln!("\n━━ 2. reconcile: apply (journaled), verify, report ━━\n")?;
    let reconcile = run::execute(config, Store::open(&config.state.path)?, Mode::Reconcile).await?;
    out!(
        "{}",
        report::render_text(&reconcile.report, tz, &admin, colour)
    )?;

    outln!("\n━━ 3. plan again: a converged workspace plans nothing ━━\n")?;
    let last = run::execute(config, Store::open(&config.state.path)?, Mode::Plan).await?;
    out!("{}", report::render_text(&last.report, tz, &admin, colour))?;
    Ok((first.report, reconcile.report, last.report))
}
