//! Progress of one blob as it crosses the WIT boundary: one line of text per [`Event`] on
//! stderr, plain enough to read under the wasmtime CLI, and parsed back by hosts that draw
//! bars. The encoding ([`Event`]'s `Display`) and [`parse`] are the one definition of it.
//!
//! ```text
//! copying sha256:0123456789ab (1048576 bytes)        Start
//! copying sha256:0123456789ab: 33554432 of 99 bytes  Advance
//! copied sha256:0123456789ab                         End
//! ```

use std::fmt;

/// How many bytes pass between two [`Event::Advance`] lines of a blob.
pub const STEP: u64 = 32 << 20;

/// One progress line. A verb is one word; an id is `sha256:` and a prefix of the digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A blob starts: `VERB ID (TOTAL bytes)`.
    Start {
        verb: &'a str,
        id: &'a str,
        total: u64,
    },
    /// Part of it is done: `VERB ID: DONE of TOTAL bytes`.
    Advance {
        verb: &'a str,
        id: &'a str,
        done: u64,
        total: u64,
    },
    /// It is done: `VERB ID`, the verb in the past tense.
    End { verb: &'a str, id: &'a str },
    /// Any other line (a retry notice, a summary of a step), shown as it is.
    Other(&'a str),
}

impl fmt::Display for Event<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Start { verb, id, total } => write!(f, "{verb} {id} ({total} bytes)"),
            Event::Advance {
                verb,
                id,
                done,
                total,
            } => write!(f, "{verb} {id}: {done} of {total} bytes"),
            Event::End { verb, id } => write!(f, "{verb} {id}"),
            Event::Other(text) => f.write_str(text),
        }
    }
}

/// Reads a line back; a line that is no blob's progress is [`Event::Other`].
pub fn parse(line: &str) -> Event<'_> {
    parse_blob(line).unwrap_or(Event::Other(line))
}

fn parse_blob(line: &str) -> Option<Event<'_>> {
    let (verb, rest) = line.split_once(' ')?;
    if verb.is_empty() || !rest.starts_with("sha256:") {
        return None;
    }
    if let Some((id, size)) = rest.split_once(" (") {
        let total = size.strip_suffix(" bytes)")?.parse().ok()?;
        return Some(Event::Start { verb, id, total });
    }
    if let Some((id, counts)) = rest.split_once(": ") {
        let (done, total) = counts.strip_suffix(" bytes")?.split_once(" of ")?;
        return Some(Event::Advance {
            verb,
            id,
            done: done.parse().ok()?,
            total: total.parse().ok()?,
        });
    }
    (!rest.contains(' ')).then_some(Event::End { verb, id: rest })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_their_lines() {
        let id = "sha256:0123456789ab";
        for e in [
            Event::Start {
                verb: "copying",
                id,
                total: 1048576,
            },
            Event::Advance {
                verb: "uploading",
                id,
                done: STEP,
                total: 99_999_999,
            },
            Event::End { verb: "copied", id },
            Event::Other("retrying GET of blob sha256:0123 alone after a reset"),
        ] {
            assert_eq!(parse(&e.to_string()), e, "{e}");
        }
    }

    #[test]
    fn lines_are_the_ones_hosts_have_read_so_far() {
        assert_eq!(
            parse("copying sha256:0123456789ab (1048576 bytes)"),
            Event::Start {
                verb: "copying",
                id: "sha256:0123456789ab",
                total: 1048576
            }
        );
        assert_eq!(
            Event::Advance {
                verb: "uploading",
                id: "sha256:0123456789ab",
                done: 33554432,
                total: 99999999
            }
            .to_string(),
            "uploading sha256:0123456789ab: 33554432 of 99999999 bytes"
        );
        assert_eq!(
            Event::End {
                verb: "uploaded",
                id: "sha256:0123456789ab"
            }
            .to_string(),
            "uploaded sha256:0123456789ab"
        );
        for other in [
            "final r/a:v2: sha256:abc (1 manifest(s))",
            "vet r/a: 2 of 2 omitted blob(s) present",
            "copying x (1 bytes)",
            "copying sha256:ab (many bytes)",
            "copying sha256:ab: 1 of many bytes",
            "mounted sha256:ab from other/repo",
            " sha256:ab",
            "",
        ] {
            assert_eq!(parse(other), Event::Other(other), "{other:?}");
        }
    }
}
