//! What a person does with the page, step by step, as the issue lists the journeys.

use fantoccini::actions::{InputSource as _, KeyAction, KeyActions};
use fantoccini::key::Key;
use kurz_testkit::Browser;
use serde_json::Value;

use crate::{Stack, ready, shown, signed_in_at};

/// Types `text` on the keyboard into whatever has focus (WebDriver actions, not an element's
/// send-keys, which would focus the element first).
async fn keyboard(browser: &Browser, text: &str) {
    let mut actions = KeyActions::new("keyboard".to_owned());
    for c in text.chars() {
        actions = actions
            .then(KeyAction::Down { value: c })
            .then(KeyAction::Up { value: c });
    }
    browser
        .client()
        .perform_actions(actions)
        .await
        .unwrap_or_else(|e| panic!("typing {text:?}: {e}"));
}

async fn press(browser: &Browser, key: Key) {
    keyboard(browser, &char::from(key).to_string()).await;
}

/// The id of the focused element ("" for none or one without an id).
async fn focused(browser: &Browser) -> String {
    browser
        .client()
        .execute(
            "return document.activeElement ? document.activeElement.id : '';",
            vec![],
        )
        .await
        .expect("reading the focus")
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Presses Tab until `id` has focus, at most `tabs` times; the ids focused on the way.
async fn tab_to(browser: &Browser, id: &str, tabs: usize) -> Vec<String> {
    let mut path = Vec::new();
    for _ in 0..tabs {
        press(browser, Key::Tab).await;
        let now = focused(browser).await;
        path.push(now.clone());
        if now == id {
            return path;
        }
    }
    panic!("Tab never reached #{id}; focus went {path:?}");
}

/// Waits until the error element `#id` shows a message.
async fn error_shown(browser: &Browser, id: &str) {
    browser
        .until(
            &format!("#{id} is shown"),
            &format!(
                "const e = document.getElementById('{id}'); \
                 return !!e && !e.hidden && e.textContent.trim().length > 0;"
            ),
        )
        .await;
}

/// Fills the shorten form's URL and submits it with a click.
async fn shorten(browser: &Browser, url: &str) -> String {
    let field = browser.find("#url").await;
    field.send_keys(url).await.expect("typing the URL");
    browser.click("#shorten-submit").await;
    browser
        .until(
            "the result is shown",
            "const r = document.getElementById('result'); return !!r && !r.hidden && \
             document.getElementById('result-short-url').textContent.length > 0;",
        )
        .await;
    browser.text("#result-short-url").await
}

#[tokio::test]
async fn shortening_without_a_key_shows_the_short_url_and_its_qr_code_and_the_short_url_redirects_to_the_target()
 {
    let stack = Stack::start(true).await;
    let browser = Browser::start().await;
    browser.open(&stack.page()).await;
    assert!(
        !shown(&browser, "#shorten-needs-key").await,
        "anonymous creation is on: no key is needed"
    );
    let target = stack.target("/welcome");

    let short_url = shorten(&browser, &target).await;

    assert!(
        short_url.starts_with(&stack.redirect.url("/")),
        "{short_url} is on the redirect service"
    );
    assert_eq!(browser.text("#result-target").await, target);
    let qr = browser
        .find("#result-qr svg")
        .await
        .attr("role")
        .await
        .expect("the QR code's role");
    assert_eq!(
        qr.as_deref(),
        Some("img"),
        "the QR code is an inline SVG image"
    );
    assert!(shown(&browser, "#result-copy").await);
    assert!(shown(&browser, "#result-qr-download").await);
    // Tall enough for the whole result, QR code included.
    browser
        .client()
        .set_window_size(1280, 1150)
        .await
        .expect("a taller window");
    browser.screenshot("shorten-result").await;

    // Follow it, as a person clicking the short link would.
    browser.requests().await;
    browser.open(&short_url).await;

    let landed = browser.client().current_url().await.expect("the URL");
    assert_eq!(landed.as_str(), target);
    assert_eq!(browser.client().title().await.expect("a title"), "Landed");
    let requests = browser.requests().await;
    let hop = requests
        .iter()
        .find(|r| r.url == target)
        .unwrap_or_else(|| panic!("a request to the target in {requests:?}"));
    assert_eq!(
        hop.redirected_by,
        Some((302, short_url.clone())),
        "the short URL answered 302 to the target"
    );
    browser.close().await;
}

#[tokio::test]
async fn a_person_signs_in_with_a_key_and_sees_their_link_with_its_click_in_my_links_and_in_its_stats()
 {
    let mut stack = Stack::start(false).await;
    let browser = Browser::start().await;
    browser.open(&stack.page()).await;
    assert!(
        shown(&browser, "#shorten-needs-key").await,
        "anonymous creation is off: the form asks for a key"
    );

    // Sign in.
    browser.open(&format!("{}#/key", stack.page())).await;
    browser.type_into("#api-key", &stack.key.key).await;
    browser.click("#key-submit").await;
    browser
        .until(
            "signed in",
            "return !!localStorage.getItem('kurz.apiKey') && \
             document.getElementById('key-status').textContent.includes('Signed in');",
        )
        .await;
    let status = browser.text("#key-status").await;
    assert!(
        !status.contains(&stack.key.key),
        "the page never shows the whole key: {status}"
    );
    let url = browser.client().current_url().await.expect("the URL");
    assert!(
        !url.as_str().contains(&stack.key.key),
        "the key is never in a URL"
    );

    // Shorten, follow once.
    browser.open(&stack.page()).await;
    let target = stack.target("/from-my-links");
    let short_url = shorten(&browser, &target).await;
    let code = short_url.rsplit('/').next().expect("a code").to_owned();
    browser.open(&short_url).await;
    assert_eq!(
        browser.client().current_url().await.expect("URL").as_str(),
        target
    );
    stack.apply_clicks(1).await;

    // My links.
    browser.open(&format!("{}#/links", stack.page())).await;
    ready(&browser, "view-links").await;
    let item = format!("#links-list li.link[data-code='{code}']");
    assert_eq!(browser.text(&format!("{item} .link-clicks")).await, "1");
    assert_eq!(browser.text(&format!("{item} .link-target")).await, target);
    browser.screenshot("my-links").await;

    // Its stats.
    browser.click(&format!("{item} a.link-stats")).await;
    ready(&browser, "view-stats").await;
    assert_eq!(browser.text("#total-clicks").await, "1");
    assert_eq!(browser.text("#total-humans").await, "1");
    assert_eq!(browser.text("#total-bots").await, "0");
    assert_eq!(browser.text("#total-unique").await, "1");
    let charted = browser
        .client()
        .execute(
            "return [...document.querySelectorAll('#stats-chart g.bucket')]\
                .reduce((sum, g) => sum + Number(g.dataset.clicks), 0);",
            vec![],
        )
        .await
        .expect("reading the chart");
    assert_eq!(charted, Value::from(1), "the chart holds the click");
    let source = "#top-sources tbody td.value[data-value='link'] + td.clicks";
    assert_eq!(browser.text(source).await, "1");
    let browsers = browser.text("#top-browsers tbody").await;
    assert!(browsers.contains("Chrome"), "top browsers: {browsers}");
    // Another range: the last 24 hours, hour by hour, still holding the click.
    browser.click("#stats-range option[value='24h']").await;
    browser
        .until(
            "the chart is redrawn by the hour",
            "const b = document.querySelectorAll('#stats-chart g.bucket'); \
             return document.getElementById('view-stats').dataset.state === 'ready' \
                 && b.length >= 24 && b.length <= 25 \
                 && [...b].reduce((sum, g) => sum + Number(g.dataset.clicks), 0) === 1;",
        )
        .await;
    // Tall enough for the chart, the totals and the top lists in one picture.
    browser
        .client()
        .set_window_size(1280, 1700)
        .await
        .expect("a taller window");
    browser.screenshot("stats").await;

    // Forget the key.
    browser.open(&format!("{}#/key", stack.page())).await;
    browser.click("#forget-key").await;
    browser
        .until(
            "the key is forgotten",
            "return localStorage.getItem('kurz.apiKey') === null;",
        )
        .await;
    browser.close().await;
}

#[tokio::test]
async fn an_invalid_url_shows_its_error_beside_the_url_field_and_creates_nothing() {
    let stack = Stack::start(false).await;
    let browser = signed_in_at(&stack, "#/").await;

    browser.type_into("#url", "example.com/no-scheme").await;
    browser.click("#shorten-submit").await;

    error_shown(&browser, "url-error").await;
    let field = browser.find("#url").await;
    assert_eq!(
        field
            .attr("aria-invalid")
            .await
            .expect("aria-invalid")
            .as_deref(),
        Some("true")
    );
    let described = field
        .attr("aria-describedby")
        .await
        .expect("aria-describedby")
        .unwrap_or_default();
    assert!(
        described.split(' ').any(|id| id == "url-error"),
        "{described}"
    );
    assert!(
        !shown(&browser, "#result").await,
        "no result for a refused URL"
    );
    assert!(
        !shown(&browser, "#alias-error").await,
        "the error is beside its own field only"
    );
    browser.screenshot("shorten-error").await;

    // An alias error goes beside the alias.
    browser.find("#url").await.clear().await.expect("clearing");
    browser.type_into("#url", &stack.target("/ok")).await;
    browser.type_into("#alias", "api").await;
    browser.click("#shorten-submit").await;
    error_shown(&browser, "alias-error").await;
    assert!(!shown(&browser, "#url-error").await, "the URL is fine now");
    assert_eq!(stack.stored_links().await, 0, "nothing was created");
    browser.close().await;
}

#[tokio::test]
async fn deleting_a_link_asks_for_confirmation_first_and_cancelling_keeps_it() {
    let stack = Stack::start(false).await;
    let link = stack.link(&stack.target("/to-delete")).await;
    let code = link["code"].as_str().expect("a code").to_owned();
    let browser = signed_in_at(&stack, "#/links").await;
    ready(&browser, "view-links").await;
    let delete = format!("#links-list li.link[data-code='{code}'] button.link-delete");

    browser.click(&delete).await;
    browser.find("#delete-dialog[open]").await;
    assert!(browser.text("#delete-code").await.contains(&code));
    browser.screenshot("delete-confirmation").await;
    browser.click("#delete-cancel").await;
    browser
        .until(
            "the dialog closed",
            "return !document.getElementById('delete-dialog').open;",
        )
        .await;
    assert_eq!(
        stack.get_link(&code).await.0,
        200,
        "cancelling keeps the link"
    );

    browser.click(&delete).await;
    browser.find("#delete-dialog[open]").await;
    browser.click("#delete-confirm").await;
    browser
        .until(
            "the link left the list",
            &format!(
                "return !document.querySelector(\"#links-list li.link[data-code='{code}']\");"
            ),
        )
        .await;

    assert_eq!(stack.get_link(&code).await.0, 404, "the link is deleted");
    browser.close().await;
}

#[tokio::test]
async fn the_whole_shorten_form_works_from_the_keyboard_alone() {
    let stack = Stack::start(false).await;
    let browser = signed_in_at(&stack, "#/").await;
    browser.find("#shorten-form").await;
    let target = stack.target("/typed");

    // A person arriving can type at once: the URL field has the focus.
    assert_eq!(focused(&browser).await, "url");
    keyboard(&browser, &target).await;
    tab_to(&browser, "alias", 1).await;
    keyboard(&browser, "typed-by-keys").await;
    tab_to(&browser, "expires_at", 1).await;
    // The date field has a tab stop per part (month, day, ...): Tab on through them.
    tab_to(&browser, "max_visits", 8).await;
    keyboard(&browser, "5").await;
    tab_to(&browser, "shorten-submit", 1).await;
    press(&browser, Key::Enter).await;
    browser
        .until(
            "the result is shown",
            "const r = document.getElementById('result'); return !!r && !r.hidden;",
        )
        .await;
    tab_to(&browser, "result-copy", 10).await;
    let ring = browser
        .client()
        .execute(
            "const s = getComputedStyle(document.activeElement); \
             return s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) >= 2;",
            vec![],
        )
        .await
        .expect("reading the focus style");
    assert_eq!(ring, Value::Bool(true), "focus is visible");
    press(&browser, Key::Enter).await;

    browser
        .until(
            "the copy is confirmed",
            "return document.getElementById('result-copy-status').textContent.includes('Copied');",
        )
        .await;
    let (status, link) = stack.get_link("typed-by-keys").await;
    assert_eq!(status, 200, "{link}");
    assert_eq!(link["url"], target);
    assert_eq!(link["max_visits"], 5);
    browser.screenshot("keyboard").await;
    browser.close().await;
}

#[tokio::test]
async fn every_field_has_a_label_and_every_view_fits_a_360_px_wide_screen() {
    let stack = Stack::start(false).await;
    let link = stack
        .link(&stack.target("/a/rather/long/path/that/must/wrap/on/a/phone"))
        .await;
    let code = link["code"].as_str().expect("a code").to_owned();
    let browser = signed_in_at(&stack, "#/").await;
    browser
        .client()
        .set_window_size(360, 800)
        .await
        .expect("a phone-sized window");

    for (route, view, shot) in [
        ("#/", "view-shorten", "phone-shorten"),
        ("#/key", "view-key", "phone-sign-in"),
        ("#/links", "view-links", "phone-my-links"),
        (
            &*format!("#/links/{code}/stats"),
            "view-stats",
            "phone-stats",
        ),
    ] {
        browser.open(&format!("{}{route}", stack.page())).await;
        ready(&browser, view).await;
        let width = browser
            .client()
            .execute(
                "return [document.documentElement.scrollWidth, window.innerWidth];",
                vec![],
            )
            .await
            .expect("reading the widths");
        let scroll = width[0].as_u64().expect("scrollWidth");
        let inner = width[1].as_u64().expect("innerWidth");
        assert!(
            scroll <= inner,
            "{route}: {scroll} px wide in a {inner} px window"
        );
        let unlabelled = browser
            .client()
            .execute(
                "return [...document.querySelectorAll('input, select, textarea')]\
                    .filter(e => e.type !== 'hidden')\
                    .filter(e => e.labels.length === 0 && !e.getAttribute('aria-label'))\
                    .map(e => e.id || e.name || e.outerHTML);",
                vec![],
            )
            .await
            .expect("finding fields");
        assert_eq!(
            unlabelled,
            Value::Array(vec![]),
            "{route}: fields without a label"
        );
        browser.screenshot(shot).await;
    }
    browser.close().await;
}

#[tokio::test]
async fn editing_a_link_changes_its_target_and_clears_its_visit_limit_and_a_bad_url_is_refused_beside_the_field()
 {
    let stack = Stack::start(false).await;
    let created = stack
        .api()
        .post(stack.create.url("/api/v1/links"))
        .json(&serde_json::json!({ "url": stack.target("/before"), "max_visits": 10 }))
        .send()
        .await
        .expect("create request");
    let code = created.json::<Value>().await.expect("a link")["code"]
        .as_str()
        .expect("a code")
        .to_owned();
    let browser = signed_in_at(&stack, "#/links").await;
    ready(&browser, "view-links").await;
    let item = format!("#links-list li.link[data-code='{code}']");

    browser.click(&format!("{item} button.link-edit")).await;
    browser.find("#edit-dialog[open]").await;
    browser
        .find("#edit-url")
        .await
        .clear()
        .await
        .expect("clearing");
    browser.type_into("#edit-url", "ftp://example.com/").await;
    browser.click("#edit-save").await;
    error_shown(&browser, "edit-url-error").await;
    assert!(
        shown(&browser, "#edit-dialog").await,
        "a refused edit keeps the dialog open"
    );
    assert_eq!(
        stack.get_link(&code).await.1["url"],
        stack.target("/before")
    );
    browser.screenshot("edit-error").await;

    let after = stack.target("/after");
    browser
        .find("#edit-url")
        .await
        .clear()
        .await
        .expect("clearing");
    browser.type_into("#edit-url", &after).await;
    browser
        .find("#edit-max_visits")
        .await
        .clear()
        .await
        .expect("clearing");
    browser.click("#edit-save").await;
    browser
        .until(
            "the dialog closed",
            "return !document.getElementById('edit-dialog').open;",
        )
        .await;

    assert_eq!(browser.text(&format!("{item} .link-target")).await, after);
    let (_, link) = stack.get_link(&code).await;
    assert_eq!(link["url"], after);
    assert_eq!(
        link["max_visits"],
        Value::Null,
        "an emptied limit is cleared"
    );
    browser.close().await;
}

#[tokio::test]
async fn my_links_pages_with_load_more_and_narrows_by_search_and_status() {
    let stack = Stack::start(false).await;
    for n in 0..22 {
        stack.link(&stack.target(&format!("/page/{n}"))).await;
    }
    let special = stack.link(&stack.target("/a-special-one")).await;
    let browser = signed_in_at(&stack, "#/links").await;
    ready(&browser, "view-links").await;
    let listed = "return document.querySelectorAll('#links-list li.link').length;";
    let count = || async {
        browser
            .client()
            .execute(listed, vec![])
            .await
            .expect("counting")
    };

    assert_eq!(count().await, Value::from(20), "a page holds 20");
    let first = browser.find("#links-list li.link").await;
    assert_eq!(
        first.attr("data-code").await.expect("a code"),
        special["code"].as_str().map(str::to_owned),
        "newest first"
    );
    browser.click("#links-more").await;
    browser
        .until(
            "the next page is appended",
            "return document.querySelectorAll('#links-list li.link').length === 23;",
        )
        .await;
    assert!(
        !shown(&browser, "#links-more").await,
        "the last page has no more"
    );

    browser.type_into("#links-search", "special").await;
    browser.click("#links-apply").await;
    browser
        .until(
            "the search narrows the list",
            "return document.querySelectorAll('#links-list li.link').length === 1;",
        )
        .await;
    browser.click("#links-status option[value='expired']").await;
    browser
        .until(
            "no expired link matches",
            "const e = document.getElementById('links-empty'); \
             return !e.hidden && document.querySelectorAll('#links-list li.link').length === 0;",
        )
        .await;
    browser.close().await;
}
