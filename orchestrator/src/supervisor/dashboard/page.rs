//! The live page.
use std::sync::Arc;

use super::frame::Frame;

/// The page, its first state rendered in.
pub fn render(frames: &[Arc<Frame>]) -> String {
    format!("<html><body>{}</body></html>", frames.len())
}
