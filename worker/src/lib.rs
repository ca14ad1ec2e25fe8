//! MinerU document extraction: pdfium rendering, the MinerU2.5 two-step protocol against a vLLM
//! server, a model-free text-layer backend, MinerU-compatible output, and a strict vLLM simulator.
pub mod model;
pub mod otsl;
pub mod protocol;
pub mod tokens;
pub mod client;
pub mod vlm;
pub mod simulator;
pub mod pdf;
pub mod text;
pub mod output;
pub mod parse;
