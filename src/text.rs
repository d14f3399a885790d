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
}
