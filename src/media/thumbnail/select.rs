//! Which thumbnail size answers a request: Synapse's rules, computed instead of looked up.
//!
//! Synapse makes every configured size when media is uploaded (`_generate_thumbnails`) and
//! later picks the best stored one (`_select_thumbnail`). We make thumbnails on demand, so
//! [`select_size`] first lists what Synapse would have stored for this source, then scores
//! that list exactly as Synapse does. Both steps need the source's size as displayed
//! (after EXIF orientation), because a stored `scale` thumbnail has the source's aspect.

use super::params::{Method, ThumbnailRequest};

/// One configured thumbnail size: the box a thumbnail is made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ThumbnailSize {
    pub width: u32,
    pub height: u32,
    pub method: Method,
}

impl ThumbnailSize {
    pub const fn new(width: u32, height: u32, method: Method) -> Self {
        ThumbnailSize {
            width,
            height,
            method,
        }
    }
}

/// Synapse's default `thumbnail_sizes`, in its order (order breaks ties).
pub const DEFAULT_SIZES: [ThumbnailSize; 5] = [
    ThumbnailSize::new(32, 32, Method::Crop),
    ThumbnailSize::new(96, 96, Method::Crop),
    ThumbnailSize::new(320, 240, Method::Scale),
    ThumbnailSize::new(640, 480, Method::Scale),
    ThumbnailSize::new(800, 600, Method::Scale),
];

/// The largest size with the source's aspect that fits in `max_width` x `max_height`
/// (Synapse's `Thumbnailer.aspect`, integer arithmetic and all, so sizes agree exactly).
/// It may be larger than the source: [`output_size`] caps it.
pub fn aspect(src_width: u32, src_height: u32, max_width: u32, max_height: u32) -> (u32, u32) {
    let (sw, sh) = (u64::from(src_width.max(1)), u64::from(src_height.max(1)));
    let (mw, mh) = (u64::from(max_width), u64::from(max_height));
    let (w, h) = if mw * sh < mh * sw {
        (mw, ((mw * sh) / sw).max(1))
    } else {
        (((mh * sw) / sh).max(1), mh)
    };
    // Both are at most max_width/max_height, so they fit in u32.
    (w as u32, h as u32)
}

/// The size of the image [`super::render`] makes for `target` from a source of this
/// (displayed) size: for `crop` exactly the box, for `scale` [`aspect`] capped at the
/// source's size, as Synapse does, so `scale` never enlarges.
pub fn output_size(src_width: u32, src_height: u32, target: ThumbnailSize) -> (u32, u32) {
    match target.method {
        Method::Crop => (target.width.max(1), target.height.max(1)),
        Method::Scale => {
            let (w, h) = aspect(src_width, src_height, target.width, target.height);
            (w.min(src_width).max(1), h.min(src_height).max(1))
        }
    }
}

/// Dynamic thumbnails (Synapse's `dynamic_thumbnails: true`): the request itself is the box.
pub fn dynamic_size(request: &ThumbnailRequest) -> ThumbnailSize {
    ThumbnailSize::new(request.width, request.height, request.method)
}

/// The configured size that answers `request` for a source of `src_width` x `src_height`
/// (as displayed), chosen as Synapse chooses among its stored thumbnails: only sizes of
/// the requested method; among those that reach the requested width or height (or, if
/// none does, among all), for `crop` the nearest aspect, then one covering both sides,
/// then the nearest size; for `scale` the nearest size. `None` if no configured size has
/// that method (Synapse answers 404).
///
/// Two Synapse details are kept on purpose so that clients see the same sizes:
/// - a `scale` size whose output equals a `crop` size's box replaces it (Synapse stores
///   one thumbnail per dimensions), so for a 96x96 source, `96x96 crop` is not offered;
/// - ties, which Synapse breaks by file length, are broken by pixel count (a smaller
///   thumbnail is a shorter file), then by configuration order.
pub fn select_size(
    request: &ThumbnailRequest,
    sizes: &[ThumbnailSize],
    src_width: u32,
    src_height: u32,
) -> Option<ThumbnailSize> {
    let candidates = stored_thumbnails(sizes, src_width, src_height);
    let (d_w, d_h) = (i64::from(request.width), i64::from(request.height));
    // Lexicographic score, lowest wins; then pixel count; then position (min_by_key keeps
    // the first of equal keys).
    let score = |c: &Candidate| -> ([i64; 3], u64) {
        let (t_w, t_h) = (i64::from(c.width), i64::from(c.height));
        let size_quality = ((d_w - t_w) * (d_h - t_h)).abs();
        let pixels = u64::from(c.width) * u64::from(c.height);
        match request.method {
            Method::Crop => {
                let aspect_quality = (d_w * t_h - d_h * t_w).abs();
                let min_quality = i64::from(!(d_w <= t_w && d_h <= t_h));
                ([aspect_quality, min_quality, size_quality], pixels)
            }
            Method::Scale => ([size_quality, 0, 0], pixels),
        }
    };
    let same_method = || candidates.iter().filter(|c| c.method == request.method);
    let reaching = |c: &&Candidate| i64::from(c.width) >= d_w || i64::from(c.height) >= d_h;
    let best = same_method()
        .filter(reaching)
        .min_by_key(|c| score(c))
        .or_else(|| same_method().min_by_key(|c| score(c)))?;
    Some(best.size)
}

/// A thumbnail Synapse would have stored: its real dimensions and the size it came from.
struct Candidate {
    width: u32,
    height: u32,
    method: Method,
    size: ThumbnailSize,
}

/// Synapse's `_generate_thumbnails` list: crop sizes keep their box, scale sizes get their
/// output size; one entry per dimensions, where a later `scale` turns an earlier `crop`
/// entry into itself but keeps its position, and any other repeat is dropped (equal
/// dimensions render the same, so which size stands for them does not matter).
fn stored_thumbnails(sizes: &[ThumbnailSize], src_width: u32, src_height: u32) -> Vec<Candidate> {
    let mut out: Vec<Candidate> = Vec::with_capacity(sizes.len());
    for &size in sizes {
        let (width, height) = output_size(src_width, src_height, size);
        match out
            .iter_mut()
            .find(|c| c.width == width && c.height == height)
        {
            Some(existing) if size.method == Method::Scale && existing.method == Method::Crop => {
                existing.method = Method::Scale;
                existing.size = size;
            }
            Some(_) => {}
            None => out.push(Candidate {
                width,
                height,
                method: size.method,
                size,
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(w: u32, h: u32, method: Method) -> ThumbnailRequest {
        ThumbnailRequest {
            width: w,
            height: h,
            method,
            animated: false,
        }
    }

    fn pick(w: u32, h: u32, method: Method, src: (u32, u32)) -> Option<(u32, u32, Method)> {
        select_size(&req(w, h, method), &DEFAULT_SIZES, src.0, src.1)
            .map(|s| (s.width, s.height, s.method))
    }

    #[test]
    fn aspect_matches_synapse() {
        // Values computed with Synapse's Thumbnailer.aspect.
        assert_eq!(aspect(1000, 500, 320, 240), (320, 160));
        assert_eq!(aspect(500, 1000, 320, 240), (120, 240));
        assert_eq!(aspect(4000, 3000, 800, 600), (800, 600));
        assert_eq!(aspect(1000, 333, 320, 240), (320, 106));
        assert_eq!(aspect(1, 50000, 320, 240), (1, 240));
        assert_eq!(aspect(50000, 1, 320, 240), (320, 1));
    }

    #[test]
    fn scale_never_enlarges() {
        let s = ThumbnailSize::new(800, 600, Method::Scale);
        assert_eq!(output_size(100, 50, s), (100, 50));
        assert_eq!(output_size(1, 1, s), (1, 1));
        assert_eq!(output_size(4000, 3000, s), (800, 600));
        let c = ThumbnailSize::new(96, 96, Method::Crop);
        assert_eq!(output_size(1, 1, c), (96, 96));
    }

    #[test]
    fn brief_examples_on_a_4_3_source() {
        let src = (4000, 3000);
        assert_eq!(
            pick(800, 600, Method::Scale, src),
            Some((800, 600, Method::Scale))
        );
        assert_eq!(
            pick(96, 96, Method::Crop, src),
            Some((96, 96, Method::Crop))
        );
        assert_eq!(
            pick(50, 50, Method::Crop, src),
            Some((96, 96, Method::Crop))
        );
        assert_eq!(
            pick(1000, 1000, Method::Scale, src),
            Some((800, 600, Method::Scale))
        );
        assert_eq!(
            pick(32, 32, Method::Scale, src),
            Some((320, 240, Method::Scale))
        );
        assert_eq!(
            pick(500, 500, Method::Crop, src),
            Some((96, 96, Method::Crop))
        );
    }

    #[test]
    fn no_size_of_that_method() {
        let only_scale = [ThumbnailSize::new(320, 240, Method::Scale)];
        assert_eq!(
            select_size(&req(32, 32, Method::Crop), &only_scale, 100, 100),
            None
        );
        assert_eq!(
            select_size(&req(32, 32, Method::Scale), &[], 100, 100),
            None
        );
    }

    #[test]
    fn scale_output_replaces_crop_of_same_dimensions() {
        // 96x96 source: 320x240 scale is stored as 96x96 scale, which replaces 96x96 crop.
        assert_eq!(
            pick(96, 96, Method::Crop, (96, 96)),
            Some((32, 32, Method::Crop))
        );
        assert_eq!(
            pick(96, 96, Method::Scale, (96, 96)),
            Some((320, 240, Method::Scale))
        );
    }

    /// Cases computed by running Synapse 1.163's `ThumbnailProvider._select_thumbnail` on
    /// the thumbnails its `_generate_thumbnails` would list for the default sizes (see
    /// `tests/fixtures/images/synapse_select_cases.py`): (source w, h, request w, h, method,
    /// chosen w, h, method), chosen as the stored thumbnail's own dimensions.
    type Case = (u32, u32, u32, u32, &'static str, u32, u32, &'static str);
    const SYNAPSE_CASES: &[Case] = include!("synapse_select_cases.in");

    #[test]
    fn agrees_with_synapse() {
        for &(sw, sh, rw, rh, m, ew, eh, em) in SYNAPSE_CASES {
            let method = if m == "crop" {
                Method::Crop
            } else {
                Method::Scale
            };
            let chosen = select_size(&req(rw, rh, method), &DEFAULT_SIZES, sw, sh)
                .expect("a size of each method is configured");
            let (w, h) = output_size(sw, sh, chosen);
            assert_eq!(
                (w, h, chosen.method.as_str()),
                (ew, eh, em),
                "source {sw}x{sh}, request {rw}x{rh} {m}"
            );
        }
    }
}
