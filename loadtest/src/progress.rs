//! The live progress bar: transfers done, rate, MB/s and errors, refreshed a few times a second.
//!
//! Drawn on stderr (hidden when stderr is not a terminal or with `--quiet`), so stdout carries
//! only the final table.

use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinHandle;

use crate::stats::Recorder;

pub struct Progress {
    bar: ProgressBar,
    ticker: Option<JoinHandle<()>>,
}

impl Progress {
    /// A bar counting up to `len` steps of `unit` (e.g. "uploads").
    pub fn new(len: u64, unit: &str, visible: bool) -> Self {
        let bar = ProgressBar::with_draw_target(
            Some(len),
            if visible {
                ProgressDrawTarget::stderr_with_hz(5)
            } else {
                ProgressDrawTarget::hidden()
            },
        );
        let template = format!("{{elapsed_precise}} [{{bar:30}}] {{pos}}/{{len}} {unit} {{msg}}");
        if let Ok(style) = ProgressStyle::with_template(&template) {
            bar.set_style(style.progress_chars("=> "));
        }
        Progress { bar, ticker: None }
    }

    pub fn bar(&self) -> &ProgressBar {
        &self.bar
    }

    /// Refreshes the message (ok, errors, files/s, MB/s) from `recorder` until finished.
    pub fn watch(&mut self, recorder: Arc<Recorder>) {
        let bar = self.bar.clone();
        self.ticker = Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                let live = recorder.live();
                let secs = recorder.start().elapsed().as_secs_f64().max(1e-3);
                bar.set_message(format!(
                    "| up {} down {} err {} | {:.0} files/s {:.1} MB/s",
                    live.uploads_ok,
                    live.downloads_ok,
                    live.errors,
                    live.uploads_ok as f64 / secs,
                    live.bytes as f64 / secs / 1e6,
                ));
            }
        }));
    }

    pub fn inc(&self) {
        self.bar.inc(1);
    }

    pub fn finish(self) {
        if let Some(t) = &self.ticker {
            t.abort();
        }
        self.bar.finish_and_clear();
    }
}
