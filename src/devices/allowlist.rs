//! `[corral] device_allowlist`: comma-separated `TYPE:GLOB` patterns, e.g.
//! `unix-char:/dev/fuse, unix-block:/dev/loop*, disk:/srv/*`. `*` matches any
//! run of characters (`/` included: `disk:/srv/*` allows the whole tree),
//! `?` one character; a pattern is `*` alone or an absolute path. Empty: no
//! device is allowed.

use std::path::Path;

const TYPES: [&str; 3] = ["unix-char", "unix-block", "disk"];

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowlist {
    patterns: Vec<(String, String)>,
}

fn glob(pattern: &[u8], text: &[u8]) -> bool {
    // Iterative wildcard match with backtracking to the last `*`.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

impl Allowlist {
    /// Parses the patterns; an unknown type or a relative path is an error.
    pub fn parse(patterns: &[String]) -> Result<Allowlist, String> {
        let mut out = Vec::new();
        for raw in patterns {
            let p = raw.trim();
            let (kind, g) = p
                .split_once(':')
                .ok_or_else(|| format!("{p:?} is not TYPE:PATH"))?;
            let (kind, g) = (kind.trim(), g.trim());
            if !TYPES.contains(&kind) {
                return Err(format!(
                    "unknown device type {kind:?} (use {})",
                    TYPES.join(", ")
                ));
            }
            if !(g == "*" || g.starts_with('/')) || g.contains("/../") || g.ends_with("/..") {
                return Err(format!("{g:?} must be * or an absolute path"));
            }
            out.push((kind.to_string(), g.to_string()));
        }
        Ok(Allowlist { patterns: out })
    }

    /// Whether a device of `kind` at host `path` is allowed.
    pub fn allows(&self, kind: &str, path: &Path) -> bool {
        let text = path.as_os_str().as_encoded_bytes();
        self.patterns
            .iter()
            .any(|(k, g)| k == kind && glob(g.as_bytes(), text))
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(p: &[&str]) -> Allowlist {
        Allowlist::parse(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn matching() {
        let a = list(&[
            "unix-char:/dev/fuse",
            "unix-block:/dev/loop*",
            "disk:/srv/*",
            "unix-char:/dev/tty?",
        ]);
        assert!(a.allows("unix-char", Path::new("/dev/fuse")));
        assert!(!a.allows("unix-block", Path::new("/dev/fuse")));
        assert!(!a.allows("unix-char", Path::new("/dev/fuse2")));
        assert!(a.allows("unix-block", Path::new("/dev/loop0")));
        assert!(a.allows("unix-block", Path::new("/dev/loop12")));
        assert!(!a.allows("unix-block", Path::new("/dev/sda")));
        assert!(a.allows("disk", Path::new("/srv/data")));
        assert!(a.allows("disk", Path::new("/srv/a/b")));
        assert!(!a.allows("disk", Path::new("/srv")));
        assert!(!a.allows("disk", Path::new("/etc")));
        assert!(a.allows("unix-char", Path::new("/dev/tty1")));
        assert!(!a.allows("unix-char", Path::new("/dev/tty12")));
        assert!(!Allowlist::default().allows("disk", Path::new("/srv/x")));
        let all = list(&["disk:*"]);
        assert!(all.allows("disk", Path::new("/anything")));
        assert!(!all.allows("unix-char", Path::new("/dev/fuse")));
    }

    #[test]
    fn bad_patterns() {
        for bad in [
            "fuse",
            "usb:/dev/bus/usb/*",
            "gpu:*",
            "disk:srv/*",
            "disk:/srv/../etc",
            "disk:",
        ] {
            assert!(Allowlist::parse(&[bad.to_string()]).is_err(), "{bad}");
        }
    }
}
