//! HTTP probe (being written): blackbox-exporter-compatible series with phase timings.

use std::time::Duration;

use super::{ProbeError, ProbeReport};
use crate::config::HttpProbeSettings;
use crate::series::Registry;

/// An HTTP(S) probe.
pub struct HttpProbe {
    settings: HttpProbeSettings,
}

impl HttpProbe {
    /// Builds the probe.
    pub fn new(settings: HttpProbeSettings) -> Result<Self, ProbeError> {
        Ok(HttpProbe { settings })
    }

    /// The probe's name.
    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// Runs once.
    pub async fn run(&mut self, registry: &mut Registry) -> ProbeReport {
        let _ = registry;
        ProbeReport {
            success: false,
            duration: Duration::ZERO,
            status: "unimplemented".into(),
            reason: Some("HTTP probe not built yet".into()),
            details: vec![],
        }
    }
}
