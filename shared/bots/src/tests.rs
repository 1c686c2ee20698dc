//! Verdicts on real User-Agents. Every expected verdict here is also isbot 5.2.3's own
//! (checked with `isbot()` in Node), but for the empty and non-UTF-8 cases, which are Kurz's
//! decisions.

use crate::{is_bot, is_bot_header};

#[track_caller]
fn assert_bots(agents: &[&str]) {
    let humans: Vec<&&str> = agents.iter().filter(|agent| !is_bot(agent)).collect();
    assert!(humans.is_empty(), "taken for people: {humans:#?}");
}

#[track_caller]
fn assert_people(agents: &[&str]) {
    let bots: Vec<&&str> = agents.iter().filter(|agent| is_bot(agent)).collect();
    assert!(bots.is_empty(), "taken for bots: {bots:#?}");
}

#[test]
fn slack_link_expanding_and_image_proxy_are_bots() {
    assert_bots(&[
        "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
        "Slack-ImgProxy (+https://api.slack.com/robots)",
        "Slackbot 1.0 (+https://api.slack.com/robots)",
    ]);
}

#[test]
fn whatsapp_link_previews_are_bots() {
    assert_bots(&[
        "WhatsApp/2.23.20.0",
        "WhatsApp/2.2412.54 A",
        "WhatsApp/2.21.12.21 W",
        "WhatsApp/2.24.6.77 i",
        // Signal's previews say they are WhatsApp, on purpose.
        "WhatsApp/2",
    ]);
}

#[test]
fn imessage_link_previews_are_bots() {
    // Apple's preview fetcher poses as Safari, then names the fetchers it imitates.
    assert_bots(&[
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_11_1) AppleWebKit/601.2.4 (KHTML, like Gecko) Version/9.0.1 Safari/601.2.4 facebookexternalhit/1.1 Facebot Twitterbot/1.0",
    ]);
}

#[test]
fn social_network_and_chat_link_previews_are_bots() {
    assert_bots(&[
        "Twitterbot/1.0",
        "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
        "facebookexternalhit/1.1",
        "facebookcatalog/1.0",
        "meta-externalagent/1.1 (+https://developers.facebook.com/docs/sharing/webmasters/crawler)",
        "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)",
        "LinkedInBot/1.0 (compatible; Mozilla/5.0; Apache-HttpClient +http://www.linkedin.com)",
        "TelegramBot (like TwitterBot)",
        "Mozilla/5.0 (compatible; Bluesky Cardyb/1.1; +mailto:support@bsky.app)",
        "http.rb/5.1.1 (Mastodon/4.2.10; +https://mastodon.social/)",
        "Mozilla/5.0 (compatible; redditbot/1.0; +http://www.reddit.com/feedback)",
        "Pinterest/0.2 (+https://www.pinterest.com/bot.html)",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0 SkypeUriPreview Preview/0.5 skype-url-preview@microsoft.com",
        "MicrosoftPreview/2.0 +https://aka.ms/MicrosoftPreview",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/58.0.3029.110 Safari/537.36 Snap URL Preview Service; bot; snapchat_proxy",
        "Mattermost-Bot/1.1",
        "Rocket.Chat URL Preview",
        "Mozilla/5.0 (compatible; Embedly/0.2; +http://support.embed.ly/)",
        "Iframely/1.3.1 (+https://iframely.com/docs/about)",
    ]);
}

#[test]
fn search_engine_and_ai_crawlers_are_bots() {
    assert_bots(&[
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.6778.204 Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "Googlebot-Image/1.0",
        "Mozilla/5.0 (compatible; Google-InspectionTool/1.0;)",
        "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
        "DuckDuckBot/1.1; (+http://duckduckgo.com/duckduckbot.html)",
        "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)",
        "Mozilla/5.0 (compatible; Baiduspider/2.0; +http://www.baidu.com/search/spider.html)",
        "Mozilla/5.0 (compatible; Yahoo! Slurp; http://help.yahoo.com/help/us/ysearch/slurp)",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/13.1.1 Safari/605.1.15 (Applebot/0.1; +http://www.apple.com/go/applebot)",
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)",
        "Mozilla/5.0 (compatible; ClaudeBot/1.0; +claudebot@anthropic.com)",
        "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
        "Mozilla/5.0 (compatible; SemrushBot/7~bl; +http://www.semrush.com/bot.html)",
    ]);
}

#[test]
fn command_line_clients_http_libraries_and_headless_browsers_are_bots() {
    assert_bots(&[
        "curl/8.5.0",
        "Wget/1.21.4",
        "python-requests/2.32.3",
        "Go-http-client/1.1",
        "Java/1.8.0_151",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.0.0 Safari/537.36",
    ]);
}

#[test]
fn current_desktop_browsers_are_not_bots() {
    assert_people(&[
        // Chrome on Windows, macOS and Linux
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
        // Firefox on Windows, macOS and Linux
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:133.0) Gecko/20100101 Firefox/133.0",
        "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
        // Safari on macOS
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
        // Edge and Opera
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 OPR/115.0.0.0",
    ]);
}

#[test]
fn current_mobile_browsers_are_not_bots() {
    assert_people(&[
        // Safari on iPhone and iPad, Chrome on iPhone
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (iPad; CPU OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/131.0.6778.73 Mobile/15E148 Safari/604.1",
        // Chrome on Android (reduced and full agents), Firefox on Android
        "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
        "Mozilla/5.0 (Linux; Android 14; Google Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36",
        "Mozilla/5.0 (Android 14; Mobile; rv:133.0) Gecko/133.0 Firefox/133.0",
        // Samsung Internet
        "Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/26.0 Chrome/122.0.0.0 Mobile Safari/537.36",
        "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/27.0 Chrome/125.0.0.0 Mobile Safari/537.36",
    ]);
}

#[test]
fn in_app_browsers_people_open_links_in_are_not_bots() {
    assert_people(&[
        // Instagram's and Facebook's in-app browsers on iOS
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 Instagram 305.0.0.24.109 (iPhone14,5; iOS 17_0; en_US; en; scale=3.00; 1170x2532; 532637374)",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 [FBAN/FBIOS;FBDV/iPhone14,2;FBMD/iPhone;FBSN/iOS;FBSV/17.1.2;FBSS/3;FBID/phone;FBLC/en_US;FBOP/5]",
        // The Google app on iOS and on Android, an Android WebView
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) GSA/288.0.576558003 Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (Linux; Android 13; SM-A536B Build/TP1A.220624.014; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/120.0.6099.144 Mobile Safari/537.36 GoogleApp/15.1.19.29.arm64",
        "Mozilla/5.0 (Linux; Android 13; Pixel 7 Build/TQ3A.230901.001; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/118.0.0.0 Mobile Safari/537.36",
    ]);
}

/// A browser's agent with one word appended: each word below is caught by one hand-coded
/// pattern alone (isbot's `isbotPatterns` names only that one), or spared by its exclusion.
fn android_chrome_with(word: &str) -> String {
    format!(
        "Mozilla/5.0 (Linux; Android 11) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/100.0.0.0 Mobile Safari/537.36 {word}"
    )
}

#[track_caller]
fn assert_words(bots: &[&str], people: &[&str]) {
    for word in bots {
        assert!(is_bot(&android_chrome_with(word)), "{word:?} is a bot");
    }
    for word in people {
        assert!(!is_bot(&android_chrome_with(word)), "{word:?} is a person");
    }
}

#[test]
fn news_counts_unless_after_g_or_before_sapphire() {
    assert_words(
        &["AppNews/2.0"],
        &["GNews/1.0", "BingNews/1.0", "NewsSapphire/1.0"],
    );
    // At the very start there is nothing before it, and the start counts as "not a g".
    assert!(is_bot("News Republic (Android 13; Pixel 7)"));
}

#[test]
fn google_counts_unless_in_the_google_app_a_pixel_or_a_channel_name() {
    assert_words(
        &["Google-Read-Aloud", "Google-Extended"],
        &[
            "GoogleApp/15.1",
            "googlewv",
            "Google/Google",
            "channel/google",
            "(Google Pixel 8)",
        ],
    );
}

#[test]
fn bot_counts_at_a_word_end_unless_a_cubot_phone() {
    assert_words(
        &["Slackbot", "bots_fetcher", "xCUBOT_X19"],
        &["CUBOT KINGKONG 5 Pro", "CUBOT_X19", "Robotics/1.0"],
    );
    // The first "bot" is excluded, a later one is not: every match is tried.
    assert!(is_bot(
        "Mozilla/5.0 (Linux; Android 10; CUBOT KINGKONG 5 Pro) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.144 Mobile Safari/537.36 Twitterbot"
    ));
}

#[test]
fn scan_counts_unless_camscanner() {
    assert_words(&["VirusScan/1.0"], &["CamScanner/6.1"]);
}

#[test]
fn http_counts_unless_libhttp() {
    assert_words(&["okhttp/4.9.0"], &["libhttp/1.0"]);
}

#[test]
fn java_counts_unless_followed_by_a_semicolon() {
    assert_words(&["Java/1.8"], &["Java;"]);
}

#[test]
fn long_word_counts_utf16_units_as_javascript_does() {
    // "=" keeps every other pattern out: only `^[^ ]{50,}$` can match these.
    let fifty_ascii = "=".repeat(50);
    let forty_nine_ascii = "=".repeat(49);
    let twenty_wide = "小".repeat(20); // 60 bytes, 20 UTF-16 units
    let fifty_wide = "小".repeat(50);

    assert!(is_bot(&fifty_ascii));
    assert!(!is_bot(&forty_nine_ascii));
    assert!(!is_bot(&twenty_wide));
    assert!(is_bot(&fifty_wide));
    assert!(!is_bot(&format!("{fifty_ascii} {fifty_ascii}")));
}

#[test]
fn s_matches_javascripts_non_ascii_spaces_too() {
    // Only `^mozilla/\d\.\d\s[\w\.-]+$` can match: with a no-break space, as with a space.
    assert!(is_bot("Mozilla/5.0 Fetcher"));
    assert!(is_bot("Mozilla/5.0\u{a0}Fetcher"));
    assert!(is_bot("Mozilla/5.0\u{3000}Fetcher"));
    assert!(!is_bot("Mozilla/5.0\u{85}Fetcher")); // NEL is not a space to JavaScript
}

#[test]
fn case_folds_for_ascii_letters_only() {
    assert!(is_bot("MOZILLA/5.0 (COMPATIBLE; GOOGLEBOT/2.1)"));
    // With Unicode folding "ſpider" (long s) would be "spider"; JavaScript without `u` keeps
    // them apart, and so does ASCII mode.
    assert!(is_bot(&android_chrome_with("spider")));
    assert!(!is_bot(&android_chrome_with("\u{17f}pider")));
}

#[test]
fn empty_user_agent_is_a_bot() {
    assert!(is_bot(""));
}

#[test]
fn missing_user_agent_header_is_a_bot() {
    assert!(is_bot_header(None));
    assert!(is_bot_header(Some(b"")));
}

#[test]
fn non_utf8_user_agent_header_is_a_bot() {
    // Latin-1 bytes of an otherwise ordinary browser agent.
    let latin1 = b"Mozilla/5.0 (Windows NT 10.0; Win64; x64) Caf\xe9/1.0";

    assert!(is_bot_header(Some(latin1)));
}

#[test]
fn utf8_user_agent_header_gets_the_patterns_verdict() {
    let chrome = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

    assert!(!is_bot_header(Some(chrome.as_bytes())));
    assert!(is_bot_header(Some(b"Twitterbot/1.0")));
}
