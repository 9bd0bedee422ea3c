//! Progress bars on stderr (hidden when stderr is not a terminal, e.g. under run-all.sh).

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// A bar over a fixed time span, position in milliseconds.
pub fn timed(label: &str, span: Duration) -> ProgressBar {
    let bar = ProgressBar::new(span.as_millis() as u64);
    if let Ok(style) = ProgressStyle::with_template("{prefix:>24} [{bar:30}] {elapsed:>4} {msg}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(label.to_owned());
    bar
}

/// A bar over a count of items (users registered, sockets connected, …).
pub fn counted(label: &str, total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    if let Ok(style) =
        ProgressStyle::with_template("{prefix:>24} [{bar:30}] {pos}/{len} {per_sec} {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(label.to_owned());
    bar
}
