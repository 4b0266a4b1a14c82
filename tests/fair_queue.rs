//! A noisy target must not starve the others: with a memory queue far smaller than one scrape
//! of a huge target, and a receiver that takes the backlog slowly, a healthy target's `up`
//! still reaches a real VictoriaMetrics for every scrape.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_target_cannot_push_a_healthy_targets_up_out_of_the_queue() {
    let Some(vm) = VictoriaMetrics::start().await else {
        return;
    };
    // 20 000 series a scrape (under the default sample_limit), ten times the queue.
    let mut huge_body = String::new();
    for i in 0..20_000 {
        huge_body.push_str(&format!("huge_series{{i=\"{i:05}\"}} {i}\n"));
    }
    let huge = TargetServer::start_with(Reply {
        body: huge_body,
        ..Reply::default()
    })
    .await;
    let healthy = TargetServer::start_with(Reply {
        body: "healthy_thing 1\n".into(),
        ..Reply::default()
    })
    .await;
    // The catch-up budget keeps the sender behind the huge target for the whole run, so the
    // queue stays full and every append has to push samples out.
    let agent = Pushprobe::with_config(&format!(
        "[agent]\ndrain_timeout = \"30s\"\nself_metrics_interval = \"1s\"\n\n\
         [[remote_write]]\nurl = {}\nbatch_send_deadline = \"500ms\"\nqueue_capacity = 2000\n\
         max_samples_per_send = 500\nmax_shards = 1\nmax_catchup_bytes_per_second = \"16KiB\"\n\n\
         [[scrape]]\njob = \"huge\"\ntargets = [{}]\ninterval = \"1s\"\n\n\
         [[scrape]]\njob = \"healthy\"\ntargets = [{}]\ninterval = \"1s\"\n",
        toml_string(&vm.write_url()),
        toml_string(&huge.addr().to_string()),
        toml_string(&healthy.addr().to_string()),
    ));
    let run = agent.spawn_run(&[]);
    let deadline = Instant::now() + DATA_TIMEOUT;
    while healthy.hits() < 6 || huge.hits() < 6 {
        assert!(
            Instant::now() < deadline,
            "targets were not scraped six times"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let done = run.terminate(Duration::from_secs(60)).await;
    done.assert_code(0);
    assert!(
        done.stderr.contains("queue full"),
        "the queue never overflowed, so nothing was tested:\n{}",
        done.stderr
    );

    // Every `up` of both targets arrived: the huge target paid with its own bulk samples,
    // and report series outlive bulk ones.
    for (job, target) in [("healthy", &healthy), ("huge", &huge)] {
        let scrapes = target.hits() as usize;
        let up = vm.export(&format!(r#"up{{job="{job}"}}"#)).await;
        assert_eq!(up.len(), 1, "{up:?}");
        // Leaves out the staleness marker the shutdown writes.
        let values: Vec<f64> = up[0]
            .samples
            .iter()
            .map(|s| s.1)
            .filter(|v| !v.is_nan())
            .collect();
        // One `up` per finished scrape; a scrape cut short by the shutdown writes none.
        assert!(
            values.len() == scrapes || values.len() + 1 == scrapes,
            "{job}: {} samples of up for {scrapes} scrapes: {values:?}",
            values.len()
        );
        assert!(values.iter().all(|&v| v == 1.0), "{job}: {values:?}");
    }
}
