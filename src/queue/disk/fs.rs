//! The filesystem operations the disk queue needs, behind a trait so tests can inject
//! failures (full disk, short writes, unreadable files) and simulate a power loss.

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The few filesystem operations the disk queue performs.
pub trait Fs: Send + Sync + fmt::Debug {
    /// Creates `dir` and its parents if missing.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Names of the regular files directly in `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Opens `path` for appending, creating it empty if missing.
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn AppendFile>>;
    /// Creates `path` empty (truncating it if it exists) for writing.
    fn create(&self, path: &Path) -> io::Result<Box<dyn AppendFile>>;
    /// Opens `path` for positioned reads.
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn ReadFile>>;
    /// Cuts `path` to `len` bytes.
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()>;
    /// Renames `from` to `to`, replacing `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes the file `path`.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// A file being written at its end.
pub trait AppendFile: Send + fmt::Debug {
    /// Writes all of `buf` at the end of the file (an error may leave part of it written).
    fn append(&mut self, buf: &[u8]) -> io::Result<()>;
    /// Makes the written data durable.
    fn sync(&mut self) -> io::Result<()>;
}

/// A file read at arbitrary offsets.
pub trait ReadFile: Send + fmt::Debug {
    /// Reads into `buf` from `offset`; returns the bytes read, 0 at the end of the file.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
    /// Current length of the file.
    fn size(&self) -> io::Result<u64>;
}

/// Reads the whole of a small file.
pub fn read_small(fs: &dyn Fs, path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let f = fs.open_read(path)?;
    let len = f.size()?;
    if len > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} is {len} bytes, more than the {limit} expected",
                path.display()
            ),
        ));
    }
    let mut buf = vec![0u8; len as usize];
    let mut filled = 0;
    while filled < buf.len() {
        match f.read_at(filled as u64, &mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    buf.truncate(filled);
    Ok(buf)
}

/// The real filesystem.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealFs;

#[derive(Debug)]
struct RealFile(std::fs::File);

impl AppendFile for RealFile {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.write_all(buf)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }
}

impl ReadFile for RealFile {
    #[cfg(unix)]
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(&self.0, buf, offset)
    }

    #[cfg(windows)]
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        std::os::windows::fs::FileExt::seek_read(&self.0, buf, offset)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
}

impl Fs for RealFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                if let Some(name) = entry.file_name().to_str() {
                    out.push(name.to_string());
                }
            }
        }
        Ok(out)
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn AppendFile>> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Box::new(RealFile(f)))
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn AppendFile>> {
        Ok(Box::new(RealFile(std::fs::File::create(path)?)))
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn ReadFile>> {
        Ok(Box::new(RealFile(std::fs::File::open(path)?)))
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let f = std::fs::OpenOptions::new().write(true).open(path)?;
        f.set_len(len)?;
        f.sync_all()
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    #[cfg(unix)]
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        std::fs::File::open(dir)?.sync_all()
    }

    #[cfg(not(unix))]
    fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        // Directories cannot be opened for syncing here; renames are durable on their own.
        Ok(())
    }
}

/// Writes `data` to `path` atomically: a temporary file, optionally synced, renamed over
/// `path`, then (when `sync`) the directory synced so the rename itself survives a power loss.
pub fn write_atomic(fs: &dyn Fs, path: &Path, data: &[u8], sync: bool) -> io::Result<()> {
    let tmp = tmp_path(path);
    let mut f = fs.create(&tmp)?;
    f.append(data)?;
    if sync {
        f.sync()?;
    }
    drop(f);
    fs.rename(&tmp, path)?;
    if sync {
        if let Some(dir) = path.parent() {
            fs.sync_dir(dir)?;
        }
    }
    Ok(())
}

/// The temporary name [`write_atomic`] writes before renaming.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}
