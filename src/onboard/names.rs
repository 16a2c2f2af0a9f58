//! Readable generated agent ids, after the Culture's ship names (as Node's add-agent did):
//! `gcu-sleeper-service`, and a short random suffix when the hub already has one.

/// Ship classes: General Contact Unit, General Systems Vehicle, Rapid Offensive Unit, ...
const CLASSES: &[&str] = &["gcu", "gsv", "lsv", "msv", "rou", "gou", "vfp"];

/// Ship names, kebab-case, short enough to read in a table.
const NAMES: &[&str] = &[
    "sleeper-service",
    "grey-area",
    "so-much-for-subtlety",
    "just-read-the-instructions",
    "of-course-i-still-love-you",
    "mistake-not",
    "arbitrary",
    "frank-exchange-of-views",
    "killing-time",
    "zero-gravitas",
    "gravitas-shortfall",
    "limiting-factor",
    "no-fixed-abode",
    "lasting-damage",
    "congenital-optimist",
    "prosthetic-conscience",
    "xenophobe",
    "fate-amenable-to-change",
    "irregular-apocalypse",
    "very-little-gravitas-indeed",
    "little-rascal",
    "problem-child",
    "bad-for-business",
    "attitude-adjuster",
    "size-isnt-everything",
    "quietly-confident",
    "wisdom-like-silence",
    "trade-surplus",
    "unacceptable-behaviour",
    "jaundiced-outlook",
    "unfortunate-conflict-of-evidence",
    "what-are-the-civilian-applications",
];

/// A generated agent id: a ship class and a ship name, e.g. `gcu-sleeper-service`.
pub fn generate_name() -> String {
    let class = CLASSES[fastrand::usize(..CLASSES.len())];
    let name = NAMES[fastrand::usize(..NAMES.len())];
    format!("{class}-{name}")
}

/// `name` with a short random suffix (`gcu-sleeper-service-k3x9`), for when the hub has `name`.
pub fn with_suffix(name: &str) -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";
    let suffix: String = (0..4)
        .map(|_| ALPHABET[fastrand::usize(..ALPHABET.len())] as char)
        .collect();
    format!("{name}-{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_readable_ids() {
        for _ in 0..200 {
            let name = with_suffix(&generate_name());
            assert!(name.len() <= 128, "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{name}"
            );
            let parts: Vec<&str> = name.splitn(2, '-').collect();
            assert!(CLASSES.contains(&parts[0]), "{name}");
        }
    }
}
