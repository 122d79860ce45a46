//! The one interface of the native code generators, so that `run`, `bench`, `build`, `dump`
//! and the tests drive every backend the same way.

use archc_kernels::ir::Kernel;
use archc_kernels::target::Target;
use archc_runtime::Launcher;

use crate::lower::Lowered;

use super::cranelift::CodegenError;

/// Which code generator compiles the kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// Cranelift: fast to compile, 128-bit vectors, always built in.
    Cranelift,
    /// LLVM: the host CPU's full vectors and LLVM's optimiser (cargo feature `llvm`).
    Llvm,
}

impl BackendKind {
    /// Every code generator, built in or not.
    pub const ALL: [BackendKind; 2] = [BackendKind::Cranelift, BackendKind::Llvm];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Cranelift => "cranelift",
            BackendKind::Llvm => "llvm",
        }
    }

    /// Whether this archc was built with it.
    pub fn available(self) -> bool {
        match self {
            BackendKind::Cranelift => true,
            BackendKind::Llvm => cfg!(feature = "llvm"),
        }
    }

    /// The machine the kernels are scheduled for when this backend compiles them in process.
    pub fn target(self) -> Target {
        match self {
            BackendKind::Cranelift => Target::cranelift_x86_64(),
            BackendKind::Llvm => Target::host(),
        }
    }

    /// Compiles a lowered model's kernels into this process, to run on at most `threads`
    /// threads; each launch is checked against the plan's signatures.
    pub fn jit(self, lowered: &Lowered, threads: usize) -> Result<Box<dyn Launcher>, CodegenError> {
        let signatures = lowered
            .plan
            .signatures()
            .map_err(CodegenError::Signatures)?;
        let kernels = &lowered.kernels;
        match self {
            BackendKind::Cranelift => Ok(Box::new(
                super::jit::compile(kernels, signatures)?.with_threads(threads)?,
            )),
            #[cfg(feature = "llvm")]
            BackendKind::Llvm => Ok(Box::new(
                super::llvm::compile(kernels, signatures)?.with_threads(threads)?,
            )),
            #[cfg(not(feature = "llvm"))]
            BackendKind::Llvm => Err(CodegenError::NotBuilt(self.name())),
        }
    }

    /// The object file `archc build` links: the kernels compiled for `target`, their table
    /// and the plan.
    pub fn object(
        self,
        kernels: &[Kernel],
        symbols: usize,
        plan_json: &str,
        target: &Target,
    ) -> Result<Vec<u8>, CodegenError> {
        match self {
            BackendKind::Cranelift => super::object::build_object(kernels, symbols, plan_json, ""),
            #[cfg(feature = "llvm")]
            BackendKind::Llvm => super::llvm::build_object(kernels, symbols, plan_json, target),
            #[cfg(not(feature = "llvm"))]
            BackendKind::Llvm => {
                let _ = target;
                Err(CodegenError::NotBuilt(self.name()))
            }
        }
    }

    /// The backend's own IR of every kernel, as text (`dump --stage clif` or `llvm`).
    pub fn text(self, kernels: &[Kernel], symbols: usize) -> Result<String, CodegenError> {
        match self {
            BackendKind::Cranelift => super::object::clif_text(kernels, symbols),
            #[cfg(feature = "llvm")]
            BackendKind::Llvm => Ok(super::llvm::llvm_text(kernels, symbols, &self.target())),
            #[cfg(not(feature = "llvm"))]
            BackendKind::Llvm => Err(CodegenError::NotBuilt(self.name())),
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
