//! Text from a registry made safe to print: a terminal must never receive its control
//! characters, which could clear the screen, rewrite a line, reorder what is shown (bidi
//! overrides) or set the clipboard (OSC 52).

use std::borrow::Cow;
use std::fmt::Write;

/// Whether `c` must not reach a terminal as it is: C0 controls (ESC, CR, LF, BEL…), DEL, C1
/// controls (U+0080–U+009F, CSI and OSC among them) and the bidi embeddings, overrides and
/// isolates (U+202A–U+202E, U+2066–U+2069).
pub fn is_unsafe(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with every character [`is_unsafe`] says must not be printed replaced by a visible
/// escape such as `\u{1b}`; borrowed when there is none (the usual case).
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if is_unsafe(c) {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        let text = "MANIFEST_UNKNOWN: manifest unknown — ünïcödé, 日本, tabs\u{a0}";
        assert!(matches!(printable(text), Cow::Borrowed(t) if t == text));
    }

    #[test]
    fn every_control_character_is_escaped_visibly() {
        assert_eq!(
            printable("\u{1b}]52;c;aGk=\u{7}\u{1b}[2J"),
            "\\u{1b}]52;c;aGk=\\u{7}\\u{1b}[2J"
        );
        assert_eq!(printable("a\r\nb\tc\0"), "a\\u{d}\\u{a}b\\u{9}c\\u{0}");
        assert_eq!(
            printable("\u{7f}\u{80}\u{9b}\u{9f}"),
            "\\u{7f}\\u{80}\\u{9b}\\u{9f}"
        );
        assert_eq!(
            printable("\u{202a}\u{202e}x\u{2066}\u{2069}"),
            "\\u{202a}\\u{202e}x\\u{2066}\\u{2069}"
        );
        // Neighbours of the ranges print as they are.
        for fine in [
            "\u{a0}", "\u{2029}", "\u{202f}", "\u{2065}", "\u{206a}", " ~",
        ] {
            assert_eq!(printable(fine), fine, "{fine:?}");
        }
    }

    #[test]
    fn nothing_unsafe_survives() {
        let all: String = (0u32..0x2100).filter_map(char::from_u32).collect();
        let out = printable(&all);
        assert!(!out.chars().any(is_unsafe));
        assert!(out.contains("\\u{1b}") && out.contains("\\u{9b}") && out.contains("\\u{202e}"));
    }
}
