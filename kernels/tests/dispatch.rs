//! Path selection. (Its own test binary: `set_path` is process-wide.)

use readout_kernels::Path;
use readout_kernels::dispatch::{PathUnavailable, active, best, set_path};
use readout_kernels::elementwise::{Unary, unary};

#[test]
fn best_is_cached_and_forcing_works() {
    let b = best();
    assert_eq!(b, best());
    assert!(b.is_available() && b != Path::Scalar);
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        assert_eq!(
            b,
            Path::Avx2,
            "a default build must pick AVX2 on an AVX2 CPU"
        );
    }
    assert_eq!(active(), b);
    for p in Path::ALL {
        if p.is_available() {
            set_path(Some(p)).unwrap();
            assert_eq!(active(), p);
            // The generic kernels follow the forced path.
            let mut out = [0.0f32; 3];
            unary(Unary::Exp, &[0.0, 1.0, -1.0], &mut out);
            assert_eq!(out[0], 1.0);
        } else {
            assert_eq!(set_path(Some(p)), Err(PathUnavailable(p)));
        }
    }
    set_path(None).unwrap();
    assert_eq!(active(), b);
}
