//! Turning the component's progress lines into what the command shows: bars with bytes and
//! rate on a terminal, the lines themselves elsewhere.

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::sync::Mutex;

/// One progress line, parsed.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// `copying sha256:0123456789ab (N bytes)`
    Start {
        verb: &'a str,
        id: &'a str,
        total: u64,
    },
    /// `copying sha256:0123456789ab: D of N bytes`
    Advance { id: &'a str, done: u64 },
    /// `copied sha256:0123456789ab`
    End { id: &'a str },
    /// Anything else, shown as it is.
    Other(&'a str),
}

pub fn parse(line: &str) -> Event<'_> {
    let parsed = (|| {
        let (verb, rest) = line.split_once(' ')?;
        if !rest.starts_with("sha256:") {
            return None;
        }
        if let Some((id, size)) = rest.split_once(" (") {
            let total = size.strip_suffix(" bytes)")?.parse().ok()?;
            return Some(Event::Start { verb, id, total });
        }
        if let Some((id, counts)) = rest.split_once(": ") {
            let (done, _) = counts.split_once(" of ")?;
            return Some(Event::Advance {
                id,
                done: done.parse().ok()?,
            });
        }
        (!rest.contains(' ')).then_some(Event::End { id: rest })
    })();
    parsed.unwrap_or(Event::Other(line))
}

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
            Event::Advance { id, done } => {
                if let Some(b) = bars.get(id) {
                    b.set_position(done);
                }
            }
            Event::End { id } => {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_components_progress_lines() {
        assert_eq!(
            parse("copying sha256:0123456789ab (1048576 bytes)"),
            Event::Start {
                verb: "copying",
                id: "sha256:0123456789ab",
                total: 1048576
            }
        );
        assert_eq!(
            parse("uploading sha256:0123456789ab: 33554432 of 99999999 bytes"),
            Event::Advance {
                id: "sha256:0123456789ab",
                done: 33554432
            }
        );
        assert_eq!(
            parse("copied sha256:0123456789ab"),
            Event::End {
                id: "sha256:0123456789ab"
            }
        );
        for other in [
            "final r/a:v2: sha256:abc (1 manifest(s))",
            "vet r/a: 2 of 2 omitted blob(s) present",
            "copying x (1 bytes)",
        ] {
            assert_eq!(parse(other), Event::Other(other));
        }
    }
}
