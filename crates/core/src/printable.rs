//! Untrusted text made safe for an operator's terminal: what a dead letter or a parked
//! record carries (payloads, keys, `sluice.*` headers) is anyone's bytes, and an ANSI
//! escape among them could rewrite the screen it is printed on.

/// `text` with every control character (escape, carriage return, newline, tab, bell,
/// C1 controls…) and the Unicode bidirectional overrides written as `\u{…}` (newline as
/// `\n`, tab as `\t`), so it prints on one line exactly as it is.
pub(crate) fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() || is_bidi_control(c) => {
                out.push_str(&format!("\\u{{{:x}}}", c as u32));
            }
            c => out.push(c),
        }
    }
    out
}

/// Bytes as text for a terminal: invalid UTF-8 as U+FFFD, then [`printable`].
pub(crate) fn printable_bytes(bytes: &[u8]) -> String {
    printable(&String::from_utf8_lossy(bytes))
}

/// The characters that reorder how a line displays (Trojan Source).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_a_record_can_hold_prints_without_a_control_character() {
        let all: Vec<u8> = (0..=255u8).collect();
        let shown = printable_bytes(&all);
        assert!(!shown.chars().any(|c| c.is_control()), "{shown:?}");
        assert!(shown.contains("\\u{1b}") && shown.contains("\\n") && shown.contains("\\u{7}"));
        assert!(shown.contains("ABC") && shown.contains("xyz"));
        assert_eq!(printable("\u{202e}evil"), "\\u{202e}evil");
        assert_eq!(printable("plain café"), "plain café");
    }
}
