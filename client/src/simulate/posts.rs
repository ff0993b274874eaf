//! Social-media-like posts: an author, text with hashtags (a few tags are far more popular
//! than the rest, as on real platforms), a like count and a timestamp.

use serde::Serialize;

use super::clicks::to_json;
use super::rng::Rng;

const TAGS: [&str; 16] = [
    "iot",
    "industry40",
    "maintenance",
    "fab1",
    "automation",
    "robotics",
    "ai",
    "data",
    "safety",
    "energy",
    "kafka",
    "rust",
    "streaming",
    "quality",
    "supplychain",
    "outage",
];
const PHRASES: [&str; 10] = [
    "Line 3 is humming again after the bearing swap",
    "Anyone else seeing vibration alerts this morning?",
    "New dashboard for the packaging line is live",
    "Coffee machine on the shop floor is down, send help",
    "Throughput record on the night shift",
    "Predictive maintenance caught a motor before it failed",
    "Reading about exactly-once stream processing",
    "Sensor firmware rollout done for fab2",
    "Why is the conveyor so loud today",
    "Shipping the new quality checks next week",
];
const HANDLES: [&str; 8] = [
    "maker",
    "plantops",
    "shiftlead",
    "datanerd",
    "welder",
    "qa_jo",
    "robofan",
    "ops_kim",
];

#[derive(Serialize)]
struct PostJson<'a> {
    post_id: String,
    author: &'a str,
    text: String,
    hashtags: Vec<&'a str>,
    likes: u64,
    ts: &'a str,
}

/// One post at `ts` (already formatted); returns (key = author, JSON).
pub(crate) fn post(rng: &mut Rng, seq: u64, authors: u32, ts: &str) -> (Vec<u8>, Vec<u8>) {
    let handle = rng.pick(&HANDLES).copied().unwrap_or("maker");
    let author = format!("@{handle}{}", rng.below(u64::from(authors.max(1))));
    // Zipf-like popularity: tag i is chosen with weight 1/(i+1).
    let weights: Vec<f64> = (1..=TAGS.len())
        .map(|i| 1.0 / f64::from(u32::try_from(i).unwrap_or(u32::MAX)))
        .collect();
    let mut tags: Vec<&str> = Vec::new();
    for _ in 0..=rng.below(3) {
        let t = TAGS.get(rng.weighted(&weights)).copied().unwrap_or("iot");
        if !tags.contains(&t) {
            tags.push(t);
        }
    }
    let phrase = rng.pick(&PHRASES).copied().unwrap_or("Hello");
    let text = tags
        .iter()
        .fold(phrase.to_owned(), |text, t| format!("{text} #{t}"));
    let json = PostJson {
        post_id: format!("post-{seq}"),
        author: &author,
        text,
        hashtags: tags,
        likes: rng.below(20).pow(2),
        ts,
    };
    (author.clone().into_bytes(), to_json(&json))
}
