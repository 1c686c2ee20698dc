//! Visit limits in the redirect: which requests use up a visit, and asking PostgreSQL.
//!
//! A link with `max_visits` answers exactly that many redirects, then behaves as expired.
//! PostgreSQL counts (`PgRepository::count_visit`, one atomic statement), so the limit holds
//! across any number of instances and restarts; no cache holds the count.
//!
//! What uses up a visit: a `GET` from a person's browser. What does not, and still gets the
//! redirect while visits remain (and the expired answer once they are used up), so it reads
//! the count without changing it (`peek_visits`):
//! - `HEAD`: it follows nothing, so nobody visited (monitors, link checkers, `curl -I`);
//! - bots and link-preview fetchers (Slack, WhatsApp, iMessage, X, Facebook, Discord,
//!   LinkedIn, Googlebot...), by User-Agent (`kurz_bots`, isbot's patterns): a chat app unfurling a one-visit link would
//!   otherwise spend the visit before the person it was sent to clicks (shlink #900). A missing
//!   or unreadable User-Agent is a bot: every browser sends one.
//!
//! Only limited links come here, so the classifier costs other links nothing. If PostgreSQL
//! cannot answer, neither can we: the caller gets the error and answers 503 with
//! `Retry-After` (fail closed: a limit is never exceeded, and never guessed at).

use actix_web::HttpRequest;
use actix_web::http::Method;
use actix_web::http::header::USER_AGENT;
use kurz_bots::Classifier;
use kurz_repository::{PgRepository, RepoError, Visit};

/// User-Agents whose verdicts the classifier keeps: a service sees a few thousand distinct
/// agents (browser versions, a few hundred fetchers), each cached only up to
/// `kurz_bots::MAX_CACHED_LEN` bytes, so this is a few MB at most.
pub const BOT_VERDICTS_CACHED: u64 = 10_000;

#[derive(Debug, Clone)]
pub struct VisitGate {
    bots: Classifier,
}

impl Default for VisitGate {
    fn default() -> Self {
        Self::new()
    }
}

impl VisitGate {
    pub fn new() -> Self {
        Self {
            bots: Classifier::new(BOT_VERDICTS_CACHED),
        }
    }

    /// Whether `request` uses up one of a limited link's visits.
    pub fn counts(&self, request: &HttpRequest) -> bool {
        request.method() == Method::GET && !self.is_bot(request)
    }

    /// A missing, empty or non-UTF-8 User-Agent is a bot: every browser sends one.
    fn is_bot(&self, request: &HttpRequest) -> bool {
        let agent = request.headers().get(USER_AGENT);
        self.bots.is_bot_header(agent.map(|value| value.as_bytes()))
    }

    /// What PostgreSQL says to `request` for the limited link `code`: counted for a visit,
    /// read without counting for the rest.
    pub async fn check(
        &self,
        repo: &PgRepository,
        code: &str,
        request: &HttpRequest,
    ) -> Result<Visit, RepoError> {
        if self.counts(request) {
            repo.count_visit(code).await
        } else {
            repo.peek_visits(code).await
        }
    }
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";

    fn request(method: Method, agent: Option<&str>) -> HttpRequest {
        let mut request = TestRequest::default().method(method);
        if let Some(agent) = agent {
            request = request.insert_header((USER_AGENT, agent));
        }
        request.to_http_request()
    }

    #[test]
    fn only_a_browsers_get_uses_up_a_visit() {
        let gate = VisitGate::new();

        assert!(gate.counts(&request(Method::GET, Some(FIREFOX))));
        assert!(!gate.counts(&request(Method::HEAD, Some(FIREFOX))));
        assert!(!gate.counts(&request(Method::GET, None)));
        assert!(!gate.counts(&request(Method::GET, Some(""))));
        for preview in [
            "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
            "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
            "WhatsApp/2.23.20.0 A",
            "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)",
            "Twitterbot/1.0",
            "LinkedInBot/1.0 (compatible; Mozilla/5.0; Apache-HttpClient +http://www.linkedin.com)",
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        ] {
            assert!(
                !gate.counts(&request(Method::GET, Some(preview))),
                "{preview}"
            );
        }
    }
}
