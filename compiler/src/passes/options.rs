//! Which passes run, and whether the verifiers check every pass's output.

use std::collections::BTreeMap;

use archc_runtime::quant::BlockFormat;

use super::registry::{self, PASSES};

/// The pass that compiles each distinct layer of a stack once (see [`PassOptions::with_blocks`]).
const STACKS: &str = "interleave_stack";

/// Which passes run, and whether each one's output is verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PassOptions {
    disabled: Vec<String>,
    verify: bool,
    blocks: BTreeMap<String, BlockFormat>,
}

impl Default for PassOptions {
    fn default() -> PassOptions {
        PassOptions::all()
    }
}

impl PassOptions {
    /// Every pass (the default); verified in debug builds, tests included.
    pub fn all() -> PassOptions {
        PassOptions {
            disabled: Vec::new(),
            verify: cfg!(debug_assertions),
            blocks: BTreeMap::new(),
        }
    }

    /// No pass at all (`--no-fuse`): one kernel per primitive op, one arena slot per buffer.
    pub fn none() -> PassOptions {
        PassOptions {
            disabled: PASSES.iter().map(|p| p.name().to_string()).collect(),
            ..PassOptions::all()
        }
    }

    /// Turns one pass off; the name must be one of [`PASSES`].
    pub fn disable(mut self, pass: &str) -> Result<PassOptions, String> {
        if registry::find(pass).is_none() {
            return Err(format!(
                "there is no pass `{pass}`; the passes are {}",
                registry::names()
            ));
        }
        self.disabled.push(pass.to_string());
        Ok(self)
    }

    /// Turns one pass on (after [`PassOptions::none`], to test passes alone).
    pub fn enable(mut self, pass: &str) -> PassOptions {
        self.disabled.retain(|d| d != pass);
        self
    }

    /// Whether a pass runs.
    pub fn enabled(&self, pass: &str) -> bool {
        !self.disabled.iter().any(|d| d == pass)
    }

    /// Verifies every IR after every pass (`archc dump --verify`; always on in debug builds).
    pub fn verified(mut self) -> PassOptions {
        self.verify = true;
        self
    }

    /// Keeps the named weights in these block formats in memory (a GGUF checkpoint's
    /// quantized tensors): matmuls read them in place, dequantizing in registers. With any,
    /// `interleave_stack` is off: a layer kind's kernels are compiled once for every layer's
    /// weights, as f32, while the unrolled layers' matmuls each read their own weight's blocks
    /// (the kernels of alike layers are still compiled once: lowering shares equal code).
    pub fn with_blocks(mut self, blocks: BTreeMap<String, BlockFormat>) -> PassOptions {
        if !blocks.is_empty() && self.enabled(STACKS) {
            self.disabled.push(STACKS.to_string());
        }
        self.blocks = blocks;
        self
    }

    /// The weights kept block-quantized, by name.
    pub fn blocks(&self) -> &BTreeMap<String, BlockFormat> {
        &self.blocks
    }

    /// Whether the verifiers run after each pass.
    pub fn verifies(&self) -> bool {
        self.verify
    }
}
