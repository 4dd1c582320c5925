//! Pixel buffers and the resampling step (fast_image_resize: SIMD, Lanczos3 like Pillow's
//! LANCZOS that Synapse uses).

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::{DynamicImage, ImageBuffer};

use super::ThumbnailError;

/// The pixel layouts we resize and encode; everything else is converted to one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    L8,
    La8,
    Rgb8,
    Rgba8,
}

impl Layout {
    fn channels(self) -> usize {
        match self {
            Layout::L8 => 1,
            Layout::La8 => 2,
            Layout::Rgb8 => 3,
            Layout::Rgba8 => 4,
        }
    }

    fn pixel_type(self) -> PixelType {
        match self {
            Layout::L8 => PixelType::U8,
            Layout::La8 => PixelType::U8x2,
            Layout::Rgb8 => PixelType::U8x3,
            Layout::Rgba8 => PixelType::U8x4,
        }
    }

    pub(crate) fn has_alpha(self) -> bool {
        matches!(self, Layout::La8 | Layout::Rgba8)
    }
}

/// An 8-bit image, rows packed.
#[derive(Debug, Clone)]
pub(crate) struct Pixels {
    pub width: u32,
    pub height: u32,
    pub layout: Layout,
    pub data: Vec<u8>,
}

impl Pixels {
    /// Takes a decoded image, converting (one copy) only what is not 8-bit already.
    pub fn from_dynamic(image: DynamicImage) -> Pixels {
        let (width, height) = (image.width(), image.height());
        let (layout, data) = match image {
            DynamicImage::ImageLuma8(b) => (Layout::L8, b.into_raw()),
            DynamicImage::ImageLumaA8(b) => (Layout::La8, b.into_raw()),
            DynamicImage::ImageRgb8(b) => (Layout::Rgb8, b.into_raw()),
            DynamicImage::ImageRgba8(b) => (Layout::Rgba8, b.into_raw()),
            // Grey stays grey: the 8-bit copy is then at most half the decoded bytes.
            DynamicImage::ImageLuma16(_) => (Layout::L8, image.into_luma8().into_raw()),
            DynamicImage::ImageLumaA16(_) => (Layout::La8, image.into_luma_alpha8().into_raw()),
            other if other.color().has_alpha() => (Layout::Rgba8, other.into_rgba8().into_raw()),
            other => (Layout::Rgb8, other.into_rgb8().into_raw()),
        };
        Pixels {
            width,
            height,
            layout,
            data,
        }
    }

    pub fn into_dynamic(self) -> Result<DynamicImage, ThumbnailError> {
        let (w, h) = (self.width, self.height);
        let bad = || ThumbnailError::Internal("pixel buffer of the wrong length".into());
        Ok(match self.layout {
            Layout::L8 => {
                DynamicImage::ImageLuma8(ImageBuffer::from_raw(w, h, self.data).ok_or_else(bad)?)
            }
            Layout::La8 => {
                DynamicImage::ImageLumaA8(ImageBuffer::from_raw(w, h, self.data).ok_or_else(bad)?)
            }
            Layout::Rgb8 => {
                DynamicImage::ImageRgb8(ImageBuffer::from_raw(w, h, self.data).ok_or_else(bad)?)
            }
            Layout::Rgba8 => {
                DynamicImage::ImageRgba8(ImageBuffer::from_raw(w, h, self.data).ok_or_else(bad)?)
            }
        })
    }

    /// Whether any pixel is not fully opaque.
    pub fn uses_transparency(&self) -> bool {
        let n = self.layout.channels();
        self.layout.has_alpha() && self.data.chunks_exact(n).any(|p| p[n - 1] != 255)
    }

    /// The same pixels without the alpha channel.
    pub fn without_alpha(self) -> Pixels {
        let layout = match self.layout {
            Layout::La8 => Layout::L8,
            Layout::Rgba8 => Layout::Rgb8,
            _ => return self,
        };
        let n = self.layout.channels();
        let data = self
            .data
            .chunks_exact(n)
            .flat_map(|p| p[..n - 1].iter().copied())
            .collect();
        Pixels {
            layout,
            data,
            ..self
        }
    }
}

/// A region of a source image, in its pixels (fractions allowed: the resampler weighs
/// partial pixels, so a centre crop needs no rounding).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Region {
    pub left: f64,
    pub top: f64,
    pub width: f64,
    pub height: f64,
}

/// Resamples `region` of `src` to exactly `width` x `height`.
pub(crate) fn resize(
    src: &Pixels,
    region: Region,
    width: u32,
    height: u32,
) -> Result<Pixels, ThumbnailError> {
    let whole = region.left == 0.0
        && region.top == 0.0
        && region.width == f64::from(src.width)
        && region.height == f64::from(src.height);
    if whole && src.width == width && src.height == height {
        return Ok(src.clone());
    }
    let internal = |e: &dyn std::fmt::Display| ThumbnailError::Internal(format!("resize: {e}"));
    let pixel_type = src.layout.pixel_type();
    let src_view =
        ImageRef::new(src.width, src.height, &src.data, pixel_type).map_err(|e| internal(&e))?;
    let mut dst = Image::new(width, height, pixel_type);
    let options = ResizeOptions::new()
        .resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3))
        .crop(region.left, region.top, region.width, region.height);
    Resizer::new()
        .resize(&src_view, &mut dst, &options)
        .map_err(|e| internal(&e))?;
    Ok(Pixels {
        width,
        height,
        layout: src.layout,
        data: dst.into_vec(),
    })
}
