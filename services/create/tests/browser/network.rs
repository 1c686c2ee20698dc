//! The page reaches no origin but its own: every request in Chromium's network log, while a
//! person uses every view, goes to the create service, and its console holds no refusal of
//! the Content-Security-Policy (and no script error).

use crate::{Stack, ready, signed_in_at};

#[tokio::test]
async fn the_page_requests_nothing_from_any_origin_but_its_own() {
    let mut stack = Stack::start(false).await;
    let link = stack.link(&stack.target("/watched")).await;
    let code = link["code"].as_str().expect("a code").to_owned();
    // A click, so the stats view draws a chart and tables, not just their empty states.
    reqwest::get(link["short_url"].as_str().expect("a short URL"))
        .await
        .expect("a click");
    stack.apply_clicks(1).await;
    let origin = stack.create.url("");
    let browser = signed_in_at(&stack, "#/").await;
    browser.type_into("#url", &stack.target("/more")).await;
    browser.click("#shorten-submit").await;
    browser.find("#result-qr svg").await;
    browser.click("#result-qr-download").await;
    browser
        .until(
            "the PNG is fetched",
            "return performance.getEntriesByType('resource')\
                .some(e => e.name.includes('format=png'));",
        )
        .await;
    browser.open(&format!("{}#/links", stack.page())).await;
    ready(&browser, "view-links").await;
    let item = format!("#links-list li.link[data-code='{code}']");
    browser.click(&format!("{item} button.link-qr")).await;
    browser.find(&format!("{item} .link-qr-panel svg")).await;
    browser
        .open(&format!("{}#/links/{code}/stats", stack.page()))
        .await;
    ready(&browser, "view-stats").await;
    browser.open(&format!("{}#/key", stack.page())).await;
    ready(&browser, "view-key").await;

    // The page's requests: those made for a document of its origin. Chromium's own pages
    // (`chrome://new-tab-page` loading in the background at start) are not the page's.
    let ours = format!("{origin}/");
    let requests: Vec<_> = browser
        .requests()
        .await
        .into_iter()
        .filter(|r| r.document.starts_with(&ours))
        .collect();
    let elsewhere: Vec<_> = requests
        .iter()
        .filter(|r| !r.url.starts_with(&ours) && !r.url.starts_with("data:"))
        .collect();
    assert!(
        elsewhere.is_empty(),
        "requests to other origins: {elsewhere:#?}"
    );
    // The log saw the page at work, so an empty list above means something.
    for what in ["/assets/", "/api/v1/links", "/qr", "format=png", "/stats"] {
        assert!(
            requests.iter().any(|r| r.url.contains(what)),
            "no request for {what} in {requests:#?}"
        );
    }
    // Nor did it try and get stopped: the policy reports every refusal on the console, and
    // the page's script threw nothing.
    let console = browser.console().await;
    assert!(console.is_empty(), "console messages: {console:#?}");
    browser.close().await;
}
