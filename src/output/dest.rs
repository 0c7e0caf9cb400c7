//! Where a command writes: one rule for `run -w`, `capture -o`, `annotate -o` and
//! `diagram --svg`, checked before any work starts.
//!
//! - `-` is standard output.
//! - A device or a FIFO (`/dev/null`, a named pipe) is written in place.
//! - A file is written through a temporary file beside it, renamed only when all went well,
//!   so a reader never sees half of it. The temporary file is made at the check, which proves
//!   the directory writable before a socket is opened or a packet read. It has no name until
//!   the end (O_TMPFILE), so a writer killed even by SIGKILL leaves nothing; where the file
//!   system has no unnamed files it is `.NAME.PID.part`, removed by the next writer of NAME.
//! - A missing directory is refused with the `mkdir -p` that makes it; no command creates
//!   directories on its own, except `run` for its default `captures/`.

use std::fs::{self, OpenOptions};
use std::io::{self, Seek as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::os::unix::io::AsRawFd as _;
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub enum Dest {
    Stdout,
    /// A device or a FIFO, written as it is.
    Special(PathBuf),
    /// A regular file, written through `unnamed` (linked in as `tmp` at the commit), or
    /// through the file `tmp` where the file system has no unnamed files.
    File {
        path: PathBuf,
        tmp: PathBuf,
        unnamed: Option<fs::File>,
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
        // The mode a named file gets (0666 less the umask).
        let unnamed = OpenOptions::new()
            .read(true)
            .write(true)
            .mode(0o666)
            .custom_flags(libc::O_TMPFILE)
            .open(dir)
            .ok();
        if unnamed.is_none() {
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)
                .map_err(|e| cannot_write(flag, path, &e))?;
        }
        Ok(Dest::File {
            path: path.to_path_buf(),
            tmp,
            unnamed,
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
            Dest::File {
                unnamed: Some(f), ..
            } => Box::new(f.try_clone()?),
            Dest::File { tmp, .. } => Box::new(OpenOptions::new().write(true).open(tmp)?),
        })
    }

    /// As `open`, for a writer on another thread (standard output unlocked).
    pub fn open_sendable(&self) -> io::Result<Box<dyn io::Write + Send>> {
        Ok(match self {
            Dest::Stdout => Box::new(io::stdout()),
            Dest::Special(p) => Box::new(OpenOptions::new().write(true).open(p)?),
            Dest::File {
                unnamed: Some(f), ..
            } => Box::new(f.try_clone()?),
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
        if let Dest::File {
            path,
            tmp,
            unnamed,
            done,
        } = self
        {
            if let Some(f) = unnamed.take() {
                link_unnamed(&f, tmp)?;
            }
            fs::rename(&*tmp, &*path)?;
            *done = true;
        }
        Ok(())
    }
}

impl Drop for Dest {
    fn drop(&mut self) {
        if let Dest::File {
            tmp,
            unnamed,
            done: false,
            ..
        } = self
        {
            // An unnamed file is gone with its descriptor; a name exists only if a commit
            // linked it and then failed.
            if unnamed.is_none() {
                let _ = fs::remove_file(tmp);
            }
        }
    }
}

/// Gives the unnamed file `f` the name `tmp`: through /proc (no capability needed), else by
/// descriptor (CAP_DAC_READ_SEARCH), else by copying its bytes into a new file of that name.
fn link_unnamed(f: &fs::File, tmp: &Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt as _;
    let _ = fs::remove_file(tmp);
    let to = CString::new(tmp.as_os_str().as_bytes())?;
    let proc = CString::new(format!("/proc/self/fd/{}", f.as_raw_fd()))?;
    // SAFETY: both paths are NUL-terminated strings that live through the calls.
    let linked = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            proc.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        ) == 0
            || libc::linkat(
                f.as_raw_fd(),
                c"".as_ptr(),
                libc::AT_FDCWD,
                to.as_ptr(),
                libc::AT_EMPTY_PATH,
            ) == 0
    };
    if linked {
        return Ok(());
    }
    let mut from = f.try_clone()?;
    from.rewind()?;
    let mut named = OpenOptions::new().write(true).create_new(true).open(tmp)?;
    io::copy(&mut from, &mut named)?;
    Ok(())
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

    /// Until the commit the output has no name at all (O_TMPFILE, which tmpfs and ext4 have):
    /// a writer killed by SIGKILL cannot leave a part file.
    #[test]
    fn the_output_has_no_name_until_the_commit() {
        let dir = scratch("unnamed");
        let path = dir.join("x.pcapng");
        let mut d = Dest::check("-o", &path).unwrap();
        assert!(
            matches!(
                d,
                Dest::File {
                    unnamed: Some(_),
                    ..
                }
            ),
            "{} has no unnamed files",
            dir.display()
        );
        d.open().unwrap().write_all(b"hello").unwrap();
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
        d.commit().unwrap();
        drop(d);
        assert_eq!(fs::read(&path).unwrap(), b"hello");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
    }

    /// Where no link can be made (another file system: EXDEV), the bytes are copied under the
    /// name, all of them.
    #[test]
    fn an_unnamed_file_that_cannot_be_linked_is_copied() {
        use std::os::unix::fs::MetadataExt as _;
        let dir = scratch("copied");
        let other = Path::new("/dev/shm");
        let dev = |p: &Path| fs::metadata(p).map(|m| m.dev()).ok();
        if dev(other).is_none() || dev(other) == dev(&dir) {
            eprintln!(
                "skipped: no /dev/shm on another file system than {}",
                dir.display()
            );
            return;
        }
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_TMPFILE)
            .open(&*dir)
            .unwrap();
        let bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        (&f).write_all(&bytes).unwrap();
        let tmp = other.join(format!("teardown-dest-{}.part", std::process::id()));
        let linked = link_unnamed(&f, &tmp);
        let got = fs::read(&tmp);
        let _ = fs::remove_file(&tmp);
        linked.unwrap();
        assert!(got.unwrap() == bytes, "the copy differs");
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
