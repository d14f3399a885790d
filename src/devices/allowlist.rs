//! `[corral] device_allowlist`: comma-separated `TYPE:GLOB` patterns, e.g.
//! `unix-char:/dev/fuse, unix-block:/dev/loop*, disk:/srv/*, usb:1d6b:*,
//! gpu:0000:01:00.0, nic:dummy*`. `*` matches any run of characters (`/`
//! included: `disk:/srv/*` allows the whole tree), `?` one character. What
//! the glob is matched against depends on the type:
//!
//! - `unix-char`, `unix-block`, `disk`: the host path (as given and as
//!   resolved); the pattern is `*` alone or an absolute path.
//! - `usb`: `VENDOR:PRODUCT`, lower-case hex (`usb:1d6b:0002`, `usb:1d6b:*`,
//!   `usb:*`); the pattern is `*` alone or `VENDOR:PRODUCT` of hex digits
//!   and wildcards.
//! - `gpu`: the PCI address in its 4-digit domain form (`gpu:0000:01:00.0`,
//!   `gpu:0000:0?:00.0`, `gpu:*`); a short address (`gpu:01:00.0`) is
//!   taken as domain 0000.
//! - `nic`: the host interface name (`nic:dummy*`, `nic:enp65s0f1`); `lo` is
//!   never given out.
//!
//! Empty: no device is allowed.

use std::path::Path;

const TYPES: [&str; 6] = ["unix-char", "unix-block", "disk", "usb", "gpu", "nic"];

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

fn wild_or(g: &str, ok: impl Fn(char) -> bool) -> bool {
    !g.is_empty() && g.chars().all(|c| c == '*' || c == '?' || ok(c))
}

/// Checks and normalises the glob of one pattern of `kind`.
fn check_glob(kind: &str, g: &str) -> Result<String, String> {
    match kind {
        "usb" => {
            let g = g.to_ascii_lowercase();
            let ok = g == "*"
                || g.split_once(':').is_some_and(|(v, p)| {
                    wild_or(v, |c| c.is_ascii_hexdigit()) && wild_or(p, |c| c.is_ascii_hexdigit())
                });
            if ok {
                Ok(g)
            } else {
                Err(format!(
                    "usb:{g:?} must be usb:* or usb:VENDOR:PRODUCT (hex digits, * and ?)"
                ))
            }
        }
        "gpu" => {
            let g = g.to_ascii_lowercase();
            if let Some(full) = super::pci_address(&g) {
                return Ok(full);
            }
            if wild_or(&g, |c| c.is_ascii_hexdigit() || c == ':' || c == '.') {
                Ok(g)
            } else {
                Err(format!(
                    "gpu:{g:?} must be gpu:* or a PCI address glob (0000:01:00.0)"
                ))
            }
        }
        "nic" => {
            if g == "lo" {
                Err("nic:lo: the loopback interface cannot be given out".into())
            } else if wild_or(g, |c| {
                !(c == '/' || c == ':' || c.is_whitespace() || c.is_control())
            }) {
                Ok(g.to_string())
            } else {
                Err(format!(
                    "nic:{g:?} must be an interface name glob (no /, : or spaces)"
                ))
            }
        }
        _ => {
            if !(g == "*" || g.starts_with('/')) || g.contains("/../") || g.ends_with("/..") {
                Err(format!("{g:?} must be * or an absolute path"))
            } else {
                Ok(g.to_string())
            }
        }
    }
}

impl Allowlist {
    /// Parses the patterns; an unknown type or a glob that does not fit its
    /// type (a relative path, a USB id that is not hex...) is an error.
    pub fn parse(patterns: &[String]) -> Result<Allowlist, String> {
        let mut out = Vec::new();
        for raw in patterns {
            let p = raw.trim();
            let (kind, g) = p
                .split_once(':')
                .ok_or_else(|| format!("{p:?} is not TYPE:GLOB"))?;
            let (kind, g) = (kind.trim(), g.trim());
            if !TYPES.contains(&kind) {
                return Err(format!(
                    "unknown device type {kind:?} (use {})",
                    TYPES.join(", ")
                ));
            }
            out.push((kind.to_string(), check_glob(kind, g)?));
        }
        Ok(Allowlist { patterns: out })
    }

    /// Whether a device of `kind` at host `path` is allowed.
    pub fn allows(&self, kind: &str, path: &Path) -> bool {
        self.allows_bytes(kind, path.as_os_str().as_encoded_bytes())
    }

    /// Whether a device of `kind` named `text` is allowed: `VENDOR:PRODUCT`
    /// for `usb`, the PCI address for `gpu`, the interface for `nic`.
    pub fn allows_str(&self, kind: &str, text: &str) -> bool {
        if kind == "nic" && text == "lo" {
            return false;
        }
        self.allows_bytes(kind, text.as_bytes())
    }

    fn allows_bytes(&self, kind: &str, text: &[u8]) -> bool {
        self.patterns
            .iter()
            .any(|(k, g)| k == kind && glob(g.as_bytes(), text))
    }

    /// Whether some USB device of `vendor` (lower-case hex) could be
    /// allowed: a pattern's vendor part matches it.
    pub fn allows_usb_vendor(&self, vendor: &str) -> bool {
        self.patterns.iter().any(|(k, g)| {
            k == "usb"
                && glob(
                    g.split_once(':').map_or(g.as_str(), |(v, _)| v).as_bytes(),
                    vendor.as_bytes(),
                )
        })
    }

    /// Whether any pattern is of `kind`.
    pub fn has_kind(&self, kind: &str) -> bool {
        self.patterns.iter().any(|(k, _)| k == kind)
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// How many patterns there are.
    pub fn len(&self) -> usize {
        self.patterns.len()
    }
}

/// As the `TYPE:GLOB` patterns, normalised.
impl serde::Serialize for Allowlist {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.patterns.iter().map(|(k, g)| format!("{k}:{g}")))
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
    fn matching_usb_gpu_nic() {
        let a = list(&[
            "usb:1D6B:*",
            "usb:0781:5581",
            "gpu:01:00.0",
            "gpu:0000:8?:00.0",
            "nic:dummy*",
            "nic:eth1",
        ]);
        assert!(a.allows_str("usb", "1d6b:0002"));
        assert!(a.allows_str("usb", "1d6b:0003"));
        assert!(a.allows_str("usb", "0781:5581"));
        assert!(!a.allows_str("usb", "0781:5582"));
        assert!(!a.allows_str("usb", "046d:c52b"));
        assert!(a.allows_usb_vendor("1d6b"));
        assert!(a.allows_usb_vendor("0781"));
        assert!(!a.allows_usb_vendor("046d"));
        assert!(a.allows_str("gpu", "0000:01:00.0"));
        assert!(!a.allows_str("gpu", "0000:02:00.0"));
        assert!(a.allows_str("gpu", "0000:81:00.0"));
        assert!(!a.allows_str("gpu", "0001:81:00.0"));
        assert!(a.allows_str("nic", "dummy0"));
        assert!(a.allows_str("nic", "eth1"));
        assert!(!a.allows_str("nic", "eth0"));
        // Types do not mix.
        assert!(!a.allows_str("nic", "0000:01:00.0"));
        assert!(!a.allows_str("gpu", "dummy0"));
        let all = list(&["usb:*", "gpu:*", "nic:*"]);
        assert!(all.allows_str("usb", "ffff:ffff"));
        assert!(all.allows_usb_vendor("ffff"));
        assert!(all.allows_str("gpu", "0000:c1:00.0"));
        assert!(all.allows_str("nic", "enp1s0"));
        assert!(!all.allows_str("nic", "lo"));
        assert!(all.has_kind("nic") && !all.has_kind("disk"));
    }

    #[test]
    fn bad_patterns() {
        for bad in [
            "fuse",
            "usb:/dev/bus/usb/*",
            "usb:1d6b",
            "usb:1d6g:*",
            "usb:",
            "gpu:/dev/dri/*",
            "gpu:",
            "nic:",
            "nic:lo",
            "nic:eth/0",
            "nic:a b",
            "pci:*",
            "disk:srv/*",
            "disk:/srv/../etc",
            "disk:",
        ] {
            assert!(Allowlist::parse(&[bad.to_string()]).is_err(), "{bad}");
        }
        for good in ["gpu:*", "usb:*", "nic:*", "usb:*:*", "gpu:0000:0?:*"] {
            assert!(Allowlist::parse(&[good.to_string()]).is_ok(), "{good}");
        }
    }
}
