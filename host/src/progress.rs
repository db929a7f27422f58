//! Turning the component's progress lines (`imo_guest::progress`, the one definition of
//! their format) into what the command shows: bars with bytes and rate on a terminal, the
//! lines themselves elsewhere.

use imo_guest::progress::{Event, parse};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::sync::Mutex;

/// Draws one bar per blob in flight.
pub struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl Bars {
    pub fn new() -> Self {
        Self {
            multi: MultiProgress::new(),
            bars: Mutex::new(HashMap::new()),
        }
    }

    pub fn line(&self, line: &str) {
        let mut bars = self.bars.lock().expect("bars lock");
        match parse(line) {
            Event::Start { verb, id, total } => {
                let bar = self.multi.add(ProgressBar::new(total));
                bar.set_style(
                    ProgressStyle::with_template(
                        "{msg:28} {bar:30} {bytes:>10}/{total_bytes:10} {bytes_per_sec:>12}",
                    )
                    .expect("a valid template"),
                );
                bar.set_message(format!("{verb} {}", &id[7..]));
                bars.insert(id.to_owned(), bar);
            }
            Event::Advance { id, done, .. } => {
                if let Some(b) = bars.get(id) {
                    b.set_position(done);
                }
            }
            Event::End { id, .. } => {
                if let Some(b) = bars.remove(id) {
                    b.set_position(b.length().unwrap_or(0));
                    b.finish();
                }
            }
            Event::Other(text) => {
                let _ = self.multi.println(format!("imo: {text}"));
            }
        }
    }
}
