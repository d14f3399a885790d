//! The runtime's start-up options as typed values: which OCI runtime to run
//! (`[corral] oci_runtime`) and the signal a graceful stop sends
//! (`[corral] stop_signal`). The configuration parses into these once, so a
//! bad value stops the daemon at start-up.

use std::fmt;
use std::str::FromStr;

/// Which OCI runtime runs the containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeChoice {
    /// crun where it works on this host's cgroup layout, runc otherwise.
    Auto,
    Runc,
    Crun,
}

impl FromStr for RuntimeChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<RuntimeChoice, String> {
        match s {
            "auto" => Ok(RuntimeChoice::Auto),
            "runc" => Ok(RuntimeChoice::Runc),
            "crun" => Ok(RuntimeChoice::Crun),
            _ => Err("must be auto, runc or crun".into()),
        }
    }
}

/// The signal a graceful stop sends to an instance's init, as configured
/// (`SIGTERM`, `PWR`, `15`, `SIGRTMIN+3`) and as its number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopSignal {
    name: String,
    number: i32,
}

impl StopSignal {
    /// The signal number to send.
    pub fn number(&self) -> i32 {
        self.number
    }

    /// The name as configured.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Default for StopSignal {
    fn default() -> StopSignal {
        StopSignal {
            name: "SIGTERM".into(),
            number: libc::SIGTERM,
        }
    }
}

impl FromStr for StopSignal {
    type Err = String;

    fn from_str(s: &str) -> Result<StopSignal, String> {
        match super::signal_number(s) {
            Some(number) => Ok(StopSignal {
                name: s.to_string(),
                number,
            }),
            None => Err("not a signal name (e.g. SIGTERM, SIGPWR, SIGRTMIN+3)".into()),
        }
    }
}

impl fmt::Display for StopSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl serde::Serialize for StopSignal {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_and_signals_parse() {
        assert_eq!("crun".parse(), Ok(RuntimeChoice::Crun));
        assert!("kata".parse::<RuntimeChoice>().is_err());
        assert!("Runc".parse::<RuntimeChoice>().is_err());
        let s: StopSignal = "SIGPWR".parse().unwrap();
        assert_eq!((s.name(), s.number()), ("SIGPWR", libc::SIGPWR));
        assert_eq!(StopSignal::default().number(), libc::SIGTERM);
        assert!("SIGNOPE".parse::<StopSignal>().is_err());
        assert!("0".parse::<StopSignal>().is_err());
    }
}
