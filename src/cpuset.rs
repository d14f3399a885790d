//! Nova's CPU set syntax (`nova.virt.hardware.parse_cpu_spec`), strictly:
//! comma-separated CPU numbers and inclusive ranges, `^N` or `^A-B` to take
//! CPUs out again, e.g. `2-5,^3` = {2, 4, 5}. Empty elements (`1,,2`) are
//! skipped as Nova skips them; anything else that is not a number, a reversed
//! range or an empty result is an error.

use std::collections::BTreeSet;
use std::fmt;

/// A set of host CPU numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CpuSet(pub BTreeSet<u32>);

/// Highest CPU number accepted (Linux's NR_CPUS upper bound).
const MAX_CPU: u32 = 8191;

fn cpu(text: &str, rule: &str) -> Result<u32, String> {
    let t = text.trim();
    if t.is_empty() || !t.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!("invalid CPU number {t:?} in {rule:?}"));
    }
    let n: u32 = t
        .parse()
        .map_err(|_| format!("invalid CPU number {t:?} in {rule:?}"))?;
    if n > MAX_CPU {
        return Err(format!("CPU {n} in {rule:?} is above {MAX_CPU}"));
    }
    Ok(n)
}

impl CpuSet {
    /// Parses a Nova CPU set string; the result must not be empty.
    pub fn parse(spec: &str) -> Result<CpuSet, String> {
        let mut include = BTreeSet::new();
        let mut exclude = BTreeSet::new();
        for raw in spec.split(',') {
            let rule = raw.trim();
            if rule.is_empty() {
                continue;
            }
            let (reject, body) = match rule.strip_prefix('^') {
                Some(rest) => (true, rest),
                None => (false, rule),
            };
            let ids: Vec<u32> = match body.split_once('-') {
                Some((a, b)) => {
                    let (start, end) = (cpu(a, rule)?, cpu(b, rule)?);
                    if start > end {
                        return Err(format!("invalid range {rule:?}: start above end"));
                    }
                    (start..=end).collect()
                }
                None => vec![cpu(body, rule)?],
            };
            if reject {
                exclude.extend(ids);
            } else {
                include.extend(ids);
            }
        }
        let set: BTreeSet<u32> = include.difference(&exclude).copied().collect();
        if set.is_empty() {
            return Err(format!("CPU set {spec:?} is empty"));
        }
        Ok(CpuSet(set))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, cpu: u32) -> bool {
        self.0.contains(&cpu)
    }

    pub fn is_disjoint(&self, other: &CpuSet) -> bool {
        self.0.is_disjoint(&other.0)
    }

    /// The CPUs of `self` not in `other`; `None` when that leaves none.
    pub fn without(&self, other: &CpuSet) -> Option<CpuSet> {
        let rest: BTreeSet<u32> = self.0.difference(&other.0).copied().collect();
        (!rest.is_empty()).then_some(CpuSet(rest))
    }
}

/// The kernel's list format (`0-2,5`), as cpuset.cpus takes it.
impl fmt::Display for CpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        let mut iter = self.0.iter().copied().peekable();
        while let Some(start) = iter.next() {
            let mut end = start;
            while iter.peek() == Some(&(end + 1)) {
                end = iter.next().unwrap_or(end);
            }
            parts.push(if start == end {
                start.to_string()
            } else {
                format!("{start}-{end}")
            });
        }
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[u32]) -> CpuSet {
        CpuSet(v.iter().copied().collect())
    }

    #[test]
    fn nova_syntax() {
        assert_eq!(CpuSet::parse("2-5,^3").unwrap(), set(&[2, 4, 5]));
        assert_eq!(CpuSet::parse("0").unwrap(), set(&[0]));
        assert_eq!(CpuSet::parse(" 1 , 3 ").unwrap(), set(&[1, 3]));
        assert_eq!(CpuSet::parse("0-7,^2-5").unwrap(), set(&[0, 1, 6, 7]));
        assert_eq!(CpuSet::parse("1,,2").unwrap(), set(&[1, 2]));
        assert_eq!(CpuSet::parse("3-3").unwrap(), set(&[3]));
    }

    #[test]
    fn junk_is_refused() {
        for bad in [
            "", "a", "1-", "-1", "5-2", "^", "1-2-3", "^1", "0x1", "1.5", "+1", "1;2", "99999",
        ] {
            assert!(CpuSet::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn kernel_list_format() {
        assert_eq!(set(&[0, 1, 2, 5, 7, 8]).to_string(), "0-2,5,7-8");
        assert_eq!(set(&[4]).to_string(), "4");
    }
}
