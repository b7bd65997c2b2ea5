//! Approval receipts: an approver's signed permission to spend on one packet and rung.

use libp2p_identity::{Keypair, PublicKey};
use serde::{Deserialize, Serialize};

use super::problem::{at, check_amount, check_id, Problem, Problems};
use crate::{Digest, Timestamp};

/// Domain tag of [`ApprovalReceipt::id`]; with a trailing zero byte, also the prefix of the bytes
/// an approver signs.
pub const APPROVAL_RECEIPT_DOMAIN: &str = "btd/approval-receipt/v1";

/// Signed bytes start with this, so a receipt signature can never pass for any other btd signature.
const SIGNING_PREFIX: &[u8] = b"btd/approval-receipt/v1\0";

/// Permission, signed by an approver, to spend up to `spend_cap` on one packet on one rung during
/// `[granted_at, expires_at)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ApprovalReceipt {
    /// The packet approved.
    pub packet_id: String,
    /// The rung approved.
    pub rung_id: String,
    /// The approver's libp2p peer id (base58).
    pub approver: String,
    /// The approver's public key: hex of `PublicKey::encode_protobuf`.
    pub approver_public_key: String,
    /// When the approval starts.
    pub granted_at: Timestamp,
    /// When it ends (exclusive: at this instant it has expired).
    pub expires_at: Timestamp,
    /// Largest spend approved (spend units).
    pub spend_cap: f64,
    /// Hex signature over `b"btd/approval-receipt/v1\0"` followed by the canonical encoding of every
    /// other field, in declaration order.
    pub signature: String,
}

/// The signed part of a receipt: every field but the signature.
#[derive(Serialize)]
struct ReceiptBody<'a> {
    packet_id: &'a str,
    rung_id: &'a str,
    approver: &'a str,
    approver_public_key: &'a str,
    granted_at: Timestamp,
    expires_at: Timestamp,
    spend_cap: f64,
}

/// Why a receipt cannot be issued, or does not authorise a packet.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReceiptError {
    /// A field is malformed.
    #[error("the receipt is malformed, {0}")]
    Invalid(Problems),
    /// The public key is not hex of a protobuf-encoded libp2p key.
    #[error("the receipt's approver_public_key is not a hex-encoded libp2p public key ({0}); ask the approver for a new receipt")]
    BadPublicKey(String),
    /// The approver's peer id is not the key's.
    #[error("the receipt names approver {approver} but its key belongs to {key_peer_id}; it was altered, ask the approver for a new receipt")]
    ApproverMismatch {
        /// The peer id the receipt names.
        approver: String,
        /// The peer id of its key.
        key_peer_id: String,
    },
    /// The receipt is well formed but signed by someone not allowed to approve spend.
    #[error("the receipt is signed by {approver}, who may not approve spend for this program; only the program owner's receipts count")]
    UntrustedApprover {
        /// The receipt's approver.
        approver: String,
    },
    /// The signature does not verify.
    #[error("the receipt's signature does not verify: it was altered after signing; ask the approver for a new receipt")]
    BadSignature,
    /// The receipt approves another packet.
    #[error("the receipt approves packet {receipt:?}, not {wanted:?}")]
    WrongPacket {
        /// The packet the receipt names.
        receipt: String,
        /// The packet being dispatched.
        wanted: String,
    },
    /// The receipt approves another rung.
    #[error("the receipt approves rung {receipt:?}, not {wanted:?}")]
    WrongRung {
        /// The rung the receipt names.
        receipt: String,
        /// The rung being dispatched.
        wanted: String,
    },
    /// The approval has not started.
    #[error("the receipt is valid only from {granted_at} (now {now}); wait or ask for a receipt valid now")]
    NotYetValid {
        /// Start of validity.
        granted_at: Timestamp,
        /// The time checked.
        now: Timestamp,
    },
    /// The approval has ended.
    #[error("the receipt expired at {expires_at} (now {now}); ask the approver for a new receipt")]
    Expired {
        /// End of validity (exclusive).
        expires_at: Timestamp,
        /// The time checked.
        now: Timestamp,
    },
    /// The keypair could not sign.
    #[error("could not sign the receipt: {0}")]
    Signing(String),
}

impl ApprovalReceipt {
    /// Issues a receipt signed by `keypair`, valid during `[granted_at, expires_at)`.
    ///
    /// Fails with [`ReceiptError::Invalid`] when an id is malformed, `spend_cap` is negative or not
    /// finite, or `expires_at` is not after `granted_at`.
    pub fn issue(
        keypair: &Keypair,
        packet_id: impl Into<String>,
        rung_id: impl Into<String>,
        granted_at: Timestamp,
        expires_at: Timestamp,
        spend_cap: f64,
    ) -> Result<Self, ReceiptError> {
        let public = keypair.public();
        let mut receipt = Self {
            packet_id: packet_id.into(),
            rung_id: rung_id.into(),
            approver: public.to_peer_id().to_base58(),
            approver_public_key: hex::encode(public.encode_protobuf()),
            granted_at,
            expires_at,
            spend_cap,
            signature: String::new(),
        };
        let mut problems = Vec::new();
        receipt.validate_fields("receipt", &mut problems);
        Problems::check(problems).map_err(ReceiptError::Invalid)?;
        let signature = keypair
            .sign(&receipt.signing_bytes())
            .map_err(|e| ReceiptError::Signing(e.to_string()))?;
        receipt.signature = hex::encode(signature);
        Ok(receipt)
    }

    /// The bytes the approver signs.
    fn signing_bytes(&self) -> Vec<u8> {
        let body = ReceiptBody {
            packet_id: &self.packet_id,
            rung_id: &self.rung_id,
            approver: &self.approver,
            approver_public_key: &self.approver_public_key,
            granted_at: self.granted_at,
            expires_at: self.expires_at,
            spend_cap: self.spend_cap,
        };
        let mut bytes = SIGNING_PREFIX.to_vec();
        bytes.extend(crate::wire::codec::canonical_bytes(&body));
        bytes
    }

    /// The approver's public key.
    pub fn public_key(&self) -> Result<PublicKey, ReceiptError> {
        let bytes = hex::decode(&self.approver_public_key)
            .map_err(|e| ReceiptError::BadPublicKey(e.to_string()))?;
        PublicKey::try_decode_protobuf(&bytes)
            .map_err(|e| ReceiptError::BadPublicKey(e.to_string()))
    }

    /// Checks the signature: the key decodes, `approver` is the key's peer id, and the signature
    /// is the key's over every other field.
    pub fn verify(&self) -> Result<(), ReceiptError> {
        let key = self.public_key()?;
        let key_peer_id = key.to_peer_id().to_base58();
        if key_peer_id != self.approver {
            return Err(ReceiptError::ApproverMismatch {
                approver: self.approver.clone(),
                key_peer_id,
            });
        }
        let signature = hex::decode(&self.signature).map_err(|_| ReceiptError::BadSignature)?;
        if key.verify(&self.signing_bytes(), &signature) {
            Ok(())
        } else {
            Err(ReceiptError::BadSignature)
        }
    }

    /// Whether this receipt authorises `packet_id` on `rung_id` at `now`: well-formed, verified,
    /// for that packet and rung, and `granted_at <= now < expires_at` (at `now == expires_at` it has
    /// expired, so a receipt never overlaps its successor issued at that instant).
    ///
    /// It does not say whether the approver may approve: the caller checks `approver`.
    pub fn is_valid_for(
        &self,
        packet_id: &str,
        rung_id: &str,
        now: Timestamp,
    ) -> Result<(), ReceiptError> {
        Problems::check(self.validate()).map_err(ReceiptError::Invalid)?;
        self.verify()?;
        if self.packet_id != packet_id {
            return Err(ReceiptError::WrongPacket {
                receipt: self.packet_id.clone(),
                wanted: packet_id.to_owned(),
            });
        }
        if self.rung_id != rung_id {
            return Err(ReceiptError::WrongRung {
                receipt: self.rung_id.clone(),
                wanted: rung_id.to_owned(),
            });
        }
        if now < self.granted_at {
            return Err(ReceiptError::NotYetValid {
                granted_at: self.granted_at,
                now,
            });
        }
        if now >= self.expires_at {
            return Err(ReceiptError::Expired {
                expires_at: self.expires_at,
                now,
            });
        }
        Ok(())
    }

    /// [`Self::is_valid_for`], and signed by one of `trusted_approvers`: whether dispatch may use
    /// this receipt for `packet_id` on `rung_id` at `now`.
    pub fn authorizes(
        &self,
        packet_id: &str,
        rung_id: &str,
        trusted_approvers: &[String],
        now: Timestamp,
    ) -> Result<(), ReceiptError> {
        self.is_valid_for(packet_id, rung_id, now)?;
        if trusted_approvers.contains(&self.approver) {
            Ok(())
        } else {
            Err(ReceiptError::UntrustedApprover {
                approver: self.approver.clone(),
            })
        }
    }

    /// Content id: `content_id("btd/approval-receipt/v1", the whole receipt, signature included)`.
    pub fn id(&self) -> Digest {
        Digest::content_id(APPROVAL_RECEIPT_DOMAIN, self)
    }

    /// Every problem with the receipt's fields (empty when well-formed): ids, approver peer id, key
    /// and signature encodings, spend cap, validity window. The signature itself is checked by
    /// [`ApprovalReceipt::verify`].
    pub fn validate(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        self.validate_at("receipt", &mut out);
        out
    }

    pub(crate) fn validate_at(&self, path: &str, out: &mut Vec<Problem>) {
        self.validate_fields(path, out);
        if self.signature.is_empty() {
            out.push(Problem::new(
                at(path, "signature"),
                "is missing; the receipt is unsigned",
            ));
        } else if hex::decode(&self.signature).is_err() {
            out.push(Problem::new(at(path, "signature"), "is not hex"));
        }
    }

    /// Checks of everything but the signature (also run before signing).
    fn validate_fields(&self, path: &str, out: &mut Vec<Problem>) {
        check_id(out, at(path, "packet_id"), &self.packet_id);
        check_id(out, at(path, "rung_id"), &self.rung_id);
        if self.approver.parse::<libp2p_identity::PeerId>().is_err() {
            out.push(Problem::new(
                at(path, "approver"),
                format!("{:?} is not a base58 libp2p peer id", self.approver),
            ));
        }
        if let Err(e) = self.public_key() {
            out.push(Problem::new(at(path, "approver_public_key"), e.to_string()));
        }
        check_amount(out, at(path, "spend_cap"), self.spend_cap);
        if self.expires_at <= self.granted_at {
            out.push(Problem::new(
                at(path, "expires_at"),
                format!(
                    "{} is not after granted_at {}; a receipt must be valid for some time",
                    self.expires_at, self.granted_at
                ),
            ));
        }
    }
}
