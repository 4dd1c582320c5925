//! The thumbnailer against real encoder output (`tests/fixtures/images/`, made with Pillow:
//! see the README there): sizes, orientation, formats, animation, and refusals.

use std::io::Cursor;
use std::time::{Duration, Instant};

use image::codecs::gif::GifDecoder;
use image::{AnimationDecoder, GenericImageView, Rgba};
use ipfs_media_proxy::error::RequestError;
use ipfs_media_proxy::media::thumbnail::{
    dynamic_size, probe, render, select_size, Limits, Method, Thumbnail, ThumbnailError,
    ThumbnailRequest, ThumbnailSize, DEFAULT_SIZES,
};

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/images/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn size(w: u32, h: u32, method: Method) -> ThumbnailSize {
    ThumbnailSize::new(w, h, method)
}

/// Renders and decodes the result, checking the reported size is the real one.
fn rendered(
    name: &str,
    ty: &str,
    target: ThumbnailSize,
    animated: bool,
) -> (image::DynamicImage, &'static str, Vec<u8>) {
    let t = render(&fixture(name), ty, target, animated, &Limits::default())
        .unwrap_or_else(|e| panic!("{name} {target:?}: {e}"));
    let img = image::load_from_memory(&t.bytes).expect("output decodes");
    assert_eq!(
        (img.width(), img.height()),
        (t.width, t.height),
        "{name} {target:?}"
    );
    (img, t.content_type, t.bytes)
}

fn is_red(p: Rgba<u8>) -> bool {
    p[0] > 150 && p[1] < 90 && p[2] < 90
}

fn is_blue(p: Rgba<u8>) -> bool {
    p[2] > 150 && p[0] < 90 && p[1] < 90
}

/// Fails unless `img` is red near its top and blue near its bottom; `what` names the case.
fn assert_red_over_blue(img: &image::DynamicImage, what: &str) {
    let (w, h) = (img.width(), img.height());
    assert!(
        is_red(img.get_pixel(w / 2, h / 8)),
        "{what} top {:?}",
        img.get_pixel(w / 2, h / 8)
    );
    assert!(
        is_blue(img.get_pixel(w / 2, h - 1 - h / 8)),
        "{what} bottom"
    );
}

#[test]
fn default_sizes_on_a_2_1_png() {
    let expected = [(32, 32), (96, 96), (320, 160), (640, 320), (800, 400)];
    for (target, want) in DEFAULT_SIZES.iter().zip(expected) {
        let (img, ty, _) = rendered("pattern-1000x500.png", "image/png", *target, false);
        assert_eq!((img.width(), img.height()), want, "{target:?}");
        assert_eq!(ty, "image/png");
    }
}

#[test]
fn crop_keeps_the_centre() {
    // Left half red, right half blue: a centre crop of a square shows both halves.
    let (img, _, _) = rendered(
        "pattern-1000x500.png",
        "image/png",
        size(96, 96, Method::Crop),
        false,
    );
    assert!(is_red(img.get_pixel(20, 70)), "{:?}", img.get_pixel(20, 70));
    assert!(
        is_blue(img.get_pixel(76, 70)),
        "{:?}",
        img.get_pixel(76, 70)
    );
}

#[test]
fn odd_aspects_and_no_enlarging() {
    let cases = [
        (size(100, 100, Method::Scale), (100, 50)),
        (size(100, 7, Method::Scale), (14, 7)),
        (size(2000, 2000, Method::Scale), (1000, 500)), // never larger than the source
        (size(1000, 500, Method::Scale), (1000, 500)),
        (size(300, 50, Method::Crop), (300, 50)),
        (size(50, 300, Method::Crop), (50, 300)),
        (size(1, 1, Method::Crop), (1, 1)),
        (size(1200, 700, Method::Crop), (1200, 700)), // crop fills, as Synapse's does
    ];
    for (target, want) in cases {
        let (img, _, _) = rendered("pattern-1000x500.png", "image/png", target, false);
        assert_eq!((img.width(), img.height()), want, "{target:?}");
        if target.method == Method::Scale {
            let ratio = f64::from(img.width()) / f64::from(img.height());
            assert!((ratio - 2.0).abs() < 0.15, "{target:?}: aspect {ratio}");
        }
    }
}

#[test]
fn one_pixel_source() {
    for (target, want) in [
        (size(320, 240, Method::Scale), (1, 1)),
        (size(32, 32, Method::Crop), (32, 32)),
    ] {
        let (img, _, _) = rendered("one-1x1.png", "image/png", target, false);
        assert_eq!((img.width(), img.height()), want);
    }
}

#[test]
fn exif_orientation_is_applied() {
    let info = probe(
        &fixture("orientation6-400x200.jpg"),
        "image/jpeg",
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(
        (info.width, info.height),
        (200, 400),
        "probe reports the displayed size"
    );
    // 800x600 decodes at full size; 100x100 and 32x32 are shrunk while decoding: both paths.
    for (target, want) in [
        (size(800, 600, Method::Scale), (200, 400)),
        (size(100, 100, Method::Scale), (50, 100)),
        (size(96, 96, Method::Crop), (96, 96)),
        (size(32, 32, Method::Crop), (32, 32)),
    ] {
        let (img, ty, _) = rendered("orientation6-400x200.jpg", "image/jpeg", target, false);
        assert_eq!(ty, "image/jpeg");
        assert_eq!((img.width(), img.height()), want, "{target:?}");
        // Orientation 6 turns the stored image clockwise: its red left half goes on top.
        assert_red_over_blue(&img, &format!("{target:?}"));
    }
}

#[test]
fn jpeg_variants() {
    // 320x240 and 32x32 are decoded at 1/2 and 1/8 size; 640x480 at full size.
    for target in [
        size(640, 480, Method::Scale),
        size(320, 240, Method::Scale),
        size(32, 32, Method::Crop),
    ] {
        for name in ["progressive-640x480.jpg", "cmyk-640x480.jpg"] {
            let (img, ty, _) = rendered(name, "image/jpeg", target, false);
            assert_eq!(ty, "image/jpeg");
            assert_eq!(
                (img.width(), img.height()),
                (target.width, target.height),
                "{name}"
            );
            assert_red_over_blue(&img, &format!("{name} {target:?}"));
        }
        let (img, _, _) = rendered("gray-640x480.jpg", "image/jpeg", target, false);
        let (w, h) = (img.width(), img.height());
        let (top, bottom) = (
            img.get_pixel(w / 2, h / 8)[0],
            img.get_pixel(w / 2, h - 1 - h / 8)[0],
        );
        assert!(top > bottom + 20, "gray {target:?}: {top} vs {bottom}");
    }
}

#[test]
fn content_types_follow_the_source_type() {
    let t = size(96, 96, Method::Crop);
    for (name, ty, want) in [
        ("still-300x200.webp", "image/webp", "image/jpeg"),
        ("orientation6-400x200.jpg", "image/jpg", "image/jpeg"),
        ("pattern-1000x500.png", "image/png", "image/png"),
        ("animated-120x80.gif", "image/gif", "image/png"),
        // The declared type picks the output even when the bytes are another allowed format.
        ("pattern-1000x500.png", "image/jpeg", "image/jpeg"),
    ] {
        assert_eq!(rendered(name, ty, t, false).1, want, "{name} as {ty}");
    }
}

#[test]
fn transparency_keeps_png() {
    for (name, ty) in [
        ("alpha-64x64.png", "image/png"),
        ("alpha-64x64.webp", "image/webp"),
    ] {
        let (img, content_type, _) = rendered(name, ty, size(32, 32, Method::Crop), false);
        assert_eq!(content_type, "image/png", "{name}");
        assert!(img.color().has_alpha(), "{name}");
        assert_eq!(
            img.get_pixel(31, 16)[3],
            0,
            "{name}: right half stays transparent"
        );
        assert_eq!(img.get_pixel(0, 16)[3], 255, "{name}");
    }
}

fn gif_frames(bytes: &[u8]) -> usize {
    GifDecoder::new(Cursor::new(bytes))
        .unwrap()
        .into_frames()
        .count()
}

#[test]
fn animation_kept_when_asked() {
    for (name, ty, frames) in [
        ("animated-120x80.gif", "image/gif", 4),
        ("animated-90x60.webp", "image/webp", 3),
    ] {
        for target in [size(32, 32, Method::Crop), size(320, 240, Method::Scale)] {
            let (img, content_type, bytes) = rendered(name, ty, target, true);
            assert_eq!(content_type, "image/gif", "{name}");
            assert_eq!(gif_frames(&bytes), frames, "{name}");
            if target.method == Method::Crop {
                assert_eq!((img.width(), img.height()), (32, 32));
            }
        }
    }
    let (img, _, _) = rendered(
        "animated-120x80.gif",
        "image/gif",
        size(64, 64, Method::Scale),
        true,
    );
    assert_eq!((img.width(), img.height()), (64, 42));
}

#[test]
fn animation_dropped_otherwise() {
    let t = size(32, 32, Method::Crop);
    for (name, ty, animated, want) in [
        ("animated-120x80.gif", "image/gif", false, "image/png"),
        ("animated-90x60.webp", "image/webp", false, "image/jpeg"),
        // Still sources ignore animated=true.
        ("still-300x200.webp", "image/webp", true, "image/jpeg"),
        ("pattern-1000x500.png", "image/png", true, "image/png"),
        ("orientation6-400x200.jpg", "image/jpeg", true, "image/jpeg"),
    ] {
        assert_eq!(
            rendered(name, ty, t, animated).1,
            want,
            "{name} animated={animated}"
        );
    }
    // Over the frame cap: a still thumbnail, not an error.
    for limits in [
        Limits {
            max_frames: 2,
            ..Limits::default()
        },
        Limits {
            max_animation_pixels: 120 * 80 * 2,
            ..Limits::default()
        },
    ] {
        let out = render(
            &fixture("animated-120x80.gif"),
            "image/gif",
            t,
            true,
            &limits,
        )
        .unwrap();
        assert_eq!(out.content_type, "image/png");
    }
}

#[test]
fn corrupt_and_unsupported_are_refused() {
    let t = size(32, 32, Method::Crop);
    let limits = Limits::default();
    let corrupt = |name: &str, ty: &str| render(&fixture(name), ty, t, false, &limits);
    assert!(matches!(
        corrupt("truncated.jpg", "image/jpeg"),
        Err(ThumbnailError::Corrupt(_))
    ));
    let mut cut_png = fixture("pattern-1000x500.png");
    cut_png.truncate(cut_png.len() / 2);
    assert!(matches!(
        render(&cut_png, "image/png", t, false, &limits),
        Err(ThumbnailError::Corrupt(_))
    ));
    assert!(matches!(
        render(b"not an image", "image/png", t, false, &limits),
        Err(ThumbnailError::Corrupt(_))
    ));
    // A format Synapse does not thumbnail, however it is labelled.
    assert!(matches!(
        corrupt("unsupported-8x8.bmp", "image/png"),
        Err(ThumbnailError::Unsupported(_))
    ));
    assert!(matches!(
        corrupt("pattern-1000x500.png", "application/pdf"),
        Err(ThumbnailError::Unsupported(_))
    ));
    assert!(matches!(
        corrupt("pattern-1000x500.png", "image/svg+xml"),
        Err(ThumbnailError::Unsupported(_))
    ));
    let err = corrupt("unsupported-8x8.bmp", "image/bmp").unwrap_err();
    assert_eq!(client_sees(err), (400, "M_UNKNOWN"));
}

#[test]
fn bombs_are_refused_from_the_header() {
    for (name, ty, dims) in [
        ("bomb-20000x20000.png", "image/png", (20000, 20000)),
        ("bomb-50000x50000.png", "image/png", (50000, 50000)),
        ("bomb-50000x50000.gif", "image/gif", (50000, 50000)),
    ] {
        let source = fixture(name);
        for animated in [false, true] {
            let start = Instant::now();
            let result = render(
                &source,
                ty,
                size(96, 96, Method::Crop),
                animated,
                &Limits::default(),
            );
            let took = start.elapsed();
            match result {
                Err(ThumbnailError::TooLarge { width, height }) => {
                    assert_eq!((width, height), dims)
                }
                other => panic!("{name}: {other:?}"),
            }
            // Decoding 400 megapixels would take seconds and gigabytes; the header, no time.
            assert!(took < Duration::from_millis(100), "{name}: {took:?}");
        }
        assert!(matches!(
            probe(&source, ty, &Limits::default()),
            Err(ThumbnailError::TooLarge { .. })
        ));
    }
    // The limit is Synapse's `>=`: exactly max_pixels is refused, one less is not.
    let limits = Limits {
        max_pixels: 1000 * 500,
        ..Limits::default()
    };
    assert!(matches!(
        probe(&fixture("pattern-1000x500.png"), "image/png", &limits),
        Err(ThumbnailError::TooLarge {
            width: 1000,
            height: 500
        })
    ));
    let limits = Limits {
        max_pixels: 1000 * 500 + 1,
        ..Limits::default()
    };
    assert!(probe(&fixture("pattern-1000x500.png"), "image/png", &limits).is_ok());
}

#[test]
fn source_byte_limit() {
    let limits = Limits {
        max_source_bytes: 100,
        ..Limits::default()
    };
    let err = render(
        &fixture("pattern-1000x500.png"),
        "image/png",
        size(32, 32, Method::Crop),
        false,
        &limits,
    )
    .unwrap_err();
    assert!(matches!(err, ThumbnailError::SourceTooLarge { .. }));
    assert_eq!(client_sees(err), (413, "M_TOO_LARGE"));
}

/// The status and errcode a client is answered for a thumbnail failure.
fn client_sees(error: ThumbnailError) -> (u16, &'static str) {
    let matrix = RequestError::from(error).to_matrix();
    (matrix.status.as_u16(), matrix.errcode)
}

/// Probe, select and render: the steps `respond::thumbnail` takes around its cache.
fn thumbnail(
    source: &[u8],
    source_type: &str,
    request: &ThumbnailRequest,
    sizes: &[ThumbnailSize],
    limits: &Limits,
) -> Result<Option<Thumbnail>, ThumbnailError> {
    let info = probe(source, source_type, limits)?;
    let Some(size) = select_size(request, sizes, info.width, info.height) else {
        return Ok(None);
    };
    render(source, source_type, size, request.animated, limits).map(Some)
}

/// A still thumbnail request for `width` by `height`.
fn request(width: u32, height: u32, method: Method) -> ThumbnailRequest {
    ThumbnailRequest {
        width,
        height,
        method,
        animated: false,
    }
}

/// [`thumbnail`] of the 1000x500 PNG, with the default sizes and limits.
fn png_thumbnail(request: &ThumbnailRequest) -> Option<Thumbnail> {
    let source = fixture("pattern-1000x500.png");
    thumbnail(
        &source,
        "image/png",
        request,
        &DEFAULT_SIZES,
        &Limits::default(),
    )
    .unwrap()
}

#[test]
fn select_then_render() {
    let out = png_thumbnail(&request(50, 50, Method::Crop)).expect("a crop size is configured");
    assert_eq!((out.width, out.height), (96, 96));
    let out = png_thumbnail(&request(1000, 1000, Method::Scale)).unwrap();
    assert_eq!((out.width, out.height), (800, 400));
    // Dynamic: exactly what was asked (within the source, for scale).
    let out = render(
        &fixture("pattern-1000x500.png"),
        "image/png",
        dynamic_size(&request(50, 50, Method::Crop)),
        false,
        &Limits::default(),
    )
    .unwrap();
    assert_eq!((out.width, out.height), (50, 50));
}

/// Cut and flipped copies of every fixture: an error is fine, a panic (even caught) is not.
#[test]
fn damaged_inputs_never_panic() {
    let names = [
        ("pattern-1000x500.png", "image/png"),
        ("orientation6-400x200.jpg", "image/jpeg"),
        ("animated-120x80.gif", "image/gif"),
        ("animated-90x60.webp", "image/webp"),
        ("still-300x200.webp", "image/webp"),
        ("alpha-64x64.png", "image/png"),
    ];
    let targets = [size(32, 32, Method::Crop)];
    for (name, ty) in names {
        let source = fixture(name);
        let mut inputs: Vec<Vec<u8>> = (0..source.len())
            .step_by(source.len() / 12 + 1)
            .map(|n| source[..n].to_vec())
            .collect();
        for i in (8..source.len()).step_by(source.len() / 12 + 1) {
            let mut flipped = source.clone();
            flipped[i] ^= 0x5a;
            inputs.push(flipped);
        }
        for input in &inputs {
            for target in targets {
                for animated in [false, true] {
                    if let Err(ThumbnailError::Internal(e)) =
                        render(input, ty, target, animated, &Limits::default())
                    {
                        panic!("{name} ({} bytes): {e}", input.len());
                    }
                }
            }
        }
    }
}
