//! The `embeddings` check: the request body and the reading of `POST /embeddings`'s answer
//! (dimension count, input tokens, answering model). Pure functions over bytes.

use bytes::Bytes;
use serde_json::Value;

use super::response::ChatReply;
use crate::pricing::Usage;

/// Why an embeddings answer could not be used. Messages never quote the body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmbeddingError {
    /// The body is not JSON (serde's position only).
    #[error("response is not valid JSON ({0})")]
    Json(String),
    /// A required field is missing or has the wrong type.
    #[error("response has no {0}")]
    Missing(&'static str),
    /// The embedding has another number of dimensions than `expected_dimensions`.
    #[error("the embedding has {got} dimensions, expected_dimensions is {expected}; did the model behind the API change?")]
    DimensionMismatch {
        /// Dimensions received.
        got: usize,
        /// Dimensions configured.
        expected: u32,
    },
}

/// What an embeddings answer said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Embedding {
    /// The number of values in the first embedding.
    pub dimensions: usize,
    /// Usage (input tokens only) and the answering model.
    pub reply: ChatReply,
}

/// The JSON body of an embeddings request; floats are asked for explicitly, so the dimension
/// count is the array's length.
pub fn embeddings_body(model: &str, input: &str) -> Bytes {
    let body = serde_json::json!({
        "model": model,
        "input": input,
        "encoding_format": "float",
    });
    Bytes::from(body.to_string())
}

/// Reads an embeddings `usage`: `prompt_tokens` (its `total_tokens` when that is missing).
fn parse_usage(v: &Value) -> Option<Usage> {
    let u = v.get("usage").filter(|u| u.is_object())?;
    let prompt_tokens = u
        .get("prompt_tokens")
        .or_else(|| u.get("total_tokens"))?
        .as_u64()?;
    Some(Usage {
        prompt_tokens,
        ..Usage::default()
    })
}

/// Parses `POST /embeddings`: `{"data": [{"embedding": [...]}], "model", "usage"}`; checks the
/// dimension count against `expected` when one is configured.
pub fn parse_embeddings(body: &[u8], expected: Option<u32>) -> Result<Embedding, EmbeddingError> {
    // Syntax errors name a position and never echo the input.
    let v: Value = serde_json::from_slice(body).map_err(|e| EmbeddingError::Json(e.to_string()))?;
    let first = v
        .get("data")
        .and_then(Value::as_array)
        .and_then(|d| d.first())
        .ok_or(EmbeddingError::Missing("\"data\" entry"))?;
    let values = first
        .get("embedding")
        .and_then(Value::as_array)
        .filter(|e| !e.is_empty() && e.iter().all(Value::is_number))
        .ok_or(EmbeddingError::Missing("\"embedding\" array of numbers"))?;
    let dimensions = values.len();
    if let Some(expected) = expected.filter(|e| usize::try_from(*e).ok() != Some(dimensions)) {
        return Err(EmbeddingError::DimensionMismatch {
            got: dimensions,
            expected,
        });
    }
    Ok(Embedding {
        dimensions,
        reply: ChatReply {
            usage: parse_usage(&v),
            served_model: v
                .get("model")
                .and_then(Value::as_str)
                .filter(|m| !m.is_empty())
                .map(str::to_string),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &[u8] = br#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,-0.2,3e-5,0]}],"model":"text-embedding-3-small","usage":{"prompt_tokens":4,"total_tokens":4}}"#;

    #[test]
    fn body_asks_for_floats() {
        let v: Value = serde_json::from_slice(&embeddings_body("e", "hello")).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"model": "e", "input": "hello", "encoding_format": "float"})
        );
    }

    #[test]
    fn dimensions_tokens_and_model_are_read() {
        let e = parse_embeddings(GOOD, None).unwrap();
        assert_eq!(e.dimensions, 4);
        assert_eq!(
            e.reply.served_model.as_deref(),
            Some("text-embedding-3-small")
        );
        let u = e.reply.usage.unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens), (4, 0));
        assert_eq!(parse_embeddings(GOOD, Some(4)).unwrap().dimensions, 4);
        let only_total = br#"{"data":[{"embedding":[1]}],"usage":{"total_tokens":7}}"#;
        assert_eq!(
            parse_embeddings(only_total, None)
                .unwrap()
                .reply
                .usage
                .unwrap()
                .prompt_tokens,
            7
        );
        let no_usage = br#"{"data":[{"embedding":[1]}],"usage":{"prompt_tokens":-1}}"#;
        assert_eq!(parse_embeddings(no_usage, None).unwrap().reply.usage, None);
    }

    #[test]
    fn a_dimension_mismatch_names_both_numbers() {
        let e = parse_embeddings(GOOD, Some(1536)).unwrap_err();
        assert_eq!(
            e,
            EmbeddingError::DimensionMismatch {
                got: 4,
                expected: 1536
            }
        );
        assert!(e
            .to_string()
            .starts_with("the embedding has 4 dimensions, expected_dimensions is 1536"));
    }

    #[test]
    fn bad_shapes_are_refused_without_quoting() {
        for body in [
            &br#"{"data":[]}"#[..],
            br#"{"data":{}}"#,
            br#"{"data":[{"embedding":[]}]}"#,
            br#"{"data":[{"embedding":"AAAAAA=="}]}"#,
            br#"{"data":[{"embedding":[1,"x"]}]}"#,
        ] {
            assert!(
                matches!(
                    parse_embeddings(body, None),
                    Err(EmbeddingError::Missing(_))
                ),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let e = parse_embeddings(b"{\"data\": [private", None).unwrap_err();
        assert!(!e.to_string().contains("private"), "{e}");
    }
}
