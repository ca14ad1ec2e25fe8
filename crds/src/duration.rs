//! A duration written the way Kubernetes users write them (`30s`, `5m`, `1h30m`, `250ms`).

use std::{borrow::Cow, fmt, str::FromStr, time::Duration as StdDuration};

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The pattern the CRD schema enforces; [`Duration::from_str`] accepts exactly this language.
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$";

/// A Go-style duration string kept as written, so that what is in git round-trips unchanged.
#[derive(Clone, PartialEq, Eq)]
pub struct Duration {
    text: String,
    value: StdDuration,
}

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationParseError(String);

impl fmt::Display for DurationParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid duration {:?}: expected a sequence of <number><unit> with unit ms, s, m or h (e.g. 90s, 5m, 1h30m)",
            self.0
        )
    }
}

impl std::error::Error for DurationParseError {}

impl Duration {
    /// The duration as a std value.
    pub fn get(&self) -> StdDuration {
        self.value
    }

    /// The text as written in the manifest.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl FromStr for Duration {
    type Err = DurationParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let refuse = || DurationParseError(text.to_owned());
        if text.is_empty() {
            return Err(refuse());
        }
        let mut total = 0f64;
        let mut rest = text;
        while !rest.is_empty() {
            let number_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(refuse)?;
            let (number, tail) = rest.split_at(number_len);
            let amount: f64 = number.parse().map_err(|_| refuse())?;
            if number.starts_with('.') || number.ends_with('.') {
                return Err(refuse());
            }
            let (unit_seconds, unit_len) = if tail.starts_with("ms") {
                (0.001, 2)
            } else if tail.starts_with('s') {
                (1.0, 1)
            } else if tail.starts_with('m') {
                (60.0, 1)
            } else if tail.starts_with('h') {
                (3600.0, 1)
            } else {
                return Err(refuse());
            };
            total += amount * unit_seconds;
            rest = &tail[unit_len..];
        }
        let value = StdDuration::try_from_secs_f64(total).map_err(|_| refuse())?;
        Ok(Duration {
            text: text.to_owned(),
            value,
        })
    }
}

impl fmt::Debug for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
            "maxLength": 32,
        })
    }

    fn inline_schema() -> bool {
        true
    }
}

/// Builds a [`Duration`] from a literal known to be valid; used for defaults.
pub(crate) fn literal(text: &str) -> Duration {
    text.parse()
        .unwrap_or_else(|error| panic!("default duration literal: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_unit_and_compounds() {
        let cases = [
            ("250ms", 0.25),
            ("30s", 30.0),
            ("5m", 300.0),
            ("2h", 7200.0),
            ("1h30m", 5400.0),
            ("1.5m", 90.0),
            ("0s", 0.0),
        ];
        for (text, seconds) in cases {
            let parsed: Duration = text.parse().unwrap();
            assert_eq!(parsed.get().as_secs_f64(), seconds, "{text}");
            assert_eq!(parsed.to_string(), text);
        }
    }

    #[test]
    fn refuses_what_the_schema_pattern_refuses() {
        for text in [
            "", "5", "m", "5d", "5 m", "-5s", "1.s", ".5s", "5mx", "1e3s",
        ] {
            assert!(text.parse::<Duration>().is_err(), "{text:?} accepted");
        }
    }
}
