//! ptxas, NVIDIA's PTX assembler, run on generated PTX: it checks what LLVM does not (an
//! unknown `llvm.nvvm.*` intrinsic becomes PTX that only ptxas refuses) and reports each
//! kernel's registers, stack frame, spills and shared memory (`archc dump --stage ptx
//! --stats`), and what it could not do as asked: its "Potential Performance Loss" notes (a
//! `wgmma` pipeline serialised, for want of registers or because other instructions touch
//! its accumulators), which cost speed where nothing else would say so. It needs no GPU: CI
//! installs it from PyPI (`nvidia-cuda-nvcc`).

use std::path::{Path, PathBuf};

use archc_kernels::target::GpuArch;

use super::cranelift::CodegenError;

fn failed(what: &str, e: impl std::fmt::Display) -> CodegenError {
    CodegenError::Ptxas(format!("{what}: {e}"))
}

/// What to say when no ptxas is found.
pub const MISSING: &str = "error: no ptxas found: set ARCHC_PTXAS to its path, or put it on the PATH (without a GPU: `pip install --no-deps nvidia-cuda-nvcc==13.0.88` puts it in site-packages/nvidia/cu13/bin)\n";

/// A table of `assembled`'s kernels for `arch`: one line per kernel, the totals, then
/// ptxas's performance notes.
pub fn report(assembled: &Assembled, arch: GpuArch) -> String {
    let stats = &assembled.kernels;
    let mut out = format!(
        "{:<40} {:>9} {:>11} {:>12} {:>11} {:>12}\n",
        format!("kernel ({})", arch.name()),
        "registers",
        "stack bytes",
        "spill stores",
        "spill loads",
        "shared bytes"
    );
    for k in stats {
        out.push_str(&format!(
            "{:<40} {:>9} {:>11} {:>12} {:>11} {:>12}\n",
            k.name, k.registers, k.stack, k.spill_stores, k.spill_loads, k.shared
        ));
    }
    let most = stats.iter().map(|k| k.registers).max().unwrap_or(0);
    let spilling = stats.iter().filter(|k| k.spill_stores > 0).count();
    out.push_str(&format!(
        "{} kernels assembled; at most {most} registers; {spilling} spill; {} performance notes\n",
        stats.len(),
        assembled.notes.len()
    ));
    for note in &assembled.notes {
        out.push_str(&format!("ptxas: {note}\n"));
    }
    out
}

/// What ptxas reports of a module: each kernel's figures, and its performance notes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assembled {
    /// The kernels, in ptxas's order.
    pub kernels: Vec<KernelStats>,
    /// ptxas's "Potential Performance Loss" notes, each naming its kernel.
    pub notes: Vec<String>,
}

impl Assembled {
    /// Adds to each kernel's shared memory the dynamic shared memory its launches ask for
    /// (`archc_kernels::shared`), which ptxas does not see.
    pub fn count_dynamic_shared(&mut self, kernels: &[archc_kernels::ir::Kernel]) {
        for k in kernels {
            let bytes = archc_kernels::shared::SharedLayout::of(k).launch_bytes();
            let bytes = u32::try_from(bytes).unwrap_or(u32::MAX);
            for s in self.kernels.iter_mut().filter(|s| s.name == k.name) {
                s.shared = s.shared.saturating_add(bytes);
            }
        }
    }
}

/// What ptxas reports of one kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelStats {
    /// The kernel.
    pub name: String,
    /// Registers per thread.
    pub registers: u32,
    /// Bytes of stack frame per thread (local arrays, spills).
    pub stack: u32,
    /// Bytes stored to local memory because registers ran out.
    pub spill_stores: u32,
    /// Bytes loaded back.
    pub spill_loads: u32,
    /// Bytes of shared memory per block: ptxas's (static), and the dynamic shared memory
    /// its launches ask for once [`Assembled::count_dynamic_shared`] has added it.
    pub shared: u32,
}

/// Where ptxas is: `$ARCHC_PTXAS`, else `ptxas` on the `PATH`; None when neither exists.
pub fn find_ptxas() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ARCHC_PTXAS") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("ptxas"))
        .find(|p| p.is_file())
}

/// Assembles `ptx` for `arch` with `ptxas -v`, and returns each kernel's registers, stack,
/// spills and shared memory, and ptxas's performance notes; ptxas's own message when it
/// refuses the text.
pub fn assemble(ptxas: &Path, ptx: &str, arch: GpuArch) -> Result<Assembled, CodegenError> {
    // One directory per call: threads of one process assemble at once (the tests do).
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("archc-ptxas-{}-{call}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| failed("cannot make a scratch directory", e))?;
    let (input, output) = (dir.join("kernels.ptx"), dir.join("kernels.cubin"));
    std::fs::write(&input, ptx).map_err(|e| failed("cannot write the PTX", e))?;
    let run = std::process::Command::new(ptxas)
        .arg(format!("-arch={}", arch.name()))
        .arg("-v")
        .arg(&input)
        .arg("-o")
        .arg(&output)
        .output();
    let _ = std::fs::remove_dir_all(&dir);
    let run = run.map_err(|e| failed(&format!("cannot run {}", ptxas.display()), e))?;
    let log = String::from_utf8_lossy(&run.stderr).into_owned();
    if !run.status.success() {
        return Err(CodegenError::Ptxas(format!(
            "ptxas refused the PTX for {}:\n{log}",
            arch.name()
        )));
    }
    Ok(parse_stats(&log))
}

/// The kernels' figures and the performance notes in ptxas's `-v` report.
fn parse_stats(log: &str) -> Assembled {
    let number_before = |line: &str, unit: &str| -> u32 {
        line.split(',')
            .find_map(|part| {
                let part = part.trim();
                let n = part.strip_suffix(unit)?.trim();
                n.rsplit(' ').next()?.parse().ok()
            })
            .unwrap_or(0)
    };
    let mut out: Vec<KernelStats> = Vec::new();
    let mut notes = Vec::new();
    for line in log.lines() {
        if let Some(note) = line.split("Potential Performance Loss: ").nth(1) {
            notes.push(note.trim().to_string());
        } else if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            out.push(KernelStats {
                name: rest.split('\'').next().unwrap_or_default().to_string(),
                registers: 0,
                stack: 0,
                spill_stores: 0,
                spill_loads: 0,
                shared: 0,
            });
        } else if let Some(k) = out.last_mut() {
            if line.contains("bytes stack frame") {
                k.stack = number_before(line, "bytes stack frame");
                k.spill_stores = number_before(line, "bytes spill stores");
                k.spill_loads = number_before(line, "bytes spill loads");
            } else if line.contains("Used ") && line.contains("registers") {
                let used = line.split("Used ").nth(1).unwrap_or_default();
                k.registers = used
                    .split(' ')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                k.shared = number_before(line, "bytes smem");
            }
        }
    }
    Assembled {
        kernels: out,
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ptxas_reports_are_read_per_kernel() {
        let log = "ptxas info    : (C7511) Potential Performance Loss: wgmma.mma_async instructions are serialized due to insufficient register resources for the wgmma pipeline in the function 'k2'
ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'k1' for 'sm_80'
ptxas info    : Function properties for k1
    16 bytes stack frame, 4 bytes spill stores, 8 bytes spill loads
ptxas info    : Used 40 registers, used 1 barriers, 360 bytes cmem[0]
ptxas info    : Compiling entry function 'k2' for 'sm_80'
ptxas info    : Function properties for k2
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 8 registers, used 1 barriers, 36864 bytes smem, 360 bytes cmem[0]
";
        let Assembled { kernels: s, notes } = parse_stats(log);
        assert_eq!(s.len(), 2);
        assert_eq!(
            s[0],
            KernelStats {
                name: "k1".into(),
                registers: 40,
                stack: 16,
                spill_stores: 4,
                spill_loads: 8,
                shared: 0
            }
        );
        assert_eq!((s[1].registers, s[1].stack, s[1].shared), (8, 0, 36864));
        assert_eq!(notes.len(), 1);
        assert!(notes[0].starts_with("wgmma.mma_async instructions are serialized"));
        let table = report(&Assembled { kernels: s, notes }, GpuArch::Sm90a);
        assert!(
            table.contains("1 performance notes\nptxas: wgmma"),
            "{table}"
        );
    }
}
