//! Clickstream / user events: page views, clicks, carts and purchases in per-user sessions, and
//! `user_created` sign-ups in the shape of a users API poller's output.

use serde::Serialize;

use super::rng::Rng;

const PAGES: [&str; 8] = [
    "/",
    "/search",
    "/products",
    "/products/{}",
    "/cart",
    "/checkout",
    "/account",
    "/help",
];
const COUNTRIES: [&str; 8] = ["DE", "FR", "GB", "US", "IN", "BR", "JP", "NL"];
const DEVICES: [&str; 3] = ["desktop", "mobile", "tablet"];
const REFERRERS: [&str; 4] = ["direct", "search", "social", "email"];
const FIRST: [&str; 10] = [
    "ada", "alan", "grace", "linus", "margaret", "dennis", "barbara", "ken", "frances", "edsger",
];
const LAST: [&str; 8] = [
    "lovelace", "turing", "hopper", "torvalds", "hamilton", "ritchie", "liskov", "thompson",
];
/// (event type, weight).
const TYPES: [(&str, f64); 5] = [
    ("page_view", 60.0),
    ("click", 25.0),
    ("add_to_cart", 8.0),
    ("purchase", 3.0),
    ("user_created", 4.0),
];
/// Users beyond this many are still created but do not join the active pool (bounded memory).
const MAX_POOL: usize = 1_000_000;

#[derive(Serialize)]
struct NewUser<'a> {
    name: String,
    email: String,
    country: &'a str,
    created_at: &'a str,
}

#[derive(Serialize)]
struct ClickJson<'a> {
    event_id: String,
    #[serde(rename = "type")]
    kind: &'a str,
    user_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    page: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    referrer: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    device: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    amount_eur: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<NewUser<'a>>,
    ts: &'a str,
}

/// Users and their session numbers.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Users {
    sessions: Vec<u32>,
    next_id: u64,
}

impl Users {
    pub(crate) fn new(count: u32) -> Self {
        Self {
            sessions: vec![0; usize::try_from(count.max(1)).unwrap_or(1)],
            next_id: u64::from(count.max(1)),
        }
    }

    /// One event at `ts` (already formatted); returns (key, JSON).
    pub(crate) fn event(&mut self, rng: &mut Rng, seq: u64, ts: &str) -> (Vec<u8>, Vec<u8>) {
        let weights: Vec<f64> = TYPES.iter().map(|(_, w)| *w).collect();
        let kind = TYPES
            .get(rng.weighted(&weights))
            .map_or("page_view", |t| t.0);
        let country = rng.pick(&COUNTRIES).copied().unwrap_or("DE");
        if kind == "user_created" {
            let id = self.next_id;
            self.next_id += 1;
            if self.sessions.len() < MAX_POOL {
                self.sessions.push(0);
            }
            let user_id = format!("u-{id:05}");
            let first = rng.pick(&FIRST).copied().unwrap_or("ada");
            let last = rng.pick(&LAST).copied().unwrap_or("lovelace");
            let json = ClickJson {
                event_id: format!("evt-{seq}"),
                kind,
                user_id: &user_id,
                session_id: None,
                page: None,
                referrer: None,
                device: None,
                amount_eur: None,
                user: Some(NewUser {
                    name: format!("{} {}", capitalise(first), capitalise(last)),
                    email: format!("{first}.{last}{id}@example.com"),
                    country,
                    created_at: ts,
                }),
                ts,
            };
            return (user_id.clone().into_bytes(), to_json(&json));
        }
        let u = rng.index(self.sessions.len());
        if rng.chance(0.05) {
            if let Some(s) = self.sessions.get_mut(u) {
                *s = s.saturating_add(1);
            }
        }
        let session = self.sessions.get(u).copied().unwrap_or(0);
        let user_id = format!("u-{u:05}");
        let page = rng.pick(&PAGES).copied().unwrap_or("/");
        let page = page.replace("{}", &rng.below(500).to_string());
        let amount = (kind == "purchase").then(|| (rng.range(5.0, 400.0) * 100.0).round() / 100.0);
        let json = ClickJson {
            event_id: format!("evt-{seq}"),
            kind,
            user_id: &user_id,
            session_id: Some(format!("{user_id}-s{session}")),
            page: Some(page),
            referrer: rng.pick(&REFERRERS).copied(),
            device: rng.pick(&DEVICES).copied(),
            amount_eur: amount,
            user: None,
            ts,
        };
        (user_id.clone().into_bytes(), to_json(&json))
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// Serialising these structs cannot fail (no maps with non-string keys, no custom code).
pub(crate) fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_else(|_| b"{}".to_vec())
}
