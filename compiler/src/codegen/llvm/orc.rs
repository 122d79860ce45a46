//! ORC's LLJIT, through LLVM's C API: the linker that puts the kernels' machine code in this
//! process. Shares of the kernels are compiled to relocatable objects on every core at once
//! (`compile` in the parent module); one JIT links them, binds their libcalls to this
//! process's functions and resolves the kernels' addresses. The code lives until the JIT is
//! dropped.

use std::ffi::{CStr, CString};

use inkwell::llvm_sys::error::{LLVMDisposeErrorMessage, LLVMErrorRef, LLVMGetErrorMessage};
use inkwell::llvm_sys::orc2::lljit::{
    LLVMOrcCreateLLJIT, LLVMOrcDisposeLLJIT, LLVMOrcLLJITAddObjectFile,
    LLVMOrcLLJITGetMainJITDylib, LLVMOrcLLJITLookup, LLVMOrcLLJITMangleAndIntern, LLVMOrcLLJITRef,
};
use inkwell::llvm_sys::orc2::{
    LLVMJITEvaluatedSymbol, LLVMJITSymbolFlags, LLVMJITSymbolGenericFlags, LLVMOrcAbsoluteSymbols,
    LLVMOrcCSymbolMapPair, LLVMOrcDisposeMaterializationUnit, LLVMOrcJITDylibDefine,
};
use inkwell::memory_buffer::MemoryBuffer;

use super::llvm_error;
use crate::codegen::cranelift::CodegenError;

/// An object file in memory, on its way from the thread that compiled it to the JIT.
pub struct Object(MemoryBuffer<'static>);

// SAFETY: a memory buffer is an owned byte array with no tie to the thread or the LLVM
// context that made it; it is moved, never shared.
unsafe impl Send for Object {}

impl Object {
    /// Wraps a compiled object.
    pub fn new(buffer: MemoryBuffer<'static>) -> Object {
        Object(buffer)
    }
}

/// One LLJIT instance and the code it has linked.
pub struct Jit(LLVMOrcLLJITRef);

// SAFETY: `compile` adds, defines and looks up on one thread; after that nothing calls the
// JIT but `Drop`, and LLJIT has no thread affinity. The machine code it owns is read-only
// once linked, and the kernels run on any thread.
unsafe impl Send for Jit {}
unsafe impl Sync for Jit {}

/// Turns an LLVM error into ours (consuming it); a null error is success.
fn check(err: LLVMErrorRef, what: &str) -> Result<(), CodegenError> {
    if err.is_null() {
        return Ok(());
    }
    // SAFETY: `err` is a live error; asking for its message consumes it, and the message is
    // disposed once, after it is copied.
    let message = unsafe {
        let p = LLVMGetErrorMessage(err);
        let s = CStr::from_ptr(p).to_string_lossy().into_owned();
        LLVMDisposeErrorMessage(p);
        s
    };
    Err(llvm_error(what, message))
}

fn c_name(name: &str) -> Result<CString, CodegenError> {
    CString::new(name).map_err(|e| llvm_error("a symbol name holds a NUL byte", e))
}

impl Jit {
    /// A JIT for this process's CPU.
    pub fn new() -> Result<Jit, CodegenError> {
        let mut jit: LLVMOrcLLJITRef = std::ptr::null_mut();
        // SAFETY: a null builder asks for the defaults (the host's target machine); `jit` is
        // written when the call succeeds.
        let err = unsafe { LLVMOrcCreateLLJIT(&mut jit, std::ptr::null_mut()) };
        check(err, "cannot start LLVM's JIT")?;
        Ok(Jit(jit))
    }

    /// Defines `symbols` (name, address in this process) for the code linked later.
    pub fn define(&self, symbols: &[(&str, usize)]) -> Result<(), CodegenError> {
        let mut pairs = Vec::with_capacity(symbols.len());
        for (name, address) in symbols {
            let c = c_name(name)?;
            // SAFETY: the JIT is live; the interned name comes back retained for us, and the
            // pairs hand that reference on to `LLVMOrcAbsoluteSymbols`.
            let name = unsafe { LLVMOrcLLJITMangleAndIntern(self.0, c.as_ptr()) };
            pairs.push(LLVMOrcCSymbolMapPair {
                Name: name,
                Sym: LLVMJITEvaluatedSymbol {
                    Address: *address as u64,
                    Flags: LLVMJITSymbolFlags {
                        GenericFlags: LLVMJITSymbolGenericFlags::LLVMJITSymbolGenericFlagsExported
                            as u8
                            | LLVMJITSymbolGenericFlags::LLVMJITSymbolGenericFlagsCallable as u8,
                        TargetFlags: 0,
                    },
                },
            });
        }
        // SAFETY: the unit takes the pairs' names; the dylib takes the unit when the
        // definition succeeds, and on failure the unit is still ours to dispose.
        unsafe {
            let unit = LLVMOrcAbsoluteSymbols(pairs.as_mut_ptr(), pairs.len());
            let err = LLVMOrcJITDylibDefine(LLVMOrcLLJITGetMainJITDylib(self.0), unit);
            if !err.is_null() {
                LLVMOrcDisposeMaterializationUnit(unit);
            }
            check(err, "cannot bind the libcalls")
        }
    }

    /// Adds a compiled object; it is linked when one of its symbols is looked up.
    pub fn add(&self, object: Object) -> Result<(), CodegenError> {
        let buffer = object.0.as_mut_ptr();
        // The JIT takes the buffer over: ours must not free it too.
        std::mem::forget(object);
        // SAFETY: the JIT is live and owns `buffer` from here on, whatever the outcome.
        let err = unsafe {
            LLVMOrcLLJITAddObjectFile(self.0, LLVMOrcLLJITGetMainJITDylib(self.0), buffer)
        };
        check(err, "LLVM's JIT refused the compiled kernels")
    }

    /// The address of symbol `name`, linking its object first if it is not yet.
    pub fn lookup(&self, name: &str) -> Result<usize, CodegenError> {
        let c = c_name(name)?;
        let mut address = 0;
        // SAFETY: the JIT is live; the name is only read during the call.
        let err = unsafe { LLVMOrcLLJITLookup(self.0, &mut address, c.as_ptr()) };
        check(err, "a compiled kernel is missing")?;
        Ok(address as usize)
    }
}

impl Drop for Jit {
    fn drop(&mut self) {
        // SAFETY: the JIT is disposed once, here; nothing calls its code any more (the
        // kernels that point into it are dropped first, see `codegen::Loaded`).
        let err = unsafe { LLVMOrcDisposeLLJIT(self.0) };
        // Nothing to report to in a destructor, but the error must be consumed.
        let _ = check(err, "");
    }
}
