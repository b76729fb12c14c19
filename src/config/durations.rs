//! Optional durations in the file and the environment: a humantime duration, or a word
//! (`"off"`, `"auto"`) for `None`.

/// An optional duration written as a string: a humantime duration, or one of `words` for
/// `None` (the first is the one written).
pub(crate) mod worded_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        duration: &Option<Duration>,
        serializer: S,
        words: &[&str],
    ) -> Result<S::Ok, S::Error> {
        match duration {
            Some(duration) => {
                serializer.serialize_str(&humantime::format_duration(*duration).to_string())
            }
            None => serializer.serialize_str(words[0]),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
        words: &[&str],
    ) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(deserializer)?;
        let text = text.trim();
        if words.contains(&text) {
            return Ok(None);
        }
        humantime::parse_duration(text)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
}

/// `None` is written `"auto"`: the value is derived from the data.
pub(crate) mod auto_duration {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    const WORDS: &[&str] = &["auto"];

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        super::worded_duration::serialize(d, s, WORDS)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        super::worded_duration::deserialize(d, WORDS)
    }
}

/// `None` is written `"off"`, so that the serialized defaults show the key as a string.
pub(crate) mod optional_duration {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    const WORDS: &[&str] = &["off", "none"];

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        super::worded_duration::serialize(d, s, WORDS)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        super::worded_duration::deserialize(d, WORDS)
    }
}
