//! The progress bar on stderr while a phase runs (hidden when stderr is not a terminal, so
//! scripts and `--json` output stay clean). Workers only bump a shared counter; a ticker task
//! redraws a few times a second.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinHandle;
use tokio::time::Instant;

const TICK: Duration = Duration::from_millis(200);

/// A bar for one phase; [`Progress::finish`] clears it.
pub(crate) struct Progress {
    bar: ProgressBar,
    ticker: JoinHandle<()>,
}

fn bar(len: u64, template: &str) -> ProgressBar {
    let target = if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(len), target);
    bar.set_style(
        ProgressStyle::with_template(template)
            .expect("static template is valid")
            .progress_chars("=> "),
    );
    bar
}

impl Progress {
    /// A bar over a timed phase of `duration`, showing the request rate so far.
    pub fn timed(label: &'static str, duration: Duration, done: Arc<AtomicU64>) -> Self {
        let millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        let bar = bar(millis, "{prefix} [{bar:30}] {elapsed}/{duration} {msg}");
        bar.set_prefix(label);
        let shown = bar.clone();
        let ticker = tokio::spawn(async move {
            let start = Instant::now();
            loop {
                tokio::time::sleep(TICK).await;
                let elapsed = start.elapsed();
                let n = done.load(Ordering::Relaxed);
                shown.set_position(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX));
                shown.set_message(format!(
                    "{n} requests, {:.0} req/s",
                    n as f64 / elapsed.as_secs_f64()
                ));
            }
        });
        Self { bar, ticker }
    }

    /// A bar over a phase of `total` items, showing the rate so far.
    pub fn counted(label: &'static str, total: u64, done: Arc<AtomicU64>) -> Self {
        let bar = bar(total, "{prefix} [{bar:40}] {pos}/{len} {msg}");
        bar.set_prefix(label);
        let shown = bar.clone();
        let ticker = tokio::spawn(async move {
            let start = Instant::now();
            loop {
                tokio::time::sleep(TICK).await;
                let n = done.load(Ordering::Relaxed);
                shown.set_position(n);
                shown.set_message(format!("{:.0}/s", n as f64 / start.elapsed().as_secs_f64()));
            }
        });
        Self { bar, ticker }
    }

    pub fn finish(self) {
        self.ticker.abort();
        self.bar.finish_and_clear();
    }
}
