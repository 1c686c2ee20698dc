//! `GET /api/v1/links/{code}/qr`: a link's QR code, as SVG or PNG.
//!
//! What it encodes is the short URL with `?qr=1`, so that a scan can be told from a click on
//! the link itself. The image is a pure function of the short URL and the parameters, so it
//! carries a strong `ETag` (a digest of both and of [`RENDERING`]) and a client that has it
//! gets 304 without the image being drawn again.
//!
//! fast_qr builds the module grid (about 80 µs for a short URL, against 480 µs for the
//! `qrcode` crate); the SVG is fast_qr's, the PNG is written here from the grid with the `png`
//! crate, one bit a pixel.

use actix_web::http::header::{
    CACHE_CONTROL, CONTENT_TYPE, ETAG, EntityTag, Header as _, IfNoneMatch,
};
use actix_web::{HttpRequest, HttpResponse, get, web};
use fast_qr::ECL;
use fast_qr::convert::Builder as _;
use fast_qr::convert::svg::SvgBuilder;
use fast_qr::qr::{QRBuilder, QRCode};
use kurz_repository::{Owner, RepoError};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{KeyOrAnonymous, LinksRead};
use crate::error::ApiError;
use crate::openapi::errors;
use crate::routes::State;

/// Changes whenever the same parameters would draw a different image, so old `ETag`s stop
/// matching.
const RENDERING: &str = "kurz-qr-1";

/// The PNG widths accepted, in pixels.
const SIZES: std::ops::RangeInclusive<u32> = 64..=2_048;

/// The margins accepted, in modules: the standard asks for 4; none is for a page that draws
/// its own.
const MARGINS: std::ops::RangeInclusive<u32> = 0..=16;

/// Browsers keep the image a day; the `ETag` makes later checks cheap.
const CACHE: &str = "private, max-age=86400";

/// The image format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum QrFormat {
    /// `image/svg+xml`, scales to any size.
    #[default]
    Svg,
    /// `image/png`, `size` pixels wide.
    Png,
}

/// The error correction level: how much of the code may be damaged and still scan.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, ToSchema)]
pub enum QrEc {
    /// 7%.
    L,
    /// 15%.
    #[default]
    M,
    /// 25%.
    Q,
    /// 30%, for print that gets scuffed.
    H,
}

impl QrEc {
    fn level(self) -> ECL {
        match self {
            Self::L => ECL::L,
            Self::M => ECL::M,
            Self::Q => ECL::Q,
            Self::H => ECL::H,
        }
    }
}

/// The query string of `GET /api/v1/links/{code}/qr`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct QrQuery {
    /// `svg` (default) or `png`.
    #[param(inline)]
    pub format: Option<QrFormat>,
    /// The PNG's width and height in pixels, 64 to 2,048 (default 512). Ignored for SVG.
    #[param(minimum = 64, maximum = 2048)]
    pub size: Option<u32>,
    /// The quiet zone around the code, in modules, 0 to 16 (default 4, as the standard asks).
    #[param(minimum = 0, maximum = 16)]
    pub margin: Option<u32>,
    /// Error correction: `L`, `M` (default), `Q` or `H`.
    #[param(inline)]
    pub ec: Option<QrEc>,
}

/// A checked query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct QrRequest {
    format: QrFormat,
    size: u32,
    margin: u32,
    ec: QrEc,
}

impl QrQuery {
    fn checked(&self) -> Result<QrRequest, ApiError> {
        let size = self.size.unwrap_or(512);
        if !SIZES.contains(&size) {
            return Err(ApiError::InvalidQuery(
                "size must be 64 to 2048 pixels".to_owned(),
            ));
        }
        let margin = self.margin.unwrap_or(4);
        if !MARGINS.contains(&margin) {
            return Err(ApiError::InvalidQuery(
                "margin must be 0 to 16 modules".to_owned(),
            ));
        }
        Ok(QrRequest {
            format: self.format.unwrap_or_default(),
            size,
            margin,
            ec: self.ec.unwrap_or_default(),
        })
    }
}

/// `GET /api/v1/links/{code}/qr`.
#[utoipa::path(
    tag = "links",
    summary = "A link's QR code",
    description = "The short URL with `?qr=1` as a QR code, so scans can be told from clicks. \
        SVG by default, or a PNG `size` pixels wide. The image never changes for a code and a \
        set of parameters: it has a strong `ETag`, and `If-None-Match` with it answers 304. \
        Another account's link is 404, as an unknown code. With `KURZ_ANONYMOUS_CREATE=true` \
        a request without a key may draw the links that belong to no account (the ones \
        created without a key), so the web page can show the code of a link it just made.",
    security(("bearer" = ["links:read"])),
    params(("code" = String, Path, description = "The link's code or alias."), QrQuery),
    responses(
        (status = 200, description = "The QR code.", content(
            (String = "image/svg+xml"),
            (Vec<u8> = "image/png"),
        )),
        (status = 304, description = "The client's copy (its `If-None-Match`) is current."),
        (status = 404, response = inline(errors::NotFound)),
    ),
)]
#[get("/v1/links/{code}/qr")]
pub async fn link_qr(
    caller: KeyOrAnonymous<LinksRead>,
    code: web::Path<String>,
    query: web::Query<QrQuery>,
    request: HttpRequest,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    let wanted = query.checked()?;
    let link = state.own_link(&code, Owner::Any).await?;
    if !caller.reaches(link.owner_id) {
        return Err(ApiError::NotFound);
    }
    let url = scan_url(&state.short_url(&link.code));
    let tag = entity_tag(&url, wanted);
    if is_current(&request, &tag) {
        return Ok(HttpResponse::NotModified()
            .insert_header((ETAG, tag.to_string()))
            .insert_header((CACHE_CONTROL, CACHE))
            .finish());
    }
    let code = QRBuilder::new(url.as_bytes())
        .ecl(wanted.ec.level())
        .build()
        // A short URL is at most a few hundred bytes; version 40 holds 1,273 at level H.
        .map_err(|e| render_failed(format!("the QR code of {url}: {e:?}")))?;
    let (content_type, body) = match wanted.format {
        QrFormat::Svg => ("image/svg+xml", svg(&code, wanted.margin).into_bytes()),
        QrFormat::Png => ("image/png", png(&code, wanted.size, wanted.margin)?),
    };
    Ok(HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, content_type))
        .insert_header((ETAG, tag.to_string()))
        .insert_header((CACHE_CONTROL, CACHE))
        .body(body))
}

/// What a scan opens: the short URL with `qr=1`, which the redirect service counts as a scan
/// and strips before forwarding any query.
fn scan_url(short_url: &str) -> String {
    format!("{short_url}?qr=1")
}

/// The strong `ETag` of `url` drawn as `wanted`. An SVG ignores `size`, so its tag does too:
/// one image, one tag.
fn entity_tag(url: &str, wanted: QrRequest) -> EntityTag {
    let size = match wanted.format {
        QrFormat::Png => wanted.size,
        QrFormat::Svg => 0,
    };
    let digest = Sha256::new()
        .chain_update(RENDERING)
        .chain_update([0])
        .chain_update(url)
        .chain_update([0])
        .chain_update(format!(
            "{:?}/{}/{}/{:?}",
            wanted.format, size, wanted.margin, wanted.ec
        ))
        .finalize();
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    EntityTag::new_strong(hex)
}

/// Whether the request's `If-None-Match` names `tag` (or is `*`).
fn is_current(request: &HttpRequest, tag: &EntityTag) -> bool {
    match IfNoneMatch::parse(request) {
        Ok(IfNoneMatch::Any) => true,
        Ok(IfNoneMatch::Items(tags)) => tags.iter().any(|t| t.weak_eq(tag)),
        Err(_) => false,
    }
}

fn svg(code: &QRCode, margin: u32) -> String {
    SvgBuilder::default().margin(margin as usize).to_str(code)
}

/// The code as a one-bit grayscale PNG exactly `size` pixels wide and high: each pixel takes
/// the module under it, so modules are a whole number of pixels give or take one.
fn png(code: &QRCode, size: u32, margin: u32) -> Result<Vec<u8>, ApiError> {
    let modules = code.size as u32 + 2 * margin;
    let dark = |x: u32, y: u32| {
        let (mx, my) = (x * modules / size, y * modules / size);
        let inside = |m: u32| m >= margin && m < margin + code.size as u32;
        inside(mx)
            && inside(my)
            && code.data[((my - margin) as usize) * code.size + (mx - margin) as usize].value()
    };
    let row_bytes = size.div_ceil(8) as usize;
    let mut pixels = vec![0u8; row_bytes * size as usize];
    for y in 0..size {
        let row = &mut pixels[y as usize * row_bytes..(y as usize + 1) * row_bytes];
        for x in 0..size {
            // In one-bit grayscale, 1 is white.
            if !dark(x, y) {
                row[(x / 8) as usize] |= 0x80 >> (x % 8);
            }
        }
    }
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, size, size);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::One);
    let written = encoder
        .write_header()
        .and_then(|mut writer| writer.write_image_data(&pixels));
    written.map_err(|e| render_failed(format!("the PNG: {e}")))?;
    Ok(out)
}

/// A 500 for drawing that failed: neither step can fail for a short URL written to memory,
/// so this is a bug, logged with what failed (ApiError's internal errors carry a RepoError).
fn render_failed(what: String) -> ApiError {
    ApiError::Internal(RepoError::Unavailable(
        format!("drawing {what} failed").into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(url: &str) -> QRCode {
        QRBuilder::new(url.as_bytes())
            .ecl(ECL::M)
            .build()
            .expect("a QR code")
    }

    fn request(format: QrFormat, size: u32) -> QrRequest {
        QrRequest {
            format,
            size,
            margin: 4,
            ec: QrEc::M,
        }
    }

    #[test]
    fn sizes_and_margins_outside_their_ranges_are_refused() {
        let bad = [
            QrQuery {
                size: Some(63),
                ..QrQuery::default()
            },
            QrQuery {
                size: Some(2_049),
                ..QrQuery::default()
            },
            QrQuery {
                margin: Some(17),
                ..QrQuery::default()
            },
        ];
        for query in bad {
            assert!(
                matches!(query.checked(), Err(ApiError::InvalidQuery(_))),
                "{query:?}"
            );
        }
        let defaults = QrQuery::default().checked().expect("valid");
        assert_eq!(defaults, request(QrFormat::Svg, 512));
    }

    #[test]
    fn the_entity_tag_follows_the_url_and_every_parameter() {
        let url = "https://kurz.example/abc1234?qr=1";
        let base = entity_tag(url, request(QrFormat::Png, 512));
        assert_eq!(base, entity_tag(url, request(QrFormat::Png, 512)));
        assert!(!base.weak);
        assert_eq!(
            entity_tag(url, request(QrFormat::Svg, 512)),
            entity_tag(url, request(QrFormat::Svg, 1_024)),
            "an SVG has no size"
        );
        let others = [
            entity_tag(
                "https://kurz.example/abc1235?qr=1",
                request(QrFormat::Png, 512),
            ),
            entity_tag(url, request(QrFormat::Svg, 512)),
            entity_tag(url, request(QrFormat::Png, 513)),
            entity_tag(
                url,
                QrRequest {
                    margin: 0,
                    ..request(QrFormat::Png, 512)
                },
            ),
            entity_tag(
                url,
                QrRequest {
                    ec: QrEc::H,
                    ..request(QrFormat::Png, 512)
                },
            ),
        ];
        for other in others {
            assert_ne!(other, base);
        }
    }

    #[test]
    fn a_png_is_exactly_the_size_asked() {
        let url = "https://kurz.example/abc1234?qr=1";
        for size in [64, 333, 512] {
            let bytes = png(&code(url), size, 4).expect("a PNG");
            let decoder = png::Decoder::new(std::io::Cursor::new(&bytes));
            let reader = decoder.read_info().expect("a valid PNG");
            assert_eq!((reader.info().width, reader.info().height), (size, size));
        }
    }

    #[test]
    fn the_svg_has_its_quiet_zone_in_its_view_box() {
        let qr = code("https://kurz.example/abc1234?qr=1");
        let with = svg(&qr, 4);
        let without = svg(&qr, 0);
        let modules = qr.size;
        assert!(
            with.contains(&format!("viewBox=\"0 0 {} {}\"", modules + 8, modules + 8)),
            "{with}"
        );
        assert!(
            without.contains(&format!("viewBox=\"0 0 {modules} {modules}\"")),
            "{without}"
        );
    }
}
