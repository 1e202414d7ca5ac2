//! Value types of the configuration that carry their own rule, so that a
//! value out of range is refused where it is read, with its file, line and key.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration above zero, written as `humantime` does (`"30s"`, `"250ms"`):
/// the timeouts and intervals for which 0 would mean "never wait" or "spin".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NonZeroDuration(Duration);

impl NonZeroDuration {
    pub fn new(duration: Duration) -> Result<Self, String> {
        if duration.is_zero() {
            Err("must be greater than zero".into())
        } else {
            Ok(Self(duration))
        }
    }

    /// `secs` seconds, for defaults; 0 fails to compile.
    pub const fn from_secs(secs: u64) -> Self {
        assert!(secs > 0, "a duration above zero");
        Self(Duration::from_secs(secs))
    }

    /// `millis` milliseconds, for defaults and tests; 0 fails to compile.
    pub const fn from_millis(millis: u64) -> Self {
        assert!(millis > 0, "a duration above zero");
        Self(Duration::from_millis(millis))
    }

    pub const fn get(self) -> Duration {
        self.0
    }
}

impl From<NonZeroDuration> for Duration {
    fn from(duration: NonZeroDuration) -> Duration {
        duration.0
    }
}

impl Serialize for NonZeroDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        humantime_serde::serialize(&self.0, serializer)
    }
}

impl<'de> Deserialize<'de> for NonZeroDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let duration: Duration = humantime_serde::deserialize(deserializer)?;
        Self::new(duration).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duration_of_zero_is_refused_when_read() {
        let read = |text: &str| serde_json::from_str::<NonZeroDuration>(text);
        assert_eq!(read("\"250ms\"").unwrap().get(), Duration::from_millis(250));
        let zero = read("\"0s\"").unwrap_err().to_string();
        assert!(zero.contains("greater than zero"), "{zero}");
        assert!(read("\"soon\"").is_err());
        assert_eq!(
            serde_json::to_string(&NonZeroDuration::from_secs(90)).unwrap(),
            "\"1m 30s\""
        );
    }
}
