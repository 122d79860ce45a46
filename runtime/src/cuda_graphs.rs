//! A GPU's launches gathered into batches, and a batch seen before replayed as a CUDA graph.
//!
//! Launching kernels one by one, each with its own argument table, dims and status word
//! copied over and the status read back (a synchronisation per launch), cost more than the
//! kernels of a decode step. So [`crate::cuda::CudaLauncher`] queues its launches and runs
//! them as a batch ([`Batches::flush`]) at a launch that may fail a check (its status word is
//! then the launch's result, and no launch after it has run on what it failed to compute), at
//! one with copies of its own, at the end of a frame's steps, and before any copy between the
//! memories: the batch's tables and dims then cross in one copy each, its kernels run back to
//! back on one stream, and its status words come back in one copy, read after one
//! synchronisation.
//!
//! A batch whose launches are the same as an earlier one's (the same kernels, grids and
//! argument addresses: a repeated run's, or a decode step's whose arena and state did not
//! grow, with the weights in place) differs only in its dims. The second time such a batch comes, its launches are captured as a CUDA graph
//! with their tables and dims in buffers of the graph's own; from then on a batch like it is
//! its dims copied into those buffers and one graph launch. A graph that cannot be captured
//! (a driver refusing) leaves the batch to run launch by launch, as the first time. At most
//! [`MAX_GRAPHS`] graphs are kept, the one used least recently making room.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use cudarc::driver::sys::{
    CUevent_flags, CUgraphInstantiate_flags, CUstreamCaptureMode, CUstreamCaptureStatus,
};
use cudarc::driver::{
    CudaFunction, CudaGraph, CudaSlice, CudaStream, DevicePtr, LaunchConfig, PushKernelArg,
};

use crate::LaunchError;

/// Graphs kept at most: past them the one used least recently goes.
const MAX_GRAPHS: usize = 16;

/// Batch shapes remembered at most (each holds its launches' addresses): past them the
/// memory of what was seen starts again.
const MAX_SEEN: usize = 256;

/// One queued launch: its kernel, blocks and threads per block, the device addresses of its
/// arguments (the status word's not yet among them) and the dims.
pub struct Queued {
    /// The kernel's number in the module.
    pub kernel: usize,
    /// Blocks.
    pub blocks: u32,
    /// Threads per block.
    pub threads: u32,
    /// Bytes of dynamic shared memory per block (the kernel's, allowed at its load).
    pub shared: u32,
    /// Where each argument's bytes are on the GPU.
    pub addresses: Vec<u64>,
    /// The values of the plan's symbols (at least one: a kernel's dims pointer is never
    /// dangling).
    pub dims: Vec<i64>,
}

/// What a graph fixes of a batch: everything but the dims' values.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Shape(Vec<(usize, u32, u32, Vec<u64>, usize)>);

impl Shape {
    fn of(queue: &[Queued]) -> Shape {
        Shape(
            queue
                .iter()
                .map(|q| {
                    let fixed = (q.kernel, q.blocks, q.threads);
                    (fixed.0, fixed.1, fixed.2, q.addresses.clone(), q.dims.len())
                })
                .collect(),
        )
    }
}

/// A batch's tables, dims and status words on the GPU, and where each launch's start.
struct Arguments {
    /// Held while the launches may read it (through `at`).
    _tables: CudaSlice<u64>,
    dims: CudaSlice<i64>,
    status: CudaSlice<i64>,
    /// The tables' and the dims' device addresses, taken outside any capture (taking one
    /// records an event on the stream).
    at: (u64, u64),
    /// Each launch's first table entry and first dim.
    starts: Vec<(usize, usize)>,
}

impl Arguments {
    /// The batch's arguments copied over: each launch's table is its addresses and then its
    /// status word's.
    fn new(s: &Arc<CudaStream>, queue: &[Queued]) -> Result<Arguments, LaunchError> {
        let status = s
            .alloc_zeros::<i64>(queue.len().max(1))
            .map_err(|e| failed("allocating the status words", e))?;
        let words = status.device_ptr(s).0;
        let (mut table, mut dims, mut starts) = (Vec::new(), Vec::new(), Vec::new());
        for (i, q) in queue.iter().enumerate() {
            starts.push((table.len(), dims.len()));
            table.extend(&q.addresses);
            table.push(words + 8 * i as u64);
            dims.extend(&q.dims);
        }
        let tables = s
            .clone_htod(&table)
            .map_err(|e| failed("copying the argument tables", e))?;
        let dims = s
            .clone_htod(&dims)
            .map_err(|e| failed("copying the dims", e))?;
        let at = (tables.device_ptr(s).0, dims.device_ptr(s).0);
        Ok(Arguments {
            _tables: tables,
            dims,
            status,
            at,
            starts,
        })
    }

    /// A replay's dims in place, and its status words at 0.
    fn refill(&mut self, s: &Arc<CudaStream>, queue: &[Queued]) -> Result<(), LaunchError> {
        let dims: Vec<i64> = queue.iter().flat_map(|q| q.dims.iter().copied()).collect();
        s.memcpy_htod(&dims, &mut self.dims)
            .map_err(|e| failed("copying the dims", e))?;
        s.memset_zeros(&mut self.status)
            .map_err(|e| failed("clearing the status words", e))
    }

    /// Launches the batch's kernels on `s`, in order. Only plain values are passed (the
    /// tables' and dims' addresses, taken before), so that nothing but the launches goes on
    /// the stream: a capture takes them as they are.
    fn launch(
        &self,
        s: &Arc<CudaStream>,
        functions: &[CudaFunction],
        queue: &[Queued],
    ) -> Result<(), LaunchError> {
        let (tables, dims) = self.at;
        for (q, &(t, d)) in queue.iter().zip(&self.starts) {
            let function = functions
                .get(q.kernel)
                .ok_or(LaunchError::NoKernel(q.kernel))?;
            let (table, dims) = (tables + 8 * t as u64, dims + 8 * d as u64);
            let config = LaunchConfig {
                grid_dim: (q.blocks, 1, 1),
                block_dim: (q.threads, 1, 1),
                shared_mem_bytes: q.shared,
            };
            let mut launch = s.launch_builder(function);
            launch.arg(&table).arg(&dims);
            // SAFETY: every kernel of the module is `void(ptr args, ptr dims)` (the
            // compiler's PTX). `table` holds the device address of each argument's bytes (the
            // arena's mirror or a kept copy, which the launcher keeps until the batch has run)
            // and of this launch's status word, as many as the kernel's signature asks (the
            // launcher checked each launch against it when queuing it); `dims` the dims it
            // reads. `self` holds both until the stream has synchronised ([`Batches::flush`])
            // or, captured, as long as the graph; dropped earlier (a failed launch), cudarc
            // frees them in the stream's order, after the kernels queued before.
            unsafe { launch.launch(config) }
                .map_err(|e| failed(&format!("launching kernel {}", q.kernel), e))?;
        }
        Ok(())
    }

    /// The first status word that is not 0, once the stream has run the batch.
    fn first_failed(&self, s: &Arc<CudaStream>) -> Result<Option<i64>, LaunchError> {
        let mut words = vec![0i64; self.status.len()];
        s.memcpy_dtoh(&self.status, &mut words)
            .and_then(|()| s.synchronize())
            .map_err(|e| failed("running the batch's kernels", e))?;
        Ok(words.into_iter().find(|w| *w != 0))
    }
}

/// The queue of launches not yet run, and the graphs of the batches seen twice.
#[derive(Default)]
pub struct Batches {
    queue: Vec<Queued>,
    seen: HashSet<Shape>,
    /// Each graph with its arguments and the batch count when it last ran.
    graphs: HashMap<Shape, (CudaGraph, Arguments, u64)>,
    /// Batches run so far.
    batches: u64,
}

impl Batches {
    /// Queues a launch.
    pub fn push(&mut self, q: Queued) {
        self.queue.push(q);
    }

    /// Whether no launch waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Runs the queued launches (see the module doc) and returns the first status word that
    /// is not 0; and when `timing`, the milliseconds the GPU took for them.
    pub fn flush(
        &mut self,
        s: &Arc<CudaStream>,
        functions: &[CudaFunction],
        timing: bool,
    ) -> Result<(Option<i64>, Option<f64>), LaunchError> {
        let queue = std::mem::take(&mut self.queue);
        if queue.is_empty() {
            return Ok((None, None));
        }
        let event = || {
            let flags = Some(CUevent_flags::CU_EVENT_DEFAULT);
            timing
                .then(|| s.record_event(flags))
                .transpose()
                .map_err(|e| failed("recording an event", e))
        };
        let start = event()?;
        let ran = self.enqueue(s, functions, &queue)?;
        let end = event()?;
        let status = match &ran {
            Ran::Graph(shape) => self.graphs.get(shape).map(|(_, a, _)| a),
            Ran::Own(arguments) => Some(arguments),
        };
        let failed = status
            .ok_or_else(|| failed("a CUDA graph's arguments", "missing after its launch"))?
            .first_failed(s)?;
        // Best effort: a batch that ran is not failed for want of its time.
        let ms = start
            .zip(end)
            .and_then(|(start, end)| start.elapsed_ms(&end).ok());
        Ok((failed, ms.map(f64::from)))
    }

    /// Puts the batch on the stream: a graph's replay, a new graph's first launch, or the
    /// launches one by one.
    fn enqueue(
        &mut self,
        s: &Arc<CudaStream>,
        functions: &[CudaFunction],
        queue: &[Queued],
    ) -> Result<Ran, LaunchError> {
        let shape = Shape::of(queue);
        self.batches += 1;
        if let Some((graph, arguments, used)) = self.graphs.get_mut(&shape) {
            *used = self.batches;
            arguments.refill(s, queue)?;
            graph
                .launch()
                .map_err(|e| failed("launching a CUDA graph", e))?;
            return Ok(Ran::Graph(shape));
        }
        let arguments = Arguments::new(s, queue)?;
        if self.seen.contains(&shape) {
            if let Some(graph) = capture(s, functions, queue, &arguments)? {
                graph
                    .launch()
                    .map_err(|e| failed("launching a CUDA graph", e))?;
                if self.graphs.len() >= MAX_GRAPHS {
                    let oldest = self.graphs.iter().min_by_key(|(_, g)| g.2);
                    if let Some(oldest) = oldest.map(|(k, _)| k.clone()) {
                        self.graphs.remove(&oldest);
                    }
                }
                let entry = (graph, arguments, self.batches);
                self.graphs.insert(shape.clone(), entry);
                return Ok(Ran::Graph(shape));
            }
        }
        if self.seen.len() >= MAX_SEEN {
            self.seen.clear();
        }
        self.seen.insert(shape);
        arguments.launch(s, functions, queue)?;
        Ok(Ran::Own(arguments))
    }
}

/// Where a batch's status words are: in its graph's arguments, or its own.
enum Ran {
    Graph(Shape),
    Own(Arguments),
}

/// The batch's launches captured as a graph, or None where the driver refuses (the capture
/// then ended, nothing run); an error only where the stream could not be brought out of
/// capture.
fn capture(
    s: &Arc<CudaStream>,
    functions: &[CudaFunction],
    queue: &[Queued],
    arguments: &Arguments,
) -> Result<Option<CudaGraph>, LaunchError> {
    let mode = CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL;
    if s.begin_capture(mode).is_err() {
        return Ok(None);
    }
    let launched = arguments.launch(s, functions, queue);
    // The capture ends whatever happened to the launches.
    let graph = s.end_capture(CUgraphInstantiate_flags(0));
    if let (Ok(()), Ok(Some(graph))) = (launched, graph) {
        return Ok(Some(graph));
    }
    let capturing = s
        .capture_status()
        .map_err(|e| failed("asking whether a capture ended", e))?;
    if capturing != CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE {
        // `end_capture` failed before it ended the capture (on an error stored earlier).
        // SAFETY: the stream is this launcher's, alive (`s`), and capturing; the graph it
        // hands back is destroyed once, here, and nothing else holds it.
        unsafe {
            let graph = cudarc::driver::result::stream::end_capture(s.cu_stream())
                .map_err(|e| failed("ending a failed capture", e))?;
            if !graph.is_null() {
                cudarc::driver::result::graph::destroy(graph)
                    .map_err(|e| failed("destroying a failed capture's graph", e))?;
            }
        }
    }
    Ok(None)
}

fn failed(what: &str, e: impl std::fmt::Display) -> LaunchError {
    LaunchError::Backend(format!("CUDA: {what}: {e}"))
}
