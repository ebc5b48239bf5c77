//! What a node may hand the settle: a result PostgreSQL can store (no NUL character in any
//! string or key: `jsonb` and `text` cannot hold one) and of bounded size, since every later
//! step of the run reads it back. A result that breaks either rule fails its node with a
//! clear error instead of failing its settle, which would run the node again and again.

use super::nodes::Outcome;
use serde_json::Value;

/// `Ok` when `outcome` can be stored; otherwise why not, fit to be the node's error.
pub fn check(outcome: &Outcome, max_bytes: usize) -> Result<(), String> {
    let patch = outcome.patch.iter().map(|(k, v)| (k.as_str(), v));
    let suspend = outcome
        .suspend
        .iter()
        .map(|v| ("the human step's request", v));
    for (key, value) in std::iter::once(("output", &outcome.output))
        .chain(patch)
        .chain(suspend)
    {
        if key.contains('\0') || contains_nul(value) {
            return Err(format!(
                "the node's {} contains a NUL character (\\u0000), which cannot be stored",
                if key == "output" {
                    "output"
                } else {
                    "context patch"
                }
            ));
        }
    }
    let size = serde_json::to_vec(&outcome.output).map_or(0, |v| v.len())
        + outcome
            .patch
            .values()
            .map(|v| serde_json::to_vec(v).map_or(0, |v| v.len()))
            .sum::<usize>();
    if size > max_bytes {
        return Err(format!(
            "the node's output is {size} bytes of JSON, more than the limit of {max_bytes} (JET_NODE_MAX_OUTPUT_BYTES)"
        ));
    }
    Ok(())
}

/// Whether any string or key in `value` holds a NUL character, which PostgreSQL's `jsonb`
/// and `text` cannot store.
pub fn contains_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(contains_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || contains_nul(v)),
        _ => false,
    }
}

/// An error message fit to store and show: no NUL characters (PostgreSQL text cannot hold
/// them) and at most [`MAX_MESSAGE_CHARS`] characters.
pub fn scrub_message(message: &str) -> String {
    let mut clean: String = message.replace('\0', "\\u0000");
    if clean.chars().count() > MAX_MESSAGE_CHARS {
        clean = clean.chars().take(MAX_MESSAGE_CHARS).collect();
        clean.push('…');
    }
    clean
}

/// Longest error message stored with a node's failure.
pub const MAX_MESSAGE_CHARS: usize = 4000;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn outcome(output: Value) -> Outcome {
        Outcome {
            output,
            patch: Default::default(),
            handles: vec!["success".into()],
            delay: None,
            finish: None,
            suspend: None,
        }
    }

    #[test]
    fn a_nul_anywhere_is_refused_with_a_clear_reason() {
        for bad in [
            json!("a\u{0}"),
            json!({"k": ["x", "y\u{0}"]}),
            json!({"k\u{0}": 1}),
        ] {
            let err = check(&outcome(bad.clone()), 1 << 20).expect_err("refused");
            assert!(err.contains("NUL"), "{bad}: {err}");
        }
        // A backslash followed by `u0000` is plain text, not a NUL.
        assert!(check(&outcome(json!("\\u0000")), 1 << 20).is_ok());
    }

    #[test]
    fn an_oversized_output_is_refused_naming_the_limit() {
        let big = outcome(json!("x".repeat(2000)));
        let err = check(&big, 1000).expect_err("too big");
        assert!(err.contains("2002 bytes") && err.contains("1000"), "{err}");
        assert!(check(&big, 4000).is_ok());
    }
}
