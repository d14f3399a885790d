//! Text that came from outside (archive entry names, parser errors about
//! hostile input) made safe to put in logs, API errors and Nova faults.

/// Longest text [`printable`] returns before it cuts, in characters.
pub const PRINTABLE_MAX_CHARS: usize = 200;

/// `s` with every character that is not printable ASCII escaped (`\n`, `\t`,
/// `\\`, `\u{fffd}`, `\xNN` for the bytes of a lossy conversion), cut after
/// [`PRINTABLE_MAX_CHARS`] characters with a trailing `...`. Use it for any
/// text that may carry input bytes before it reaches an operator or a tenant.
pub fn printable(s: &str) -> String {
    let mut out = String::new();
    let mut count = 0usize;
    for c in s.chars() {
        let piece: String = match c {
            ' '..='~' if c != '\\' => c.to_string(),
            '\\' => "\\\\".to_string(),
            '\n' => "\\n".to_string(),
            '\t' => "\\t".to_string(),
            '\r' => "\\r".to_string(),
            c if (c as u32) < 0x100 => format!("\\x{:02x}", c as u32),
            c => format!("\\u{{{:x}}}", c as u32),
        };
        if count + piece.chars().count() > PRINTABLE_MAX_CHARS {
            out.push_str("...");
            return out;
        }
        count += piece.chars().count();
        out.push_str(&piece);
    }
    out
}

/// [`printable`] of raw bytes: each byte that is not printable ASCII is
/// written `\xNN` (no UTF-8 decoding, so nothing can hide in a sequence).
pub fn printable_bytes(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len());
    for &byte in b {
        // Bytes map one to one onto U+0000..U+00FF, which printable escapes
        // as \xNN unless they are printable ASCII.
        s.push(char::from(byte));
    }
    printable(&s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_unchanged() {
        assert_eq!(
            printable("etc/os-release: bad line"),
            "etc/os-release: bad line"
        );
    }

    #[test]
    fn control_and_non_ascii_are_escaped() {
        assert_eq!(printable("a\u{1b}[2Jb\n"), "a\\x1b[2Jb\\n");
        assert_eq!(printable("x\u{fffd}y"), "x\\u{fffd}y");
        assert_eq!(printable("caf\u{e9}"), "caf\\xe9");
        assert_eq!(printable("back\\slash"), "back\\\\slash");
        assert_eq!(printable_bytes(b"\xff\x00ok"), "\\xff\\x00ok");
        let out = printable_bytes(&[0x9bu8; 64]);
        assert!(out.chars().all(|c| c.is_ascii_graphic()), "{out}");
    }

    #[test]
    fn long_text_is_cut() {
        let out = printable(&"a".repeat(10_000));
        assert_eq!(out.len(), PRINTABLE_MAX_CHARS + 3);
        assert!(out.ends_with("..."));
        let out = printable(&"\u{7}".repeat(10_000));
        assert!(out.len() <= PRINTABLE_MAX_CHARS + 3, "{}", out.len());
    }
}
