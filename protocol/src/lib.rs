//! What the operator and the worker share, and nothing else: the MinerU2.5 chat protocol
//! ([`chat`]), the vLLM client that speaks it ([`client`], also the operator's warm-up probe),
//! the block model ([`model`]), and the formats of the worker's flags and metrics the operator
//! writes and reads ([`worker`]). Kept free of pdfium, image codecs and the HTTP server, so the
//! operator links none of them.

pub mod chat;
pub mod client;
pub mod model;
pub mod worker;
