//! The thumbnail query parameters (`width`, `height`, `method`, `animated`), parsed as Synapse
//! parses them (the errcodes of its refusals are in `error`).

use std::fmt;

use crate::media::query::MediaQuery;

/// How a thumbnail is fitted to the requested box.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// Fit inside the box keeping the aspect ratio; never larger than the source.
    Scale,
    /// Fill the box, then cut the overflow off both sides equally: exactly the box.
    Crop,
}

impl Method {
    /// The name used in query strings and in Synapse's thumbnail table.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Scale => "scale",
            Method::Crop => "crop",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A client's thumbnail request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ThumbnailRequest {
    /// Desired width; the answer may be larger (a configured size) or, for `scale`, smaller.
    pub width: u32,
    /// Desired height.
    pub height: u32,
    pub method: Method,
    /// `animated=true`: an animated thumbnail if the source is animated.
    pub animated: bool,
}

/// A query parameter was missing or malformed: always a 400 for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    /// `M_MISSING_PARAM`: a required parameter was absent.
    #[error("Missing required integer query parameter {0}")]
    Missing(&'static str),
    /// `M_INVALID_PARAM`: a parameter was present but not acceptable.
    #[error("{message}")]
    Invalid {
        param: &'static str,
        message: String,
    },
}

/// Parses a raw (still percent-encoded) query string, e.g. `width=96&height=96&method=crop`.
///
/// As Synapse: the first occurrence of a parameter wins, unknown parameters are ignored,
/// `method` defaults to `scale` and `animated` to `false`, the messages are Synapse's.
/// Unlike Synapse 1.163, `width=0` and `height=0` are refused (Synapse answers them with
/// its smallest thumbnail), and so is an unknown `method` (Synapse answers 404): the spec
/// asks for positive sizes and `crop` or `scale`.
pub fn parse_query(query: &str) -> Result<ThumbnailRequest, ParamError> {
    from_query(&MediaQuery::parse(Some(query)))
}

/// The thumbnail parameters of a media request's query.
pub fn from_query(query: &MediaQuery) -> Result<ThumbnailRequest, ParamError> {
    let MediaQuery {
        width,
        height,
        method,
        animated,
        ..
    } = query.clone();
    Ok(ThumbnailRequest {
        width: positive("width", width)?,
        height: positive("height", height)?,
        // Synapse lower-cases the method before choosing a size.
        method: match method.map(|m| m.to_ascii_lowercase()).as_deref() {
            None | Some("scale") => Method::Scale,
            Some("crop") => Method::Crop,
            Some(_) => {
                return Err(ParamError::Invalid {
                    param: "method",
                    message: "Query parameter 'method' must be one of ['crop', 'scale']".into(),
                })
            }
        },
        animated: match animated.as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(_) => {
                return Err(ParamError::Invalid {
                    param: "animated",
                    message: "Boolean query parameter 'animated' must be one of ['true', 'false']"
                        .into(),
                })
            }
        },
    })
}

/// Synapse's `parse_integer` (surrounding spaces and a sign are accepted, as Python's `int`
/// accepts them) with its messages, plus a refusal of 0 and of sizes beyond `u32`.
fn positive(param: &'static str, value: Option<String>) -> Result<u32, ParamError> {
    let value = value.ok_or(ParamError::Missing(param))?;
    let invalid = |message: String| ParamError::Invalid { param, message };
    let n: i64 = value
        .trim()
        .parse()
        .map_err(|_| invalid(format!("Query parameter {param} must be an integer")))?;
    if n <= 0 {
        return Err(invalid(format!(
            "Query parameter {param} must be a positive integer."
        )));
    }
    u32::try_from(n).map_err(|_| invalid(format!("Query parameter {param} is too large")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(w: u32, h: u32, method: Method, animated: bool) -> ThumbnailRequest {
        ThumbnailRequest {
            width: w,
            height: h,
            method,
            animated,
        }
    }

    #[test]
    fn defaults_and_values() {
        assert_eq!(
            parse_query("width=96&height=64"),
            Ok(req(96, 64, Method::Scale, false))
        );
        assert_eq!(
            parse_query("height=64&width=96&method=crop&animated=true&type=image/png"),
            Ok(req(96, 64, Method::Crop, true))
        );
        assert_eq!(
            parse_query("width=1&height=1&method=scale&animated=false"),
            Ok(req(1, 1, Method::Scale, false))
        );
        // Percent-encoding is undone; the first occurrence wins.
        assert_eq!(
            parse_query("width=%3320&height=240&width=5&method=%63rop"),
            Ok(req(320, 240, Method::Crop, false))
        );
        assert_eq!(
            parse_query("width=+5&height=%205%20"),
            Ok(req(5, 5, Method::Scale, false))
        );
        assert_eq!(
            parse_query("width=5&height=5&method=CROP"),
            Ok(req(5, 5, Method::Crop, false))
        );
    }

    #[test]
    fn missing_is_m_missing_param() {
        for q in ["", "height=5", "width=5", "method=crop"] {
            let err = parse_query(q).unwrap_err();
            assert!(matches!(err, ParamError::Missing(_)), "{q}");
        }
        assert_eq!(
            parse_query("height=5").unwrap_err(),
            ParamError::Missing("width")
        );
    }

    #[test]
    fn messages_are_synapses() {
        assert_eq!(
            parse_query("height=5").unwrap_err().to_string(),
            "Missing required integer query parameter width"
        );
        assert_eq!(
            parse_query("width=x&height=5").unwrap_err().to_string(),
            "Query parameter width must be an integer"
        );
        assert_eq!(
            parse_query("width=5&height=-1").unwrap_err().to_string(),
            "Query parameter height must be a positive integer."
        );
    }

    #[test]
    fn malformed_is_m_invalid_param() {
        for q in [
            "width=0&height=5",
            "width=-5&height=5",
            "width=5.0&height=5",
            "width=abc&height=5",
            "width=&height=5",
            "width=99999999999&height=5",
            "width=5&height=5&method=fit",
            "width=5&height=5&animated=1",
            "width=5&height=5&animated=yes",
        ] {
            let err = parse_query(q).unwrap_err();
            assert!(matches!(err, ParamError::Invalid { .. }), "{q}");
        }
    }
}
