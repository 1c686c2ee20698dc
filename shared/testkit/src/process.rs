//! Server processes: spawning (as an unprivileged user when we are root, since PostgreSQL
//! refuses to run as root), signalling, reaping, and free ports.
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
    // SAFETY: prctl is async-signal-safe, and this closure runs in the child between fork and
    // exec (after the uid switch, which would otherwise clear the setting).
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

/// A port that was free a moment ago. Servers that lose the race fail to bind and the caller
/// retries with another port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding an ephemeral port")
}
