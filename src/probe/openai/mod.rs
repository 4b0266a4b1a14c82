//! Probe of an OpenAI-compatible API (`kind = "openai"`): is the model up, how fast does it
//! answer and start streaming, why does it fail, and what do the probes cost.
//!
//! The pure core lives in the submodules: [`sse`] (incremental event-stream parser),
//! [`response`] (reading models, completions and stream chunks), [`classify`] (bounded failure
//! reasons and key diagnosis), [`spend`] (the daily spend guard) and [`metrics`] (recording).
//! This module is the thin I/O shell that sends the requests through the shared probe client.

pub mod classify;
pub mod metrics;
pub mod response;
pub mod spend;
pub mod sse;

use serde::{Deserialize, Serialize};

/// One request a probe run makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    /// `GET /models`: free; is the configured model listed?
    Models,
    /// `POST /chat/completions`: paid.
    Chat,
    /// `POST /chat/completions` with `"stream": true`: paid; time to first token.
    ChatStream,
}

impl Check {
    /// The `check` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Check::Models => "models",
            Check::Chat => "chat",
            Check::ChatStream => "chat_stream",
        }
    }

    /// Whether the check spends tokens (and so pauses when the spend guard engages).
    pub fn is_paid(self) -> bool {
        !matches!(self, Check::Models)
    }
}
