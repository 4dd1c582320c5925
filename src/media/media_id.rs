//! MSC2706 media IDs: `ipfs:<cid>`.
//!
//! A media ID is ours when, after percent-decoding, it starts with `ipfs:` (case-sensitive).
//! The CID is parsed by the `cid` crate; the gateway request is later built from the parsed
//! value, never from the client's text.

use cid::Cid;

/// The MSC2706 prefix.
pub const IPFS_PREFIX: &str = "ipfs:";

/// Longest CID text we try to parse: real CIDs are well under 200 characters, and a bound
/// keeps hostile input cheap.
const MAX_CID_LEN: usize = 256;

/// A requested ipfs media item, with the key it is cached under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IpfsMedia {
    /// The CID as parsed (v0 stays v0 so the gateway sees the form the client used).
    pub cid: Cid,
    /// CIDv1 of the same content: v0 `Qm...` and its v1 form are one cache entry, one ETag.
    pub canonical: Cid,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaIdError {
    #[error("the media ID has an `ipfs:` prefix but `{0}` is not a valid CID")]
    InvalidCid(String),
}

/// `None` when the media ID is not an ipfs one (the homeserver's business);
/// `Some(Err)` when it claims to be but the CID is bad.
pub fn parse(decoded_media_id: &str) -> Option<Result<IpfsMedia, MediaIdError>> {
    let text = decoded_media_id.strip_prefix(IPFS_PREFIX)?;
    Some(parse_cid(text))
}

fn parse_cid(text: &str) -> Result<IpfsMedia, MediaIdError> {
    let invalid = || {
        let shown: String = text.chars().take(80).collect();
        MediaIdError::InvalidCid(shown)
    };
    if text.is_empty() || text.len() > MAX_CID_LEN || !text.is_ascii() {
        return Err(invalid());
    }
    let cid = Cid::try_from(text).map_err(|_| invalid())?;
    let canonical = cid.into_v1().map_err(|_| invalid())?;
    Ok(IpfsMedia { cid, canonical })
}

#[cfg(test)]
mod tests {
    use super::*;

    // A CIDv1 raw (sha2-256) and a CIDv0 (dag-pb, sha2-256), as Kubo prints them.
    const V1_RAW: &str = "bafkreibm6jg3ux5qumhcn2b3flc3tyu6dmlb4xa7u5bf44yegnrjhc4yeq";
    const V0: &str = "QmWATWQ7fVPP2EFGu71UkfnqhYXDYH566qy47CnJDgvs8u";

    #[test]
    fn not_ours_without_prefix() {
        assert!(parse("AbCdEfGhIjKlMnOpQrStUvWx").is_none());
        assert!(
            parse("IPFS:bafkqaaa").is_none(),
            "the prefix is case-sensitive"
        );
    }

    #[test]
    fn v1_and_v0_parse() {
        let m = parse(&format!("ipfs:{V1_RAW}")).unwrap().unwrap();
        assert_eq!(m.cid.to_string(), V1_RAW);
        assert_eq!(m.canonical, m.cid);
        let m = parse(&format!("ipfs:{V0}")).unwrap().unwrap();
        assert_eq!(m.cid.version(), cid::Version::V0);
        assert_eq!(m.canonical.version(), cid::Version::V1);
        assert_eq!(m.canonical.hash(), m.cid.hash());
    }

    #[test]
    fn base36_v1_is_the_same_content() {
        let v1: Cid = V1_RAW.parse().unwrap();
        let b36 = v1.to_string_of_base(multibase::Base::Base36Lower).unwrap();
        let m = parse(&format!("ipfs:{b36}")).unwrap().unwrap();
        assert_eq!(m.canonical, v1);
    }

    #[test]
    fn bad_cids_are_errors() {
        for bad in ["", "notacid", "bafy!!!", &"b".repeat(300), "Qm€"] {
            assert!(
                matches!(
                    parse(&format!("ipfs:{bad}")),
                    Some(Err(MediaIdError::InvalidCid(_)))
                ),
                "{bad}"
            );
        }
    }
}
