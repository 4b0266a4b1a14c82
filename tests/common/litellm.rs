//! A real AI relay for integration tests: LiteLLM's proxy (PyPI `litellm[proxy]`) in front of
//! `fakeai` (an OpenAI-compatible fake model server) and, for the faults fakeai cannot make,
//! a scripted upstream the test runs itself.
//!
//! LiteLLM serves its OpenAI-compatible endpoints (`/v1/models`, `/v1/chat/completions`,
//! `/v1/embeddings`) and its Anthropic-style `/v1/messages`, translating to the upstream. The
//! model entries use `hosted_vllm/…`: with `openai/…` LiteLLM would translate `/v1/messages`
//! to the OpenAI Responses API, which fakeai refuses.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;
use tokio::time::Instant;

use super::{free_port, http_client, http_get_text, require_tool, ChildGuard};

/// The chat model fakeai serves (its first listed model).
pub const CHAT_MODEL: &str = "TinyLlama/TinyLlama-1.1B-Chat-v1.0";
/// The embedding model fakeai serves.
pub const EMBEDDING_MODEL: &str = "text-embedding-3-small";
/// The relay's own key (LiteLLM's `master_key`), taken as `Bearer` or `x-api-key`.
pub const RELAY_KEY: &str = "sk-relay-master-key-0123";

/// LiteLLM's start-up imports a lot of Python; on a busy machine it takes well over the
/// usual server deadline.
const RELAY_STARTUP: Duration = Duration::from_secs(240);

/// fakeai and LiteLLM running, killed when dropped.
pub struct Relay {
    _fakeai: ChildGuard,
    litellm: ChildGuard,
    port: u16,
    _dir: TempDir,
}

/// Waits until `url` answers, or the process exits (`false`), or the deadline passes (panic).
async fn ready(url: &str, guard: &mut ChildGuard, deadline: Duration) -> bool {
    let client = http_client();
    let until = Instant::now() + deadline;
    loop {
        if http_get_text(&client, url).await.is_ok() {
            return true;
        }
        if guard.try_wait().is_some() {
            guard.dump_logs();
            return false;
        }
        if Instant::now() >= until {
            guard.dump_logs();
            panic!("{url} not ready after {deadline:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The proxy's configuration: fakeai's chat and embedding models under their own names, and
/// each of `scripted` as a model of the scripted upstream at `scripted_base`.
fn config(fakeai: u16, scripted_base: &str, scripted: &[&str]) -> String {
    let mut yaml = String::from("model_list:\n");
    for model in [CHAT_MODEL, EMBEDDING_MODEL] {
        yaml.push_str(&format!(
            "  - model_name: \"{model}\"\n    litellm_params:\n      model: \"hosted_vllm/{model}\"\n      api_base: \"http://127.0.0.1:{fakeai}/v1\"\n      api_key: \"upstream-key\"\n"
        ));
    }
    for model in scripted {
        yaml.push_str(&format!(
            "  - model_name: \"{model}\"\n    litellm_params:\n      model: \"hosted_vllm/{model}\"\n      api_base: \"{scripted_base}\"\n      api_key: \"upstream-key\"\n"
        ));
    }
    // No retries and no cool-down: each probe request is exactly one upstream request, and
    // a fault on one model never turns the next request into LiteLLM's own 429.
    yaml.push_str(
        "litellm_settings:\n  num_retries: 0\nrouter_settings:\n  num_retries: 0\n  disable_cooldowns: true\ngeneral_settings:\n",
    );
    yaml.push_str(&format!("  master_key: \"{RELAY_KEY}\"\n"));
    yaml
}

impl Relay {
    /// Starts fakeai, then LiteLLM in front of it and of the scripted upstream at
    /// `scripted_base` (serving the models named in `scripted`). `None` (test skipped) when
    /// the tools are not installed outside CI.
    pub async fn start(scripted_base: &str, scripted: &[&str]) -> Option<Relay> {
        let fakeai_bin = require_tool("fakeai")?;
        let litellm_bin = require_tool("litellm")?;
        let dir = tempfile::Builder::new()
            .prefix("pushprobe-relay-")
            .tempdir()
            .expect("create temp dir");
        let fakeai = start(&dir, "fakeai", "/health", |port| {
            let mut cmd = Command::new(&fakeai_bin);
            cmd.args(["server", "--host", "127.0.0.1", "--port", &port.to_string()])
                .env("FAKEAI_AUTH__REQUIRE_API_KEY", "false");
            cmd
        })
        .await;
        let yaml = config(fakeai.1, scripted_base, scripted);
        let config_path = dir.path().join("litellm.yaml");
        std::fs::write(&config_path, yaml).expect("write litellm config");
        let (litellm, port) = start(&dir, "litellm", "/health/liveliness", |port| {
            let mut cmd = Command::new(&litellm_bin);
            cmd.arg("--config")
                .arg(&config_path)
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                // Prices from the installed package, never fetched from the internet.
                .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
                .env("LITELLM_LOG", "ERROR")
                .env_remove("DATABASE_URL");
            cmd
        })
        .await;
        Some(Relay {
            _fakeai: fakeai.0,
            litellm,
            port,
            _dir: dir,
        })
    }

    /// The relay's API root, `http://127.0.0.1:P/v1`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    /// Prints the tail of LiteLLM's output (for a failing assertion).
    pub fn dump_logs(&self) {
        self.litellm.dump_logs();
    }
}

/// Starts a server on a fresh port, retrying when it exits during start-up (port taken).
async fn start(
    dir: &TempDir,
    name: &str,
    ready_path: &str,
    make: impl Fn(u16) -> Command,
) -> (ChildGuard, u16) {
    let logs: &Path = dir.path();
    for attempt in 1..=3 {
        let port = free_port();
        let log_name = format!("{name}-{attempt}");
        let mut guard = ChildGuard::spawn(&log_name, make(port), logs)
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let url = format!("http://127.0.0.1:{port}{ready_path}");
        if ready(&url, &mut guard, RELAY_STARTUP).await {
            return (guard, port);
        }
        eprintln!("{name} exited during start-up (attempt {attempt}); retrying on another port");
    }
    panic!("{name} did not start after 3 attempts");
}
