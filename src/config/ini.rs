//! A parser for nova.conf-style INI files with oslo.config semantics.
//!
//! Several files may be given; a later file wins for the same option. Section
//! and option names are case-sensitive except `DEFAULT`, as in oslo.config.
//! Continuation lines (indented) extend the previous value.

use std::collections::BTreeMap;
use std::path::Path;

use super::ConfigError;

/// The raw options of all files, section -> option -> value (last file wins).
/// Every value of a repeated option is kept too, in order, for oslo.config's
/// multi-valued options (`MultiStrOpt`: `[pci] device_spec`, `alias`), whose
/// values accumulate over all lines and all files.
#[derive(Debug, Default, Clone)]
pub struct Ini {
    sections: BTreeMap<String, BTreeMap<String, String>>,
    multi: BTreeMap<String, BTreeMap<String, Vec<String>>>,
}

impl Ini {
    /// Parses one file and merges it over what was read before.
    pub fn merge_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        self.merge_str(&text, &path.display().to_string())
    }

    /// Parses INI text; `origin` names the source in errors.
    pub fn merge_str(&mut self, text: &str, origin: &str) -> Result<(), ConfigError> {
        let mut section: Option<String> = None;
        let mut last_key: Option<String> = None;
        for (idx, raw) in text.lines().enumerate() {
            let line_no = idx + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
                last_key = None;
                continue;
            }
            let continuation = raw.starts_with(' ') || raw.starts_with('\t');
            if continuation {
                if let (Some(sec), Some(key)) = (&section, &last_key) {
                    if let Some(value) = self.sections.get_mut(sec).and_then(|s| s.get_mut(key)) {
                        value.push('\n');
                        value.push_str(trimmed);
                        if let Some(last) = self
                            .multi
                            .get_mut(sec)
                            .and_then(|s| s.get_mut(key))
                            .and_then(|v| v.last_mut())
                        {
                            last.push('\n');
                            last.push_str(trimmed);
                        }
                        continue;
                    }
                }
            }
            if let Some(rest) = trimmed.strip_prefix('[') {
                let name = rest.strip_suffix(']').ok_or_else(|| ConfigError::Syntax {
                    origin: origin.to_string(),
                    line: line_no,
                    reason: "section header without closing ']'".into(),
                })?;
                let name = name.trim();
                if name.is_empty() {
                    return Err(ConfigError::Syntax {
                        origin: origin.to_string(),
                        line: line_no,
                        reason: "empty section name".into(),
                    });
                }
                let name = if name.eq_ignore_ascii_case("default") {
                    "DEFAULT".to_string()
                } else {
                    name.to_string()
                };
                self.sections.entry(name.clone()).or_default();
                section = Some(name);
                last_key = None;
                continue;
            }
            let Some(sec) = &section else {
                return Err(ConfigError::Syntax {
                    origin: origin.to_string(),
                    line: line_no,
                    reason: "option outside of any section".into(),
                });
            };
            let (key, value) = match trimmed.find(['=', ':']) {
                Some(pos) => (trimmed[..pos].trim(), trimmed[pos + 1..].trim()),
                None => {
                    return Err(ConfigError::Syntax {
                        origin: origin.to_string(),
                        line: line_no,
                        reason: format!("expected 'name = value', got '{trimmed}'"),
                    })
                }
            };
            if key.is_empty() {
                return Err(ConfigError::Syntax {
                    origin: origin.to_string(),
                    line: line_no,
                    reason: "empty option name".into(),
                });
            }
            let value = strip_quotes(value);
            self.sections
                .entry(sec.clone())
                .or_default()
                .insert(key.to_string(), value.to_string());
            self.multi
                .entry(sec.clone())
                .or_default()
                .entry(key.to_string())
                .or_default()
                .push(value.to_string());
            last_key = Some(key.to_string());
        }
        Ok(())
    }

    /// The value of `section.key`, if set in any file.
    pub fn get(&self, section: &str, key: &str) -> Option<&str> {
        self.sections
            .get(section)
            .and_then(|s| s.get(key))
            .map(String::as_str)
    }

    /// Every value of a multi-valued option, in the order read (lines of one
    /// file, then later files), as oslo.config gathers a `MultiStrOpt`.
    pub fn get_all(&self, section: &str, key: &str) -> Vec<&str> {
        self.multi
            .get(section)
            .and_then(|s| s.get(key))
            .map(|v| v.iter().map(String::as_str).collect())
            .unwrap_or_default()
    }

    /// All options of one section.
    pub fn section(&self, section: &str) -> Option<&BTreeMap<String, String>> {
        self.sections.get(section)
    }
}

fn strip_quotes(value: &str) -> &str {
    let bytes = value.as_bytes();
    if bytes.len() >= 2
        && ((bytes[0] == b'"' && bytes[bytes.len() - 1] == b'"')
            || (bytes[0] == b'\'' && bytes[bytes.len() - 1] == b'\''))
    {
        &value[1..value.len() - 1]
    } else {
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_file_wins_and_default_is_case_insensitive() {
        let mut ini = Ini::default();
        ini.merge_str("[default]\nhost = a\n[corral]\noci_runtime = crun\n", "one")
            .unwrap();
        ini.merge_str("[DEFAULT]\nhost = b\n", "two").unwrap();
        assert_eq!(ini.get("DEFAULT", "host"), Some("b"));
        assert_eq!(ini.get("corral", "oci_runtime"), Some("crun"));
    }

    #[test]
    fn comments_quotes_and_continuations() {
        let mut ini = Ini::default();
        ini.merge_str(
            "# c\n[pci]\nalias = \"x\"\ndevice_spec = a\n  b\n; other\n",
            "t",
        )
        .unwrap();
        assert_eq!(ini.get("pci", "alias"), Some("x"));
        assert_eq!(ini.get("pci", "device_spec"), Some("a\nb"));
    }

    #[test]
    fn multi_valued_options_accumulate() {
        let mut ini = Ini::default();
        ini.merge_str(
            "[pci]\ndevice_spec = {\"a\": 1}\ndevice_spec = {\"b\":\n  2}\n",
            "one",
        )
        .unwrap();
        ini.merge_str("[pci]\ndevice_spec = [{\"c\": 3}]\n", "two")
            .unwrap();
        assert_eq!(
            ini.get_all("pci", "device_spec"),
            vec!["{\"a\": 1}", "{\"b\":\n2}", "[{\"c\": 3}]"]
        );
        assert_eq!(ini.get("pci", "device_spec"), Some("[{\"c\": 3}]"));
        assert!(ini.get_all("pci", "alias").is_empty());
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let mut ini = Ini::default();
        let err = ini.merge_str("host = a\n", "f.conf").unwrap_err();
        assert!(err.to_string().contains("f.conf:1"), "{err}");
        let err = ini.merge_str("[x\n", "g.conf").unwrap_err();
        assert!(err.to_string().contains("g.conf:1"), "{err}");
        let err = ini.merge_str("[x]\njunk\n", "h.conf").unwrap_err();
        assert!(err.to_string().contains("h.conf:2"), "{err}");
    }
}
