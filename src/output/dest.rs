//! Where a command writes: one rule for `run -w`, `capture -o`, `annotate -o` and
//! `diagram --svg`, checked before any work starts.
//!
//! - `-` is standard output.
//! - A device or a FIFO (`/dev/null`, a named pipe) is written in place.
//! - A file is written through a temporary file beside it, renamed only when all went well,
//!   so a reader never sees half of it. The temporary file is made at the check, which proves
//!   the directory writable before a socket is opened or a packet read.
//! - A missing directory is refused with the `mkdir -p` that makes it; no command creates
//!   directories on its own, except `run` for its default `captures/`.

use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub enum Dest {
    Stdout,
    /// A device or a FIFO, written as it is.
    Special(PathBuf),
    /// A regular file, written through `tmp`.
    File {
        path: PathBuf,
        tmp: PathBuf,
        done: bool,
    },
}

impl Dest {
    /// Checks `path` (as given after `flag`, e.g. `-w`) and, for a file, creates its
    /// temporary file. The error is one line that names the user's path and the fix.
    pub fn check(flag: &str, path: &Path) -> Result<Dest, String> {
        if path.as_os_str() == "-" {
            return Ok(Dest::Stdout);
        }
        let shown = path.display();
        match fs::metadata(path) {
            Ok(m) if m.is_dir() => {
                return Err(format!("{flag} {shown}: is a directory; give a file name"));
            }
            Ok(m) if !m.is_file() => return Ok(Dest::Special(path.to_path_buf())),
            _ => {}
        }
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        if !dir.is_dir() {
            return Err(format!(
                "{flag} {shown}: the directory {} does not exist; create it first (mkdir -p {}) \
                 or choose another path",
                dir.display(),
                dir.display()
            ));
        }
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        remove_stale_parts(dir, &name);
        // One temporary file per process: parallel runs to one name must not share it.
        let tmp = dir.join(format!(".{name}.{}.part", std::process::id()));
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| cannot_write(flag, path, &e))?;
        Ok(Dest::File {
            path: path.to_path_buf(),
            tmp,
            done: false,
        })
    }

    pub fn is_stdout(&self) -> bool {
        matches!(self, Dest::Stdout)
    }

    /// The path the user gave, for messages (`standard output` for `-`).
    pub fn name(&self) -> String {
        match self {
            Dest::Stdout => "standard output".into(),
            Dest::Special(p) | Dest::File { path: p, .. } => p.display().to_string(),
        }
    }

    /// The user's path, when there is one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Dest::Stdout => None,
            Dest::Special(p) | Dest::File { path: p, .. } => Some(p),
        }
    }

    /// Opens what to write into: the temporary file, the device, or standard output.
    pub fn open(&self) -> io::Result<Box<dyn io::Write>> {
        Ok(match self {
            Dest::Stdout => Box::new(io::stdout().lock()),
            Dest::Special(p) => Box::new(OpenOptions::new().write(true).open(p)?),
            Dest::File { tmp, .. } => Box::new(OpenOptions::new().write(true).open(tmp)?),
        })
    }

    /// As `open`, for a writer on another thread (standard output unlocked).
    pub fn open_sendable(&self) -> io::Result<Box<dyn io::Write + Send>> {
        Ok(match self {
            Dest::Stdout => Box::new(io::stdout()),
            Dest::Special(p) => Box::new(OpenOptions::new().write(true).open(p)?),
            Dest::File { tmp, .. } => Box::new(OpenOptions::new().write(true).open(tmp)?),
        })
    }

    /// Writes `bytes` and commits them: the whole output in one go.
    pub fn write_all(mut self, bytes: &[u8]) -> io::Result<()> {
        {
            let mut w = self.open()?;
            w.write_all(bytes)?;
            w.flush()?;
        }
        self.commit()
    }

    /// Puts the finished file in place of the user's path. Without it (an error, a panic),
    /// dropping the `Dest` removes the temporary file.
    pub fn commit(&mut self) -> io::Result<()> {
        if let Dest::File { path, tmp, done } = self {
            fs::rename(&*tmp, &*path)?;
            *done = true;
        }
        Ok(())
    }
}

impl Drop for Dest {
    fn drop(&mut self) {
        if let Dest::File {
            tmp, done: false, ..
        } = self
        {
            let _ = fs::remove_file(tmp);
        }
    }
}

/// Removes `.NAME.PID.part` files beside `NAME` whose process is gone: a writer killed
/// with SIGKILL could not remove its own.
fn remove_stale_parts(dir: &Path, name: &str) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let prefix = format!(".{name}.");
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some(pid) = file
            .to_str()
            .and_then(|f| f.strip_prefix(&prefix))
            .and_then(|f| f.strip_suffix(".part"))
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if !alive {
            let _ = fs::remove_file(entry.path());
        }
    }
}

fn cannot_write(flag: &str, path: &Path, e: &io::Error) -> String {
    let why = match e.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => "permission denied".to_string(),
        Some(libc::EROFS) => "read-only file system".to_string(),
        Some(libc::ENOSPC) => "no space left on the device".to_string(),
        // "No such file or directory (os error 2)" → "no such file or directory"
        _ => {
            let text = e.to_string();
            let text = text.split(" (os error").next().unwrap_or_default();
            let mut chars = text.chars();
            chars
                .next()
                .map(|c| c.to_lowercase().chain(chars).collect())
                .unwrap_or_default()
        }
    };
    format!(
        "{flag} {}: cannot write there ({why}); choose a directory you can write to",
        path.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory of the test's own, removed when the test ends.
    struct Scratch(PathBuf);

    impl std::ops::Deref for Scratch {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl AsRef<Path> for Scratch {
        fn as_ref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn scratch(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("teardown-dest-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    #[test]
    fn a_part_file_of_a_killed_writer_is_removed_and_a_live_ones_kept() {
        let dir = scratch("stale");
        // No process has pid 2^22 + 1 (above pid_max's ceiling); this one is alive.
        let dead = dir.join(format!(".x.pcapng.{}.part", (1 << 22) + 1));
        // pid 1 is always alive: its part file may be a write under way.
        let alive = dir.join(".x.pcapng.1.part");
        fs::write(&alive, b"").unwrap();
        fs::write(&dead, b"").unwrap();
        fs::write(dir.join(".x.svg.4194305.part"), b"").unwrap();
        let d = Dest::check("-w", &dir.join("x.pcapng")).unwrap();
        assert!(!dead.exists(), "the killed writer's part file is left");
        assert!(alive.exists(), "a live writer's part file is gone");
        assert!(
            dir.join(".x.svg.4194305.part").exists(),
            "another name's was touched"
        );
        drop(d);
    }

    #[test]
    fn dash_is_standard_output() {
        let d = Dest::check("-w", Path::new("-")).unwrap();
        assert!(d.is_stdout());
        assert_eq!(d.name(), "standard output");
    }

    #[test]
    fn a_missing_directory_is_refused_with_the_mkdir_that_makes_it() {
        let dir = scratch("missing");
        let path = dir.join("no/such/x.pcapng");
        let err = Dest::check("-w", &path).unwrap_err();
        assert!(
            err.starts_with(&format!("-w {}: the directory", path.display())),
            "{err}"
        );
        assert!(
            err.contains(&format!("mkdir -p {}", dir.join("no/such").display())),
            "{err}"
        );
        assert!(!dir.join("no").exists(), "a directory was created");
    }

    #[test]
    fn a_directory_is_not_a_file_name() {
        let dir = scratch("isdir");
        let err = Dest::check("-o", &dir).unwrap_err();
        assert!(err.contains("is a directory"), "{err}");
    }

    #[test]
    fn the_file_appears_only_on_commit_and_no_part_file_is_left() {
        let dir = scratch("commit");
        let path = dir.join("x.pcapng");
        let mut d = Dest::check("-o", &path).unwrap();
        {
            let mut w = d.open().unwrap();
            w.write_all(b"hello").unwrap();
        }
        assert!(!path.exists());
        d.commit().unwrap();
        drop(d);
        assert_eq!(fs::read(&path).unwrap(), b"hello");
        let left: Vec<_> = fs::read_dir(&dir).unwrap().collect();
        assert_eq!(left.len(), 1, "{left:?}");
    }

    #[test]
    fn dropping_without_commit_leaves_nothing() {
        let dir = scratch("drop");
        let path = dir.join("x.pcapng");
        drop(Dest::check("-o", &path).unwrap());
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
    }

    #[test]
    fn a_device_is_written_in_place() {
        let d = Dest::check("-o", Path::new("/dev/null")).unwrap();
        assert!(matches!(d, Dest::Special(_)));
        d.write_all(b"x").unwrap();
    }

    #[test]
    fn an_unwritable_directory_names_the_users_path_not_the_part_file() {
        // As root every directory is writable but a read-only mount; /proc is one everywhere.
        let path = Path::new("/proc/x.pcapng");
        let err = Dest::check("-w", path).unwrap_err();
        assert!(
            err.starts_with("-w /proc/x.pcapng: cannot write there"),
            "{err}"
        );
        assert!(!err.contains(".part"), "{err}");
    }
}
