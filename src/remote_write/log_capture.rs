//! Test support: the log lines the sender and its events write, captured for assertions (every
//! credential test reads them back to prove no secret leaked).

use std::sync::{Arc, Mutex};

use tracing::subscriber::DefaultGuard;

/// Every `tracing` line of this thread, at any level and without colours, from
/// [`Captured::start`] until it is dropped.
pub(crate) struct Captured {
    buf: Arc<Mutex<Vec<u8>>>,
    _guard: DefaultGuard,
}

impl Captured {
    /// Starts capturing on this thread.
    pub(crate) fn start() -> Captured {
        let buf = Arc::new(Mutex::new(Vec::<u8>::new()));
        let writer = {
            let buf = buf.clone();
            move || LogBuf(buf.clone())
        };
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(writer)
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        Captured { buf, _guard: guard }
    }

    /// What was logged so far.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }
}

/// A `tracing` writer into a shared buffer.
struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
