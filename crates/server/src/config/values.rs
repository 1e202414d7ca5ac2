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

/// The PostgreSQL URL of the catalog (`postgres://` or `postgresql://`),
/// shown without its password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CatalogUrl(String);

impl CatalogUrl {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for CatalogUrl {
    type Error = String;
    fn try_from(url: String) -> Result<Self, String> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self(url))
        } else {
            Err(
                "must be a PostgreSQL URL (postgres://user:password@host/database); \
                 without catalog_url the catalog is the data directory's SQLite file"
                    .into(),
            )
        }
    }
}

impl From<CatalogUrl> for String {
    fn from(url: CatalogUrl) -> String {
        url.0
    }
}

impl std::fmt::Debug for CatalogUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&super::pools::without_password(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_catalog_url_is_postgresql_and_hides_its_password() {
        let url = CatalogUrl::try_from("postgres://tenantd:s3cret@db/catalog".to_owned()).unwrap();
        assert_eq!(format!("{url:?}"), "postgres://tenantd:***@db/catalog");
        assert!(CatalogUrl::try_from("sqlite://catalog.db".to_owned()).is_err());
    }

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
