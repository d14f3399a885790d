//! Option-value parsing shared by every frontend and leaf: the one boolean
//! parser with oslo.config's spellings, oslo.utils' lenient boolean for the
//! places Nova uses `strutils.bool_from_string`, the byte-size parser and
//! the `KEY=VALUE` pairs of the CLI's flags.
//! A leaf: it depends on nothing else in the crate.

/// oslo.config's `types.Boolean`: `true`/`1`/`on`/`yes` and
/// `false`/`0`/`off`/`no`, case-insensitive, nothing else (no trimming, no
/// `t`/`y`/`f`/`n`: oslo.config refuses those).
pub fn parse_bool(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "on" | "yes" => Some(true),
        "false" | "0" | "off" | "no" => Some(false),
        _ => None,
    }
}

/// `oslo_utils.strutils.bool_from_string` (strict): oslo.config's spellings
/// plus `t`/`y` and `f`/`n`, case-insensitive, surrounding white space
/// ignored. Nova reads PCI `device_spec` tags and the like with it.
pub fn bool_from_string(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "t" | "true" | "on" | "y" | "yes" => Some(true),
        "0" | "f" | "false" | "off" | "n" | "no" => Some(false),
        _ => None,
    }
}

/// Parses a byte size: a plain number of bytes, or a number with a unit
/// (KiB, MiB, GiB, TiB in powers of 1024; KB, MB, GB, TB in powers of 1000;
/// K, M, G, T as the binary units, as LXD and most users mean them).
pub fn parse_size(input: &str) -> Result<u64, String> {
    let s = input.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = (&s[..split], s[split..].trim());
    if number.is_empty() {
        return Err(format!("invalid size {input:?}: no number"));
    }
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => {
            return Err(format!(
                "invalid size {input:?}: unknown unit {unit:?} (use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB)"
            ))
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid size {input:?}: {number:?} is not a number"))?;
    let bytes = value * mult as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("invalid size {input:?}: out of range"));
    }
    Ok(bytes.round() as u64)
}

/// `KEY=VALUE` pairs (the CLI's `--limit` and `--device` flags) as a map,
/// key and value trimmed; a pair without `=` or a key given twice is an error.
pub fn parse_pairs(pairs: &[String]) -> Result<std::collections::BTreeMap<String, String>, String> {
    let mut out = std::collections::BTreeMap::new();
    for p in pairs {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| format!("{p:?} is not KEY=VALUE"))?;
        if out
            .insert(k.trim().to_string(), v.trim().to_string())
            .is_some()
        {
            return Err(format!("{k} is given twice"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("256MB"), Ok(256_000_000));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("2GB"), Ok(2_000_000_000));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("-5MiB").is_err());
    }

    #[test]
    fn booleans_are_strict() {
        assert_eq!(parse_bool("False"), Some(false));
        assert_eq!(parse_bool("no"), Some(false));
        assert_eq!(parse_bool("0"), Some(false));
        assert_eq!(parse_bool("oFF"), Some(false));
        assert_eq!(parse_bool("YES"), Some(true));
        assert_eq!(parse_bool("On"), Some(true));
        for bad in ["nope", "y", "t", "n", "f", "2", "", " true", "enabled"] {
            assert_eq!(parse_bool(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn lenient_booleans_take_the_short_spellings() {
        for t in ["t", "Y", "yes", " TRUE ", "1", "on"] {
            assert_eq!(bool_from_string(t), Some(true), "{t:?}");
        }
        for f in ["f", "N", "no", "False", "0", "off"] {
            assert_eq!(bool_from_string(f), Some(false), "{f:?}");
        }
        for bad in ["", "2", "maybe"] {
            assert_eq!(bool_from_string(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn pairs() {
        let m = parse_pairs(&["a=1".into(), "b = x=y".into()]).unwrap();
        assert_eq!(m["a"], "1");
        assert_eq!(m["b"], "x=y");
        assert!(parse_pairs(&["a".into()]).is_err());
        assert!(parse_pairs(&["a=1".into(), "a=2".into()]).is_err());
    }
}
