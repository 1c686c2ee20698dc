//! Server processes: spawning (as an unprivileged user when we are root, since PostgreSQL
//! refuses to run as root), signalling, reaping, free ports, and leaving the terminal.
//!
//! Every server is started with a parent-death signal, so a test process that is killed
//! (a timeout, Ctrl-C) takes its servers with it instead of leaking them.
#![allow(unsafe_code)] // libc calls: geteuid, getpwnam, kill, prctl; each is commented.

use std::ffi::CString;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// The account servers run as when the tests run as root.
const UNPRIVILEGED_USER: &str = "nobody";

/// `(uid, gid)` to run servers as: `nobody` when we are root, else `None` (ourselves).
pub fn server_user() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let name = CString::new(UNPRIVILEGED_USER).expect("no NUL");
    // SAFETY: `name` is a valid C string; the returned record is read at once, before any
    // other getpw* call could overwrite it.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(
        !pw.is_null(),
        "user `{UNPRIVILEGED_USER}` is missing; PostgreSQL cannot run as root"
    );
    // SAFETY: checked non-null above.
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    Some((uid, gid))
}

/// Where a server's files live.
#[derive(Debug)]
pub(crate) enum Home {
    /// A test's: removed when the server drops.
    Temporary(tempfile::TempDir),
    /// The local stack's: its data survives restarts.
    Kept(std::path::PathBuf),
}

impl Home {
    pub(crate) fn path(&self) -> &std::path::Path {
        match self {
            Self::Temporary(dir) => dir.path(),
            Self::Kept(dir) => dir,
        }
    }
}

/// A server's process, behind a lock so that a test can stop and restart the server while
/// other tasks of the same test hold shared references to it (sending load, say).
#[derive(Debug, Default)]
pub(crate) struct ServerProcess(std::sync::Mutex<Option<Child>>);

impl ServerProcess {
    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Child>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Spawns `command` as the server user (see [`spawn_server`]) into the slot.
    pub(crate) fn spawn(&self, command: Command) {
        *self.slot() = Some(spawn_server(command));
    }

    pub(crate) fn take(&self) -> Option<Child> {
        self.slot().take()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.slot().is_none()
    }

    pub(crate) fn is_running(&self) -> bool {
        self.slot()
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Polls `probe` every `every` until it says the server answers (true), the process exits
    /// (false, and the slot is emptied) or `within` passes (false).
    pub(crate) async fn wait_ready<F, Fut>(
        &self,
        within: Duration,
        every: Duration,
        mut probe: F,
    ) -> bool
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if !self.is_running() {
                *self.slot() = None;
                return false;
            }
            if probe().await {
                return true;
            }
            tokio::time::sleep(every).await;
        }
        false
    }

    /// Sends `signal` and waits for the exit, SIGKILL after `grace` ([`stop_child`]), off the
    /// async runtime: the wait polls.
    pub(crate) async fn stop(&self, signal: libc::c_int, grace: Duration) {
        let Some(mut child) = self.take() else {
            return;
        };
        tokio::task::spawn_blocking(move || stop_child(&mut child, signal, grace))
            .await
            .expect("stopping a server");
    }

    /// [`Self::stop`] for `Drop`, where nothing can be awaited.
    pub(crate) fn stop_now(&self, signal: libc::c_int, grace: Duration) {
        if let Some(mut child) = self.take() {
            stop_child(&mut child, signal, grace);
        }
    }
}

/// File in each server directory naming the test process that owns it.
const OWNER_FILE: &str = "kurz-owner.pid";

/// A temporary directory for one server, marked with our pid so a later run can tell it was
/// left behind (see [`sweep_leftovers`]) and handed to the server user.
pub fn server_dir(prefix: &str) -> tempfile::TempDir {
    sweep_leftovers();
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("creating a temp dir");
    std::fs::write(dir.path().join(OWNER_FILE), std::process::id().to_string())
        .expect("writing the owner file");
    hand_over(dir.path());
    dir
}

/// Removes server directories whose test process is gone: a test killed by a timeout or
/// SIGKILL never runs its destructors, and each copy of a cluster is tens of megabytes. Its
/// servers died with it (parent-death signal), so only the files remain. Runs once per process.
fn sweep_leftovers() {
    static SWEEP: std::sync::Once = std::sync::Once::new();
    SWEEP.call_once(|| {
        let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if !["kurz-pg-", "kurz-redis-", "kurz-nginx-", "kurz-pgbouncer-"]
                .iter()
                .any(|prefix| name.starts_with(prefix))
            {
                continue;
            }
            let owner = std::fs::read_to_string(entry.path().join(OWNER_FILE))
                .ok()
                .and_then(|pid| pid.trim().parse::<libc::pid_t>().ok());
            if owner.is_some_and(|pid| !is_alive(pid)) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    });
}

/// Whether process `pid` exists (ours or not).
pub fn is_alive(pid: libc::pid_t) -> bool {
    // SAFETY: signal 0 only checks that the process exists; nothing is delivered.
    let alive = unsafe { libc::kill(pid, 0) } == 0;
    // EPERM means it exists but belongs to someone else.
    alive || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Gives `path` to the server user, if servers run as someone else.
pub fn hand_over(path: &std::path::Path) {
    if let Some((uid, gid)) = server_user() {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    }
}

/// Runs `command` as the server user, killed by SIGKILL if the spawning thread dies.
pub fn spawn_server(mut command: Command) -> Child {
    if let Some((uid, gid)) = server_user() {
        command.uid(uid).gid(gid);
    }
    spawn_child(command)
}

/// Runs `command` as ourselves, killed by SIGKILL if the spawning thread dies: for programs
/// that do not mind root (chromedriver).
pub fn spawn_child(mut command: Command) -> Child {
    // SAFETY: prctl is async-signal-safe, and this closure runs in the child between fork and
    // exec (after any uid switch, which would otherwise clear the setting).
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {:?}: {e}", command.get_program()))
}

/// SIGKILL to every process of the group `child` leads (it was spawned with
/// `process_group(0)`), including descendants that outlived it.
pub fn kill_group(child: &Child) {
    let Ok(group) = libc::pid_t::try_from(child.id()) else {
        return;
    };
    // SAFETY: kill has no memory preconditions; a group id is not reused while any member of
    // the group lives, and with none left this is a harmless ESRCH.
    unsafe { libc::kill(-group, libc::SIGKILL) };
}

/// Runs `command` to completion as the server user, panicking with its output on failure.
pub fn run_as_server_user(mut command: Command) {
    if let Some((uid, gid)) = server_user() {
        command.uid(uid).gid(gid);
    }
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("running {:?}: {e}", command.get_program()));
    assert!(
        output.status.success(),
        "{:?} failed: {}\n{}",
        command.get_program(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Sends `signal` to `child` and waits for it to exit, SIGKILL after `grace`.
pub fn stop_child(child: &mut Child, signal: libc::c_int, grace: Duration) {
    if child.try_wait().ok().flatten().is_some() {
        return;
    }
    let pid = libc::pid_t::try_from(child.id()).expect("pid fits");
    // SAFETY: kill has no memory preconditions; the pid is our own unreaped child, so it
    // cannot have been reused.
    unsafe { libc::kill(pid, signal) };
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Starts a session of our own, so a Ctrl-C at the terminal (sent to its whole foreground
/// process group) does not reach us: the scripts stop their services first and their servers
/// after, with SIGTERM.
pub fn leave_terminal() {
    // SAFETY: setsid has no memory preconditions; it fails harmlessly (EPERM) when we already
    // lead a process group.
    unsafe { libc::setsid() };
}

/// The program `name`: Debian keeps daemons such as nginx and pgbouncer in /usr/sbin, which is
/// not on every user's PATH; elsewhere, whatever the PATH finds.
pub fn sbin_program(name: &str) -> std::path::PathBuf {
    let sbin = std::path::Path::new("/usr/sbin").join(name);
    if sbin.exists() { sbin } else { name.into() }
}

/// A port that was free a moment ago. Servers that lose the race fail to bind and the caller
/// retries with another port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding an ephemeral port")
}
