//! The HTTP sender for one remote-write endpoint (being written).

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::RemoteWriteSettings;
use crate::queue::SharedQueue;
use crate::series::Labels;
use crate::telemetry::Telemetry;

/// Why a sender could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SenderError {
    /// The HTTP client could not be built.
    #[error("remote_write {endpoint}: {message}")]
    Client {
        /// Endpoint name.
        endpoint: String,
        /// What went wrong.
        message: String,
    },
}

/// Moves batches from one queue to one receiver.
pub struct Sender {
    settings: RemoteWriteSettings,
    queue: Arc<SharedQueue>,
}

impl Sender {
    /// Builds a sender.
    pub fn new(
        settings: RemoteWriteSettings,
        external_labels: Labels,
        queue: Arc<SharedQueue>,
        telemetry: Arc<Telemetry>,
    ) -> Result<Self, SenderError> {
        let _ = (external_labels, telemetry);
        Ok(Sender { settings, queue })
    }

    /// Runs until `drain` is cancelled and the queue is empty, or `abort` is cancelled.
    pub async fn run(self, drain: CancellationToken, abort: CancellationToken) {
        let _ = (&self.settings, &self.queue);
        tokio::select! {
            _ = drain.cancelled() => {}
            _ = abort.cancelled() => {}
        }
    }
}
