//! Client-supplied text made safe to echo: [`bounded`] escapes control characters and cuts the
//! text to a byte budget, so an attacker's string (a 600 KB `type`, an identifier with newlines)
//! cannot grow an error body, a log line or an audit entry beyond a known size, nor forge a
//! line of its own.
//!
//! Refuses nothing; it only shortens and escapes.
#![forbid(unsafe_code)]

/// The most bytes of one client-supplied string copied into an error message or audit field.
pub const MAX_ECHOED_BYTES: usize = 256;

/// `text` with control characters escaped (`\n`, `\u{1b}`, …), cut on a character boundary to
/// at most `max` bytes plus a marker saying how much was left out. Pure and allocation-bounded
/// (the output never exceeds `max` + 32 bytes, whatever the input).
pub fn bounded(text: &str, max: usize) -> String {
    // The usual case (a key, a type name, an empty reason): nothing to escape or cut, so one
    // copy of the exact size, and none for an empty text.
    if text.len() <= max && !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    escaped_and_cut(text, max)
}

/// [`bounded`] character by character: escape, and stop before the budget is exceeded.
fn escaped_and_cut(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(max.min(text.len()) + 32);
    let mut consumed = 0;
    for c in text.chars() {
        let before = out.len();
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
        if out.len() > max {
            out.truncate(before);
            break;
        }
        consumed += c.len_utf8();
    }
    if consumed < text.len() {
        out.push_str(&format!("…(+{} bytes)", text.len() - consumed));
    }
    out
}

/// [`bounded`] with the standard budget [`MAX_ECHOED_BYTES`].
pub fn echo(text: &str) -> String {
    bounded(text, MAX_ECHOED_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn the_fast_path_answers_as_the_escaping_loop(text in "[a-zé\\n\\u{1b}\\t ]{0,40}", max in 0usize..48) {
            proptest::prop_assert_eq!(bounded(&text, max), escaped_and_cut(&text, max));
        }
    }

    #[test]
    fn short_text_is_kept_and_controls_are_escaped() {
        assert_eq!(echo("ATTESTATION"), "ATTESTATION");
        assert_eq!(echo("a\nb\u{1b}"), "a\\nb\\u{1b}");
        assert_eq!(echo(""), "");
    }

    #[test]
    fn long_text_is_cut_on_a_char_boundary_with_a_marker() {
        let long = "é".repeat(300_000); // 600,000 bytes
        let out = echo(&long);
        assert!(out.len() <= MAX_ECHOED_BYTES + 32, "{}", out.len());
        assert!(out.starts_with("éé"));
        assert!(
            out.ends_with(&format!("…(+{} bytes)", 600_000 - 256)),
            "{out}"
        );
        let escapes = "\n".repeat(1000);
        assert!(echo(&escapes).len() <= MAX_ECHOED_BYTES + 32);
    }
}
