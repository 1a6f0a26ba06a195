//! `seatwarden demo`: the whole job on an embedded example, with nothing to
//! install. Starts the in-process sandbox workspace seeded with the drift a real
//! workspace collects, then shows the plan (grouped by drift kind, with reasons),
//! applies and verifies it, prints the drift report, and plans again — which must
//! come back empty. The state database stays in a directory the demo prints, so
//! `seatwarden report` can be run against it afterwards; beside it are the
//! workspace it started from (`workspace-drifted.json`) and the one it left
//! (`workspace.json`), both seeds for `seatwarden sandbox --seed`, so `plan` and
//! `reconcile` can be rehearsed against the demo's state ([`closing_text`]).
//!
//! One demo at a time uses a directory: each holds an exclusive lock on its
//! `.seatwarden-demo.lock` while it runs (released however the process ends), and
//! a second is refused, as replacing the state under the first would break both.

use std::fs::{File, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::config::{Config, ConfigError};
use crate::report::{self, Report};
use crate::run::{self, Mode, RunError};
use crate::sandbox::{self, Sandbox, SandboxError, SandboxOptions};
use crate::store::{Store, StoreError};

const DIRECTORY: &str = include_str!("../config/demo/directory.json");
const WORKSPACE: &str = include_str!("../config/demo/workspace.json");
const CONFIG: &str = include_str!("../config/demo/seatwarden.toml");
const TOKEN: &str = "demo-token";
/// The seed the demo starts from: the drift.
const DRIFTED_SEED: &str = "workspace-drifted.json";
/// The workspace as the demo left it, written when it ends.
const FINAL_SEED: &str = "workspace.json";
/// Held locked by the demo using the directory.
const LOCK: &str = ".seatwarden-demo.lock";

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("preparing the demo directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{} holds files `seatwarden demo` did not make (it has no {MARKER} file): the demo \
         replaces seatwarden.db, seatwarden.toml, directory.json and the workspace files in \
         its directory. Give --dir a new or empty directory",
        path.display()
    )]
    NotADemoDirectory { path: PathBuf },
    #[error(
        "{} is a file, not a directory: give --dir a directory of its own (a new one is \
         made), such as ./seatwarden-demo",
        path.display()
    )]
    NotADirectory { path: PathBuf },
    #[error(
        "{} {why}: whoever can write there could replace the demo's files with links to \
         your own files, which the demo would then overwrite. Give --dir a directory of \
         your own (the default, ./seatwarden-demo, or one under your home)",
        path.display()
    )]
    NotPrivate { path: PathBuf, why: String },
    #[error(
        "another `seatwarden demo`{} is using {}: two at once would replace each other's \
         state. Wait for it to finish, or give this one another directory with --dir",
        holder.map(|pid| format!(" (process {pid})")).unwrap_or_default(),
        path.display()
    )]
    Busy { path: PathBuf, holder: Option<u32> },
    #[error("reading the demo's workspace from {url} to write {}: {message}", path.display())]
    Export {
        url: String,
        path: PathBuf,
        message: String,
    },
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
    /// The loopback port the demo's sandbox listened on, which the demo's
    /// configuration names: a sandbox started there again serves its state.
    pub port: u16,
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

/// Refuses a directory that is not empty and that no demo made (it may be
/// someone's real state), and one others could have put files in
/// ([`check_private`]). A lock file alone is a demo's that is starting.
fn check_ours(dir: &Path) -> Result<(), DemoError> {
    check_private(dir)?;
    let empty = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .all(|entry| entry.file_name() == LOCK),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(source) => {
            return Err(DemoError::Io {
                path: dir.to_owned(),
                source,
            });
        }
    };
    if !empty && !dir.join(MARKER).exists() {
        return Err(DemoError::NotADemoDirectory {
            path: dir.to_owned(),
        });
    }
    Ok(())
}

/// Refuses an existing `dir` that every user may write to, or that another user
/// owns: the demo writes its files by name and would follow a link someone put
/// there in its place (to a file of the user running it), and its lock file
/// too. Nor may a folder above it let another user move it away and put one of
/// theirs in its place: one owned by another user (root aside), or one every
/// user may write to without the sticky bit (`/tmp` has it: there only a
/// folder's owner may rename it). Ownership is compared with the owner of
/// `/proc/self` (this process's user); where there is no `/proc`, only the
/// modes are checked.
#[cfg(unix)]
fn check_private(dir: &Path) -> Result<(), DemoError> {
    use std::os::unix::fs::MetadataExt;
    let Ok(folder) = std::fs::metadata(dir) else {
        return Ok(());
    };
    let refused = |why: String| {
        Err(DemoError::NotPrivate {
            path: dir.to_owned(),
            why,
        })
    };
    if folder.mode() & 0o002 != 0 {
        return refused(format!(
            "can be written to by every user of this machine (mode {:04o})",
            folder.mode() & 0o7777
        ));
    }
    let me = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
    if let Some(me) = me
        && folder.uid() != me
    {
        return refused(format!(
            "belongs to another user (uid {}, not {me})",
            folder.uid()
        ));
    }
    // Made absolute, without links, by the caller: these are the folders the
    // demo's files are reached through.
    for above in dir.ancestors().skip(1) {
        let Ok(folder) = std::fs::metadata(above) else {
            continue;
        };
        let mode = folder.mode();
        if mode & 0o002 != 0 && mode & 0o1000 == 0 {
            return refused(format!(
                "is in {}, which every user of this machine can write to (mode {:04o}, \
                 without the sticky bit): anyone could move the demo's directory away and \
                 put theirs in its place",
                above.display(),
                mode & 0o7777
            ));
        }
        if let Some(me) = me
            && folder.uid() != me
            && folder.uid() != 0
        {
            return refused(format!(
                "is in {}, which belongs to another user (uid {}): they could move the \
                 demo's directory away and put theirs in its place",
                above.display(),
                folder.uid()
            ));
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_dir: &Path) -> Result<(), DemoError> {
    Ok(())
}

/// Creates `dir` (and the folders above it that are missing) for its owner only
/// (0700 on Unix): under a loose umask a folder the demo made would otherwise be
/// one [`check_private`] refuses the next time.
fn make_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// The demo's hold on its directory: while it lives, another demo is refused
/// there. The lock goes with the file handle, so a demo that is killed leaves
/// the file but not the lock.
#[derive(Debug)]
pub struct DemoLock {
    _file: File,
    dir: PathBuf,
}

impl DemoLock {
    /// The directory as checked: absolute, with no link in it. The demo works
    /// in it by this path, so a link given as `--dir` (or in a folder above it)
    /// that someone points elsewhere afterwards changes nothing.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// `dir` made if missing ([`make_private_dir`]), then checked as it now is
/// ([`check_ours`]), and its path resolved. Checked before it is made, a folder
/// someone else made in the moment between would be taken as the demo's own.
fn take_dir(dir: &Path) -> Result<PathBuf, DemoError> {
    let io = |source| DemoError::Io {
        path: dir.to_owned(),
        source,
    };
    // A file there fails the making with "File exists", which names no file.
    if std::fs::metadata(dir).is_ok_and(|metadata| !metadata.is_dir()) {
        return Err(DemoError::NotADirectory {
            path: dir.to_owned(),
        });
    }
    make_private_dir(dir).map_err(io)?;
    let dir = std::fs::canonicalize(dir).map_err(io)?;
    check_ours(&dir)?;
    Ok(dir)
}

/// Takes the directory for this demo: creates it (refused if it is someone
/// else's, see [`check_ours`]) and locks its lock file, or says which process
/// holds it.
pub fn lock(dir: &Path) -> Result<DemoLock, DemoError> {
    let dir = take_dir(dir)?;
    let path = dir.join(LOCK);
    let io = |source| DemoError::Io {
        path: path.clone(),
        source,
    };
    let mut file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut text = String::new();
            // Best effort: only for the message (Windows does not let it be read).
            let holder = file
                .read_to_string(&mut text)
                .ok()
                .and_then(|_| text.trim().parse().ok());
            return Err(DemoError::Busy {
                path: dir.to_owned(),
                holder,
            });
        }
        Err(TryLockError::Error(source)) => return Err(io(source)),
    }
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()))
        .map_err(io)?;
    Ok(DemoLock { _file: file, dir })
}

/// How long [`lock_past_own_forks`] waits for a lock this process seems to hold.
const OWN_LOCK_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// [`lock`], waiting up to [`OWN_LOCK_GRACE`] while the holder named is this very
/// process. The lock is `flock`'s, held by the open file: a demo that has just
/// ended in this process still holds it through any child another thread forked
/// meanwhile, until that child's `exec` closes its copy of the descriptor. On a
/// loaded machine that can take a moment, and a second demo run right after the
/// first (in one process: the tests, a program using the library) was refused as
/// busy by itself. Another holder, or this process past the grace, is refused.
async fn lock_past_own_forks(dir: &Path) -> Result<DemoLock, DemoError> {
    let deadline = tokio::time::Instant::now() + OWN_LOCK_GRACE;
    loop {
        match lock(dir) {
            Err(DemoError::Busy {
                holder: Some(pid), ..
            }) if pid == std::process::id() && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            taken => return taken,
        }
    }
}

/// Lays out the demo directory: the example directory export, the sandbox seed, and
/// a configuration pointing at `workspace_url`. Any earlier demo state is removed so
/// every demo starts from the same drift; a directory the demo did not make and
/// that is not empty is refused (it may be someone's real state). [`run`](fn@run) holds
/// the directory's [`lock`] first.
pub fn prepare(dir: &Path, workspace_url: &str) -> Result<PathBuf, DemoError> {
    let dir = &take_dir(dir)?;
    write(
        dir,
        MARKER,
        "Made by `seatwarden demo`, which replaces the state in this directory each time.\n",
    )?;
    // The workspace an earlier demo left belongs with the state removed here.
    for stale in [
        "seatwarden.db",
        "seatwarden.db-wal",
        "seatwarden.db-shm",
        FINAL_SEED,
    ] {
        let path = dir.join(stale);
        if path.exists() {
            std::fs::remove_file(&path).map_err(|source| DemoError::Io { path, source })?;
        }
    }
    write(dir, "directory.json", DIRECTORY)?;
    write(dir, DRIFTED_SEED, WORKSPACE)?;
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
pub async fn run(requested: &Path, colour: bool) -> Result<DemoOutcome, DemoError> {
    let lock = lock_past_own_forks(requested).await?;
    let dir = lock.dir();
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
    let seed = sandbox::load_seed(&dir.join(DRIFTED_SEED))?;
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

    // Boxed: the runs' futures are large, and inline they would be carried on
    // the stack of whatever polls the demo (a test thread's is 2 MiB).
    let result = Box::pin(steps(&config, colour)).await;
    // Whatever the steps did, the file shows the workspace as they left it.
    let exported = Box::pin(export_seed(&sandbox.base_url(), dir)).await;
    sandbox.shutdown().await;
    let (first_plan, reconcile, final_plan) = result?;
    exported?;
    Ok(DemoOutcome {
        dir: requested.to_owned(),
        port,
        first_plan,
        reconcile,
        final_plan,
    })
}

/// Writes what the workspace at `base` holds to [`FINAL_SEED`] in `dir` as a
/// seed, read over SCIM as a workspace is exported for a rehearsal: every User
/// and Group, page by page.
async fn export_seed(base: &url::Url, dir: &Path) -> Result<(), DemoError> {
    let base = base.as_str().trim_end_matches('/');
    let failed = |message: String| DemoError::Export {
        url: base.to_owned(),
        path: dir.join(FINAL_SEED),
        message,
    };
    let http = crate::http::client(std::time::Duration::from_secs(10), true, None)
        .map_err(|e| failed(format!("HTTP client: {e}")))?;
    let mut seed = serde_json::Map::new();
    for (collection, key) in [("Users", "users"), ("Groups", "groups")] {
        let mut resources: Vec<Value> = Vec::new();
        loop {
            let url = format!(
                "{base}/{collection}?startIndex={}&count=100",
                resources.len() + 1
            );
            let answer = http
                .get(&url)
                .bearer_auth(TOKEN)
                .send()
                .await
                .and_then(reqwest::Response::error_for_status)
                .map_err(|e| failed(format!("GET /{collection}: {e}")))?;
            let text = answer
                .text()
                .await
                .map_err(|e| failed(format!("GET /{collection}: {e}")))?;
            let page: Value = serde_json::from_str(&text)
                .map_err(|e| failed(format!("GET /{collection}: not JSON: {e}")))?;
            let items = page
                .get("Resources")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let total = page.get("totalResults").and_then(Value::as_u64);
            if items.is_empty() {
                break;
            }
            resources.extend(items);
            if total.is_none_or(|total| resources.len() as u64 >= total) {
                break;
            }
        }
        seed.insert(key.to_owned(), Value::Array(resources));
    }
    let text = serde_json::to_string_pretty(&Value::Object(seed))
        .map_err(|e| failed(format!("as JSON: {e}")))?;
    write(dir, FINAL_SEED, &format!("{text}\n"))?;
    Ok(())
}

/// What the demo prints last: which file is which, the commands that read its
/// state, and how to serve its workspace again so `plan` and `reconcile` have
/// one to talk to (its configuration names the port the demo's sandbox had).
pub fn closing_text(outcome: &DemoOutcome) -> String {
    let dir = outcome.dir.display();
    let config = outcome.dir.join("seatwarden.toml");
    let config = config.display();
    let final_seed = outcome.dir.join(FINAL_SEED);
    let drifted_seed = outcome.dir.join(DRIFTED_SEED);
    let port = outcome.port;
    format!(
        "State kept in {dir}:\n\
         \x20 seatwarden.toml          the configuration (workspace.url on port {port})\n\
         \x20 seatwarden.db            the state: runs, actions, the drift report\n\
         \x20 {FINAL_SEED}           the workspace as the demo left it\n\
         \x20 {DRIFTED_SEED}   the workspace it started from\n\
         \n\
         Read the state:\n\
         \x20 seatwarden --config {config} report\n\
         \x20 seatwarden --config {config} status\n\
         \x20 seatwarden --config {config} explain 00u1004\n\
         \n\
         Plan or reconcile again: serve the workspace first, in another terminal,\n\
         \x20 seatwarden sandbox --seed {} --port {port} --token {TOKEN}\n\
         then\n\
         \x20 seatwarden --config {config} plan\n\
         (--seed {} serves the drift the demo started from; `seatwarden demo` starts over.)\n",
        final_seed.display(),
        drifted_seed.display(),
    )
}

async fn steps(config: &Config, colour: bool) -> Result<(Report, Report, Report), DemoError> {
    let tz = config.report_timezone()?;
    let admin = config.admin_command();
    outln!("\n━━ 1. plan: what differs and why (nothing is written) ━━\n")?;
    let first = run::execute(config, Store::open(&config.state.path)?, Mode::Plan).await?;
    out!("{}", report::render_text(&first.report, tz, &admin, colour))?;

    outln!("\n━━ 2. reconcile: apply (journaled), verify, report ━━\n")?;
    // Its report lists the drift as the run found it, before its writes: read
    // after "converged", "account is still active" would look like a failure.
    outln!(
        "(The drift it lists is what it found before writing anything; its actions \
         say what it applied, and step 3 shows what is left.)\n"
    )?;
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    /// `--dir /tmp/seatwarden-demo` (the help's example) in a folder other users
    /// can write to, or made by one of them beforehand: they could put the demo's
    /// marker there and a `seatwarden.toml` that is a link to a file of the user
    /// running the demo, which the demo then overwrote (and made 0600). Such a
    /// folder is refused before anything is written.
    #[cfg(unix)]
    #[test]
    fn a_demo_directory_others_can_write_to_is_refused_before_anything_is_written() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let victim = root.path().join("authorized_keys");
        std::fs::write(&victim, "mine\n").unwrap();
        let shared = root.path().join("seatwarden-demo");
        std::fs::create_dir(&shared).unwrap();
        std::fs::write(shared.join(MARKER), "").unwrap();
        std::os::unix::fs::symlink(&victim, shared.join("seatwarden.toml")).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();

        let refused = prepare(&shared, "http://127.0.0.1:1/scim/v2");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "mine\n");
        assert!(
            matches!(refused, Err(DemoError::NotPrivate { .. })),
            "{refused:?}"
        );
        assert!(matches!(lock(&shared), Err(DemoError::NotPrivate { .. })));
    }

    /// `--dir` a new folder inside one every user may write to without the
    /// sticky bit: the demo made its directory private, but anyone could then
    /// rename it away and put their own in its place (its marker, and links
    /// named as the demo's files to files of the user running it), which the
    /// demo would write through. Refused before anything is written; in a
    /// sticky folder (as `/tmp` is), where only its owner may rename it, it is
    /// taken.
    #[cfg(unix)]
    #[test]
    fn a_demo_directory_in_a_folder_others_can_rename_it_in_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let open = root.path().join("shared");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let dir = open.join("seatwarden-demo");

        let locked = lock(&dir);
        assert!(
            matches!(&locked, Err(DemoError::NotPrivate { why, .. }) if why.contains("sticky")),
            "{locked:?}"
        );
        let refused = prepare(&dir, "http://127.0.0.1:1/scim/v2");
        assert!(
            matches!(refused, Err(DemoError::NotPrivate { .. })),
            "{refused:?}"
        );
        assert!(!dir.join("seatwarden.toml").exists());

        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let taken = lock(&dir);
        assert!(taken.is_ok(), "{taken:?}");
    }
}
