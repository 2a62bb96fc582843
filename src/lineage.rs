//! Provenance as data (like strax's lineage): for each stage, its name,
//! version and the configuration that changes its output, plus its inputs,
//! as canonical JSON hashed with SHA-256.
//!
//! What changes the output is tracked (software version, conditions tag and
//! content hash, reconstruction thresholds); what does not (thread and rank
//! counts, paths, log levels) is not, so the same data processed anywhere
//! has the same lineage hash.
//!
//! ```
//! use tpcflow::lineage::Lineage;
//! let a = Lineage::new("raw", "1", serde_json::json!({"conditions": "v1"}));
//! let b = Lineage::new("reco", "0.1.0", serde_json::json!({"hit_threshold": 5})).with_input(a);
//! assert_eq!(b.hash().len(), 16);
//! assert_eq!(b.hash(), b.clone().hash());
//! ```

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// One stage and everything upstream of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lineage {
    /// Stage name, e.g. `reco`.
    pub stage: String,
    /// Stage version.
    pub version: String,
    /// Configuration that changes the output (objects are sorted by key).
    pub config: Value,
    /// Upstream stages.
    pub inputs: Vec<Lineage>,
}

impl Lineage {
    /// A stage with no inputs.
    pub fn new(stage: impl Into<String>, version: impl Into<String>, config: Value) -> Self {
        Self {
            stage: stage.into(),
            version: version.into(),
            config,
            inputs: Vec::new(),
        }
    }

    /// Add an upstream stage.
    #[must_use]
    pub fn with_input(mut self, input: Lineage) -> Self {
        self.inputs.push(input);
        self
    }

    /// Canonical JSON: keys sorted (serde_json's map is ordered), no whitespace.
    pub fn canonical_json(&self) -> String {
        let value = serde_json::to_value(self).expect("lineage is plain JSON");
        serde_json::to_string(&value).expect("JSON values serialise")
    }

    /// First 16 hex digits of the SHA-256 of the canonical JSON.
    pub fn hash(&self) -> String {
        let digest = Sha256::digest(self.canonical_json().as_bytes());
        crate::conditions::hex(&digest[..8])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_order_does_not_change_the_hash_but_values_do() {
        let a = Lineage::new("reco", "1", json!({"a": 1, "b": {"x": 2, "y": 3}}));
        let b = Lineage::new(
            "reco",
            "1",
            serde_json::from_str(r#"{"b": {"y": 3, "x": 2}, "a": 1}"#).unwrap(),
        );
        assert_eq!(a.hash(), b.hash());
        assert_eq!(a.canonical_json(), b.canonical_json());
        let c = Lineage::new("reco", "1", json!({"a": 2, "b": {"x": 2, "y": 3}}));
        assert_ne!(a.hash(), c.hash());
        let d = a.clone().with_input(Lineage::new("raw", "1", json!({})));
        assert_ne!(a.hash(), d.hash());
        // The hash is pinned: changing the canonical form is a format change.
        assert_eq!(
            Lineage::new("s", "1", json!({})).canonical_json(),
            r#"{"config":{},"inputs":[],"stage":"s","version":"1"}"#
        );
    }
}
