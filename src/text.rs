//! Text that leaves corral for people: fault messages sent to Nova, failure replies,
//! REST errors. Whatever input bytes an error quotes (an archive header, a name, a
//! body) come out escaped and bounded.

/// `s` with every non-printable character escaped (`\n` → `\x0a`, a bidi override
/// → `\u{202e}`, the replacement character that stands for bytes that were not
/// UTF-8 → `\u{fffd}`) and at most `max` characters long; a cut text ends in `...`.
pub fn printable(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max));
    let mut count = 0usize;
    let mut cut = false;
    for c in s.chars() {
        let escaped;
        let piece: &str = if is_printable(c) {
            escaped = c.to_string();
            &escaped
        } else if (c as u32) < 0x100 {
            escaped = format!("\\x{:02x}", c as u32);
            &escaped
        } else {
            escaped = format!("\\u{{{:x}}}", c as u32);
            &escaped
        };
        let n = piece.chars().count();
        if count + n > max {
            cut = true;
            break;
        }
        out.push_str(piece);
        count += n;
    }
    if cut {
        if max < 3 {
            return out.chars().take(max).collect();
        }
        let mut t: String = out.chars().take(max - 3).collect();
        t.push_str("...");
        return t;
    }
    out
}

/// Like [`printable`], but plain ASCII out: every character that is not
/// printable ASCII is escaped (`\xNN` below U+0100, `\u{..}` above), for text
/// decoded lossily from hostile bytes, where a "visible" character proves
/// nothing.
pub fn printable_ascii(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            ' '..='~' => out.push(c),
            c if (c as u32) < 0x100 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
        }
    }
    printable(&out, max)
}

/// Raw bytes (a name from an archive) as plain ASCII: printable ASCII kept,
/// every other byte `\xNN`, with no UTF-8 decoding, so nothing hides in a
/// sequence.
pub fn printable_ascii_bytes(b: &[u8], max: usize) -> String {
    // Bytes map one to one onto U+0000..U+00FF, which printable_ascii
    // escapes as \xNN unless they are printable ASCII.
    printable_ascii(&b.iter().map(|&x| char::from(x)).collect::<String>(), max)
}

/// Visible characters and plain spaces; not controls, not invisible format or bidi
/// characters, not the replacement character, not private use or unassigned planes.
fn is_printable(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    !matches!(c as u32,
        0xad
        | 0x034f
        | 0x061c
        | 0x115f..=0x1160
        | 0x17b4..=0x17b5
        | 0x180b..=0x180f
        | 0x200b..=0x200f
        | 0x2028..=0x202e
        | 0x2060..=0x206f
        | 0x3164
        | 0xd800..=0xf8ff
        | 0xfe00..=0xfe0f
        | 0xfeff
        | 0xffa0
        | 0xfff0..=0xfffd
        | 0xe0000..=0x10ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn honest_text_is_unchanged() {
        let s = "Image 4f3c: not a root tarball (no /sbin/init), é ü 漢字";
        assert_eq!(printable(s, 1000), s);
    }

    #[test]
    fn control_and_binary_bytes_are_escaped() {
        // what a tar error quotes from 64 KiB of random bytes
        let raw: &[u8] =
            b"numeric field did not have utf-8 text: \x8f\x1be\x00\xffu$\r\n\x07 \xe2\x80\xae";
        let s = String::from_utf8_lossy(raw);
        let p = printable(&s, 1000);
        assert_eq!(
            p,
            "numeric field did not have utf-8 text: \\u{fffd}\\x1be\\x00\\u{fffd}u$\\x0d\\x0a\\x07 \\u{202e}"
        );
        assert!(p.chars().all(|c| c.is_ascii_graphic() || c == ' '));
    }

    #[test]
    fn length_is_bounded() {
        assert_eq!(printable("abcdef", 6), "abcdef");
        assert_eq!(printable("abcdefg", 6), "abc...");
        assert_eq!(printable("\u{1}\u{1}", 5), "\\x...");
        assert_eq!(printable("abcdef", 2), "ab");
        let long = "\u{0}".repeat(100_000);
        assert!(printable(&long, 255).chars().count() <= 255);
    }

    #[test]
    fn ascii_forms_escape_everything_else() {
        assert_eq!(printable_ascii("a\u{e9}\u{202e}b", 100), "a\\xe9\\u{202e}b");
        assert_eq!(printable_ascii_bytes(b"n\xffo\n", 100), "n\\xffo\\x0a");
    }
}
