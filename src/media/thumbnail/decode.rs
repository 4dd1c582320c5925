//! Decoding: still images (with JPEG shrink-on-decode) and animation frames.

use std::io::Cursor;

use image::codecs::gif::GifDecoder;
use image::codecs::png::PngDecoder;
use image::codecs::webp::WebPDecoder;
use image::{AnimationDecoder, Delay, DynamicImage, ImageDecoder, ImageFormat};

use super::probe::{decode_error, header_decoder, image_limits, SourceInfo};
use super::resize::{Layout, Pixels};
use super::{Limits, ThumbnailError};

/// Decodes the first (or only) image in stored orientation. `need` is the smallest size
/// (stored orientation) the caller can resample from without enlarging: a JPEG is decoded
/// straight to 1/2, 1/4 or 1/8 of its size when that is still at least `need`, which skips
/// most of the decoding work (its DCT scaling is a proper low-pass, not a pixel skip).
pub(crate) fn decode_still(
    source: &[u8],
    info: &SourceInfo,
    need: (u32, u32),
    limits: &Limits,
) -> Result<Pixels, ThumbnailError> {
    if info.format == ImageFormat::Jpeg {
        let eighths = jpeg_shrink(info.stored_width, info.stored_height, need).unwrap_or(8);
        if let Some(pixels) = decode_jpeg(source, eighths, need, limits)? {
            return Ok(pixels);
        }
    }
    let (w, h) = (info.stored_width, info.stored_height);
    let decoder = header_decoder(source, info.format, limits)?;
    let image = DynamicImage::from_decoder(decoder).map_err(|e| decode_error(e, w, h))?;
    Ok(Pixels::from_dynamic(image))
}

/// The smallest DCT scale (in eighths: 1, 2 or 4) whose output is at least `need` on both
/// sides; `None` when only full size is.
fn jpeg_shrink(width: u32, height: u32, need: (u32, u32)) -> Option<u32> {
    [1, 2, 4]
        .into_iter()
        .find(|&e| scaled(width, e) >= need.0 && scaled(height, e) >= need.1)
}

/// jpeg-decoder's output length for `eighths`/8 of `len` (rounded up).
fn scaled(len: u32, eighths: u32) -> u32 {
    (len * eighths).div_ceil(8)
}

/// Decodes a JPEG at `eighths`/8 of its size with jpeg-decoder, which (like libjpeg under
/// Pillow) refuses a truncated file, where zune-jpeg (the `image` crate's) would paint the
/// missing part grey. `Ok(None)` for what it does not decode (CMYK, 12-bit, arithmetic
/// coding): the `image` crate's decoder gets those.
fn decode_jpeg(
    source: &[u8],
    eighths: u32,
    need: (u32, u32),
    limits: &Limits,
) -> Result<Option<Pixels>, ThumbnailError> {
    use jpeg_decoder::{Error, PixelFormat};
    let corrupt = |e: Error| match e {
        Error::Unsupported(_) => Ok(None),
        Error::Internal(e) => Err(ThumbnailError::Internal(format!("jpeg: {e}"))),
        other => Err(ThumbnailError::Corrupt(other.to_string())),
    };
    let mut decoder = jpeg_decoder::Decoder::new(source);
    decoder.set_max_decoding_buffer_size(
        usize::try_from(limits.decoder_alloc()).unwrap_or(usize::MAX),
    );
    if let Err(e) = decoder.read_info() {
        return corrupt(e);
    }
    let Some(info) = decoder.info() else {
        return Ok(None);
    };
    let layout = match info.pixel_format {
        PixelFormat::L8 => Layout::L8,
        PixelFormat::RGB24 => Layout::Rgb8,
        _ => return Ok(None),
    };
    let (w, h) = (u32::from(info.width), u32::from(info.height));
    let (out_w, out_h) = if eighths < 8 {
        // Asking for exactly the scaled size makes jpeg-decoder pick exactly this scale (it
        // takes the smallest scale reaching the request on either side).
        let want = (scaled(w, eighths), scaled(h, eighths));
        let want = (
            u16::try_from(want.0).unwrap_or(u16::MAX),
            u16::try_from(want.1).unwrap_or(u16::MAX),
        );
        match decoder.scale(want.0, want.1) {
            Ok((ow, oh)) => (u32::from(ow), u32::from(oh)),
            Err(e) => return corrupt(e),
        }
    } else {
        (w, h)
    };
    if out_w < need.0.min(w) || out_h < need.1.min(h) {
        return Err(ThumbnailError::Internal(
            "jpeg decoded smaller than planned".into(),
        ));
    }
    let data = match decoder.decode() {
        Ok(data) => data,
        Err(e) => return corrupt(e),
    };
    let expected = out_w as usize * out_h as usize * if layout == Layout::L8 { 1 } else { 3 };
    if data.len() != expected {
        return Err(ThumbnailError::Internal(
            "jpeg pixels of the wrong length".into(),
        ));
    }
    Ok(Some(Pixels {
        width: out_w,
        height: out_h,
        layout,
        data,
    }))
}

/// Decodes an animation frame by frame, handing each full RGBA canvas to `shrink` at once
/// so only one full-size frame is alive at a time. `Ok(None)` when the source is not
/// animated (one frame), is over the animation limits, or fails part-way: the caller then
/// makes a still thumbnail, as Synapse falls back to one.
pub(crate) fn decode_animation(
    source: &[u8],
    info: &SourceInfo,
    limits: &Limits,
    mut shrink: impl FnMut(Pixels) -> Result<Pixels, ThumbnailError>,
) -> Result<Option<Vec<(Pixels, Delay)>>, ThumbnailError> {
    let Some(frames) = frames(source, info.format, limits) else {
        return Ok(None);
    };
    let mut out = Vec::new();
    let mut decoded_pixels: u64 = 0;
    for frame in frames {
        let Ok(frame) = frame else {
            return Ok(None);
        };
        if out.len() >= limits.max_frames {
            return Ok(None);
        }
        let delay = frame.delay();
        let buffer = frame.into_buffer();
        decoded_pixels += u64::from(buffer.width()) * u64::from(buffer.height());
        if decoded_pixels > limits.max_animation_pixels {
            return Ok(None);
        }
        let pixels = Pixels {
            width: buffer.width(),
            height: buffer.height(),
            layout: Layout::Rgba8,
            data: buffer.into_raw(),
        };
        out.push((shrink(pixels)?, delay));
    }
    Ok((out.len() > 1).then_some(out))
}

fn frames<'a>(source: &'a [u8], format: ImageFormat, limits: &Limits) -> Option<image::Frames<'a>> {
    let cursor = Cursor::new(source);
    match format {
        ImageFormat::Gif => {
            let mut d = GifDecoder::new(cursor).ok()?;
            d.set_limits(image_limits(limits)).ok()?;
            Some(d.into_frames())
        }
        ImageFormat::WebP => {
            let mut d = WebPDecoder::new(cursor).ok()?;
            if !d.has_animation() {
                return None;
            }
            d.set_limits(image_limits(limits)).ok()?;
            Some(d.into_frames())
        }
        ImageFormat::Png => {
            let mut d = PngDecoder::new(cursor).ok()?;
            d.set_limits(image_limits(limits)).ok()?;
            if !d.is_apng().ok()? {
                return None;
            }
            Some(d.apng().ok()?.into_frames())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shrink_choice() {
        // 4000x3000 to 800x600: 1/4 gives 1000x750, 1/8 gives 500x375 (too small).
        assert_eq!(jpeg_shrink(4000, 3000, (800, 600)), Some(2));
        assert_eq!(jpeg_shrink(4000, 3000, (320, 240)), Some(1));
        assert_eq!(jpeg_shrink(4000, 3000, (1000, 750)), Some(2));
        assert_eq!(jpeg_shrink(4000, 3000, (1001, 750)), Some(4));
        assert_eq!(jpeg_shrink(4000, 3000, (2001, 10)), None);
        assert_eq!(scaled(4001, 1), 501);
    }
}
