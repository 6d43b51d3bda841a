//! Arbitrary bytes, and mutated valid safetensors files, into the weight loader
//! (`StateDict::from_bytes`, then loading a layer key by key as `pyg_weights` does)
//! and the reference-case reader (`Case::from_bytes`): `Ok` or a typed error, never a
//! panic. A file that loads saves back to bytes that load to the same state dict.
#![no_main]

use libfuzzer_sys::fuzz_target;
use readout_fuzz::Draw;
use readout_layers::PygWeights;
use readout_layers::{
    Case, EquilibriumAggregation, LayerError, MemPooling, ParamView, StateDict, save_params,
};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let bytes = match mode % 4 {
        // The bytes as they are.
        0 | 1 => rest.to_vec(),
        // A valid file of a small layer, then mutated as the rest of the input says.
        _ => mutate_valid(&mut Draw::new(rest)),
    };
    load(&bytes);
    if let Err(e) = Case::from_bytes("fuzz", &bytes) {
        assert!(!e.to_string().is_empty());
    }
});

fn check_err(e: &LayerError) {
    assert!(!e.to_string().is_empty(), "{e:?} has an empty message");
}

/// The layer a file's keys describe, loaded key by key with PyG's shapes.
fn load(bytes: &[u8]) {
    let sd = match StateDict::from_bytes(bytes) {
        Ok(sd) => sd,
        Err(e) => return check_err(&e),
    };
    // Whatever loads saves, and reloads to the same tensors.
    let again = sd.to_bytes().expect("a loaded state dict saves");
    let back = StateDict::from_bytes(&again).expect("a saved state dict loads");
    assert_eq!(back, sd);

    if sd.get("k").is_some() {
        let Some(k) = sd.get("k") else { return };
        let (h, kk, f) = match *k.shape() {
            [h, kk, f] => (h, kk, f),
            _ => return,
        };
        let o = match sd.get("lin.weight").map(|t| t.shape().to_vec()) {
            Some(s) if s.len() == 2 => s[0],
            _ => return,
        };
        let Ok(mut pool) = MemPooling::new(f, o, h, kk, 1.0) else {
            return;
        };
        let mut sd = sd;
        let mut names: Vec<(String, Vec<usize>, Vec<usize>)> = Vec::new();
        for p in pool.parameters().iter() {
            let pyg = p.pyg_shape().to_vec();
            names.push((p.name().to_string(), pyg, p.value().shape().to_vec()));
        }
        for (i, (name, pyg, shape)) in names.iter().enumerate() {
            match sd.take_reshaped(name, pyg, shape) {
                Ok(t) => pool
                    .parameters_mut()
                    .at_mut(i)
                    .set_value(t)
                    .expect("same shape"),
                Err(e) => return check_err(&e),
            }
        }
        if let Err(e) = sd.finish() {
            check_err(&e);
        }
    } else {
        // EquilibriumAggregation: sizes from the first linear and the hidden layers.
        let Some(w0) = sd.get("potential.res_trans.0.weight") else {
            return;
        };
        let [_, c] = *w0.shape() else { return };
        let mut hidden = Vec::new();
        while let Some(t) = sd.get(&format!("potential.layers.{}.1.weight", hidden.len())) {
            let [h] = *t.shape() else { return };
            hidden.push(h);
            if hidden.len() > 8 {
                return;
            }
        }
        if c < 2 {
            return;
        }
        let Ok(mut layer) = EquilibriumAggregation::new(1, c - 1, &hidden, 1, 0.1) else {
            return;
        };
        let mut sd = sd;
        let keys: Vec<(String, Vec<usize>)> = layer
            .parameters()
            .iter()
            .map(|p| (p.name().to_string(), p.value().shape().to_vec()))
            .collect();
        for (i, (name, shape)) in keys.iter().enumerate() {
            match sd.take(name, shape) {
                Ok(t) => layer
                    .parameters_mut()
                    .at_mut(i)
                    .set_value(t)
                    .expect("same shape"),
                Err(e) => return check_err(&e),
            }
        }
        if let Err(e) = sd.finish() {
            check_err(&e);
        }
    }
}

/// A valid file (a small layer's weights, F32 or written by hand as F64 / other
/// dtypes), then byte-level and header-level mutations.
fn mutate_valid(d: &mut Draw) -> Vec<u8> {
    let mut bytes = if d.bool() {
        let pool = MemPooling::new(d.int(1, 3), d.int(1, 3), d.int(1, 2), d.int(1, 3), 1.0)
            .expect("small sizes");
        let shapes: Vec<Vec<usize>> = pool
            .parameters()
            .iter()
            .map(|p| p.pyg_shape().to_vec())
            .collect();
        let views: Vec<ParamView<'_>> = pool
            .parameters()
            .iter()
            .zip(&shapes)
            .map(|(p, s)| ParamView::with_shape(p.name(), s, p.value()))
            .collect();
        save_params(&views).expect("finite weights save")
    } else {
        let hidden: Vec<usize> = (0..d.int(0, 2)).map(|_| d.int(1, 3)).collect();
        let layer = EquilibriumAggregation::new(1, d.int(1, 2), &hidden, 1, 0.1).expect("small");
        let views: Vec<ParamView<'_>> = layer
            .parameters()
            .iter()
            .map(|p| ParamView::of(p.name(), p.value()))
            .collect();
        save_params(&views).expect("finite weights save")
    };
    let header_len = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
        .unwrap_or(0);
    for _ in 0..d.int(0, 6) {
        if bytes.is_empty() {
            break;
        }
        match d.int(0, 9) {
            // A random byte anywhere.
            0 | 1 => {
                let i = d.int(0, bytes.len() - 1);
                bytes[i] = d.byte();
            }
            // A byte inside the JSON header (dtype, shape, offsets, names).
            2 | 3 => {
                let end = (8 + header_len).min(bytes.len());
                if end > 8 {
                    let i = d.int(8, end - 1);
                    bytes[i] = d.pick(b"0123456789[],:\"{}FIUBL-e.x ");
                }
            }
            // A different header length.
            4 => {
                let v = match d.int(0, 3) {
                    0 => d.u64(),
                    1 => header_len as u64 + d.int(0, 16) as u64,
                    2 => header_len.saturating_sub(d.int(1, 16)) as u64,
                    _ => u64::MAX,
                };
                let m = 8.min(bytes.len());
                bytes[..m].copy_from_slice(&v.to_le_bytes()[..m]);
            }
            // Truncated.
            5 => {
                let n = d.int(0, bytes.len());
                bytes.truncate(n);
            }
            // Extended.
            6 => {
                for _ in 0..d.int(1, 16) {
                    bytes.push(d.byte());
                }
            }
            // A value in the data replaced by a special float.
            7 | 8 => {
                let start = 8 + header_len;
                if bytes.len() >= start + 4 {
                    let slots = (bytes.len() - start) / 4;
                    let i = start + 4 * d.int(0, slots - 1);
                    bytes[i..i + 4].copy_from_slice(&d.value().to_le_bytes());
                }
            }
            // A text substitution in the header.
            _ => {
                let end = (8 + header_len).min(bytes.len());
                if end > 8 {
                    let header = String::from_utf8_lossy(&bytes[8..end]).into_owned();
                    let (from, to) = d.pick(&[
                        ("F32", "F64"),
                        ("F32", "F16"),
                        ("F32", "I64"),
                        ("F32", "BOOL"),
                        ("F32", "U8"),
                        ("\"shape\":[", "\"shape\":[0,"),
                        ("\"shape\":[", "\"shape\":[99999999999,"),
                        ("]", ",1]"),
                        ("weight", "weigh"),
                        ("\"data_offsets\":[", "\"data_offsets\":[4,"),
                    ]);
                    let new = header.replacen(from, to, 1);
                    let mut out = Vec::with_capacity(bytes.len() + 16);
                    out.extend_from_slice(&(new.len() as u64).to_le_bytes());
                    out.extend_from_slice(new.as_bytes());
                    out.extend_from_slice(&bytes[end..]);
                    bytes = out;
                }
            }
        }
    }
    bytes
}
