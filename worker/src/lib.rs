//! MinerU document extraction: pdfium rendering, the MinerU2.5 two-step protocol against a vLLM
//! server, a model-free text-layer backend, MinerU-compatible output, and a strict vLLM simulator.
pub mod middle;
pub mod otsl;
pub mod output;
pub mod parse;
pub mod pdf;
pub mod render_pool;
pub mod server;
pub mod signals;
pub mod simulator;
pub mod text;
pub mod tokens;
pub mod vlm;
