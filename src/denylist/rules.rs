//! Denylist files and the lookup against them.
//!
//! Two forms are read: a plain list (one CID per line) and the IPFS compact denylist format
//! (IPIP-383: an optional YAML header ended by `---`, then `/ipfs/<cid>` rules, `!` exceptions
//! and `//<hash>` double-hashed entries as the public bad-bits list uses). Written here because
//! no maintained Rust crate reads that format (the reference implementation is Go's nopfs).
//!
//! Everything we serve is a whole CID (never a path inside one, never IPNS), so the rules that
//! can match are those that block a CID itself; path and IPNS rules are counted as not
//! applicable, and anything unreadable makes the whole file an error (so that a typo is seen
//! rather than silently blocking nothing).

use std::collections::{HashMap, HashSet};

use cid::multihash::Multihash;
use cid::Cid;
use sha2::{Digest, Sha256};

const SHA2_256: u64 = 0x12;
const BLAKE3: u64 = 0x1e;
const DAG_PB: u64 = 0x70;
/// The spec's bound for the YAML header.
const MAX_HEADER: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ParseError {
    pub line: usize,
    pub reason: String,
}

/// Every list in force, merged; rules apply in file order, the last matching one winning
/// (which is what lets an `!` exception undo an earlier block).
#[derive(Debug, Default)]
pub struct Denylist {
    /// Multihashes blocked outright (`/ipfs/<cid>`, `/ipfs/<cid>/*`, plain lines).
    multihashes: HashSet<Box<[u8]>>,
    /// Legacy double hashes: SHA-256 of `<CIDv1 base32>/`.
    legacy: HashSet<[u8; 32]>,
    /// Modern double hashes: the multihash of the base58btc text of the content's multihash,
    /// by hash function (each function used costs one hash per lookup).
    double: HashMap<u64, HashSet<Box<[u8]>>>,
    /// Rules that cannot match whole-CID media (paths inside a CID, IPNS names).
    not_applicable: usize,
    /// Verdicts of the double-hash rules, which cost a base32 and a base58 encoding and a
    /// hash or two per lookup (~1.3 µs with a bad-bits-size list, see benches/denylist.rs):
    /// a request for popular media pays that once. Lives and dies with this list, so a
    /// reload never sees an old verdict.
    memo: Memo,
}

/// Recent double-hash verdicts in a fixed direct-mapped table: a slot per digest prefix, the
/// last CID seen there wins. Written out because the general caches cost more than what they
/// would save here (moka measured ~4 µs per insert in the bench, three times the computation).
struct Memo(Box<[std::sync::Mutex<Slot>]>);

/// The CID last looked up in a slot, and whether it is blocked.
type Slot = Option<(Cid, bool)>;

/// About 1.8 MB, allocated only for lists with double-hash rules.
const MEMO_SLOTS: usize = 16_384;

impl Default for Memo {
    fn default() -> Self {
        Self(Box::new([]))
    }
}

impl Memo {
    fn allocate(&mut self) {
        if self.0.is_empty() {
            self.0 = (0..MEMO_SLOTS).map(|_| Default::default()).collect();
        }
    }

    fn slot(&self, cid: &Cid) -> std::sync::MutexGuard<'_, Slot> {
        // A digest is a hash already, so its first bytes spread evenly over the table.
        let digest = cid.hash().digest();
        let mut prefix = [0u8; 8];
        let n = digest.len().min(8);
        prefix[..n].copy_from_slice(&digest[..n]);
        let index = (u64::from_le_bytes(prefix) as usize) % MEMO_SLOTS;
        self.0[index].lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, cid: &Cid) -> Option<bool> {
        match &*self.slot(cid) {
            Some((seen, verdict)) if seen == cid => Some(*verdict),
            _ => None,
        }
    }

    fn insert(&self, cid: &Cid, verdict: bool) {
        *self.slot(cid) = Some((*cid, verdict));
    }
}

impl std::fmt::Debug for Memo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Memo")
    }
}

impl Denylist {
    /// Adds the rules of one file (`source` names it in errors).
    pub fn add_file(&mut self, text: &str) -> Result<(), ParseError> {
        let (body, first_line) = split_header(text)?;
        for (index, raw) in body.lines().enumerate() {
            let line = first_line + index;
            let rule = raw.trim();
            if rule.is_empty() || rule.starts_with('#') {
                continue;
            }
            // Hints may follow the rule after whitespace; they do not change what is blocked.
            let rule = rule.split_whitespace().next().unwrap_or_default();
            let (allow, rule) = match rule.strip_prefix('!') {
                Some(rest) => (true, rest),
                None => (false, rule),
            };
            self.add_rule(rule, allow)
                .map_err(|reason| ParseError { line, reason })?;
        }
        if !(self.legacy.is_empty() && self.double.is_empty()) {
            self.memo.allocate();
        }
        Ok(())
    }

    fn add_rule(&mut self, rule: &str, allow: bool) -> Result<(), String> {
        if let Some(hash) = rule.strip_prefix("//") {
            return self.add_double_hash(hash, allow);
        }
        if rule.starts_with("/ipns/") {
            self.not_applicable += 1;
            return Ok(());
        }
        let (cid, path) = match rule.strip_prefix("/ipfs/") {
            Some(rest) => rest.split_once('/').unwrap_or((rest, "")),
            // The plain form: a bare CID.
            None if !rule.starts_with('/') => (rule, ""),
            None => return Err(format!("not a rule this proxy knows: {rule:?}")),
        };
        let cid = Cid::try_from(cid).map_err(|e| format!("{cid:?} is not a CID: {e}"))?;
        // `/ipfs/<cid>/*` blocks the CID with every path; `/ipfs/<cid>/some/path` only a path.
        if !(path.is_empty() || path == "*") {
            self.not_applicable += 1;
            return Ok(());
        }
        let key: Box<[u8]> = cid.hash().to_bytes().into();
        if allow {
            self.multihashes.remove(&key);
        } else {
            self.multihashes.insert(key);
        }
        Ok(())
    }

    /// `//<hash>`: 64 hex digits are the legacy SHA-256 form; otherwise a base58btc multihash.
    /// The spec asks for both rules when a text could be either.
    fn add_double_hash(&mut self, text: &str, allow: bool) -> Result<(), String> {
        let mut understood = false;
        if text.len() == 64 {
            let mut digest = [0u8; 32];
            if decode_hex(text, &mut digest) {
                understood = true;
                if allow {
                    self.legacy.remove(&digest);
                } else {
                    self.legacy.insert(digest);
                }
            }
        }
        let multihash = multibase::Base::Base58Btc
            .decode(text)
            .ok()
            .and_then(|bytes| Multihash::<64>::from_bytes(&bytes).ok());
        match multihash {
            Some(mh) if matches!(mh.code(), SHA2_256 | BLAKE3) => {
                let set = self.double.entry(mh.code()).or_default();
                let key: Box<[u8]> = mh.to_bytes().into();
                if allow {
                    set.remove(&key);
                } else {
                    set.insert(key);
                }
                Ok(())
            }
            _ if understood => Ok(()),
            Some(mh) => Err(format!(
                "double hash with an unsupported hash function {:#x} (sha2-256 and blake3 are)",
                mh.code()
            )),
            None => Err(format!(
                "{text:?} is neither a SHA-256 hex digest nor a multihash"
            )),
        }
    }

    /// Whether `cid` is blocked by any rule.
    pub fn blocks(&self, cid: &Cid) -> bool {
        let multihash = cid.hash().to_bytes();
        if self.multihashes.contains(multihash.as_slice()) {
            return true;
        }
        if self.legacy.is_empty() && self.double.is_empty() {
            return false;
        }
        if let Some(verdict) = self.memo.get(cid) {
            return verdict;
        }
        let verdict = self.double_hashed(cid, &multihash);
        self.memo.insert(cid, verdict);
        verdict
    }

    fn double_hashed(&self, cid: &Cid, multihash: &[u8]) -> bool {
        if !self.legacy.is_empty() {
            // The legacy anchor names the CIDv1 (a CIDv0 is dag-pb), in base32, with a slash.
            let v1 = match cid.version() {
                cid::Version::V0 => Cid::new_v1(DAG_PB, *cid.hash()),
                cid::Version::V1 => *cid,
            };
            let text = v1
                .to_string_of_base(multibase::Base::Base32Lower)
                .unwrap_or_default();
            let digest: [u8; 32] = Sha256::new()
                .chain_update(text.as_bytes())
                .chain_update(b"/")
                .finalize()
                .into();
            if self.legacy.contains(&digest) {
                return true;
            }
        }
        if !self.double.is_empty() {
            let text = multibase::Base::Base58Btc.encode(multihash);
            for (code, set) in &self.double {
                let digest: Vec<u8> = match *code {
                    SHA2_256 => Sha256::digest(text.as_bytes()).to_vec(),
                    BLAKE3 => blake3::hash(text.as_bytes()).as_bytes().to_vec(),
                    _ => continue,
                };
                let Ok(mh) = Multihash::<64>::wrap(*code, &digest) else {
                    continue;
                };
                if set.contains(mh.to_bytes().as_slice()) {
                    return true;
                }
            }
        }
        false
    }

    /// Rules in force (for the log and the metrics).
    pub fn len(&self) -> usize {
        self.multihashes.len()
            + self.legacy.len()
            + self.double.values().map(HashSet::len).sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn not_applicable(&self) -> usize {
        self.not_applicable
    }
}

/// The rule lines and the line number of the first one: the YAML header (if any) ends at a
/// `---` line within the first MiB; a list with no such line has no header.
fn split_header(text: &str) -> Result<(&str, usize), ParseError> {
    let mut offset = 0;
    for (index, line) in text.split_inclusive('\n').enumerate() {
        if offset > MAX_HEADER {
            break;
        }
        if line.trim_end() == "---" {
            let header = &text[..offset];
            check_header(header).map_err(|reason| ParseError { line: 1, reason })?;
            return Ok((&text[offset + line.len()..], index + 2));
        }
        offset += line.len();
    }
    Ok((text, 1))
}

fn check_header(header: &str) -> Result<(), String> {
    if header.trim().is_empty() {
        return Ok(());
    }
    let value: serde_norway::Value =
        serde_norway::from_str(header).map_err(|e| format!("header is not valid YAML: {e}"))?;
    match value.get("version") {
        None => Ok(()),
        Some(v) if v.as_u64() == Some(1) => Ok(()),
        Some(v) => Err(format!(
            "denylist version {v:?} is not supported (version 1 is)"
        )),
    }
}

fn decode_hex(text: &str, out: &mut [u8; 32]) -> bool {
    let bytes = text.as_bytes();
    for (i, pair) in bytes.chunks(2).enumerate() {
        let (Some(high), Some(low)) = (hex_digit(pair[0]), hex_digit(pair[1])) else {
            return false;
        };
        out[i] = high << 4 | low;
    }
    true
}

fn hex_digit(byte: u8) -> Option<u8> {
    (byte as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cid(text: &str) -> Cid {
        Cid::try_from(text).unwrap()
    }

    fn list(text: &str) -> Denylist {
        let mut list = Denylist::default();
        list.add_file(text).unwrap();
        list
    }

    const PNG: &str = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku";

    #[test]
    fn plain_cids_match_by_multihash_in_any_form() {
        // CIDv0 of a dag-pb node, and its CIDv1 in base32 and base36: one multihash.
        let v0 = "QmVTF1yEejXd9iMgoRTFDxBv7HAz9kuZcQNBzHrceuK9HR";
        let v1 = Cid::new_v1(DAG_PB, *cid(v0).hash()).to_string();
        let base36 = Cid::new_v1(DAG_PB, *cid(v0).hash())
            .to_string_of_base(multibase::Base::Base36Lower)
            .unwrap();
        let l = list(&format!("# blocked\n{v0}\n"));
        assert!(l.blocks(&cid(v0)));
        assert!(l.blocks(&cid(&v1)));
        assert!(l.blocks(&cid(&base36)));
        // The same multihash under another codec is the same content.
        let raw = Cid::new_v1(0x55, *cid(v0).hash());
        assert!(l.blocks(&raw));
        assert!(!l.blocks(&cid(PNG)));
    }

    #[test]
    fn compact_format_with_header_hints_and_exceptions() {
        let text = format!(
            "version: 1\nname: test\nhints:\n  gateway_status: 410\n---\n\
             /ipfs/{PNG} reason=test\n\
             /ipfs/bafybeihvvulpp4evxj7x7armbqcyg6uezzuig6jp3lktpbovlqfkuqeuoq/*\n\
             /ipfs/QmTuvSQbEDR3sarFAN9kAeXBpiBCyYYNxdxciazBba11eC/test/*\n\
             /ipns/domain.example\n\
             /ipfs/QmUboz9UsQBDeS6Tug1U8jgoFkgYxyYood9NDyVURAY9pK\n\
             !/ipfs/QmUboz9UsQBDeS6Tug1U8jgoFkgYxyYood9NDyVURAY9pK\n"
        );
        let l = list(&text);
        assert!(l.blocks(&cid(PNG)));
        assert!(l.blocks(&cid(
            "bafybeihvvulpp4evxj7x7armbqcyg6uezzuig6jp3lktpbovlqfkuqeuoq"
        )));
        // A path rule does not block the CID itself.
        assert!(!l.blocks(&cid("QmTuvSQbEDR3sarFAN9kAeXBpiBCyYYNxdxciazBba11eC")));
        // The exception after the block wins.
        assert!(!l.blocks(&cid("QmUboz9UsQBDeS6Tug1U8jgoFkgYxyYood9NDyVURAY9pK")));
        assert_eq!(l.len(), 2);
        assert_eq!(l.not_applicable(), 2);
    }

    /// The two double-hash examples of the compact denylist specification.
    #[test]
    fn double_hashes_from_the_specification() {
        let modern = list("//QmX9dhRcQcKUw3Ws8485T5a9dtjrSCQaUAHnG4iK9i4ceM\n");
        assert!(modern.blocks(&cid("QmVTF1yEejXd9iMgoRTFDxBv7HAz9kuZcQNBzHrceuK9HR")));
        assert!(modern.blocks(&cid(
            "bafybeidjwik6im54nrpfg7osdvmx7zojl5oaxqel5cmsz46iuelwf5acja"
        )));
        assert!(!modern.blocks(&cid(PNG)));

        let legacy = list("//d9d295bde21f422d471a90f2a37ec53049fdf3e5fa3ee2e8f20e10003da429e7\n");
        let blocked = cid("bafybeiefwqslmf6zyyrxodaxx4vwqircuxpza5ri45ws3y5a62ypxti42e");
        assert!(legacy.blocks(&blocked));
        // The CIDv0 of the same dag-pb node is the same CIDv1.
        let v0 = Cid::new_v0(*blocked.hash()).unwrap();
        assert!(legacy.blocks(&v0));
        assert!(!legacy.blocks(&cid(PNG)));
    }

    #[test]
    fn blake3_double_hash() {
        let target = cid(PNG);
        let text = multibase::Base::Base58Btc.encode(target.hash().to_bytes());
        let digest = blake3::hash(text.as_bytes());
        let mh = Multihash::<64>::wrap(BLAKE3, digest.as_bytes()).unwrap();
        let rule = format!("//{}\n", multibase::Base::Base58Btc.encode(mh.to_bytes()));
        assert!(list(&rule).blocks(&target));
    }

    #[test]
    fn broken_lines_are_errors_with_their_line_number() {
        let mut l = Denylist::default();
        let error = l
            .add_file(&format!("# ok\n{PNG}\nnot-a-cid\n"))
            .unwrap_err();
        assert_eq!(error.line, 3);
        let error = Denylist::default()
            .add_file("version: 1\n---\n/ipfs/x\n")
            .unwrap_err();
        assert_eq!(error.line, 3, "{error}");
        assert!(Denylist::default().add_file("version: 2\n---\n").is_err());
        assert!(Denylist::default().add_file("a: [unclosed\n---\n").is_err());
        assert!(Denylist::default().add_file("//zzzz\n").is_err());
        assert!(Denylist::default().add_file("/not/a/rule\n").is_err());
    }

    proptest::proptest! {
        /// Arbitrary text: an error or a list, never a panic.
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
            let _ = Denylist::default().add_file(&text);
        }
    }
}
