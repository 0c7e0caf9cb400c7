//! The programs `exec` starts: split into words (or given to `sh -c` when they need a
//! shell), started in the lab's namespace as the right user, their output shown line by line
//! under a prefix, and every one of them gone when the run ends, however it ends.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// How many of a program's last lines are kept, to quote when it fails.
const TAIL: usize = 20;

/// A command line: its words, or the whole line for `sh -c` when it uses the shell's syntax.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandLine {
    pub text: String,
    pub argv: Vec<String>,
    pub shell: bool,
}

impl CommandLine {
    /// Splits `text` as a shell would split plain words ('single', "double" quotes and
    /// backslashes); pipes, redirections, `$`, globs and `;` hand it to `sh -c` instead.
    pub fn parse(flag: &str, text: &str) -> Result<CommandLine, String> {
        let mut argv = Vec::new();
        let mut word = String::new();
        let mut in_word = false;
        let mut shell = false;
        let mut chars = text.chars();
        let mut quote: Option<char> = None;
        while let Some(c) = chars.next() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some('"'), '\\') => match chars.next() {
                    // Inside double quotes a backslash escapes only these (sh(1)).
                    Some(n @ ('$' | '`' | '"' | '\\' | '\n')) => word.push(n),
                    Some(n) => {
                        word.push('\\');
                        word.push(n);
                    }
                    None => word.push('\\'),
                },
                (Some('"'), '$' | '`') => {
                    shell = true;
                    word.push(c);
                }
                (Some(_), c) => word.push(c),
                (None, '\'' | '"') => {
                    quote = Some(c);
                    in_word = true;
                }
                (None, '\\') => {
                    if let Some(n) = chars.next() {
                        word.push(n);
                    }
                    in_word = true;
                }
                (None, c) if c.is_whitespace() => {
                    if in_word {
                        argv.push(std::mem::take(&mut word));
                        in_word = false;
                    }
                }
                (None, '|' | '&' | ';' | '<' | '>' | '$' | '`' | '*' | '?' | '(' | ')' | '~') => {
                    shell = true;
                    word.push(c);
                    in_word = true;
                }
                (None, c) => {
                    word.push(c);
                    in_word = true;
                }
            }
        }
        if quote.is_some() {
            return Err(format!(
                "{flag} {text:?}: a quote is not closed: close it, or quote the whole command \
                 once for your shell"
            ));
        }
        if in_word {
            argv.push(word);
        }
        if argv.is_empty() {
            return Err(format!(
                "{flag}: the command is empty: give the program to run"
            ));
        }
        Ok(CommandLine {
            text: text.trim().to_string(),
            argv,
            shell,
        })
    }

    /// The program's short name: `python3` of `python3 -m http.server`, `server` of
    /// `./server`.
    pub fn name(&self) -> String {
        let first = &self.argv[0];
        std::path::Path::new(first)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| first.clone())
    }
}

/// Where and as whom the lab's programs run.
#[derive(Clone, Copy, Debug, Default)]
pub struct Place {
    /// The server's network namespace, for setns() before exec (two hosts only).
    pub netns_fd: Option<std::os::fd::RawFd>,
    /// (uid, gid) to become before exec: the sudo user, or -Z USER.
    pub user: Option<(u32, u32)>,
}

/// One started program: its process, its output threads, the tail of what it printed.
pub struct Spawned {
    pub label: String,
    pub child: Child,
    pub pid: u32,
    pub status: Option<ExitStatus>,
    readers: Vec<JoinHandle<()>>,
    /// Its last lines, stderr ones marked true.
    pub tail: Arc<Mutex<VecDeque<(bool, String)>>>,
}

/// Why a program could not start: exit 2, naming it.
pub fn spawn_error(flag: &str, line: &CommandLine, e: &std::io::Error) -> String {
    let program = &line.argv[0];
    match e.kind() {
        std::io::ErrorKind::NotFound => format!(
            "{flag} {:?}: {program}: command not found (not on PATH, and no such file): give \
             the program's path",
            line.text
        ),
        std::io::ErrorKind::PermissionDenied => format!(
            "{flag} {:?}: {program}: not executable (permission denied): chmod +x it, or give \
             the interpreter (sh {program})",
            line.text
        ),
        _ => format!("{flag} {:?}: cannot start {program}: {e}", line.text),
    }
}

/// An error naming `line`'s program if it is neither on PATH nor an executable file (a
/// command run through `sh -c` is the shell's to find).
pub fn check_found(flag: &str, line: &CommandLine) -> Result<(), crate::error::Error> {
    use std::os::unix::fs::PermissionsExt;
    if line.shell {
        return Ok(());
    }
    let program = &line.argv[0];
    let candidates: Vec<std::path::PathBuf> = if program.contains('/') {
        vec![program.into()]
    } else {
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).map(|d| d.join(program)).collect())
            .unwrap_or_default()
    };
    let mut kind = std::io::ErrorKind::NotFound;
    for c in candidates {
        if let Ok(meta) = std::fs::metadata(&c)
            && meta.is_file()
        {
            if meta.permissions().mode() & 0o111 != 0 {
                return Ok(());
            }
            kind = std::io::ErrorKind::PermissionDenied;
        }
    }
    Err(crate::error::Error::Usage(spawn_error(
        flag,
        line,
        &std::io::Error::from(kind),
    )))
}

impl Spawned {
    /// Starts `line`; its output goes to `out` as `PREFIX│ line`.
    pub fn start(
        label: &str,
        line: &CommandLine,
        place: Place,
        pidns: &PidNamespace,
        to_stderr: bool,
    ) -> std::io::Result<Spawned> {
        let mut cmd = if line.shell {
            let mut c = Command::new("sh");
            c.arg("-c").arg(&line.text);
            c
        } else {
            let mut c = Command::new(&line.argv[0]);
            c.args(&line.argv[1..]);
            c
        };
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let Place { netns_fd, user } = place;
        // SAFETY: only async-signal-safe system calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let fail = || Err(std::io::Error::last_os_error());
                if let Some(fd) = netns_fd
                    && libc::setns(fd, libc::CLONE_NEWNET) != 0
                {
                    return fail();
                }
                // A group of its own: a stop reaches what it started (a shell's children,
                // nginx's workers); the terminal's Ctrl-C reaches teardown, which stops it.
                libc::setpgid(0, 0);
                // Rust ignores SIGPIPE, and an ignored signal stays ignored across exec: the
                // program gets the default back, as a shell would start it.
                libc::signal(libc::SIGPIPE, libc::SIG_DFL);
                if let Some((uid, gid)) = user
                    && (libc::setgroups(0, std::ptr::null()) != 0
                        || libc::setresgid(gid, gid, gid) != 0
                        || libc::setresuid(uid, uid, uid) != 0)
                {
                    return fail();
                }
                // After the change of user: a change of credentials clears it.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return fail();
                }
                Ok(())
            });
        }
        let mut child = pidns.spawn_in(|| cmd.spawn())?;
        let pid = child.id();
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let mut readers = Vec::new();
        let prefix = format!("{label}│ ");
        let streams: [(bool, Option<Box<dyn std::io::Read + Send>>); 2] = [
            (
                false,
                child
                    .stdout
                    .take()
                    .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            ),
            (
                true,
                child
                    .stderr
                    .take()
                    .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            ),
        ];
        for (is_err, stream) in streams {
            let Some(stream) = stream else { continue };
            let tail = tail.clone();
            let prefix = prefix.clone();
            readers.push(std::thread::spawn(move || {
                crate::signals::block_in_this_thread();
                let mut reader = BufReader::new(stream);
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    match reader.read_until(b'\n', &mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    let text = String::from_utf8_lossy(&buf);
                    let text = text.trim_end_matches(['\n', '\r']).to_string();
                    let shown = format!("{prefix}{text}\n");
                    // One write per line, so lines of two programs never mix.
                    if to_stderr {
                        let _ = std::io::stderr().write_all(shown.as_bytes());
                    } else {
                        let mut out = std::io::stdout().lock();
                        let _ = out.write_all(shown.as_bytes());
                        let _ = out.flush();
                    }
                    let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
                    if t.len() == TAIL {
                        t.pop_front();
                    }
                    t.push_back((is_err, text));
                }
            }));
        }
        Ok(Spawned {
            label: label.to_string(),
            child,
            pid,
            status: None,
            readers,
            tail,
        })
    }

    /// Its exit status once it has exited (reaped), None while it runs.
    pub fn poll(&mut self) -> Option<ExitStatus> {
        if self.status.is_none()
            && let Ok(Some(status)) = self.child.try_wait()
        {
            self.status = Some(status);
        }
        self.status
    }

    /// Sends `signal` to its process group (what it started too).
    pub fn signal(&self, signal: i32) {
        if self.status.is_none() {
            unsafe {
                libc::kill(-(self.pid as i32), signal);
                libc::kill(self.pid as i32, signal);
            }
        }
    }

    /// Kills it and what it started, and reaps it.
    pub fn kill(&mut self) {
        self.signal(libc::SIGKILL);
        if self.status.is_none() {
            self.status = self.child.wait().ok();
        }
    }

    /// Waits for its output to end (its pipes closed: it and its children gone), for a
    /// second at most: a process teardown could not reach may hold a pipe open for ever.
    pub fn join_output(&mut self) {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(1);
        while self.readers.iter().any(|r| !r.is_finished()) && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        for r in self.readers.drain(..) {
            if r.is_finished() {
                let _ = r.join();
            }
        }
    }

    /// Its last lines, stderr ones first choice: `n` of them.
    pub fn last_lines(&self, n: usize) -> Vec<String> {
        let t = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        let errs: Vec<&String> = t.iter().filter(|(e, _)| *e).map(|(_, l)| l).collect();
        let pick: Vec<&String> = if errs.is_empty() {
            t.iter().map(|(_, l)| l).collect()
        } else {
            errs
        };
        let skip = pick.len().saturating_sub(n);
        pick.into_iter().skip(skip).cloned().collect()
    }
}

/// An exit status in words: `exit status 1`, `killed by SIGTERM`.
pub fn status_text(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => format!("killed by {}", signal_name(sig)),
        _ => status.to_string(),
    }
}

pub fn signal_name(sig: i32) -> String {
    match sig {
        libc::SIGINT => "SIGINT".into(),
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGKILL => "SIGKILL".into(),
        libc::SIGHUP => "SIGHUP".into(),
        libc::SIGQUIT => "SIGQUIT".into(),
        libc::SIGPIPE => "SIGPIPE".into(),
        libc::SIGSEGV => "SIGSEGV".into(),
        libc::SIGABRT => "SIGABRT".into(),
        n => format!("signal {n}"),
    }
}

/// A PID namespace for the lab's programs, and its init: when teardown dies, even by
/// SIGKILL, init gets SIGKILL (PR_SET_PDEATHSIG) and with it the kernel kills every process
/// of the namespace (pid_namespaces(7)), grandchildren a program left behind included.
pub struct PidNamespace {
    init: Option<libc::pid_t>,
    /// teardown's own PID namespace and the lab's, for setns() around each spawn: while
    /// the lab's is the one for children, this process may not start a thread.
    own: Option<std::os::fd::OwnedFd>,
    lab: Option<std::os::fd::OwnedFd>,
}

fn open_ns(path: &str) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let c = std::ffi::CString::new(path).ok()?;
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    (fd >= 0).then(|| unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

impl PidNamespace {
    /// Call it while the process has one thread (fork). Inactive where the kernel refuses a
    /// PID namespace: then the programs' own PR_SET_PDEATHSIG is what remains.
    pub fn create() -> PidNamespace {
        let none = PidNamespace {
            init: None,
            own: None,
            lab: None,
        };
        let Some(own) = open_ns("/proc/self/ns/pid") else {
            return none;
        };
        // The way back must be open before the way in: inside a user namespace of our own
        // (no root) the host's PID namespace refuses setns(), and a process whose children's
        // namespace is not its own may not start a thread.
        use std::os::fd::AsRawFd;
        if unsafe { libc::setns(own.as_raw_fd(), libc::CLONE_NEWPID) } != 0 {
            return none;
        }
        if unsafe { libc::unshare(libc::CLONE_NEWPID) } != 0 {
            return none;
        }
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // The namespace's init: reaps orphans until teardown kills it.
            unsafe {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
                loop {
                    if libc::waitpid(-1, std::ptr::null_mut(), 0) < 0 {
                        libc::sleep(1);
                    }
                }
            }
        }
        let lab = (pid > 0)
            .then(|| open_ns(&format!("/proc/{pid}/ns/pid")))
            .flatten();
        // Back to our own for children: threads can be made again.
        unsafe { libc::setns(own.as_raw_fd(), libc::CLONE_NEWPID) };
        match lab {
            Some(lab) => PidNamespace {
                init: Some(pid),
                own: Some(own),
                lab: Some(lab),
            },
            None => {
                if pid > 0 {
                    unsafe {
                        libc::kill(pid, libc::SIGKILL);
                        libc::waitpid(pid, std::ptr::null_mut(), 0);
                    }
                }
                none
            }
        }
    }

    pub fn active(&self) -> bool {
        self.init.is_some()
    }

    /// The namespace as /proc/PID/ns/pid links to it (`pid:[4026532317]`), to know its
    /// members.
    pub fn link(&self) -> Option<String> {
        let init = self.init?;
        std::fs::read_link(format!("/proc/{init}/ns/pid"))
            .ok()
            .map(|p| p.to_string_lossy().into_owned())
    }

    /// Runs `spawn` with the lab's PID namespace as the one its child is born in.
    pub fn spawn_in<T>(&self, spawn: impl FnOnce() -> T) -> T {
        use std::os::fd::AsRawFd;
        let (Some(own), Some(lab), Some(_)) = (&self.own, &self.lab, self.init) else {
            return spawn();
        };
        unsafe { libc::setns(lab.as_raw_fd(), libc::CLONE_NEWPID) };
        let out = spawn();
        unsafe { libc::setns(own.as_raw_fd(), libc::CLONE_NEWPID) };
        out
    }

    /// Kills every process of the namespace (SIGKILL to its init). Reap teardown's own
    /// children next, then `reap`: init's end waits for every process of the namespace to
    /// be gone, zombies of teardown's included.
    pub fn kill_all(&mut self) {
        if let Some(pid) = self.init {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }

    /// Reaps init, once teardown's own children are reaped.
    pub fn reap(&mut self) {
        if let Some(pid) = self.init.take() {
            unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
        }
    }
}

impl Drop for PidNamespace {
    fn drop(&mut self) {
        self.kill_all();
        self.reap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_quotes_and_the_shell() {
        let c = CommandLine::parse("--server", "nginx -c './my conf' -g \"daemon off;\"").unwrap();
        assert_eq!(c.argv, ["nginx", "-c", "./my conf", "-g", "daemon off;"]);
        assert!(!c.shell);
        assert_eq!(c.name(), "nginx");
        let c = CommandLine::parse("--client", "curl -s http://x/ | head -1").unwrap();
        assert!(c.shell);
        assert_eq!(
            CommandLine::parse("--server", "./server 8000")
                .unwrap()
                .name(),
            "server"
        );
        let e = CommandLine::parse("--server", "  ").unwrap_err();
        assert!(e.contains("the command is empty"), "{e}");
        let e = CommandLine::parse("--server", "echo 'x").unwrap_err();
        assert!(e.contains("a quote is not closed"), "{e}");
    }
}
