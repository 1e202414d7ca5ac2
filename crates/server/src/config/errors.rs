//! Why a configuration cannot be used, said with the file, line and key as
//! written, and the nearest valid name.

use std::path::PathBuf;

/// Why the configuration cannot be used. The message names the setting.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("{0}")]
    Parse(#[from] Box<figment::Error>),
    /// A setting tenantd does not have: a typo, most likely.
    #[error("{}", unknown_setting(.origin, .line, .key, .nearest))]
    UnknownSetting {
        /// The file or environment variable it was found in.
        origin: String,
        /// Its line in the file, when found there.
        line: Option<usize>,
        /// The setting as written, with the tables it is in (`admission.seets`).
        key: String,
        /// The valid setting nearest to it, if one is near.
        nearest: Option<String>,
    },
    /// A setting whose value cannot be read or is out of its range.
    #[error("{}: `{key}`: {reason}", at(.origin, .line))]
    InvalidValue {
        origin: String,
        line: Option<usize>,
        key: String,
        reason: String,
    },
    #[error("invalid setting `{setting}`: {reason}")]
    Invalid {
        setting: &'static str,
        reason: String,
    },
}

/// `file:line`, or the origin alone when the line is not known.
fn at(origin: &str, line: &Option<usize>) -> String {
    line.map_or(origin.to_owned(), |line| format!("{origin}:{line}"))
}

/// How an unknown setting is told: where, what, and what was likely meant.
fn unknown_setting(
    origin: &str,
    line: &Option<usize>,
    key: &str,
    nearest: &Option<String>,
) -> String {
    let at = at(origin, line);
    match nearest {
        Some(nearest) => format!("{at}: unknown setting `{key}`; did you mean `{nearest}`?"),
        None => format!("{at}: unknown setting `{key}`"),
    }
}

/// A figment error as the user can act on it, named with its file and line
/// (or its environment variable) and its key as written: an unknown field
/// with the nearest valid name, a bad value with why it is refused.
pub(super) fn explain(error: figment::Error) -> ConfigError {
    // The path figment reports starts with its profile (`default`).
    let mut path: Vec<String> = error
        .path
        .iter()
        .skip_while(|segment| *segment == "default")
        .cloned()
        .collect();
    let unknown = match &error.kind {
        figment::error::Kind::UnknownField(found, expected) => {
            let nearest = expected
                .iter()
                .map(|name| (strsim::damerau_levenshtein(found, name), *name))
                .filter(|(distance, name)| *distance <= (name.len() / 3).max(1))
                .min()
                .map(|(_, name)| name.to_owned());
            if path.last() != Some(found) {
                path.push(found.clone());
            }
            Some(nearest)
        }
        _ => None,
    };
    // The line is found by the last key written as a name (not an index
    // into an array of tables).
    let Some(written) = path
        .iter()
        .rev()
        .find(|segment| !segment.bytes().all(|b| b.is_ascii_digit()))
        .cloned()
    else {
        return ConfigError::Parse(Box::new(error));
    };
    let key = path.join(".");
    let (origin, line) = match error.metadata.as_ref().and_then(|m| m.source.as_ref()) {
        Some(figment::Source::File(file)) => {
            let line = std::fs::read_to_string(file).ok().and_then(|text| {
                text.lines().position(|line| {
                    line.trim_start()
                        .strip_prefix(written.as_str())
                        .is_some_and(|rest| rest.trim_start().starts_with('='))
                })
            });
            (file.display().to_string(), line.map(|l| l + 1))
        }
        _ => match error.metadata.as_ref() {
            Some(m) if m.name.contains("environment") => (
                format!(
                    "environment variable TENANTD_{}",
                    key.replace('.', "_").to_uppercase()
                ),
                None,
            ),
            Some(m) => (m.name.to_string(), None),
            None => ("configuration".to_owned(), None),
        },
    };
    match unknown {
        Some(nearest) => ConfigError::UnknownSetting {
            origin,
            line,
            key,
            nearest,
        },
        None => ConfigError::InvalidValue {
            origin,
            line,
            key,
            reason: error.kind.to_string(),
        },
    }
}
