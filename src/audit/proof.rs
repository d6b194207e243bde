//! Offline proofs that an entry is in an office's log: the entry's exact
//! bytes, its inclusion proof, and a checkpoint the peer cosigned.

use prost::Message as _;
use serde::{Deserialize, Serialize};

use super::checkpoint;
use super::inspect::{summarize, EntrySummary};
use super::merkle::{verify_inclusion, Hash, Tree};
use super::store::{scan, LogError};
use crate::identity::OfficeCard;
use crate::wire::envelope::{self, Domain};
use crate::wire::proto::{log_entry::Event, LogEntry};

/// Format tag of proof files.
pub const FORMAT: &str = "hotline-proof/1";

/// A self-contained inclusion proof.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProofFile {
    /// Always [`FORMAT`].
    pub format: String,
    /// The office whose log holds the entry.
    pub office: String,
    /// Its log origin.
    pub origin: String,
    /// The entry's index.
    pub index: u64,
    /// The entry's exact stored bytes, hex.
    pub entry: String,
    /// A checkpoint covering it, with the peer's cosignature when there is one.
    pub checkpoint: String,
    /// Offices whose cosignatures are on the checkpoint.
    pub cosigners: Vec<String>,
    /// RFC 6962 inclusion proof, hex hashes.
    pub proof: Vec<String>,
}

/// Why a proof could not be made or does not hold.
#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    /// Reading the log.
    #[error(transparent)]
    Log(#[from] LogError),
    /// No entry is about that message.
    #[error("no entry in the log is about message {0}")]
    NotFound(String),
    /// No checkpoint covers the entry yet.
    #[error("no checkpoint covers entry {0} yet; run the node until it issues one (or stop it cleanly) and try again")]
    NotCovered(u64),
    /// The file is not a proof.
    #[error("not a hotline proof file: {0}")]
    Format(String),
    /// The proof does not hold.
    #[error("the proof does not hold: {0}")]
    Invalid(String),
}

/// Builds a proof for the first entry about message `msg` (a sent or
/// received message preferred over receipts).
pub fn prove(path: &std::path::Path, office: &str, msg: &str) -> Result<ProofFile, ProofError> {
    let mut tree = Tree::new();
    let mut found: Option<(u64, Vec<u8>, u8)> = None;
    let mut checkpoints: Vec<(u64, Vec<u8>, bool)> = Vec::new(); // (size, note, cosigned)
    scan(path, |e| {
        tree.push(&e.bytes);
        let s = summarize(&e.entry);
        if s.msg
            .as_deref()
            .is_some_and(|m| m == msg || (msg.len() >= 8 && m.starts_with(msg)))
        {
            let rank = if s.kind.starts_with("message") { 0 } else { 1 };
            if found.as_ref().is_none_or(|f| rank < f.2) {
                found = Some((e.entry.index, e.bytes.clone(), rank));
            }
        }
        match &e.entry.event {
            Some(Event::CheckpointIssued(c)) => {
                if let Some((_, size, _)) = checkpoint::peek(&c.note) {
                    checkpoints.push((size, c.note.clone(), false));
                }
            }
            Some(Event::CosignatureReceived(n)) => {
                if let Some((_, size, _)) = checkpoint::peek(&n.note) {
                    checkpoints.push((size, n.note.clone(), true));
                }
            }
            _ => {}
        }
    })?;
    let (index, bytes, _) = found.ok_or_else(|| ProofError::NotFound(msg.to_string()))?;
    // Prefer the latest cosigned checkpoint covering the entry, else the
    // latest own one.
    let pick = checkpoints
        .iter()
        .filter(|c| c.0 > index && c.2)
        .max_by_key(|c| c.0)
        .or_else(|| {
            checkpoints
                .iter()
                .filter(|c| c.0 > index)
                .max_by_key(|c| c.0)
        })
        .ok_or(ProofError::NotCovered(index))?;
    let (origin, size, _) =
        checkpoint::peek(&pick.1).ok_or_else(|| ProofError::Format("bad checkpoint".into()))?;
    let proof = tree
        .inclusion_proof(index, size)
        .ok_or_else(|| ProofError::Invalid("checkpoint larger than the log".into()))?;
    let signers = checkpoint::signers(&pick.1);
    Ok(ProofFile {
        format: FORMAT.into(),
        office: office.to_string(),
        origin: origin.clone(),
        index,
        entry: hex::encode(bytes),
        checkpoint: String::from_utf8_lossy(&pick.1).into_owned(),
        cosigners: signers.into_iter().filter(|s| *s != origin).collect(),
        proof: proof.iter().map(|h| hex::encode(h.0)).collect(),
    })
}

/// What a valid proof shows.
#[derive(Debug, Clone, Serialize)]
pub struct Proved {
    /// The entry, summarized.
    pub entry: EntrySummary,
    /// The checkpoint's size.
    pub checkpoint_size: u64,
    /// Cosigners whose signatures verified (needs their cards).
    pub verified_cosigners: Vec<String>,
    /// Whether the envelope inside the entry verified (when its signer's
    /// card was given).
    pub envelope_verified: Option<bool>,
}

/// Checks a proof file with the office's card, and optionally the peer's
/// (to check its cosignature and the signature inside a received entry).
pub fn verify_proof(
    file: &ProofFile,
    card: &OfficeCard,
    peer: Option<&OfficeCard>,
) -> Result<Proved, ProofError> {
    if file.format != FORMAT {
        return Err(ProofError::Format(format!("format is {:?}", file.format)));
    }
    let log_key = card
        .log_verifying_key()
        .map_err(|e| ProofError::Format(e.to_string()))?;
    let origin = checkpoint::origin(&card.office, &log_key);
    let cp = checkpoint::open(file.checkpoint.as_bytes(), &origin, &log_key)
        .map_err(|e| ProofError::Invalid(format!("checkpoint: {e}")))?;
    let bytes = hex::decode(&file.entry).map_err(|e| ProofError::Format(e.to_string()))?;
    let proof: Vec<Hash> = file
        .proof
        .iter()
        .map(|h| {
            let mut b = [0u8; 32];
            hex::decode_to_slice(h, &mut b).map(|_| Hash(b))
        })
        .collect::<Result<_, _>>()
        .map_err(|e| ProofError::Format(e.to_string()))?;
    if !verify_inclusion(&proof, cp.size, cp.root, file.index, &bytes) {
        return Err(ProofError::Invalid(format!(
            "entry {} is not in {}'s log at size {}",
            file.index, card.office, cp.size
        )));
    }
    let entry =
        LogEntry::decode(bytes.as_slice()).map_err(|e| ProofError::Format(e.to_string()))?;
    if entry.index != file.index {
        return Err(ProofError::Invalid(
            "entry index differs from the proven position".into(),
        ));
    }
    let mut verified_cosigners = Vec::new();
    if let Some(p) = peer {
        let key = p
            .log_verifying_key()
            .map_err(|e| ProofError::Format(e.to_string()))?;
        let po = checkpoint::origin(&p.office, &key);
        if checkpoint::verify_cosignature(file.checkpoint.as_bytes(), &po, &key).is_ok() {
            verified_cosigners.push(p.office.to_string());
        }
    }
    let envelope_verified = match &entry.event {
        Some(Event::MessageSent(pe))
        | Some(Event::ReceiptSent(pe))
        | Some(Event::NegativeReceiptSent(pe)) => {
            let domain = domain_of(&entry);
            pe.envelope.as_ref().map(|env| {
                card.message_verifying_key()
                    .is_ok_and(|k| envelope::verify(env, domain, &k).is_ok())
            })
        }
        Some(Event::MessageReceived(pe))
        | Some(Event::ReceiptReceived(pe))
        | Some(Event::NegativeReceiptReceived(pe)) => {
            let domain = domain_of(&entry);
            match (peer, &pe.envelope) {
                (Some(p), Some(env)) if p.office.as_str() == pe.peer => Some(
                    p.message_verifying_key()
                        .is_ok_and(|k| envelope::verify(env, domain, &k).is_ok()),
                ),
                _ => None,
            }
        }
        _ => None,
    };
    Ok(Proved {
        entry: summarize(&entry),
        checkpoint_size: cp.size,
        verified_cosigners,
        envelope_verified,
    })
}

fn domain_of(entry: &LogEntry) -> Domain {
    match &entry.event {
        Some(Event::ReceiptSent(_)) | Some(Event::ReceiptReceived(_)) => Domain::Receipt,
        Some(Event::NegativeReceiptSent(_)) | Some(Event::NegativeReceiptReceived(_)) => {
            Domain::NegativeReceipt
        }
        _ => Domain::Message,
    }
}
