//! Reading a credential from a file (`bearer_token_file`, `basic_auth.password_file`,
//! `api_key_file`), bounded in size and time: the path comes from outside, and `/dev/zero`,
//! a directory or a FIFO nobody writes to must fail with a message, not hang or fill memory.
//!
//! Regular files are read up to [`MAX_SECRET_FILE_BYTES`]; a FIFO is opened without blocking
//! and read for at most [`SECRET_FIFO_WAIT`]; anything else (a directory, a device, a socket)
//! is refused before it is opened.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::secret::Secret;

/// Largest secret file read: a password, token or key is far smaller, so a larger file is
/// the wrong file.
pub const MAX_SECRET_FILE_BYTES: usize = 64 * 1024;

/// Longest a FIFO is waited on for its secret.
pub const SECRET_FIFO_WAIT: Duration = Duration::from_secs(1);

/// How often a FIFO with no data yet is read again.
const FIFO_POLL: Duration = Duration::from_millis(10);

/// Why a secret file could not be read; every message names the path, never the contents.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    /// The file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The path given.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The path is a directory, a device or a socket.
    #[error("{path} is {kind}, not a regular file holding the secret")]
    NotAFile {
        /// The path given.
        path: String,
        /// What it is instead, e.g. "a directory".
        kind: &'static str,
    },
    /// The file holds more than [`MAX_SECRET_FILE_BYTES`].
    #[error("{path} holds more than {MAX_SECRET_FILE_BYTES} bytes; a secret file holds one password, token or key")]
    TooLarge {
        /// The path given.
        path: String,
    },
    /// A FIFO gave no complete secret within [`SECRET_FIFO_WAIT`].
    #[error("{path} is a FIFO that gave no secret within {}s", SECRET_FIFO_WAIT.as_secs())]
    FifoTimeout {
        /// The path given.
        path: String,
    },
    /// The contents are not UTF-8 text.
    #[error("{path} is not UTF-8 text")]
    NotText {
        /// The path given.
        path: String,
    },
    /// The file is empty (or holds only a newline): systemd hands over an empty credential
    /// when its source is missing.
    #[error("{path} is empty")]
    Empty {
        /// The path given.
        path: String,
    },
}

/// Reads a secret file, stripping one trailing newline (editors add one). An empty file
/// comes back empty: each caller names the key when it refuses one.
pub fn read_secret_file(path: &Path) -> Result<Secret, SecretFileError> {
    let shown = || path.display().to_string();
    let io = |source| SecretFileError::Io {
        path: shown(),
        source,
    };
    // Refused before opening: opening a device can have effects of its own.
    let kind = std::fs::metadata(path).map_err(io)?.file_type();
    if let Some(what) = not_a_file(&kind) {
        return Err(SecretFileError::NotAFile {
            path: shown(),
            kind: what,
        });
    }
    // Non-blocking, so that opening a FIFO without a writer (or a path swapped for one since
    // the check above) returns at once; a regular file reads the same either way.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(io)?;
    let kind = file.metadata().map_err(io)?.file_type();
    let bytes = if kind.is_file() {
        let mut bytes = Vec::new();
        file.take(MAX_SECRET_FILE_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        bytes
    } else if kind.is_fifo() {
        read_fifo(file, path)?
    } else {
        return Err(SecretFileError::NotAFile {
            path: shown(),
            kind: not_a_file(&kind).unwrap_or("not a regular file"),
        });
    };
    if bytes.len() > MAX_SECRET_FILE_BYTES {
        return Err(SecretFileError::TooLarge { path: shown() });
    }
    let mut s = String::from_utf8(bytes).map_err(|_| SecretFileError::NotText { path: shown() })?;
    if s.ends_with('\n') {
        s.pop();
        if s.ends_with('\r') {
            s.pop();
        }
    }
    Ok(Secret::new(s))
}

/// What a path is when it is neither a regular file nor a FIFO.
fn not_a_file(kind: &std::fs::FileType) -> Option<&'static str> {
    if kind.is_file() || kind.is_fifo() {
        None
    } else if kind.is_dir() {
        Some("a directory")
    } else if kind.is_char_device() {
        Some("a character device")
    } else if kind.is_block_device() {
        Some("a block device")
    } else if kind.is_socket() {
        Some("a socket")
    } else {
        Some("not a regular file")
    }
}

/// Reads a FIFO opened non-blocking until its writer closes it, within [`SECRET_FIFO_WAIT`]
/// and [`MAX_SECRET_FILE_BYTES`]. End of file before any data means no writer yet: it is
/// waited for too.
fn read_fifo(mut file: File, path: &Path) -> Result<Vec<u8>, SecretFileError> {
    let deadline = Instant::now() + SECRET_FIFO_WAIT;
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match file.read(&mut chunk) {
            Ok(0) if !bytes.is_empty() => return Ok(bytes),
            Ok(0) => {}
            Ok(n) => {
                bytes.extend_from_slice(&chunk[..n]);
                if bytes.len() > MAX_SECRET_FILE_BYTES {
                    return Ok(bytes);
                }
                continue;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(SecretFileError::Io {
                    path: path.display().to_string(),
                    source,
                })
            }
        }
        if Instant::now() >= deadline {
            return Err(SecretFileError::FifoTimeout {
                path: path.display().to_string(),
            });
        }
        std::thread::sleep(FIFO_POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_regular_file_is_read_without_its_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("token");
        std::fs::write(&p, "s3cret\r\n").unwrap();
        assert_eq!(read_secret_file(&p).unwrap().expose(), "s3cret");
        std::fs::write(&p, "").unwrap();
        assert_eq!(read_secret_file(&p).unwrap().expose(), "");
    }

    #[test]
    fn unbounded_or_wrong_files_are_refused_quickly() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'a'; MAX_SECRET_FILE_BYTES + 1]).unwrap();
        let exact = dir.path().join("exact");
        std::fs::write(&exact, vec![b'a'; MAX_SECRET_FILE_BYTES]).unwrap();
        assert_eq!(read_secret_file(&exact).unwrap().expose().len(), 65536);
        let started = Instant::now();
        for (path, want) in [
            (Path::new("/dev/zero"), "is a character device"),
            (dir.path(), "is a directory"),
            (big.as_path(), "holds more than 65536 bytes"),
            (
                Path::new("/nonexistent/token"),
                "cannot read /nonexistent/token",
            ),
        ] {
            let e = read_secret_file(path).unwrap_err().to_string();
            assert!(e.contains(want), "{}: {e}", path.display());
        }
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn a_fifo_without_a_writer_times_out_and_one_with_a_writer_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let started = Instant::now();
        let e = read_secret_file(&fifo).unwrap_err();
        assert!(matches!(e, SecretFileError::FifoTimeout { .. }), "{e}");
        assert!(started.elapsed() < SECRET_FIFO_WAIT + Duration::from_secs(1));

        let writer_path = fifo.clone();
        let writer = std::thread::spawn(move || {
            // Opening for writing blocks until the reader has the FIFO open.
            std::fs::write(writer_path, "from-fifo\n").unwrap();
        });
        assert_eq!(read_secret_file(&fifo).unwrap().expose(), "from-fifo");
        writer.join().unwrap();
    }
}
