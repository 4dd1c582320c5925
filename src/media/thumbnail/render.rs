//! The rendering pipeline: geometry, decode, resample, orient, encode.

use std::panic::{catch_unwind, AssertUnwindSafe};

use image::metadata::Orientation;

use super::decode::{decode_animation, decode_still};
use super::encode::{encode_gif, encode_still};
use super::probe::{probe, swaps_axes, SourceInfo};
use super::resize::{resize, Pixels, Region};
use super::select::output_size;
use super::{Limits, Method, Thumbnail, ThumbnailError, ThumbnailSize};

/// Makes the thumbnail of `source` for `target` (a size from [`super::select_size`] or
/// [`super::dynamic_size`]): `crop` gives exactly `target`'s box, `scale` the largest size
/// with the source's aspect inside it but never larger than the source
/// ([`super::output_size`]). `animated` asks for an animated GIF when the source is an
/// animation; otherwise, or if the animation is over the limits, the first frame is used.
///
/// Never panics: a panic in a decoder becomes [`ThumbnailError::Internal`].
pub fn render(
    source: &[u8],
    source_type: &str,
    target: ThumbnailSize,
    animated: bool,
    limits: &Limits,
) -> Result<Thumbnail, ThumbnailError> {
    render_until(source, source_type, target, animated, limits, &|| true)
}

/// [`render`], asking `go_on` at each checkpoint (before decoding, after it, between
/// animation frames, before encoding) and stopping with [`ThumbnailError::Abandoned`] once it
/// says no. A decode in progress is not interrupted: its work is bounded by [`Limits`].
pub fn render_until(
    source: &[u8],
    source_type: &str,
    target: ThumbnailSize,
    animated: bool,
    limits: &Limits,
    go_on: &dyn Fn() -> bool,
) -> Result<Thumbnail, ThumbnailError> {
    guarded(go_on, |checkpoint| {
        let info = probe(source, source_type, limits)?;
        let plan = Plan::new(&info, target);
        checkpoint()?;
        if animated {
            if let Some(thumbnail) = render_animated(source, &info, &plan, limits, checkpoint)? {
                return Ok(thumbnail);
            }
        }
        let mut made = None;
        render_stills(source, &info, &[plan], limits, checkpoint, &mut |_, t| {
            made = Some(t)
        })?;
        made.ok_or_else(|| ThumbnailError::Internal("no thumbnail was made".into()))
    })
}

/// Still thumbnails of `source` for every size in `targets`, from one decode (at the scale
/// the largest needs), handed to `each` in `targets`' order as each is encoded: what
/// Synapse does when media arrives, so a source decodes once for all its configured sizes
/// (the decode is most of a render's work: a 12 MP JPEG's entropy decoding alone takes
/// longer than resizing and encoding all five default sizes from it). `go_on` is asked at
/// the same checkpoints as in [`render_until`], and before each size; the decoded image is
/// held until the last size is made.
///
/// Never panics: a panic in a decoder becomes [`ThumbnailError::Internal`].
pub fn render_each_until(
    source: &[u8],
    source_type: &str,
    targets: &[ThumbnailSize],
    limits: &Limits,
    go_on: &dyn Fn() -> bool,
    each: &mut dyn FnMut(ThumbnailSize, Thumbnail),
) -> Result<(), ThumbnailError> {
    guarded(go_on, |checkpoint| {
        let info = probe(source, source_type, limits)?;
        let plans: Vec<Plan> = targets.iter().map(|&t| Plan::new(&info, t)).collect();
        checkpoint()?;
        render_stills(source, &info, &plans, limits, checkpoint, &mut |i, t| {
            each(targets[i], t)
        })
    })
}

/// Runs `work` with a checkpoint that fails with [`ThumbnailError::Abandoned`] once `go_on`
/// says no, and turns a panic inside it (a decoder's) into [`ThumbnailError::Internal`].
fn guarded<T>(
    go_on: &dyn Fn() -> bool,
    work: impl FnOnce(&dyn Fn() -> Result<(), ThumbnailError>) -> Result<T, ThumbnailError>,
) -> Result<T, ThumbnailError> {
    let checkpoint = || {
        if go_on() {
            Ok(())
        } else {
            Err(ThumbnailError::Abandoned)
        }
    };
    catch_unwind(AssertUnwindSafe(|| work(&checkpoint)))
        .unwrap_or_else(|_| Err(ThumbnailError::Internal("the thumbnailer panicked".into())))
}

/// Decodes once for all `plans` and makes each in turn, handing it to `each` with its index.
fn render_stills(
    source: &[u8],
    info: &SourceInfo,
    plans: &[Plan],
    limits: &Limits,
    checkpoint: &dyn Fn() -> Result<(), ThumbnailError>,
    each: &mut dyn FnMut(usize, Thumbnail),
) -> Result<(), ThumbnailError> {
    let need = plans
        .iter()
        .fold((1, 1), |(w, h), p| (w.max(p.need.0), h.max(p.need.1)));
    let decoded = decode_still(source, info, need, limits)?;
    for (i, plan) in plans.iter().enumerate() {
        checkpoint()?;
        let pixels = plan.apply(&decoded)?;
        checkpoint()?;
        let (bytes, content_type) = encode_still(pixels, info.output)?;
        each(
            i,
            Thumbnail {
                bytes,
                content_type,
                width: plan.width,
                height: plan.height,
            },
        );
    }
    Ok(())
}

fn render_animated(
    source: &[u8],
    info: &SourceInfo,
    plan: &Plan,
    limits: &Limits,
    checkpoint: &dyn Fn() -> Result<(), ThumbnailError>,
) -> Result<Option<Thumbnail>, ThumbnailError> {
    let shrink = |frame| {
        checkpoint()?;
        plan.apply(&frame)
    };
    let Some(frames) = decode_animation(source, info, limits, shrink)? else {
        return Ok(None);
    };
    Ok(Some(Thumbnail {
        bytes: encode_gif(frames)?,
        content_type: "image/gif",
        width: plan.width,
        height: plan.height,
    }))
}

/// What to cut from the source and what size to make, worked out once in the source's
/// stored orientation so that only the small thumbnail is ever rotated.
struct Plan {
    /// Output size, as displayed.
    width: u32,
    height: u32,
    /// The output size before orientation (swapped for quarter turns).
    stored_out: (u32, u32),
    /// The part of the source that is kept, as fractions of the stored image: where it
    /// starts and how much of each side.
    start: (f64, f64),
    keep: (f64, f64),
    orientation: Orientation,
    /// The smallest decoded size that still shrinks (never enlarges) to the output.
    need: (u32, u32),
}

impl Plan {
    fn new(info: &SourceInfo, target: ThumbnailSize) -> Plan {
        let (width, height) = output_size(info.width, info.height, target);
        // Crop as Synapse does: scale to cover the box, keep the centre. As fractions of
        // the displayed source: the side that overflows keeps only the box's share.
        let (start_displayed, keep_displayed) = synapse_crop(info, target.method, width, height);
        let turned = swaps_axes(info.orientation);
        let (stored_out, keep, start) = if turned {
            (
                (height, width),
                (keep_displayed.1, keep_displayed.0),
                (start_displayed.1, start_displayed.0),
            )
        } else {
            ((width, height), keep_displayed, start_displayed)
        };
        // An offset counted from the top or left as displayed is counted from the other end
        // of a stored axis that the orientation reverses.
        let reversed = reversed_axes(info.orientation);
        let start = (
            if reversed.0 {
                1.0 - start.0 - keep.0
            } else {
                start.0
            },
            if reversed.1 {
                1.0 - start.1 - keep.1
            } else {
                start.1
            },
        );
        let need = (
            (f64::from(stored_out.0) / keep.0).ceil() as u32,
            (f64::from(stored_out.1) / keep.1).ceil() as u32,
        );
        Plan {
            width,
            height,
            stored_out,
            start,
            keep,
            orientation: info.orientation,
            need,
        }
    }

    /// Resamples the kept centre of `decoded` (any size with the stored aspect: full, or
    /// shrunk while decoding) to the output, then orients it.
    fn apply(&self, decoded: &Pixels) -> Result<Pixels, ThumbnailError> {
        let (dw, dh) = (f64::from(decoded.width), f64::from(decoded.height));
        let (kw, kh) = (dw * self.keep.0, dh * self.keep.1);
        let region = Region {
            left: dw * self.start.0,
            top: dh * self.start.1,
            width: kw,
            height: kh,
        };
        let small = resize(decoded, region, self.stored_out.0, self.stored_out.1)?;
        if self.orientation == Orientation::NoTransforms {
            return Ok(small);
        }
        let mut image = small.into_dynamic()?;
        image.apply_orientation(self.orientation);
        Ok(Pixels::from_dynamic(image))
    }
}

/// What Synapse keeps of the displayed source, as fractions `(start, keep)` per axis: for
/// a crop it scales the source to cover the box with integer sides (floor), then cuts the
/// box from the middle at an integer offset (floor), so an odd overflow leaves the extra
/// pixel on the right or bottom (`Thumbnailer.crop`). Worked out the same way here, so a
/// crop sits where Synapse's does, to the pixel.
fn synapse_crop(
    info: &SourceInfo,
    method: Method,
    width: u32,
    height: u32,
) -> ((f64, f64), (f64, f64)) {
    let (src_w, src_h) = (u64::from(info.width), u64::from(info.height));
    let (w, h) = (u64::from(width), u64::from(height));
    if method == Method::Scale || src_w == 0 || src_h == 0 {
        return ((0.0, 0.0), (1.0, 1.0));
    }
    let share = |offset: u64, part: u64, whole: u64| {
        let whole = whole.max(part) as f64;
        (offset as f64 / whole, part as f64 / whole)
    };
    if w * src_h > h * src_w {
        let scaled_h = (w * src_h) / src_w;
        let (top, keep) = share(scaled_h.saturating_sub(h) / 2, h, scaled_h);
        ((0.0, top), (1.0, keep))
    } else {
        let scaled_w = (h * src_w) / src_h;
        let (left, keep) = share(scaled_w.saturating_sub(w) / 2, w, scaled_w);
        ((left, 0.0), (keep, 1.0))
    }
}

/// Which stored axes (x, y) run the other way once the image is oriented for display.
fn reversed_axes(o: Orientation) -> (bool, bool) {
    match o {
        Orientation::NoTransforms | Orientation::Rotate90FlipH => (false, false),
        Orientation::FlipHorizontal | Orientation::Rotate270 => (true, false),
        Orientation::FlipVertical | Orientation::Rotate90 => (false, true),
        Orientation::Rotate180 | Orientation::Rotate270FlipH => (true, true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::ImageFormat;

    use super::super::probe::Output;

    fn info(w: u32, h: u32, orientation: Orientation) -> SourceInfo {
        let turned = swaps_axes(orientation);
        SourceInfo {
            width: if turned { h } else { w },
            height: if turned { w } else { h },
            format: ImageFormat::Jpeg,
            stored_width: w,
            stored_height: h,
            orientation,
            output: Output::Jpeg,
            decoded_bytes: u64::from(w) * u64::from(h) * 3,
        }
    }

    #[test]
    fn crop_offsets_round_as_synapses() {
        // 1000x500 to 95x95: Synapse scales to 190x95 and cuts from x = (190 - 95) // 2 = 47,
        // not from the exact middle (47.5).
        let plan = Plan::new(
            &info(1000, 500, Orientation::NoTransforms),
            ThumbnailSize::new(95, 95, Method::Crop),
        );
        assert_eq!(plan.start, (47.0 / 190.0, 0.0));
        assert_eq!(plan.keep, (95.0 / 190.0, 1.0));
        // Turned upside down, the same displayed offset is counted from the stored right.
        let plan = Plan::new(
            &info(1000, 500, Orientation::Rotate180),
            ThumbnailSize::new(95, 95, Method::Crop),
        );
        assert_eq!(plan.start, (48.0 / 190.0, 0.0));
        // A quarter turn: displayed 500x1000, the stored x axis is the displayed y axis.
        let plan = Plan::new(
            &info(1000, 500, Orientation::Rotate90),
            ThumbnailSize::new(95, 95, Method::Crop),
        );
        assert_eq!(plan.start, (47.0 / 190.0, 0.0));
        assert_eq!(plan.keep, (95.0 / 190.0, 1.0));
        let plan = Plan::new(
            &info(1000, 500, Orientation::Rotate270),
            ThumbnailSize::new(95, 95, Method::Crop),
        );
        assert_eq!(plan.start, (48.0 / 190.0, 0.0));
    }

    #[test]
    fn crop_keeps_the_centre_share() {
        // 1000x500 to 96x96: the width overflows, half of it is kept.
        let plan = Plan::new(
            &info(1000, 500, Orientation::NoTransforms),
            ThumbnailSize::new(96, 96, Method::Crop),
        );
        assert_eq!((plan.width, plan.height), (96, 96));
        assert_eq!(plan.keep, (0.5, 1.0));
        assert_eq!(plan.need, (192, 96));
    }

    #[test]
    fn quarter_turn_swaps_everything() {
        // Stored 400x200, displayed 200x400; crop 100x50 keeps a quarter of the displayed
        // height, which is the stored width.
        let plan = Plan::new(
            &info(400, 200, Orientation::Rotate90),
            ThumbnailSize::new(100, 50, Method::Crop),
        );
        assert_eq!((plan.width, plan.height), (100, 50));
        assert_eq!(plan.stored_out, (50, 100));
        assert_eq!(plan.keep, (0.25, 1.0));
        assert_eq!(plan.need, (200, 100));
    }
}
