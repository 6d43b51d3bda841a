//! readout on a microcontroller: an Arm Cortex-M4F (the MPS2 AN386 board, run in
//! QEMU) loads PyG weights for `EquilibriumAggregation` and `MemPooling` out of bytes
//! built into the firmware, runs each layer's inference forward on PyG's inputs, and
//! compares the outputs with PyG's. It prints each output's worst error and the heap's
//! high-water mark over semihosting, and exits with a failure status when an error is
//! above [`TOLERANCE`], when a layer returns an error, or on a panic or a fault.
//! The stack's high-water mark is printed too.
//!
//! The cases come from `layers/tests/data` (chosen and split by `build.rs`).
#![no_std]
#![no_main]

extern crate alloc;

mod fixture;
mod heap;
mod stack;

use alloc::vec::Vec;
use core::fmt;

use cortex_m_rt::{ExceptionFrame, entry, exception};
use cortex_m_semihosting::{debug, hprintln};
use readout_layers::{
    EquilibriumAggregation, LayerError, MemPooling, PoolArgs, PygWeights, Segments, StateDict,
};

use fixture::{Fixture, worst_error};

mod cases {
    include!(concat!(env!("OUT_DIR"), "/cases.rs"));
}

/// The largest error accepted, in the fixtures' measure:
/// `max |got − expect| / max(1, max |expect|)`.
const TOLERANCE: f64 = 1e-4;

/// PyG `state_dict` files, as `safetensors.torch.save_file(model.state_dict(), path)`
/// writes them.
static EQ_WEIGHTS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/eq.weights.safetensors"));
static MP_WEIGHTS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/mp.weights.safetensors"));
/// The cases' inputs and PyG's outputs.
static EQ_IO: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/eq.io.safetensors"));
static MP_IO: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/mp.io.safetensors"));

#[entry]
fn main() -> ! {
    heap::init();
    hprintln!(
        "readout on a Cortex-M4F: kernel path {}, heap {} B",
        readout_kernels::dispatch::active(),
        heap::CAPACITY
    );
    let mut worst = 0.0f64;
    let results = [
        ("EquilibriumAggregation", cases::eq::NAME, equilibrium()),
        ("MemPooling", cases::mp::NAME, mem_pooling()),
    ];
    let mut failed = false;
    for (layer, case, result) in results {
        match result {
            Ok(report) => {
                hprintln!("{layer} ({case}): {report}");
                worst = report.outputs.iter().fold(worst, |w, o| w.max(o.1));
            }
            Err(e) => {
                hprintln!("{layer} ({case}): error: {e}");
                failed = true;
            }
        }
    }
    hprintln!(
        "memory: heap high-water {} B of {} B, stack high-water {} B",
        heap::high_water(),
        heap::CAPACITY,
        stack::high_water()
    );
    let pass = !failed && worst <= TOLERANCE;
    hprintln!(
        "worst error {worst:.3e} (tolerance {TOLERANCE:.0e}): {}",
        if pass { "PASS" } else { "FAIL" }
    );
    exit(pass)
}

/// What one layer's run measured.
struct Report {
    /// Each output's name and worst error against PyG.
    outputs: Vec<(&'static str, f64)>,
    /// Heap high-water mark while the layer was built and its weights loaded.
    load_peak: usize,
    /// Heap held by the loaded layer.
    layer_bytes: usize,
    /// Heap high-water mark during the forward (above what was held before it).
    forward_peak: usize,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, error) in &self.outputs {
            write!(f, "{name} worst error {error:.3e}; ")?;
        }
        write!(
            f,
            "heap: load peak {} B, layer holds {} B, forward peak {} B",
            self.load_peak, self.layer_bytes, self.forward_peak
        )
    }
}

/// EquilibriumAggregation: weights from bytes, the fused inference forward.
fn equilibrium() -> Result<Report, LayerError> {
    use cases::eq;
    let io = Fixture::parse(EQ_IO)?;
    let x = io.tensor_f32("input.x")?;
    let index = io.optional_i64("input.index")?;
    let expect = io.values_f64("expect.out")?;

    let (layer, load_peak, layer_bytes) = heap::measure(|| {
        // PyG's `lamb` is a float in its metadata; the layer keeps it as f32.
        #[allow(clippy::cast_possible_truncation)]
        let lamb = eq::LAMB as f32;
        EquilibriumAggregation::new(
            eq::IN_CHANNELS,
            eq::OUT_CHANNELS,
            eq::NUM_LAYERS,
            eq::GRAD_ITER,
            lamb,
        )?
        .with_state_dict(StateDict::from_bytes(EQ_WEIGHTS)?)
    });
    let layer = layer?;
    let segments = match &index {
        Some(index) => Segments::Index(index),
        None => Segments::One,
    };
    let (out, forward_peak, _) = heap::measure(|| layer.forward(&x, segments, eq::DIM_SIZE));
    let out = out?;
    Ok(Report {
        outputs: alloc::vec![("out", worst_error(out.data(), &expect)?)],
        load_peak,
        layer_bytes,
        forward_peak,
    })
}

/// MemPooling: weights from bytes, the ragged (fused, unpadded) inference forward.
fn mem_pooling() -> Result<Report, LayerError> {
    use cases::mp;
    let io = Fixture::parse(MP_IO)?;
    let x = io.tensor_f32("input.x")?;
    let batch = io.optional_i64("input.batch")?;
    let expect_out = io.values_f64("expect.out")?;
    let expect_s = io.tensor_f64("expect.S")?;

    let (layer, load_peak, layer_bytes) = heap::measure(|| {
        MemPooling::new(
            mp::IN_CHANNELS,
            mp::OUT_CHANNELS,
            mp::HEADS,
            mp::NUM_CLUSTERS,
            mp::TAU,
        )?
        .with_state_dict(StateDict::from_bytes(MP_WEIGHTS)?)
    });
    let layer = layer?;
    let mut args = PoolArgs::new();
    if let Some(batch) = &batch {
        args = args.batch(batch);
    }
    if let Some(n) = mp::MAX_NUM_NODES {
        args = args.max_num_nodes(n);
    }
    if let Some(b) = mp::BATCH_SIZE {
        args = args.batch_size(b);
    }
    let (result, forward_peak, _) = heap::measure(|| layer.forward_ragged(&x, args));
    let (out, s_nodes) = result?;
    let expect_s = fixture::padded_rows_of_nodes(&expect_s, batch.as_deref(), x.shape()[0])?;
    Ok(Report {
        outputs: alloc::vec![
            ("out", worst_error(out.data(), &expect_out)?),
            ("S", worst_error(s_nodes.data(), &expect_s)?),
        ],
        load_peak,
        layer_bytes,
        forward_peak,
    })
}

/// Ends the run: QEMU exits with status 0 on success, 1 on failure.
fn exit(pass: bool) -> ! {
    debug::exit(if pass {
        debug::EXIT_SUCCESS
    } else {
        debug::EXIT_FAILURE
    });
    // Only reached without a debugger or emulator to exit to.
    loop {
        cortex_m::asm::wfi();
    }
}

/// Out-of-memory (the heap is fixed) and any other panic: say where, then fail.
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    hprintln!("panic: {info}");
    exit(false)
}

/// A fault (bad memory access, undefined instruction) fails the run instead of
/// hanging until the CI's timeout.
#[exception]
unsafe fn HardFault(frame: &ExceptionFrame) -> ! {
    hprintln!("hard fault: {frame:?}");
    exit(false)
}
