//! Which `Content-Type` ipfs media is served with.
//!
//! IPFS stores bytes, not types, and a gateway's `Content-Type` is only its own guess, so we
//! sniff the first bytes ourselves: `infer` knows the binary formats by their magic numbers;
//! it has no rule for SVG or plain text, so those two are written here (after the WHATWG MIME
//! sniffing rules for text). The `{fileName}` extension refines text and unknown bytes only:
//! a name can never turn an image into a page.

/// How many leading bytes we wait for before deciding.
pub const SNIFF_LEN: usize = 1024;

/// The type the bytes themselves show, if any.
pub fn sniff(prefix: &[u8]) -> Option<&'static str> {
    if prefix.is_empty() {
        return None;
    }
    if is_svg(prefix) {
        return Some("image/svg+xml");
    }
    if let Some(kind) = infer::get(prefix) {
        return Some(kind.mime_type());
    }
    if looks_like_text(prefix) {
        return Some("text/plain");
    }
    None
}

/// The type to serve: sniffed, refined by the file name for text and unknown bytes.
pub fn resolve(sniffed: Option<&'static str>, file_name: Option<&str>) -> String {
    let from_name = || {
        file_name
            .and_then(|n| mime_guess::from_path(n).first_raw())
            .map(str::to_owned)
    };
    match sniffed {
        Some("text/plain") => from_name()
            .filter(|t| {
                t.starts_with("text/") || t.starts_with("application/") || t == "image/svg+xml"
            })
            .unwrap_or_else(|| "text/plain".to_owned()),
        Some(t) => t.to_owned(),
        None => from_name().unwrap_or_else(|| "application/octet-stream".to_owned()),
    }
}

fn is_svg(prefix: &[u8]) -> bool {
    // Bytes, not `str`: hostile input need not be UTF-8 or cut at a character boundary.
    let mut rest = trim(prefix.strip_prefix(b"\xef\xbb\xbf").unwrap_or(prefix));
    // Skip the prolog: XML declaration, processing instructions, comments, doctype.
    loop {
        if let Some(after) = rest.strip_prefix(b"<?") {
            rest = trim(after_marker(after, b"?>"));
        } else if let Some(after) = rest.strip_prefix(b"<!--") {
            rest = trim(after_marker(after, b"-->"));
        } else if starts_with_ignore_case(rest, b"<!doctype") {
            rest = trim(after_marker(rest, b">"));
        } else {
            break;
        }
    }
    starts_with_ignore_case(rest, b"<svg")
        && matches!(
            rest.get(4),
            Some(b' ' | b'>' | b'\t' | b'\n' | b'\r' | b'/')
        )
}

fn trim(bytes: &[u8]) -> &[u8] {
    bytes.trim_ascii_start()
}

/// What follows the first `marker`, or nothing.
fn after_marker<'a>(bytes: &'a [u8], marker: &[u8]) -> &'a [u8] {
    bytes
        .windows(marker.len())
        .position(|w| w == marker)
        .map_or(&[], |i| &bytes[i + marker.len()..])
}

fn starts_with_ignore_case(bytes: &[u8], prefix: &[u8]) -> bool {
    bytes.len() >= prefix.len() && bytes[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// WHATWG "binary data byte" rule, plus valid UTF-8 (a cut at the end of the prefix is fine).
fn looks_like_text(prefix: &[u8]) -> bool {
    let binary = |b: &u8| matches!(*b, 0x00..=0x08 | 0x0B | 0x0E..=0x1A | 0x1C..=0x1F);
    if prefix.iter().any(binary) {
        return false;
    }
    match std::str::from_utf8(prefix) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none() && prefix.len() - e.valid_up_to() < 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_formats_by_magic() {
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"), Some("image/png"));
        assert_eq!(sniff(b"\xff\xd8\xff\xe0\0\x10JFIF\0"), Some("image/jpeg"));
        assert_eq!(sniff(b"GIF89a\x01\0\x01\0"), Some("image/gif"));
    }

    #[test]
    fn html_svg_and_text() {
        assert_eq!(sniff(b"  <!DOCTYPE html><html>"), Some("text/html"));
        assert_eq!(
            sniff(
                b"<?xml version=\"1.0\"?>\n<!-- x -->\n<svg xmlns=\"http://www.w3.org/2000/svg\">"
            ),
            Some("image/svg+xml")
        );
        assert_eq!(sniff(b"<svg>"), Some("image/svg+xml"));
        assert_eq!(sniff("hello, wörld".as_bytes()), Some("text/plain"));
        assert_eq!(sniff(b"\x00\x01\x02binary"), None);
        assert_eq!(sniff(b""), None);
    }

    #[test]
    fn hostile_prefixes_do_not_panic() {
        for bytes in [
            &b"<?"[..],
            b"<!--",
            b"<!doctype",
            b"<svg",
            b"\xef\xbb\xbf",
            "é<svg".as_bytes(),
        ] {
            let _ = sniff(bytes);
        }
    }

    #[test]
    fn text_cut_inside_a_character_is_still_text() {
        let s = "abc€".as_bytes();
        assert_eq!(sniff(&s[..s.len() - 1]), Some("text/plain"));
    }

    #[test]
    fn file_name_refines_only_text_and_unknown() {
        assert_eq!(resolve(Some("image/png"), Some("x.html")), "image/png");
        assert_eq!(resolve(Some("text/plain"), Some("x.html")), "text/html");
        assert_eq!(resolve(Some("text/plain"), Some("x.csv")), "text/csv");
        assert_eq!(resolve(Some("text/plain"), Some("x.png")), "text/plain");
        assert_eq!(resolve(None, Some("movie.mp4")), "video/mp4");
        assert_eq!(resolve(None, None), "application/octet-stream");
    }
}
