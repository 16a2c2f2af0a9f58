//! Every hub <-> sidecar frame as a typed value.
//!
//! Outbound frames ([`Outbound`]) serialize to exactly what the hub's schemas accept, each with
//! `protocol_version: 1`. Inbound frames ([`Inbound`]) are parsed from raw text without ever
//! failing hard: anything the sidecar does not understand becomes [`Inbound::Other`] or a
//! [`FrameError`] that the caller logs before carrying on.
//!
//! The parts: `outbound` (sidecar -> hub frames, serialized) and `inbound` (hub -> sidecar frames,
//! parsed).

/// The protocol version the Node sidecar stamps on every frame; the hub passes it through.
pub const PROTOCOL_VERSION: u32 = 1;

mod inbound;
mod outbound;

pub use inbound::{parse_inbound, FrameError, HubError, Inbound, TaskFrame, MAX_FRAME_BYTES};
pub use outbound::{cut_chars, Identify, Outbound, MAX_REASON_CHARS};
