//! Progress bars of the long-running commands, one look for all of them.

use indicatif::{ProgressBar, ProgressStyle};

/// A bar over `len` steps with a message and an ETA (training, fine-tuning).
pub fn steps_bar(len: u64) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30.cyan/blue} {pos}/{len} {msg} [{elapsed_precise} < {eta_precise}]",
        )
        .expect("valid template"),
    );
    bar
}

/// Print a line above the bar; a hidden bar (stderr not a terminal) drops `println`, so then a
/// plain line on stderr.
pub fn say(bar: &ProgressBar, line: impl AsRef<str>) {
    if bar.is_hidden() {
        eprintln!("{}", line.as_ref());
    } else {
        bar.println(line);
    }
}
