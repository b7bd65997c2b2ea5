//! TEMPORARY stub (replaced by the membership branch).
use serde::{Deserialize, Serialize};
/// stub
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MembershipMode {
    /// stub
    Open,
    /// stub
    Approval,
}
