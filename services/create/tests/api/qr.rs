//! `GET /api/v1/links/{code}/qr`: the PNG decodes back to the short URL with `?qr=1`, the
//! SVG is served as SVG, the `ETag` answers 304, and ownership and bad parameters are
//! refused as elsewhere.

use kurz_repository::Scope;
use reqwest::StatusCode;
use reqwest::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};

use crate::helpers::{Stack, UNLIMITED, error_code, get};

/// What a QR decoder reads in `png`: the text of every code it finds.
fn decode(png_bytes: &[u8]) -> Vec<String> {
    let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    let mut reader = decoder.read_info().expect("a valid PNG");
    let info = reader.info().clone();
    // Expanded to 8-bit grayscale, so each byte is one pixel.
    let mut pixels = vec![0; reader.output_buffer_size().expect("a size")];
    let frame = reader.next_frame(&mut pixels).expect("a frame");
    let (width, height) = (info.width as usize, info.height as usize);
    let bits = frame.line_size * 8 / width;
    let luma = |x: usize, y: usize| -> u8 {
        let row = &pixels[y * frame.line_size..(y + 1) * frame.line_size];
        match bits {
            1 => {
                if row[x / 8] & (0x80 >> (x % 8)) == 0 {
                    0
                } else {
                    255
                }
            }
            _ => row[x * bits / 8],
        }
    };
    let mut image = rqrr::PreparedImage::prepare_from_greyscale(width, height, luma);
    image
        .detect_grids()
        .into_iter()
        .map(|grid| grid.decode().expect("a readable code").1)
        .collect()
}

#[tokio::test]
async fn a_links_png_decodes_to_its_short_url_marked_as_a_scan() {
    let stack = Stack::start(1, 10).await;
    let link = stack.create_link("https://example.com/qr").await;
    let code = link["code"].as_str().expect("code");
    let short_url = link["short_url"].as_str().expect("short_url");

    for size in ["128", "512", "1000"] {
        let response = get(
            &stack.client,
            stack.create(),
            &format!("/api/v1/links/{code}/qr"),
            &[("format", "png"), ("size", size), ("ec", "H")],
        )
        .await;

        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[CONTENT_TYPE], "image/png");
        let bytes = response.bytes().await.expect("a body");
        assert_eq!(decode(&bytes), [format!("{short_url}?qr=1")], "size {size}");
    }
}

#[tokio::test]
async fn the_default_is_svg_and_its_etag_answers_304() {
    let stack = Stack::start(1, 10).await;
    let link = stack.create_link("https://example.com/svg").await;
    let path = format!("/api/v1/links/{}/qr", link["code"].as_str().expect("code"));

    let first = get(&stack.client, stack.create(), &path, &[]).await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(first.headers()[CONTENT_TYPE], "image/svg+xml");
    assert_eq!(first.headers()[CACHE_CONTROL], "private, max-age=86400");
    let tag = first.headers()[ETAG].to_str().expect("text").to_owned();
    assert!(first.text().await.expect("a body").starts_with("<svg"));
    let again = stack
        .client
        .get(stack.create().url(&path))
        .header(IF_NONE_MATCH, &tag)
        .send()
        .await
        .expect("GET");
    let other_size = stack
        .client
        .get(stack.create().url(&format!("{path}?margin=2")))
        .header(IF_NONE_MATCH, &tag)
        .send()
        .await
        .expect("GET");

    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(again.headers()[ETAG], tag.as_str());
    assert_eq!(
        other_size.status(),
        StatusCode::OK,
        "other parameters, other image"
    );
}

#[tokio::test]
async fn another_accounts_link_is_404_and_bad_parameters_are_400() {
    let stack = Stack::start(1, 10).await;
    let scopes = [Scope::LinksRead, Scope::LinksWrite];
    let (_, alice) = stack.client_for("alice", &scopes, Some(UNLIMITED)).await;
    let (_, bob) = stack.client_for("bob", &scopes, Some(UNLIMITED)).await;
    let link: serde_json::Value = crate::helpers::post_link(
        &alice,
        stack.create(),
        &serde_json::json!({ "url": "https://example.com/alice" }),
    )
    .await
    .json()
    .await
    .expect("json");
    let path = format!("/api/v1/links/{}/qr", link["code"].as_str().expect("code"));

    let own = get(&alice, stack.create(), &path, &[]).await;
    let others = get(&bob, stack.create(), &path, &[]).await;
    let unknown = get(&alice, stack.create(), "/api/v1/links/nosuch1/qr", &[]).await;
    let anonymous = reqwest::Client::new()
        .get(stack.create().url(&path))
        .send()
        .await
        .expect("GET");

    assert_eq!(own.status(), StatusCode::OK);
    assert_eq!(others.status(), StatusCode::NOT_FOUND);
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    for query in [
        [("size", "63")],
        [("size", "2049")],
        [("margin", "17")],
        [("format", "gif")],
        [("ec", "X")],
        [("colour", "red")],
    ] {
        let response = get(&alice, stack.create(), &path, &query).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query:?}");
        assert_eq!(error_code(response).await, "invalid_query", "{query:?}");
    }
}
