//! An in-memory filesystem for tests: injects failures and simulates a power loss, in which
//! bytes written since the last sync may vanish (wholly or from some point on).

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::fs::{AppendFile, Fs, ReadFile};

#[derive(Debug, Default, Clone)]
struct Inode {
    data: Vec<u8>,
    /// Content as of the last sync: what a power loss falls back to.
    durable: Vec<u8>,
}

/// Failures to inject.
#[derive(Debug, Default, Clone)]
pub struct Faults {
    /// Total bytes all files may hold; a write beyond it stores what fits and fails as the
    /// real filesystem does, with ENOSPC (a short write).
    pub capacity: Option<u64>,
    /// Report a write beyond `capacity` as a spent quota (EDQUOT) instead.
    pub quota: bool,
    /// Fail every write with this error kind, writing nothing.
    pub fail_writes: Option<io::ErrorKind>,
    /// Fail every sync.
    pub fail_syncs: bool,
    /// Fail every rename.
    pub fail_renames: bool,
    /// Files whose opening for reading fails.
    pub unreadable: Vec<PathBuf>,
}

#[derive(Debug, Default)]
struct State {
    names: BTreeMap<PathBuf, u64>,
    inodes: HashMap<u64, Inode>,
    next_inode: u64,
    faults: Faults,
}

impl State {
    fn used(&self) -> u64 {
        self.names
            .values()
            .filter_map(|i| self.inodes.get(i))
            .map(|n| n.data.len() as u64)
            .sum()
    }
}

/// The in-memory filesystem; clones share state.
#[derive(Debug, Default, Clone)]
pub struct MemFs {
    state: Arc<Mutex<State>>,
}

/// The error a full filesystem (or spent quota) gives.
fn out_of_space(quota: bool) -> io::Error {
    #[cfg(unix)]
    {
        io::Error::from_raw_os_error(if quota { libc::EDQUOT } else { libc::ENOSPC })
    }
    #[cfg(not(unix))]
    {
        io::Error::from(if quota {
            io::ErrorKind::QuotaExceeded
        } else {
            io::ErrorKind::StorageFull
        })
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{}", path.display()))
}

impl MemFs {
    /// An empty filesystem.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces the injected failures.
    pub fn set_faults(&self, faults: Faults) {
        self.lock().faults = faults;
    }

    /// Reads a file's current content.
    pub fn read(&self, path: &Path) -> Option<Vec<u8>> {
        let s = self.lock();
        let ino = s.names.get(path)?;
        s.inodes.get(ino).map(|n| n.data.clone())
    }

    /// Replaces a file's content (as if written and synced).
    pub fn write(&self, path: &Path, data: &[u8]) {
        let mut s = self.lock();
        let ino = match s.names.get(path) {
            Some(i) => *i,
            None => {
                s.next_inode += 1;
                let i = s.next_inode;
                s.names.insert(path.to_path_buf(), i);
                i
            }
        };
        s.inodes.insert(
            ino,
            Inode {
                data: data.to_vec(),
                durable: data.to_vec(),
            },
        );
    }

    /// Names of all files, sorted.
    pub fn files(&self) -> Vec<PathBuf> {
        self.lock().names.keys().cloned().collect()
    }

    /// Removes a file outright.
    pub fn delete(&self, path: &Path) {
        self.lock().names.remove(path);
    }

    /// The filesystem as a power loss would leave it: each file keeps its synced content
    /// plus `keep(path, unsynced_len)` bytes of what was appended since. Directory entries
    /// are taken as durable (as they are once the queue syncs its directory).
    pub fn crash(&self, mut keep: impl FnMut(&Path, usize) -> usize) -> MemFs {
        let s = self.lock();
        let mut out = State::default();
        for (name, ino) in &s.names {
            let Some(n) = s.inodes.get(ino) else { continue };
            let mut data = n.durable.clone();
            if n.data.len() > n.durable.len() && n.data.starts_with(&n.durable) {
                let extra = &n.data[n.durable.len()..];
                let k = keep(name, extra.len()).min(extra.len());
                data.extend_from_slice(&extra[..k]);
            }
            out.next_inode += 1;
            out.names.insert(name.clone(), out.next_inode);
            out.inodes.insert(
                out.next_inode,
                Inode {
                    durable: data.clone(),
                    data,
                },
            );
        }
        MemFs {
            state: Arc::new(Mutex::new(out)),
        }
    }
}

#[derive(Debug)]
struct MemHandle {
    fs: MemFs,
    ino: u64,
}

impl AppendFile for MemHandle {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut s = self.fs.lock();
        if let Some(kind) = s.faults.fail_writes {
            return Err(io::Error::new(kind, "injected write failure"));
        }
        let room = match s.faults.capacity {
            Some(cap) => cap.saturating_sub(s.used()),
            None => u64::MAX,
        };
        let n = (buf.len() as u64).min(room) as usize;
        let inode = s
            .inodes
            .get_mut(&self.ino)
            .ok_or_else(|| io::Error::other("stale handle"))?;
        inode.data.extend_from_slice(&buf[..n]);
        if n < buf.len() {
            return Err(out_of_space(s.faults.quota));
        }
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        let mut s = self.fs.lock();
        if s.faults.fail_syncs {
            return Err(io::Error::other("injected sync failure"));
        }
        if let Some(n) = s.inodes.get_mut(&self.ino) {
            n.durable = n.data.clone();
        }
        Ok(())
    }
}

impl ReadFile for MemHandle {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let s = self.fs.lock();
        let data = &s
            .inodes
            .get(&self.ino)
            .ok_or_else(|| io::Error::other("stale handle"))?
            .data;
        let start = (offset as usize).min(data.len());
        let n = buf.len().min(data.len() - start);
        buf[..n].copy_from_slice(&data[start..start + n]);
        Ok(n)
    }

    fn size(&self) -> io::Result<u64> {
        let s = self.fs.lock();
        Ok(s.inodes.get(&self.ino).map_or(0, |n| n.data.len() as u64))
    }
}

impl Fs for MemFs {
    fn create_dir_all(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let s = self.lock();
        Ok(s.names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
            .collect())
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn AppendFile>> {
        let mut s = self.lock();
        let ino = match s.names.get(path) {
            Some(i) => *i,
            None => {
                s.next_inode += 1;
                let i = s.next_inode;
                s.names.insert(path.to_path_buf(), i);
                s.inodes.insert(i, Inode::default());
                i
            }
        };
        Ok(Box::new(MemHandle {
            fs: self.clone(),
            ino,
        }))
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn AppendFile>> {
        let mut s = self.lock();
        s.next_inode += 1;
        let i = s.next_inode;
        s.names.insert(path.to_path_buf(), i);
        s.inodes.insert(i, Inode::default());
        Ok(Box::new(MemHandle {
            fs: self.clone(),
            ino: i,
        }))
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn ReadFile>> {
        let s = self.lock();
        if s.faults.unreadable.iter().any(|p| p == path) {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "injected unreadable file",
            ));
        }
        let ino = *s.names.get(path).ok_or_else(|| not_found(path))?;
        Ok(Box::new(MemHandle {
            fs: self.clone(),
            ino,
        }))
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let mut s = self.lock();
        let ino = *s.names.get(path).ok_or_else(|| not_found(path))?;
        if let Some(n) = s.inodes.get_mut(&ino) {
            n.data.truncate(len as usize);
            n.durable.truncate(len as usize);
        }
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.lock();
        if s.faults.fail_renames {
            return Err(io::Error::other("injected rename failure"));
        }
        let ino = s.names.remove(from).ok_or_else(|| not_found(from))?;
        s.names.insert(to.to_path_buf(), ino);
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.lock()
            .names
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| not_found(path))
    }

    fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }
}
