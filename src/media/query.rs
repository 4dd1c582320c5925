//! The query string of a media request, read once. As Synapse reads it: form-urlencoded
//! (`%XX` and `+` decoded), the first occurrence of a parameter wins, unknown parameters
//! are ignored.

use std::time::Duration;

/// The parameters a media answer reads, still as text: each answer checks its own.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MediaQuery {
    pub timeout_ms: Option<String>,
    pub width: Option<String>,
    pub height: Option<String>,
    pub method: Option<String>,
    pub animated: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("timeout_ms is not a non-negative integer")]
    Timeout,
}

impl MediaQuery {
    /// Reads a raw (still percent-encoded) query string.
    pub fn parse(raw: Option<&str>) -> Self {
        let mut query = MediaQuery::default();
        let Some(raw) = raw else {
            return query;
        };
        for (key, value) in url::form_urlencoded::parse(raw.as_bytes()) {
            let slot = match key.as_ref() {
                "timeout_ms" => &mut query.timeout_ms,
                "width" => &mut query.width,
                "height" => &mut query.height,
                "method" => &mut query.method,
                "animated" => &mut query.animated,
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(value.into_owned());
            }
        }
        query
    }

    /// `timeout_ms` (else `default`), capped at `max`; a value that is not a number is
    /// refused, as Synapse refuses it.
    pub fn timeout(&self, default: Duration, max: Duration) -> Result<Duration, QueryError> {
        let Some(raw) = &self.timeout_ms else {
            return Ok(default);
        };
        let ms: u64 = raw.parse().map_err(|_| QueryError::Timeout)?;
        Ok(Duration::from_millis(ms).min(max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: Duration = Duration::from_secs(20);
    const MAX: Duration = Duration::from_secs(60);

    #[test]
    fn first_occurrence_wins_and_values_are_decoded() {
        let q = MediaQuery::parse(Some(
            "width=%3320&width=5&method=%63rop&x=1&timeout_ms=1%30",
        ));
        assert_eq!(q.width.as_deref(), Some("320"));
        assert_eq!(q.method.as_deref(), Some("crop"));
        assert_eq!(q.timeout(DEFAULT, MAX), Ok(Duration::from_millis(10)));
        assert_eq!(MediaQuery::parse(None), MediaQuery::default());
    }

    #[test]
    fn timeouts_default_cap_and_refuse() {
        let t = |raw| MediaQuery::parse(raw).timeout(DEFAULT, MAX);
        assert_eq!(t(None), Ok(DEFAULT));
        assert_eq!(t(Some("a=1")), Ok(DEFAULT));
        assert_eq!(t(Some("timeout_ms=250")), Ok(Duration::from_millis(250)));
        assert_eq!(t(Some("timeout_ms=999999999")), Ok(MAX));
        for bad in [
            "timeout_ms=abc",
            "timeout_ms=-1",
            "timeout_ms=",
            "timeout_ms=1.5",
        ] {
            assert_eq!(t(Some(bad)), Err(QueryError::Timeout), "{bad}");
        }
        // Another parameter's name ending in the same letters is not it.
        assert_eq!(t(Some("my_timeout_ms=abc")), Ok(DEFAULT));
    }
}
